"""`quill ui`: the MLflow UI serves the run store on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from quill.cli import app
from quill.ports import free_port

QUILL = str(Path(sys.executable).with_name("quill"))


@pytest.mark.slow
def test_ui_serves_the_store_on_localhost(tmp_path: Path, tracking_uri: str) -> None:
    uri = tracking_uri
    MlflowClient(uri).create_experiment("seen-in-ui")
    port = free_port()
    server = subprocess.Popen(
        [QUILL, "ui", "--port", str(port), "--tracking-uri", uri],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert server.poll() is None, server.stdout.read()
            try:
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(1)
        else:
            pytest.fail("the MLflow UI did not answer within 240 s")
        found = httpx.post(
            f"{base}/ajax-api/2.0/mlflow/experiments/search", json={"max_results": 10}, timeout=30
        ).json()
        assert "seen-in-ui" in {e["name"] for e in found["experiments"]}
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the workers it started
        server.wait(timeout=60)


def test_a_port_in_use_is_refused_before_mlflow_starts(tmp_path: Path) -> None:
    """Was: "MLflow UI ... on http://127.0.0.1:PORT", then MLflow's "Address already in use",
    and exit 0."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        result = subprocess.run(
            [QUILL, "ui", "--port", str(port), "--tracking-uri", uri],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "MLflow UI" not in result.stdout


def test_a_store_that_is_a_folder_is_one_line_before_mlflow_starts(tmp_path: Path) -> None:
    """An sqlite:/// URI naming a folder spent two minutes in MLflow's retries, then a
    traceback; now one line saying what to give, and nothing is created."""
    result = CliRunner().invoke(
        app, ["ui", "--port", str(free_port()), "--tracking-uri", f"sqlite:///{tmp_path}"]
    )
    assert result.exit_code == 2, result.output
    assert result.output == (
        f"error: {tmp_path} is a folder, not an SQLite database file: give "
        f"sqlite:///{tmp_path / 'mlflow.db'} to keep the store in it\n"
    )
    assert list(tmp_path.iterdir()) == []
