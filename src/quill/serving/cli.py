"""``quill serve`` (REST API), ``quill app`` (web app) and ``quill up`` (both, on localhost)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from quill.errors import EXIT_TERMINATED, fail, sigterm_as_ctrl_c
from quill.inference import DEFAULT_MODEL_DIR
from quill.model_files import METADATA_FILE
from quill.ports import listen_problem

if TYPE_CHECKING:
    from quill.serving.settings import ServingSettings

MODEL_HELP = "Staged model directory (quill-model.json, model.onnx, model.pt)."
HOST_HELP = "Interface to bind; the default keeps it on this machine."
THREADS_HELP = "Intra-op threads per worker (0: all cores; use 1 per worker on busy machines)."
SEGMENTER_HELP = (
    "How a page is cut into lines: trace (follows the ink) or learned (the line detector in "
    "models/line_detector); docs/models.md measures both."
)
SegmenterOption = Annotated[
    str, typer.Option(envvar="QUILL_SEGMENTER", help=SEGMENTER_HELP, show_default=True)
]
OPEN_HELP = (
    "Serve on a non-loopback --host without an API key (only behind a proxy that "
    "authenticates callers). Without it, such a --host needs QUILL_API_KEY."
)
STORE_HELP = (
    "Monitoring store URL for predictions and flags ('off' disables) "
    "(default: $QUILL_MONITORING_URL or monitoring/monitoring.db)."
)


def serve(
    model: Annotated[
        Path, typer.Option("--model", "-m", envvar="QUILL_MODEL_DIR", help=MODEL_HELP)
    ] = DEFAULT_MODEL_DIR,
    host: Annotated[str, typer.Option(help=HOST_HELP)] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes, each with its own copy of the model.")
    ] = 1,
    backend: Annotated[
        str,
        typer.Option(
            envvar="QUILL_BACKEND",
            help="auto (fastest measured), onnx, onnx-int8, torchscript, eager.",
        ),
    ] = "auto",
    threads: Annotated[int, typer.Option(envvar="QUILL_THREADS", min=0, help=THREADS_HELP)] = 0,
    segmenter: SegmenterOption = "trace",
    monitoring_url: Annotated[
        str | None, typer.Option(envvar="QUILL_MONITORING_URL", help=STORE_HELP)
    ] = None,
    shadow: Annotated[
        Path | None,
        typer.Option(
            "--shadow",
            envvar="QUILL_SHADOW_MODEL_DIR",
            metavar="MODEL_DIR",
            help="Shadow mode: a candidate staged model that reads every request too; callers get "
            "only --model's answer, the candidate's answer and disagreement go to the monitoring "
            "store (see the shadow section of `quill monitor report`).",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    allow_open: Annotated[
        bool, typer.Option("--allow-open", envvar="QUILL_ALLOW_OPEN", help=OPEN_HELP)
    ] = False,
) -> None:
    """Serve a staged model as a REST API (FastAPI + uvicorn): POST /v1/predict, /docs.

    Set QUILL_API_KEY to require an X-API-Key header on /v1/* and /metrics."""
    import os
    import secrets
    from dataclasses import replace

    import uvicorn

    from quill.serving.runner import uvicorn_options

    settings = _settings(
        model_dir=model,
        backend=backend,
        threads=threads,
        segmenter=segmenter,
        monitoring_url=monitoring_url,
        shadow_model_dir=shadow,
        allow_open=allow_open or None,
    )
    _refuse_open(settings, host)
    _require_model(model, settings.backend)
    if shadow is not None:
        _require_model(shadow)
    if shadow is not None and not settings.monitoring_enabled:
        raise typer.BadParameter("--shadow needs the monitoring store; drop --monitoring-url off")
    _require_store(settings)
    _require_free_address(host, {"--port": port})
    if settings.feedback_secret is None:  # one key for all workers: any of them checks a token
        settings = replace(settings, feedback_secret=secrets.token_urlsafe(32))
    # Workers are separate processes that build the app from the environment.
    os.environ.update(settings.to_env())
    key = "API key required" if settings.api_key else "no API key"
    typer.echo(
        f"Quill API: http://{host}:{port}  (docs: http://{host}:{port}/docs; {key}); the model "
        f"loads in the background, and http://{host}:{port}/readyz answers 200 once it is in",
        err=True,
    )
    uvicorn.run(
        "quill.serving.api:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        **uvicorn_options(settings),
    )


def app(
    backend: Annotated[
        str,
        typer.Option(
            envvar="QUILL_APP_BACKEND",
            help="'local' loads the model here; a URL (http://host:port) calls that API.",
        ),
    ] = "local",
    model: Annotated[
        Path, typer.Option("--model", "-m", envvar="QUILL_MODEL_DIR", help=MODEL_HELP)
    ] = DEFAULT_MODEL_DIR,
    host: Annotated[str, typer.Option(help=HOST_HELP)] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 7860,
    threads: Annotated[int, typer.Option(envvar="QUILL_THREADS", min=0, help=THREADS_HELP)] = 0,
    segmenter: SegmenterOption = "trace",
    monitoring_url: Annotated[
        str | None, typer.Option(envvar="QUILL_MONITORING_URL", help=STORE_HELP)
    ] = None,
) -> None:
    """The web app (Gradio): upload, webcam or paste an image, read the text, flag it."""
    from quill.serving.app import launch, make_backend

    if backend == "local":
        _require_model(model)
    elif not backend.startswith(("http://", "https://")):
        raise typer.BadParameter(f"{backend!r} is neither 'local' nor an http(s) URL")
    settings = _settings(
        model_dir=model, threads=threads, segmenter=segmenter, monitoring_url=monitoring_url
    )
    if backend == "local":
        _require_store(settings)
    _require_free_address(host, {"--port": port})
    with sigterm_as_ctrl_c() as terminated:  # Gradio's block_thread stops on either
        launch(make_backend(backend, settings), host=host, port=port)
    if terminated:
        raise typer.Exit(EXIT_TERMINATED)


def up(
    model: Annotated[
        Path, typer.Option("--model", "-m", envvar="QUILL_MODEL_DIR", help=MODEL_HELP)
    ] = DEFAULT_MODEL_DIR,
    host: Annotated[str, typer.Option(help=HOST_HELP)] = "127.0.0.1",
    api_port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the REST API.")] = 8000,
    app_port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the web app.")] = 7860,
    threads: Annotated[int, typer.Option(envvar="QUILL_THREADS", min=0, help=THREADS_HELP)] = 0,
    segmenter: SegmenterOption = "trace",
    monitoring_url: Annotated[
        str | None, typer.Option(envvar="QUILL_MONITORING_URL", help=STORE_HELP)
    ] = None,
    allow_open: Annotated[
        bool, typer.Option("--allow-open", envvar="QUILL_ALLOW_OPEN", help=OPEN_HELP)
    ] = False,
) -> None:
    """Start the REST API and the web app together (the app calls the API) and print both URLs."""
    from quill.serving.app import launch, make_backend
    from quill.serving.runner import ApiServer

    settings = _settings(
        model_dir=model,
        threads=threads,
        segmenter=segmenter,
        monitoring_url=monitoring_url,
        allow_open=allow_open or None,
    )
    _refuse_open(settings, host)
    _require_model(model, settings.backend)
    _require_store(settings)
    _require_free_address(host, {"--api-port": api_port, "--app-port": app_port})
    api = ApiServer(settings, host=host, port=api_port)
    try:
        api.start()
    except (RuntimeError, TimeoutError) as exc:  # the model or the server failed to start
        raise fail(str(exc)) from exc
    # SIGTERM stops as Ctrl+C does: `quill up` died at once, its API's in-flight requests cut
    # and its monitoring queue not flushed
    with sigterm_as_ctrl_c() as terminated:
        try:
            typer.echo(f"REST API: {api.url}  (docs: {api.url}/docs)")
            web_app = launch(make_backend(api.url, settings), host=host, port=app_port, block=False)
            typer.echo(f"Web app:  http://{host}:{app_port}")  # once it listens
            web_app.block_thread()
        finally:
            api.stop()
    if terminated:
        raise typer.Exit(EXIT_TERMINATED)


def _settings(**overrides: object) -> ServingSettings:
    """The settings of ``QUILL_*`` and the options; a value they refuse exits with one line.

    The runtime is checked here, at startup: a server given one that does not exist would
    start, fail to load the model in every worker and answer 503 forever."""
    from quill.runtimes.backends import BACKEND_CHOICES  # lazy: --help stays light
    from quill.serving.settings import ServingSettings

    try:
        settings = ServingSettings.from_env(None, **overrides)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    if settings.backend not in BACKEND_CHOICES:
        raise fail(
            f"backend must be one of {', '.join(BACKEND_CHOICES)} (QUILL_BACKEND or --backend), "
            f"got {settings.backend!r}"
        )
    return settings


def _refuse_open(settings: object, host: str) -> None:
    """Exit with one line when ``host`` would expose an API without a key (and not allowed)."""
    problem = settings.exposure_problem(host)  # type: ignore[attr-defined]
    if problem is not None:
        raise fail(problem)


def _require_model(model: Path, backend: str = "auto") -> None:
    """Exit with one line unless ``model`` is a staged model with every file its decoding
    reads and a runtime that opens (``backend``'s, or with ``auto`` one of its candidates):
    a server would otherwise start, fail the load in the background, and answer 503 for as
    long as it runs (a truncated model file or LM did)."""
    from quill.runtimes.backends import AUTO_CANDIDATES, load_backend
    from quill.staged_model import ModelLoadError, StagedModel

    if not (model / METADATA_FILE).is_file():
        raise fail(
            f"no staged model at {model} (quill-model.json missing). Stage one with "
            "`quill stage RUN_OR_CHECKPOINT --out DIR` or fetch one with "
            "`quill model fetch NAME --out DIR`, then pass --model DIR."
        )
    try:
        staged = StagedModel.load(model)
    except (ModelLoadError, ValueError, OSError) as exc:
        raise fail(f"{model}: {exc}") from exc
    runtimes = [b for b in staged.backends if staged.runs_on(b)]
    missing = [p.name for p in staged.decoding_files() if not p.is_file()]
    if missing or not runtimes:
        missing += [] if runtimes else [p.name for b in staged.backends for p in staged.files_of(b)]
        raise fail(
            f"{model} is incomplete: {', '.join(sorted(set(missing)))} missing (named in its "
            f"{METADATA_FILE}); copy the whole folder or stage the model again"
        )
    lacking = [b for b in staged.backends if b not in runtimes]
    if lacking:  # served all the same, by another runtime: said, since it may read differently
        typer.echo(
            f"warning: {model} lacks the files of its {', '.join(lacking)} runtime(s); "
            f"serving with {', '.join(runtimes)}",
            err=True,
        )
    # Opened once here, the first that opens (ONNX first: opening TorchScript imports torch);
    # the server opens its own. A file that is there but does not load fails here.
    candidates = [b for b in AUTO_CANDIDATES if b in runtimes] if backend == "auto" else [backend]
    problems = []
    for name in candidates:
        try:
            load_backend(name, staged, threads=1)
            return
        except (ModelLoadError, ImportError) as exc:
            problems.append(str(exc))
    raise fail(f"{model} cannot be served: {'; '.join(dict.fromkeys(problems))}")


def _require_store(settings: ServingSettings) -> None:
    """Exit with one line unless the monitoring store of ``settings`` opens (its database
    and its image folder): the API opens it with the model, in the background, and one that
    cannot open made every route answer 503 with a message about the model."""
    from quill.serving.service import open_store

    try:
        store = open_store(settings)
    except Exception as exc:  # noqa: BLE001 - any driver's error: reported in one line
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise fail(
            f"cannot open the monitoring store {settings.monitoring_url or '(default)'}: "
            f"{first} (--monitoring-url off serves without one)"
        ) from exc
    if store is not None:
        store.close()


def _require_free_address(host: str, ports: dict[str, int]) -> None:
    """Exit with one line unless ``host`` resolves and each of ``ports`` (option name to port)
    can be bound on it (:func:`quill.ports.listen_problem`), before the model loads."""
    problem = listen_problem(host, ports)
    if problem is not None:
        raise fail(problem)


def register(app_: typer.Typer) -> None:
    """Add this layer's commands to the `quill` app."""
    app_.command("serve")(serve)
    app_.command("app")(app)
    app_.command("up")(up)
