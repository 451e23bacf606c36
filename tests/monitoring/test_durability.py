"""Acknowledged means stored: a prediction answered 200 is in the monitoring store, even when
the server is killed with SIGKILL right after answering (and, as before, on SIGTERM).

The real thing: ``quill serve`` in a subprocess with an SQLite store, a steady stream of
predictions from two clients, then the signal; the store is reopened afterwards.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from quill.bench.serve_load import with_unique_chunk
from quill.monitoring.store import MonitoringStore
from quill.ports import free_port
from quill.staging.parity import render_line

#: Answers to collect before the signal (the issue lost 8 of 210 to SIGKILL).
ANSWERS_BEFORE_SIGNAL = 120


def _png() -> bytes:
    buffer = io.BytesIO()
    render_line("quill").save(buffer, format="PNG")
    return buffer.getvalue()


def _start_server(model: Path, url: str, cwd: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "QUILL_MONITORING_URL": url, "PYTHONUNBUFFERED": "1"}
    env.pop("QUILL_MONITORING_DURABLE", None)  # the default is what is tested
    command = [sys.executable, "-c", "from quill.cli import main; main()", "serve"]
    command += ["--model", str(model), "--port", str(port), "--threads", "1"]
    command += ["--log-level", "warning"]
    process = subprocess.Popen(
        command,
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=open(cwd / "server.log", "w"),  # noqa: SIM115 - closed with the process
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, (cwd / "server.log").read_text()
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    raise TimeoutError("quill serve was not ready within 180 s")


def _stream_then_signal(base: str, process: subprocess.Popen, sig: int) -> tuple[set[str], int]:
    """Two clients post distinct images until the signal has been sent and the server is
    gone; returns the request ids answered 200 and the number of requests sent."""
    png = _png()
    answered: set[str] = set()
    sent = 0
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        nonlocal sent
        with httpx.Client(base_url=base, timeout=30) as http:
            while not stop.is_set():
                with lock:
                    sent += 1
                    body = with_unique_chunk(png, sent)
                try:
                    response = http.post("/v1/predict", files={"image": ("l.png", body)})
                except httpx.HTTPError:
                    time.sleep(0.01)  # the server is gone (or going)
                    continue
                if response.status_code == 200:
                    with lock:
                        answered.add(response.json()["request_id"])

    threads = [threading.Thread(target=client) for _ in range(2)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 240
    while len(answered) < ANSWERS_BEFORE_SIGNAL and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, sig)  # mid-stream: requests are in flight
    process.wait(timeout=60)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    return answered, sent


def _stored_ids(url: str, images: Path) -> set[str]:
    store = MonitoringStore(url, image_dir=images)
    try:
        return {p.request_id for p in store.predictions()}
    finally:
        store.close()


@pytest.mark.slow
def test_sigkill_loses_no_answered_prediction(smoke_model: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'monitoring.db'}"
    process, base = _start_server(smoke_model, url, tmp_path)
    answered, sent = _stream_then_signal(base, process, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    assert len(answered) >= ANSWERS_BEFORE_SIGNAL
    stored = _stored_ids(url, tmp_path / "images")
    lost = answered - stored
    print(f"SIGKILL: {len(answered)} answered 200 ({sent} attempts); {len(lost)} not stored")
    assert not lost, f"{len(lost)} of {len(answered)} answered predictions were lost"


@pytest.mark.slow
def test_sigterm_loses_nothing_and_projects_everything(smoke_model: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'monitoring.db'}"
    process, base = _start_server(smoke_model, url, tmp_path)
    answered, _ = _stream_then_signal(base, process, signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal: -15 is a clean exit here
    assert process.returncode in (0, -signal.SIGTERM), (tmp_path / "server.log").read_text()
    # the signal came mid-stream, after this many answers (none answered passes every check)
    assert len(answered) >= ANSWERS_BEFORE_SIGNAL, (tmp_path / "server.log").read_text()
    store = MonitoringStore(url, image_dir=tmp_path / "images")
    try:
        stored = {p.request_id: p for p in store.predictions()}
        assert answered <= set(stored)
        # a clean shutdown also finishes the work done after the answer: images, projections
        for request_id in answered:
            prediction = stored[request_id]
            assert prediction.projections.get("length") is not None
            assert prediction.projections.get("mean_intensity") is not None
            assert store.image_bytes(prediction) is not None
    finally:
        store.close()


def test_a_request_waits_at_most_two_seconds_for_this_processs_other_writer(
    tmp_path: Path,
) -> None:
    """The logger's batch (or a feedback) waiting up to 30 s for another process's lock
    held this process's write mutex all that time, and the next prediction's commit waited
    behind it without a limit (14 s for one answer). It gives up after the request path's
    2 s and the prediction is queued instead."""
    import sqlite3

    from quill.monitoring.database import REQUEST_LOCK_TIMEOUT_S
    from quill.monitoring.errors import StoreBusy
    from quill.monitoring.records import PredictionRecord

    store = MonitoringStore(f"sqlite:///{tmp_path / 'm.db'}", image_dir=tmp_path / "images")
    store.commit_prediction(PredictionRecord("first", "api", "m-1", _png(), "ink", 0.9, 5.0))
    locker = sqlite3.connect(tmp_path / "m.db", timeout=30, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    batch = [PredictionRecord("queued", "api", "m-1", _png(), "Kew", 0.9, 5.0)]
    feedback = threading.Thread(target=store.write, args=(batch,))  # the logger's batch
    try:
        feedback.start()
        time.sleep(0.5)  # the batch now holds the mutex, waiting for the file's lock
        start = time.monotonic()
        with pytest.raises(StoreBusy):
            store.commit_prediction(
                PredictionRecord("second", "api", "m-1", _png(), "ink", 0.9, 5.0)
            )
        assert time.monotonic() - start < REQUEST_LOCK_TIMEOUT_S + 1.0
    finally:
        locker.execute("ROLLBACK")
        locker.close()
        feedback.join(timeout=60)
    assert store.get_prediction("queued") is not None  # the batch went in after the lock
    store.close()


def test_a_store_file_deleted_while_open_is_started_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`rm monitoring.db` under a running server: every later prediction and flag went into
    the deleted file through the connections still open to it, answered 200, and vanished
    with it. The next write starts a new file, and says so."""
    from quill.monitoring.records import PredictionRecord

    database = tmp_path / "m.db"
    store = MonitoringStore(f"sqlite:///{database}", image_dir=tmp_path / "images")
    store.commit_prediction(PredictionRecord("before", "api", "m-1", _png(), "ink", 0.9, 5.0))
    for path in tmp_path.glob("m.db*"):
        path.unlink()
    store.commit_prediction(PredictionRecord("after", "api", "m-1", _png(), "Kew", 0.9, 5.0))
    store.add_feedback("after", "incorrect", correction="Kew Gardens")
    store.write([PredictionRecord("batched", "api", "m-1", _png(), "ink", 0.9, 5.0)])
    assert database.is_file()
    reopened = MonitoringStore(f"sqlite:///{database}", image_dir=tmp_path / "images")
    assert [p.request_id for p in reopened.predictions()] == ["after", "batched"]
    assert reopened.get_prediction("after").correction == "Kew Gardens"
    assert "was deleted or replaced while open" in caplog.text
    store.close()
    reopened.close()
