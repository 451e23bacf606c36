"""``quill bench serve``: the bounded load test against a real server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image

from quill.bench.serve_load import CpuShare, check_loopback, run_load, with_unique_chunk
from quill.serving.runner import ApiServer
from quill.serving.settings import ServingSettings
from quill.staging.parity import render_line


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(smoke_model: Path) -> Iterator[ApiServer]:
    # a cache larger than any 2-second run, so each distinct image stays in it (the default of
    # 256 answers is fewer than a fast machine sends)
    settings = ServingSettings(
        model_dir=smoke_model, threads=1, monitoring_url="off", cache_size=100_000
    )
    with ApiServer(settings) as api:
        yield api


def test_a_short_load_run_reports_throughput_and_percentiles(server: ApiServer) -> None:
    report = run_load(server.url, png(render_line("quill")), concurrency=2, duration_s=2)
    assert report.ok > 0 and report.errors == 0
    assert report.requests_per_s > 0
    latency = report.latency_ms
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    # every request carried a distinct image, so each one was recognised, none cached
    assert len(server.service.cache) >= report.ok
    # The server runs in this process here: its work is the load generator's, and no server
    # process is known to the report.
    assert report.cpu["load_generator_cores"] > 0
    assert report.cpu["machine_busy_cores"] >= 0
    assert report.cpu["server_cores"] is None and report.cpu["server_cpu_ms_per_request"] is None


def test_a_batch_load_run_counts_images_as_well_as_requests(server: ApiServer) -> None:
    before = len(server.service.cache)
    report = run_load(server.url, png(render_line("Kew")), concurrency=2, duration_s=2, batch=3)
    assert report.ok > 0 and report.errors == 0 and report.batch == 3
    assert report.images_per_s == pytest.approx(3 * report.requests_per_s, rel=0.02)
    # three distinct images a request, each recognised
    assert len(server.service.cache) - before >= 3 * report.ok


def test_cpu_share_counts_every_process_of_the_server_tree() -> None:
    """A server whose root process only waits and whose child does the work (as uvicorn's
    supervisor and its workers): the child's CPU is the server's, not the generator's."""
    import subprocess
    import sys
    import time

    import psutil

    busy = f"{sys.executable} -c 'while True: pass'"
    root = subprocess.Popen(["/bin/sh", "-c", f"{busy} & wait"])
    try:
        share = CpuShare(root.pid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until the child has run a little, however busy
            children = psutil.Process(root.pid).children(recursive=True)
            if children and sum(children[0].cpu_times()[:2]) > 0.2:
                break
            time.sleep(0.05)
        cpu = share.cores(requests=10)
    finally:
        for child in psutil.Process(root.pid).children(recursive=True):
            child.kill()
        root.kill()
        root.wait()
    assert cpu["server_cores"] is not None and cpu["server_cores"] > 0
    assert cpu["server_cpu_ms_per_request"] is not None and cpu["server_cpu_ms_per_request"] > 0
    assert cpu["other_cores"] is not None


def test_unique_chunks_change_the_hash_but_not_the_pixels() -> None:
    original = png(render_line("ink"))
    a, b = with_unique_chunk(original, 1), with_unique_chunk(original, 2)
    assert len({hashlib.sha256(x).digest() for x in (original, a, b)}) == 3
    assert np.array_equal(
        np.asarray(Image.open(io.BytesIO(a))), np.asarray(Image.open(io.BytesIO(original)))
    )


def test_only_loopback_targets_are_accepted() -> None:
    assert check_loopback("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    with pytest.raises(typer.BadParameter, match="loopback"):
        check_loopback("http://192.0.2.10:8000")


@pytest.mark.slow
def test_bench_serve_starts_quill_serve_with_two_workers(smoke_model: Path, tmp_path: Path) -> None:
    """The CLI end to end: `quill serve --workers 2` in a subprocess, loaded for 2 s."""
    import json

    from typer.testing import CliRunner

    from quill.cli import app

    out = tmp_path / "load.json"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "serve",
            "--model",
            str(smoke_model),
            "--workers",
            "2",
            "--concurrency",
            "2",
            "--duration",
            "2",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    [report] = json.loads(out.read_text())
    assert report["workers"] == 2 and report["ok"] > 0 and report["errors"] == 0
    assert report["cpu"]["server_cores"] > 0 and report["cpu"]["server_cpu_ms_per_request"] > 0
    assert "req/s" in result.output and "server ms/req" in result.output


@pytest.mark.slow
def test_bench_serve_measures_the_server_with_monitoring_on(
    smoke_model: Path, tmp_path: Path
) -> None:
    """`--monitoring on`: the server logs every request to a store in a temporary folder (gone
    afterwards; what it holds: the next test), and the run is reported with its setting
    (`off`, the default, is the two-worker test's)."""
    import json

    from typer.testing import CliRunner

    from quill.cli import app

    out = tmp_path / "load.json"
    args = ["bench", "serve", "--model", str(smoke_model), "--concurrency", "2", "--duration"]
    result = CliRunner().invoke(app, [*args, "1.5", "--monitoring", "on", "--json", str(out)])
    assert result.exit_code == 0, result.output
    [report] = json.loads(out.read_text())
    assert report["monitoring"] is True and report["ok"] > 0 and report["errors"] == 0
    assert report["cpu"]["server_cpu_ms_per_request"] > 0
    assert "store" in result.output
    refused = CliRunner().invoke(app, [*args, "1", "--monitoring", "maybe"])
    assert refused.exit_code == 2 and "expected 'off', 'on' or 'off,on'" in refused.output


@pytest.mark.slow
def test_a_server_started_with_a_store_logs_the_load_as_the_bench_s(
    smoke_model: Path, tmp_path: Path
) -> None:
    """What `--monitoring on` starts: every answered request is a row of the store, under the
    load-test client (left out of drift), with its projections and its image."""
    import sqlite3

    from quill.bench.serve_load import _image_png, run_load, start_server
    from quill.monitoring.records import LOAD_TEST_CLIENT

    process, url = start_server(smoke_model, 1, 1, tmp_path)
    try:
        report = run_load(url, _image_png(None), 2, 1.0)
    finally:
        process.terminate()
        process.wait(timeout=60)
    with sqlite3.connect(tmp_path / "monitoring.db") as db:
        rows = db.execute("SELECT client, COUNT(*) FROM predictions GROUP BY client").fetchall()
        projected = db.execute("SELECT COUNT(DISTINCT prediction_id) FROM projections").fetchone()
    assert report.ok > 0 and rows == [(LOAD_TEST_CLIENT, report.ok)]
    assert projected == (report.ok,)  # written by the time the server stopped
    assert any((tmp_path / "images").rglob("*.png"))
