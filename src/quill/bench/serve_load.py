"""``quill bench serve``: a bounded load test of the REST API on this machine.

Concurrent clients POST images to ``/v1/predict`` (or, with ``--batch N``, N images a request
to ``/v1/predict/batch``) for a fixed time and the report gives requests/s, images/s,
p50/p95/p99 latency and errors. Each request carries a distinct PNG (a unique
``tEXt`` chunk, same pixels), so the server's answer cache cannot flatter the numbers. Every
request says ``X-Quill-Client: bench``: the server stores it under client ``bench``, which
monitoring leaves out of drift and alerts (a load test is not a change in users' traffic). Only
loopback URLs are accepted: this is a measurement tool, not a load generator for other
people's servers. With ``--model`` it starts ``quill serve`` itself at each ``--workers``
count in turn, without monitoring or (``--monitoring on``) logging to a store in a temporary
folder as a server does by default: what monitoring costs is then a number.

Each run also says where the machine's CPU went while it lasted, in cores (CPU seconds per
second of wall time): the load generator's own (this process), the server's (every process
of the ``quill serve`` the bench started), and the rest of the machine's (other work on a
shared box). Throughput is the cores the server got divided by its CPU time per request, so
when workers are added and requests/s does not follow, these columns tell a server that
spends more per request from one that simply got no more CPU.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated
from urllib.parse import urlparse

import typer

from quill.errors import QuillError, check_output, fail
from quill.ports import free_port

if TYPE_CHECKING:
    import httpx

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MAX_CONCURRENCY = 64
MAX_DURATION_S = 300.0


@dataclass
class LoadReport:
    url: str
    concurrency: int
    duration_s: float
    requests: int
    ok: int
    errors: int
    errors_by_status: dict[str, int]
    requests_per_s: float
    latency_ms: dict[str, float]
    workers: int | None = None
    #: Whether the started server logged to a monitoring store (None: a server given by URL).
    monitoring: bool | None = None
    #: Images per request (1: ``/v1/predict``; more: ``/v1/predict/batch``).
    batch: int = 1
    #: Images answered per second (requests/s times the batch, counting only answered images).
    images_per_s: float = 0.0
    machine: dict[str, object] = field(default_factory=dict)
    #: Cores used during the run (see :class:`CpuShare`); server figures only when the bench
    #: started the server.
    cpu: dict[str, float | None] = field(default_factory=dict)


@dataclass
class CpuShare:
    """CPU seconds used over a run's wall time, by whom: the load generator (this process),
    the server's processes, and the whole machine (all cores, from the kernel's counters).
    ``server_pid`` is the root of the server's process tree (None: a server the bench did not
    start, whose processes it does not know)."""

    server_pid: int | None = None
    _start: dict[str, float] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._start = self._read()

    def _read(self) -> dict[str, float]:
        import psutil  # lazy: only a load run needs it (a dependency of the bench extras)

        busy = psutil.cpu_times()
        idle = busy.idle + getattr(busy, "iowait", 0.0)
        totals = {
            "generator": sum(psutil.Process().cpu_times()[:2]),
            "machine": sum(busy) - idle,
            "wall": time.perf_counter(),
        }
        if self.server_pid is not None:
            try:
                root = psutil.Process(self.server_pid)
                processes = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                processes = []
            server = 0.0
            for process in processes:
                try:
                    server += sum(process.cpu_times()[:2])
                except psutil.NoSuchProcess:
                    continue
            totals["server"] = server
        return totals

    def cores(self, requests: int) -> dict[str, float | None]:
        """Cores used since this object was made, and the server's CPU ms per answered
        request; ``others`` is the machine's busy cores less the generator's and the
        server's (None where the server's are not known)."""
        end = self._read()
        wall = end["wall"] - self._start["wall"]
        used = {key: (end[key] - self._start[key]) / wall for key in end if key != "wall"}
        server = used.get("server")
        return {
            "load_generator_cores": round(used["generator"], 2),
            "server_cores": None if server is None else round(server, 2),
            "machine_busy_cores": round(used["machine"], 2),
            "other_cores": None
            if server is None
            else round(used["machine"] - used["generator"] - server, 2),
            "server_cpu_ms_per_request": None
            if server is None or not requests
            else round(server * wall * 1000 / requests, 2),
        }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (0 for no values).

    >>> percentile([1, 2, 3, 4], 50), percentile([1, 2, 3, 4], 99), percentile([], 50)
    (2, 4, 0.0)
    """
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def with_unique_chunk(png: bytes, counter: int) -> bytes:
    """``png`` with a ``tEXt`` chunk holding ``counter`` before IEND: same pixels, new hash."""
    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("the load-test image must be a PNG")
    data = b"quill-load\x00" + str(counter).encode()
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data
    chunk += struct.pack(">I", zlib.crc32(b"tEXt" + data) & 0xFFFFFFFF)
    end = png.rindex(b"IEND") - 4  # the IEND chunk starts with its 4-byte length
    return png[:end] + chunk + png[end:]


