"""Label Studio's REST API, the few calls Quill needs, over plain httpx.

``label-studio-sdk`` would pull ~500 MB (opencv, pandas) for six HTTP calls, so Quill talks
to the documented endpoints directly: projects (list, read, create with Quill's labeling
config and instructions), local-files storage (so ``/data/local-files/`` URLs resolve),
task import, and the JSON export with every task, annotated or not. Authentication is the
legacy ``Authorization: Token <key>`` header (``LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN``).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx

from quill.annotation.config import (
    IMAGE_VARIABLE,
    instructions_html,
    labeling_config,
    validate_config,
)
from quill.annotation.tasks import LOCAL_FILES_PREFIX
from quill.errors import QuillError

URL_VAR = "LABEL_STUDIO_URL"
KEY_VARS = ("LABEL_STUDIO_API_KEY", "LABEL_STUDIO_USER_TOKEN")
DEFAULT_URL = "http://127.0.0.1:8080"
#: Tasks per import request (the server accepts far more; small requests fail small).
IMPORT_CHUNK = 500


class LabelStudioError(QuillError, RuntimeError):
    """A call to Label Studio failed; the message names the call and what to do."""

    code = "label_studio_error"


def client_settings(env: Mapping[str, str], url: str | None = None) -> tuple[str, str]:
    """(base URL, API key) from options and the environment."""
    key = next((env[var] for var in KEY_VARS if env.get(var)), None)
    if not key:
        raise LabelStudioError(
            f"set {' or '.join(KEY_VARS)} to the API token of your Label Studio user"
        )
    return (url or env.get(URL_VAR) or DEFAULT_URL).rstrip("/"), key


class LabelStudioClient:
    """A session with one Label Studio server."""

    def __init__(
        self,
        url: str,
        api_key: str,
        timeout_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self.url = url.rstrip("/")
        try:
            self.http = httpx.Client(
                base_url=self.url,
                headers={"Authorization": f"Token {api_key}"},
                timeout=timeout_s,
                transport=transport,
            )
        except httpx.InvalidURL as exc:
            raise LabelStudioError(f"not a Label Studio URL: {url!r} ({exc})") from exc

    @classmethod
    def from_env(
        cls, url: str | None = None, env: Mapping[str, str] | None = None
    ) -> LabelStudioClient:
        """A client for ``url`` (or $LABEL_STUDIO_URL) with the token from the environment."""
        base, key = client_settings(os.environ if env is None else env, url)
        return cls(base, key)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> LabelStudioClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise LabelStudioError(
                f"no Label Studio at {self.url} ({exc}); start it with `quill annotate serve`"
            ) from exc
        except httpx.HTTPError as exc:
            raise LabelStudioError(f"{method} {path} failed: {exc}") from exc
        if response.status_code in (401, 403):
            raise LabelStudioError(
                f"{method} {path}: Label Studio refused the API token ({response.status_code}); "
                f"check {' / '.join(KEY_VARS)}"
            )
        if response.status_code >= 400:
            raise LabelStudioError(
                f"{method} {path}: HTTP {response.status_code}: {_explain(response)}"
            )
        return response.json() if response.content else None

    def health(self) -> bool:
        try:
            return self.http.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    def projects(self) -> Iterator[dict[str, Any]]:
        """Every project, across pages."""
        page = 1
        while True:
            body = self._call("GET", "/api/projects", params={"page": page, "page_size": 100})
            if isinstance(body, list):  # older servers answer without pagination
                yield from body
                return
            yield from body.get("results", [])
            if not body.get("next"):
                return
            page += 1

    def project(self, reference: str) -> dict[str, Any] | None:
        """A project by id (digits) or exact title."""
        if reference.isdigit():
            try:
                return self._call("GET", f"/api/projects/{int(reference)}")
            except LabelStudioError as exc:
                if "HTTP 404" in str(exc):
                    return None
                raise
        return next((p for p in self.projects() if p.get("title") == reference), None)

    def create_project(self, title: str) -> dict[str, Any]:
        """A project with Quill's labeling config and instructions."""
        return self._call(
            "POST",
            "/api/projects",
            json={
                "title": title,
                "label_config": labeling_config(),
                "expert_instruction": instructions_html(),
                "show_instruction": True,
            },
        )

    def ensure_project(self, title: str) -> tuple[dict[str, Any], bool]:
        """The project named ``title`` (created if missing) and whether it was created.

        An existing project's config is checked, so an import later will understand it.
        """
        found = self.project(title)
        if found is None:
            return self.create_project(title), True
        validate_config(found.get("label_config", ""))
        return found, False

    def local_storages(self, project_id: int) -> list[dict[str, Any]]:
        return self._call("GET", "/api/storages/localfiles", params={"project": project_id})

    def ensure_local_storage(self, project_id: int, path: Path) -> dict[str, Any]:
        """A local-files source storage at ``path`` (absolute, on the server's disk).

        Label Studio serves ``/data/local-files/?d=...`` only for files under a storage of the
        project. The storage is never synced: the tasks are imported with their predictions.
        """
        for storage in self.local_storages(project_id):
            if storage.get("path") == str(path):
                return storage
        return self._call(
            "POST",
            "/api/storages/localfiles",
            json={
                "project": project_id,
                "path": str(path),
                "title": f"quill: {path.name or path}",
                "use_blob_urls": True,
            },
        )

    def import_tasks(self, project_id: int, tasks: Sequence[dict[str, Any]]) -> int:
        """Import ``tasks`` (Label Studio JSON) in chunks; number of tasks created."""
        created = 0
        for start in range(0, len(tasks), IMPORT_CHUNK):
            chunk = list(tasks[start : start + IMPORT_CHUNK])
            body = self._call("POST", f"/api/projects/{project_id}/import", json=chunk)
            created += int((body or {}).get("task_count", len(chunk)))
        return created

    def export(self, project_id: int) -> list[dict[str, Any]]:
        """The JSON export of every task (skipped and unannotated ones too, for the report)."""
        return self._call(
            "GET",
            f"/api/projects/{project_id}/export",
            params={"exportType": "JSON", "download_all_tasks": "true"},
        )


