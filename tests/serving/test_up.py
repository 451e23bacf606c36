"""``quill up``: API and web app together on localhost, both URLs printed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from quill.ports import free_ports


def start_up(
    model: Path, folder: Path, api_port: int, app_port: int
) -> tuple[subprocess.Popen, str]:
    """`quill up` as a process storing into ``folder``/monitoring.db, and what it printed up
    to its web app's URL (or until it ended)."""
    command = [
        sys.executable, "-c", "from quill.cli import main; main()", "up",
        "--model", str(model), "--api-port", str(api_port), "--app-port", str(app_port),
        "--threads", "1", "--monitoring-url", f"sqlite:///{folder / 'monitoring.db'}",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=folder
    )
    printed = ""
    deadline = time.monotonic() + 240
    while "Web app:" not in printed and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        printed += line
    return process, printed


@dataclass
class Up:
    """A running `quill up` (its process, ports, store folder and what it printed)."""

    process: subprocess.Popen
    api_port: int
    app_port: int
    folder: Path
    printed: str


class UpProcesses:
    """`quill up` for the module's tests: one process as long as it runs (starting one
    costs seconds of CPU, its imports and the web app's), a new one once a test stopped it."""

    def __init__(self, model: Path, root: Path) -> None:
        self.model, self.root = model, root
        self.current: Up | None = None

    def running(self) -> Up:
        if self.current is None or self.current.process.poll() is not None:
            folder = self.root / f"up{len(list(self.root.iterdir()))}"
            folder.mkdir()
            api_port, app_port = free_ports(2)
            process, printed = start_up(self.model, folder, api_port, app_port)
            self.current = Up(process, api_port, app_port, folder, printed)
        return self.current

    def stop(self) -> None:
        if self.current is None or self.current.process.poll() is not None:
            return
        process = self.current.process
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def up(smoke_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcesses]:
    processes = UpProcesses(smoke_model, tmp_path_factory.mktemp("quill-up"))
    try:
        yield processes
    finally:
        processes.stop()


@pytest.mark.slow
def test_quill_up_serves_api_and_app_and_prints_both_urls(up: UpProcesses) -> None:
    running = up.running()
    try:
        urls = dict(re.findall(r"^(REST API|Web app):\s+(\S+)", running.printed, re.MULTILINE))
        assert urls == {
            "REST API": f"http://127.0.0.1:{running.api_port}",
            "Web app": f"http://127.0.0.1:{running.app_port}",
        }, running.printed
        assert httpx.get(f"{urls['REST API']}/readyz", timeout=30).status_code == 200
        for _ in range(240):
            try:
                page = httpx.get(urls["Web app"], timeout=5)
                if page.status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        assert page.status_code == 200 and "gradio" in page.text.lower()
    except BaseException:
        up.stop()  # a failing process is not handed to the next test
        raise


def test_commands_without_a_staged_model_say_how_to_get_one(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from quill.cli import app

    runner = CliRunner()
    for command in ("up", "serve", "app"):
        result = runner.invoke(app, [command, "--model", str(tmp_path / "none")])
        assert result.exit_code == 2, command
        assert "no staged model" in result.output and "quill stage" in result.output
    wrong = runner.invoke(app, ["app", "--backend", "ftp://x"])
    assert wrong.exit_code == 2 and "neither 'local' nor an http(s) URL" in wrong.output


@pytest.mark.slow
def test_sigterm_stops_quill_up_as_ctrl_c_does(up: UpProcesses, tmp_path: Path) -> None:
    """SIGTERM (docker stop) killed `quill up` at once: its API was not stopped, so the
    monitoring queue was not flushed (answered predictions lacked their projections) and
    requests in flight were cut. It stops both servers and exits 143, as `quill serve`.
    (The module's `quill up`: the test above only read its health and web page.)"""
    import sqlite3

    from quill.staging.parity import render_line

    running = up.running()
    process, printed = running.process, running.printed
    store = running.folder / "monitoring.db"
    try:
        assert "Web app:" in printed, printed
        image = tmp_path / "ink.png"
        render_line("ink").save(image)
        api = f"http://127.0.0.1:{running.api_port}"
        answers = [
            httpx.post(f"{api}/v1/predict", files={"image": image.read_bytes()}, timeout=60)
            for _ in range(5)
        ]
        assert all(answer.status_code == 200 for answer in answers)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 143
    finally:
        if process.poll() is None:
            process.kill()
    with sqlite3.connect(store) as db:
        projected = {
            row[0]
            for row in db.execute(
                "SELECT DISTINCT p.request_id FROM predictions p "
                "JOIN projections j ON j.prediction_id = p.id"
            )
        }
    assert {answer.json()["request_id"] for answer in answers} <= projected