def check_loopback(url: str) -> str:
    host = urlparse(url).hostname or ""
    if host not in LOOPBACK:
        raise typer.BadParameter(f"{url}: only loopback addresses ({', '.join(sorted(LOOPBACK))})")
    return url.rstrip("/")


def _request(png: bytes, first: int, batch: int) -> tuple[str, dict[str, object]]:
    """(path, JSON body) of one request carrying ``batch`` distinct copies of ``png``."""
    copies = [base64.b64encode(with_unique_chunk(png, first + i)).decode() for i in range(batch)]
    if batch == 1:
        return "/v1/predict", {"image": copies[0]}
    return "/v1/predict/batch", {"images": copies}


def _answered(response: httpx.Response, batch: int) -> int:
    """Images a 200 answer answered (a batch may refuse some of its images one by one)."""
    if batch == 1:
        return 1
    results = response.json()["results"]
    return sum(result.get("prediction") is not None for result in results)


async def _load(
    url: str, png: bytes, concurrency: int, duration_s: float, timeout_s: float, batch: int = 1
) -> tuple[list[float], dict[str, int], int, float, int]:
    """Every request goes on a new connection (no keep-alive). Worker processes share the
    listening socket, and a connection stays with the worker that accepted it: kept alive,
    all the clients' connections stayed with the first worker ready, and `--workers 2` was
    one worker at 0.77 cores beside one at 0.00 (measured with :class:`CpuShare`)."""
    import httpx

    from quill.monitoring.records import LOAD_TEST_CLIENT
    from quill.serving.service import CLIENT_HEADER

    latencies: list[float] = []
    errors: dict[str, int] = {}
    counter = images = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)
    headers = {CLIENT_HEADER: LOAD_TEST_CLIENT}
    if os.environ.get("QUILL_API_KEY"):  # the server's key, when it has one
        headers["X-API-Key"] = os.environ["QUILL_API_KEY"]
    async with httpx.AsyncClient(
        base_url=url, timeout=timeout_s, limits=limits, headers=headers
    ) as client:
        start = time.perf_counter()
        deadline = start + duration_s

        async def worker() -> None:
            nonlocal counter, images
            while time.perf_counter() < deadline:
                counter += 1
                path, body = _request(png, counter * batch, batch)
                sent = time.perf_counter()
                try:
                    response = await client.post(path, json=body)
                    status = str(response.status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                if status == "200":
                    latencies.append((time.perf_counter() - sent) * 1000)
                    images += _answered(response, batch)
                else:
                    errors[status] = errors.get(status, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return latencies, errors, counter, elapsed, images


def run_load(
    url: str,
    png: bytes,
    concurrency: int,
    duration_s: float,
    timeout_s: float = 60.0,
    server_pid: int | None = None,
    batch: int = 1,
) -> LoadReport:
    """Load ``url`` with ``concurrency`` clients for ``duration_s`` seconds, ``batch`` images
    a request; ``server_pid`` (the server's root process, when known) adds the server's CPU
    to the report."""
    url = check_loopback(url)
    concurrency = max(1, min(concurrency, MAX_CONCURRENCY))
    duration_s = max(0.5, min(duration_s, MAX_DURATION_S))
    share = CpuShare(server_pid)
    latencies, errors, sent, elapsed, images = asyncio.run(
        _load(url, png, concurrency, duration_s, timeout_s, batch)
    )
    cpu = share.cores(len(latencies))
    return LoadReport(
        url=url,
        concurrency=concurrency,
        duration_s=round(elapsed, 2),
        requests=sent,
        ok=len(latencies),
        errors=sum(errors.values()),
        errors_by_status=errors,
        requests_per_s=round(len(latencies) / elapsed, 2),
        batch=batch,
        images_per_s=round(images / elapsed, 2),
        latency_ms={f"p{q}": round(percentile(latencies, q), 1) for q in (50, 95, 99)}
        | {"max": round(max(latencies, default=0.0), 1)},
        machine={"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)},
        cpu=cpu,
    )


#: ``/readyz`` answers in a row (each on a new connection, so from whichever worker takes
#: it) per worker before a started server counts as ready: one worker's answer says nothing
#: of the others, which may still be loading the model.
READY_STREAK_PER_WORKER = 5
#: Seconds a started server has to load its model in every worker.
STARTUP_TIMEOUT_S = 180.0


class ServiceUnavailable(QuillError, RuntimeError):
    """The API to load cannot be reached or is not ready, or the ``quill serve`` the bench
    started exited or cannot load its model: there is nothing to measure."""

    code = "service_unavailable"


def readiness(url: str) -> tuple[bool, str]:
    """Whether ``url``'s ``/readyz`` says the model is loaded, and if not, why: the server's
    own message (503: still loading, or the reason it could not load) or the connection's
    error."""
    import httpx

    try:
        response = httpx.get(f"{url}/readyz", timeout=2)
    except httpx.HTTPError as exc:
        return False, f"nothing answers there ({exc or type(exc).__name__})"
    if response.status_code == 200:
        return True, ""
    try:
        return False, str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):  # not Quill's error body
        return False, f"/readyz answers {response.status_code}: {response.text.strip()}"


def require_ready(url: str) -> None:
    """Refuse, before the load, an API that is not there or not ready: every request would
    be an error, and the report would measure nothing."""
    ready, why = readiness(url)
    if not ready:
        raise ServiceUnavailable(f"--url {url}: {why}")


def _error_line(log: bytes, returncode: int) -> str:
    """Why a server exited: its own ``error: ...`` line (how ``quill serve`` refuses its
    options and model before it starts), else its last line of output."""
    lines = [line.strip() for line in log.decode(errors="replace").splitlines() if line.strip()]
    errors = [line.removeprefix("error:").strip() for line in lines if line.startswith("error:")]
    if errors:
        return errors[-1]
    return f"exited with code {returncode}" + (f": {lines[-1]}" if lines else "")


def start_server(
    model: Path, workers: int, threads: int, store: Path | None = None
) -> tuple[subprocess.Popen, str]:
    """``quill serve`` in a subprocess on a free loopback port, returned once every worker is
    ready (:func:`wait_until_ready`); :class:`ServiceUnavailable`, the server stopped, if it
    never will be. ``store``: a folder for its monitoring store (a SQLite database and the
    images, as ``quill serve`` keeps them by default), None for none."""
    port = free_port()
    monitoring = "off" if store is None else f"sqlite:///{store / 'monitoring.db'}"
    env = {**os.environ, "QUILL_MONITORING_URL": monitoring}
    command = [
        sys.executable,
        "-c",
        "from quill.cli import main; main()",
        "serve",
        "--model",
        str(model),
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--log-level",
        "warning",
    ]
    url = f"http://127.0.0.1:{port}"
    # The server's output goes to a file, read only if it exits: its error line is the reason.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
        why = wait_until_ready(process, url, workers, log)
    if why is None:
        return process, url
    process.terminate()
    process.wait(timeout=60)
    raise ServiceUnavailable(f"quill serve --model {model}: {why}")


def wait_until_ready(
    process: subprocess.Popen, url: str, workers: int, log: IO[bytes]
) -> str | None:
    """None once :data:`READY_STREAK_PER_WORKER` answers per worker say ready; else why not.

    Stops at once when ``process`` (the server, its stderr going to ``log``) exits, with its
    error line, or when a worker reports that the model could not be loaded (it would answer
    503 for as long as it runs), with the server's message; after
    :data:`STARTUP_TIMEOUT_S` otherwise.
    """
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    streak = 0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            return _error_line(log.read(), process.returncode)
        ready, why = readiness(url)
        if "could not be loaded" in why:
            return why
        streak = streak + 1 if ready else 0
        if streak >= READY_STREAK_PER_WORKER * workers:
            return None
        time.sleep(0.05 if ready else 0.5)
    return f"not ready within {STARTUP_TIMEOUT_S:.0f} s"


def _image_png(image: Path | None) -> bytes:
    import io

    from PIL import Image

    from quill.staging.parity import render_line

    picture = (
        Image.open(image).convert("RGB")
        if image
        else render_line("the quick brown fox jumps over the lazy dog")
    )
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _counts(values: str, option: str) -> list[int]:
    """A comma-separated list of positive counts, e.g. ``--workers 1,2``.

    >>> _counts("1, 8", "--batch")
    [1, 8]
    """
    try:
        counts = [int(value) for value in values.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise typer.BadParameter(
            f"expected counts such as '1,2', got {values!r}", param_hint=option
        )
    return counts


#: What ``--monitoring`` takes.
SWITCHES = {"off": False, "on": True}


def _switches(values: str, option: str) -> list[bool]:
    """A comma-separated list of off/on, e.g. ``--monitoring off,on``.

    >>> _switches("off, on", "--monitoring")
    [False, True]
    """
    names = [value.strip() for value in values.split(",")]
    if not names or any(name not in SWITCHES for name in names):
        raise typer.BadParameter(
            f"expected 'off', 'on' or 'off,on', got {values!r}", param_hint=option
        )
    return [SWITCHES[name] for name in names]


def _switch_name(value: bool | None) -> str:
    return "-" if value is None else "on" if value else "off"


def serve_command(
    url: Annotated[
        str | None, typer.Option(help="A running API on loopback, e.g. http://127.0.0.1:8000.")
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="Start `quill serve` with this staged model instead.")
    ] = None,
    workers: Annotated[
        str, typer.Option(help="With --model: worker counts to test, e.g. '1,2'.")
    ] = "1",
    threads: Annotated[
        int, typer.Option(min=1, help="With --model: intra-op threads per worker.")
    ] = 1,
    concurrency: Annotated[
        int, typer.Option(min=1, help=f"Concurrent clients (at most {MAX_CONCURRENCY}).")
    ] = 4,
    duration: Annotated[
        float, typer.Option(help=f"Seconds per run (at most {MAX_DURATION_S:g}).")
    ] = 10.0,
    image: Annotated[
        Path | None, typer.Option(help="Image to send (default: a rendered sentence).")
    ] = None,
    batch: Annotated[
        str,
        typer.Option(
            help="Images per request to test, e.g. '1,8': 1 posts /v1/predict, more post "
            "/v1/predict/batch (distinct copies of the image, as one request)."
        ),
    ] = "1",
    monitoring: Annotated[
        str,
        typer.Option(
            help="With --model: the started server's monitoring, e.g. 'off,on': off answers "
            "alone; on logs every request to a store in a temporary folder, as `quill serve` "
            "and `make up` do by default (the row committed before the answer, the image kept, "
            "the projections written behind), its requests marked as a load test."
        ),
    ] = "off",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the reports as JSON here.")
    ] = None,
) -> None:
    """Load-test the REST API on this machine: requests/s, p50/p95/p99 latency, errors."""
    from rich.console import Console
    from rich.table import Table

    if (url is None) == (model is None):
        raise typer.BadParameter("give exactly one of --url or --model")
    if json_out:
        check_output(json_out, folder=False, option="--json")
    png = _image_png(image)
    sizes = _counts(batch, "--batch")
    stores = _switches(monitoring, "--monitoring")
    reports = []
    try:
        if url:
            require_ready(check_loopback(url))
            reports += [run_load(url, png, concurrency, duration, batch=size) for size in sizes]
        else:
            assert model is not None  # exactly one of --url and --model, checked above
            for count in _counts(workers, "--workers"):
                for logged in stores:
                    store_folder = (
                        tempfile.TemporaryDirectory(prefix="quill-bench-store-")
                        if logged
                        else nullcontext()
                    )
                    with store_folder as folder:
                        store = None if folder is None else Path(folder)
                        process, started = start_server(model, count, threads, store)
                        try:
                            for size in sizes:
                                report = run_load(
                                    started, png, concurrency, duration,
                                    server_pid=process.pid, batch=size,
                                )  # fmt: skip
                                report.workers, report.monitoring = count, logged
                                reports.append(report)
                        finally:
                            process.terminate()
                            process.wait(timeout=60)
    except ServiceUnavailable as exc:
        raise fail(str(exc)) from exc
    table = Table(title=f"quill bench serve ({concurrency} clients, {duration:g} s)")
    columns = ("workers", "store", "batch", "req/s", "images/s", "p50 ms", "p95 ms")
    for column in (*columns, "p99 ms", "ok", "errors"):  # the JSON has the max too
        table.add_column(column, justify="right")
    for r in reports:
        table.add_row(
            str(r.workers or "-"),
            _switch_name(r.monitoring),
            str(r.batch),
            f"{r.requests_per_s:.1f}",
            f"{r.images_per_s:.1f}",
            *(f"{r.latency_ms[k]:.0f}" for k in ("p50", "p95", "p99")),
            str(r.ok),
            str(r.errors),
        )
    cpu = Table(title=f"CPU during each run, in cores (of {os.cpu_count()})")
    for column in ("workers", "store", "batch", "req/s", "load gen.", "server", "others"):
        cpu.add_column(column, justify="right")
    cpu.add_column("server ms/req", justify="right")
    for r in reports:
        cells = [r.cpu.get(k) for k in ("load_generator_cores", "server_cores", "other_cores")]
        cells.append(r.cpu.get("server_cpu_ms_per_request"))
        cpu.add_row(
            str(r.workers or "-"),
            _switch_name(r.monitoring),
            str(r.batch),
            f"{r.requests_per_s:.1f}",
            *("—" if value is None else f"{value:.2f}" for value in cells),
        )
    Console().print(table, cpu)
    if json_out:
        json_out.write_text(json.dumps([asdict(r) for r in reports], indent=2) + "\n")
