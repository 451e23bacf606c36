"""``quill bench serve`` with no server it can load: one ``error:`` line and exit 2, at once.

It used to poll ``/readyz`` for 180 s and then raise a traceback when its own ``quill serve``
could not load the model, and to report thousands of connection errors with exit 0 for a
``--url`` where nothing listens.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from typer.testing import CliRunner

from quill.bench.serve_load import wait_until_ready
from quill.cli import app
from quill.errors import EXIT_ERROR
from quill.serving.runner import ApiServer
from quill.serving.settings import ServingSettings
from quill.staged_model import ModelLoadError

runner = CliRunner()


def _bench(*args: str) -> tuple[int, str, float]:
    """Exit status, output and seconds of ``quill bench serve ARGS`` (one short run)."""
    start = time.monotonic()
    result = runner.invoke(app, ["bench", "serve", "--duration", "1", *args])
    return result.exit_code, result.output, time.monotonic() - start


def test_a_server_that_exits_at_start_stops_the_bench_with_its_error(tmp_path: Path) -> None:
    code, output, seconds = _bench("--model", str(tmp_path))
    assert code == EXIT_ERROR, output
    assert f"error: quill serve --model {tmp_path}: no staged model at {tmp_path}" in output
    assert "Traceback" not in output and seconds < 60


def test_a_model_the_server_cannot_load_stops_the_bench_with_the_reason(
    smoke_model: Path, tmp_path: Path
) -> None:
    """Truncated graphs (both runtimes', so `--backend auto` has none to fall back on): the
    server's workers fail to load them, and its /readyz answers 503 saying why (or, where
    `quill serve` checks the files first, the server exits saying why)."""
    broken = tmp_path / "broken"
    shutil.copytree(smoke_model, broken)
    for graph in (broken / "model.onnx", broken / "model.pt"):
        graph.write_bytes(graph.read_bytes()[:3000])
    code, output, seconds = _bench("--model", str(broken))
    assert code == EXIT_ERROR, output
    assert f"error: quill serve --model {broken}:" in output and "model." in output
    assert "Traceback" not in output and seconds < 60


def _cannot_load(settings: ServingSettings) -> object:
    """A worker's model load failing as a truncated file makes it fail."""
    raise ModelLoadError(f"{settings.model_dir / 'lm.json'} is truncated")


def test_a_worker_that_reports_the_model_unloadable_ends_the_wait_with_its_message(
    tmp_path: Path,
) -> None:
    """A server that stays up but answers 503 "could not be loaded" (what `quill serve` did
    for a model it opened at start but its workers could not load) used to be polled for
    180 s, then a TimeoutError. The server is Quill's API whose model load fails."""
    server = ApiServer(
        ServingSettings(model_dir=tmp_path, monitoring_url="off"), loader=_cannot_load
    )
    server.thread.start()  # not start(): that waits for a model that never loads
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        for _ in range(300):
            if server.server.started:
                break
            time.sleep(0.1)
        with tempfile.TemporaryFile() as log:
            start = time.monotonic()
            why = wait_until_ready(alive, server.url, 2, log)
        assert why == f"the model could not be loaded: {tmp_path / 'lm.json'} is truncated"
        assert time.monotonic() - start < 10
    finally:
        alive.kill()
        alive.wait()
        server.stop()


def test_a_url_where_nothing_listens_is_an_error_not_a_report_of_errors(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago, closed again
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    report = tmp_path / "load.json"
    code, output, _ = _bench("--url", url, "--json", str(report))
    assert code == EXIT_ERROR, output
    assert f"error: --url {url}: nothing answers there" in output
    assert "errors" not in output and not report.exists()


def test_a_json_report_path_that_cannot_be_written_is_refused_first(tmp_path: Path) -> None:
    code, output, _ = _bench("--model", str(tmp_path), "--json", str(tmp_path))
    assert code == EXIT_ERROR, output
    assert f"error: --json {tmp_path}: is a folder; give a file name" in output
