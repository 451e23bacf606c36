"""A stand-in for the few Label Studio REST endpoints Quill calls. NOT Label Studio.

Real Label Studio (a ~1 GB application in its own virtualenv) runs once in this suite, for
the contract tests of test_client.py; the many tests of Quill's side (edge cases, errors,
pagination) run against this stand-in instead (see docs/annotation.md). This is a real HTTP
server on 127.0.0.1 that implements, after Label Studio 1.23's documented API, exactly the
surface Quill uses, with its status codes, token check, pagination and validation:

    GET  /health
    GET  /api/projects?page=&page_size=        POST /api/projects        GET /api/projects/<id>
    GET  /api/storages/localfiles?project=     POST /api/storages/localfiles
    POST /api/projects/<id>/import             GET  /api/projects/<id>/export?exportType=JSON
    GET  /data/local-files/?d=<path>

Annotators are simulated by :meth:`State.annotate`. Run as a script it mimics
``label-studio start`` (the fake executable in test_server.py): it reads the same flags and
environment, records them in ``<data-dir>/launch.json`` and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class State:
    """Projects, tasks and storages of one server, as Label Studio keeps them."""

    def __init__(self, token: str, document_root: Path | None = None):
        self.token = token
        self.document_root = document_root
        self.projects: dict[int, dict[str, Any]] = {}
        self.tasks: dict[int, dict[str, Any]] = {}
        self.storages: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self._ids = {"project": 0, "task": 0, "annotation": 0, "storage": 0}
        self.lock = threading.Lock()

    def next_id(self, kind: str) -> int:
        self._ids[kind] += 1
        return self._ids[kind]

    def annotate(self, task_id: int, result: list[dict], **fields: Any) -> dict[str, Any]:
        """What an annotator pressing Submit (or Skip: ``was_cancelled=True``) stores."""
        with self.lock:
            annotation = {
                "id": self.next_id("annotation"),
                "completed_by": fields.pop("completed_by", 1),
                "result": result,
                "was_cancelled": fields.pop("was_cancelled", False),
                "ground_truth": fields.pop("ground_truth", False),
                "created_at": _now(),
                "updated_at": fields.pop("updated_at", _now()),
                "lead_time": 12.0,
                "task": task_id,
                "project": self.tasks[task_id]["project"],
                **fields,
            }
            self.tasks[task_id]["annotations"].append(annotation)
            return annotation


class Handler(BaseHTTPRequestHandler):
    state: State  # set on the subclass made by make_server

    def log_message(self, *args: Any) -> None:  # quiet: tests read State.requests instead
        pass

    # -- plumbing --------------------------------------------------------------------------
    def _send(self, status: int, body: Any) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    def _authorised(self) -> bool:
        header = self.headers.get("Authorization", "")
        if not header:
            self._send(401, {"detail": "Authentication credentials were not provided."})
            return False
        if header != f"Token {self.state.token}":
            self._send(401, {"detail": "Invalid token."})
            return False
        return True

    def _route(self, method: str) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        parts = [p for p in url.path.split("/") if p]
        self.state.requests.append((method, url.path))
        if url.path == "/health" and method == "GET":
            return self._send(200, {"status": "UP"})
        if url.path.startswith("/data/local-files"):
            return self._local_file(query)
        if parts[:1] != ["api"]:
            return self._send(404, {"detail": "Not found."})
        if not self._authorised():
            return None
        with self.state.lock:
            return self._api(method, parts[1:], query)

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    # -- endpoints -------------------------------------------------------------------------
    def _api(self, method: str, parts: list[str], query: dict[str, str]) -> None:
        state = self.state
        if parts == ["projects"] and method == "GET":
            return self._list_projects(query)
        if parts == ["projects"] and method == "POST":
            return self._create_project(self._body())
        if len(parts) >= 2 and parts[0] == "projects":
            project = state.projects.get(int(parts[1])) if parts[1].isdigit() else None
            if project is None:
                return self._send(404, {"detail": "Not found."})
            if len(parts) == 2 and method == "GET":
                return self._send(200, project)
            if parts[2:] == ["import"] and method == "POST":
                return self._import(project, self._body())
            if parts[2:] == ["export"] and method == "GET":
                return self._export(project, query)
        if parts == ["storages", "localfiles"] and method == "GET":
            pid = int(query.get("project", 0))
            return self._send(200, [s for s in state.storages if s["project"] == pid])
        if parts == ["storages", "localfiles"] and method == "POST":
            return self._create_storage(self._body())
        return self._send(404, {"detail": "Not found."})

    def _list_projects(self, query: dict[str, str]) -> None:
        page, size = int(query.get("page", 1)), int(query.get("page_size", 30))
        projects = sorted(self.state.projects.values(), key=lambda p: p["id"])
        chunk = projects[(page - 1) * size : page * size]
        more = page * size < len(projects)
        host = f"http://{self.headers.get('Host')}"
        nxt = f"{host}/api/projects?page={page + 1}&page_size={size}" if more else None
        self._send(200, {"count": len(projects), "next": nxt, "previous": None, "results": chunk})

    def _create_project(self, body: dict[str, Any]) -> None:
        config = body.get("label_config", "<View></View>")
        try:
            ET.fromstring(config)
        except ET.ParseError as exc:
            return self._send(400, {"label_config": [f"Can't parse XML: {exc}"]})
        pid = self.state.next_id("project")
        project = {
            "id": pid,
            "title": body.get("title") or f"New Project #{pid}",
            "label_config": config.strip(),  # as Label Studio 1.23 stores it (test_client.py)
            "expert_instruction": body.get("expert_instruction", ""),
            "show_instruction": bool(body.get("show_instruction", False)),
            "created_at": _now(),
            "task_number": 0,
        }
        self.state.projects[pid] = project
        return self._send(201, project)

    def _variables(self, project: dict[str, Any]) -> list[str]:
        root = ET.fromstring(project["label_config"])
        return [
            el.get("value", "")[1:] for el in root.iter() if el.get("value", "").startswith("$")
        ]

    def _import(self, project: dict[str, Any], body: Any) -> None:
        items = body if isinstance(body, list) else [body]
        needed = self._variables(project)
        created, predictions = [], 0
        for number, item in enumerate(items):
            data = item.get("data", item) if isinstance(item, dict) else None
            missing = [v for v in needed if not isinstance(data, dict) or v not in data]
            if missing:
                return self._send(
                    400,
                    {"validation_errors": {"non_field_errors": [
                        f'Task #{number}: "{missing[0]}" key is expected in task data'
                    ]}},
                )  # fmt: skip
            tid = self.state.next_id("task")
            preds = [
                {**p, "id": n, "task": tid, "created_ago": "0 minutes"}
                for n, p in enumerate(item.get("predictions", []), 1)
            ]
            predictions += len(preds)
            created.append(
                {"id": tid, "data": data, "annotations": [], "predictions": preds,
                 "project": project["id"], "created_at": _now(), "updated_at": _now(),
                 "meta": {}, "drafts": [], "file_upload": None}
            )  # fmt: skip
        for task in created:
            self.state.tasks[task["id"]] = task
        project["task_number"] += len(created)
        self._send(
            201,
            {"task_count": len(created), "annotation_count": 0, "prediction_count": predictions,
             "duration": 0.01, "file_upload_ids": [], "could_be_tasks_list": False,
             "found_formats": [], "data_columns": []},
        )  # fmt: skip

    def _export(self, project: dict[str, Any], query: dict[str, str]) -> None:
        if query.get("exportType", "JSON") != "JSON":
            return self._send(400, {"detail": "this stand-in only exports JSON"})
        everything = query.get("download_all_tasks", "false").lower() == "true"
        tasks = [
            {**t, "predictions": [p["id"] for p in t["predictions"]]}  # ids, as Label Studio's
            for t in self.state.tasks.values()
            if t["project"] == project["id"] and (everything or t["annotations"])
        ]
        return self._send(200, tasks)

    def _create_storage(self, body: dict[str, Any]) -> None:
        root = self.state.document_root
        path = Path(str(body.get("path", "")))
        if root is None:
            return self._send(400, {"detail": "LOCAL_FILES_SERVING_ENABLED is false"})
        if not path.is_absolute() or not path.resolve().is_relative_to(root.resolve()):
            return self._send(
                400,
                {"non_field_errors": [
                    f"{path} must start with LOCAL_FILES_DOCUMENT_ROOT={root}"]},
            )  # fmt: skip
        if not path.is_dir():
            return self._send(400, {"non_field_errors": [f"Path {path} does not exist"]})
        storage = {
            "id": self.state.next_id("storage"),
            "type": "localfiles",
            "project": int(body["project"]),
            "path": str(path),
            "title": body.get("title", ""),
            "use_blob_urls": bool(body.get("use_blob_urls", False)),
            "created_at": _now(),
        }
        self.state.storages.append(storage)
        return self._send(201, storage)

    def _local_file(self, query: dict[str, str]) -> None:
        root = self.state.document_root
        if root is None or "d" not in query:
            return self._send(404, {"detail": "Not found."})
        path = (root / query["d"]).resolve()
        allowed = any(path.is_relative_to(Path(s["path"]).resolve()) for s in self.state.storages)
        if not allowed or not path.is_file():
            return self._send(404, {"detail": "Not found."})
        payload = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def make_server(state: State, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"state": state})
    return ThreadingHTTPServer((host, port), handler)


def main(argv: list[str]) -> None:
    """Behave like ``label-studio start`` for the process-management tests."""
    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--internal-host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--data-dir", required=True)
    args = parser.parse_args(argv)
    env = os.environ
    root = env.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
    serving = env.get("LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED") == "true"
    state = State(env["LABEL_STUDIO_USER_TOKEN"], Path(root) if root and serving else None)
    keys = [k for k in env if k.startswith("LABEL_STUDIO_") or k in ("SENTRY_DSN",
            "FRONTEND_SENTRY_DSN", "COLLECT_ANALYTICS", "LATEST_VERSION_CHECK")]  # fmt: skip
    Path(args.data_dir, "launch.json").write_text(
        json.dumps({"argv": argv, "env": {k: env[k] for k in sorted(keys)}})
    )
    server = make_server(state, args.internal_host, args.port)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