def _explain(response: httpx.Response) -> str:
    """The messages of an error answer (Django REST framework nests them in dicts/lists).

    An answer that is not JSON comes from something else than Label Studio's API (another
    server on the port, a proxy): its first line only, not a whole HTML error page.
    """
    try:
        body = response.json()
    except ValueError:
        return _not_label_studio(response)
    messages: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, str):
            messages.append(node)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(body)
    return "; ".join(messages)[:500] or response.text[:500]


def _not_label_studio(response: httpx.Response) -> str:
    """One line for a non-JSON error answer: its first line, or that it was an HTML page."""
    first = next((line.strip() for line in response.text.splitlines() if line.strip()), "")
    if first.startswith("<"):
        first = "an HTML page"
    shown = first[:200] or "an empty answer"
    return f"{shown}, not an answer of Label Studio's API: is the URL Label Studio's?"


class TaskFileError(QuillError, ValueError):
    """A task file holds something Label Studio would not import as a task."""

    code = "label_studio_tasks_invalid"


def task_data(task: Any, number: int) -> dict[str, Any]:
    """The variables of task ``number`` (counted from 0, as Label Studio does): its ``data``
    object, or the task itself in the flat form Label Studio also imports (``{"ocr": url}``).

    >>> task_data({"data": {"ocr": "a.jpg"}}, 0), task_data({"ocr": "a.jpg"}, 1)
    ({'ocr': 'a.jpg'}, {'ocr': 'a.jpg'})
    """
    if not isinstance(task, dict):
        raise TaskFileError(f"task #{number} is {type(task).__name__}, not an object")
    data = task.get("data", task)
    if not isinstance(data, dict):
        raise TaskFileError(f"task #{number}: data is {type(data).__name__}, not an object")
    return data


def storage_folder(tasks: Sequence[Any], document_root: Path) -> Path | None:
    """The folder a local-files storage needs: the images' common parent under the root.

    None when no task uses a local-files URL. Every task is checked first (an object, with a
    ``data`` object or flat): TaskFileError names the first that is not, or a local-files URL
    naming no file, before anything is sent.

    >>> storage_folder([{"data": {"ocr": "/data/local-files/?d=scans/a/1.jpg"}},
    ...                 {"ocr": "/data/local-files/?d=scans/b/2.jpg"}], Path("/srv"))
    PosixPath('/srv/scans')
    """
    folders = []
    for number, task in enumerate(tasks):
        reference = str(task_data(task, number).get(IMAGE_VARIABLE, ""))
        if reference.startswith(LOCAL_FILES_PREFIX):
            relative = parse_qs(urlparse(reference).query).get("d", [""])[0]
            if not relative:
                raise TaskFileError(f"task #{number}: {reference!r} names no file")
            folders.append(posixpath.dirname(relative))
    if not folders:
        return None
    common = posixpath.commonpath(folders) if all(folders) else ""
    return document_root.resolve() / common if common else document_root.resolve()
