"""Commands of the training layer: ``quill train``, ``quill sweep``, ``quill runs``, ``quill ui``.

Heavy libraries (torch, lightning, mlflow, optuna) are imported inside the command bodies so
``quill --help`` stays instant.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated

import typer

from quill.errors import QuillError, check_output, fail
from quill.ports import listen_problem

runs_app = typer.Typer(
    help="List, inspect, compare and report tracked training runs.", no_args_is_help=True
)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Run config YAML (see configs/).", exists=True)
]
SweepFileOption = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        help="Sweep file YAML: a base run config, the study and its search space (see "
        "configs/sweeps/).",
        exists=True,
    ),
]
TrackingOption = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="MLflow store or server; default $QUILL_TRACKING_URI or mlruns/mlflow.db here.",
    ),
]
ExperimentOption = Annotated[
    str | None,
    typer.Option(
        "--experiment",
        help="MLflow experiment name (default: the config's tracking.experiment, else quill).",
    ),
]


def _number(text: str, option: str) -> int | float:
    """Lightning's limit_* semantics: an integer is a batch count, a fraction a share;
    anything else is a one-line error naming ``option`` (exit 2).

    >>> _number("10", "--limit-val-batches"), _number("0.25", "-"), _number("1.0", "-")
    (10, 0.25, 1.0)
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    count = value.is_integer() and "." not in text
    if not (count and value >= 0) and not 0.0 <= value <= 1.0:
        raise fail(
            f"{option}: expected a number of batches or a fraction from 0 to 1, got {text!r}"
        )
    return int(value) if count else value


def _max_time(text: str) -> str:
    """HH:MM:SS (or DD:HH:MM:SS) -> Lightning's DD:HH:MM:SS; anything else is a one-line
    error naming --max-time (exit 2).

    >>> _max_time("01:30:00"), _max_time("02:01:30:00")
    ('00:01:30:00', '02:01:30:00')
    """
    parts = text.split(":")
    if len(parts) not in (3, 4) or not all(p.isdigit() for p in parts):
        raise fail(f"--max-time {text!r} is not HH:MM:SS or DD:HH:MM:SS")
    return ":".join(["00", *parts] if len(parts) == 3 else parts)


def train_command(
    config: ConfigOption,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Config overrides as dotted key=value, e.g. optim.lr=3e-4."),
    ] = None,
    fast_dev_run: Annotated[
        bool, typer.Option("--fast-dev-run", help="One train/val/test batch to check wiring.")
    ] = False,
    overfit_batches: Annotated[
        str | None, typer.Option(help="Train and validate on N batches (or a fraction).")
    ] = None,
    limit_train_batches: Annotated[str | None, typer.Option(help="Batches (or fraction).")] = None,
    limit_val_batches: Annotated[str | None, typer.Option(help="Batches (or fraction).")] = None,
    max_epochs: Annotated[int | None, typer.Option(help="Stop after N epochs.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N optimiser steps.")] = None,
    max_time: Annotated[str | None, typer.Option(help="Stop after HH:MM:SS.")] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue from this .ckpt (weights, optimiser, epoch).")
    ] = None,
    init_from: Annotated[
        Path | None,
        typer.Option(
            help="Start from the weights of this .ckpt or staged model directory (fine-tuning: "
            "fresh optimiser and schedule; same architecture; another character set is fine: "
            "the characters both share keep their weights)."
        ),
    ] = None,
    logger: Annotated[
        str | None, typer.Option(help="mlflow (default), tensorboard, wandb or csv.")
    ] = None,
    profile: Annotated[
        bool, typer.Option("--profile", help="Record a PyTorch profiler trace of a few steps.")
    ] = False,
    tracking_uri: TrackingOption = None,
    experiment: ExperimentOption = None,
    run_name: Annotated[str | None, typer.Option(help="Name shown in the run list.")] = None,
) -> None:
    """Train a model from a config file, tracking everything about the run.

    Example: quill train --config configs/ctc_line_synth.yaml optim.lr=5e-4 --max-epochs 5
    """
    from quill.training.config import ConfigError, resolve_config

    flags = {
        "trainer.fast_dev_run": fast_dev_run or None,
        "trainer.overfit_batches": _number(overfit_batches, "--overfit-batches")
        if overfit_batches
        else None,
        "trainer.limit_train_batches": _number(limit_train_batches, "--limit-train-batches")
        if limit_train_batches
        else None,
        "trainer.limit_val_batches": _number(limit_val_batches, "--limit-val-batches")
        if limit_val_batches
        else None,
        "trainer.max_epochs": max_epochs,
        "trainer.max_steps": max_steps,
        "trainer.max_time": _max_time(max_time) if max_time else None,
        "model.init_from": str(init_from) if init_from else None,
        "tracking.logger": logger,
        "tracking.tracking_uri": tracking_uri,
        "tracking.experiment": experiment,
        "tracking.run_name": run_name,
        "profile.enabled": profile or None,
    }
    flag_overrides = [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None]
    try:
        resolved = resolve_config(config, [*(overrides or []), *flag_overrides])
    except ConfigError as exc:
        raise fail(str(exc)) from exc
    if resume is not None and not resume.is_file():
        raise fail(f"--resume {resume}: no such checkpoint file")

    from quill.training.checkpoint import CheckpointError, check_resumable
    from quill.training.train import TrainingSetupError, train

    try:
        if resume is not None:
            check_resumable(resume, resolved)
    except CheckpointError as exc:
        raise fail(f"--resume {exc}") from exc

    try:
        train(resolved, config_path=str(config), resume=resume)
    except (TrainingSetupError, ConfigError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc


def _client_and_runs(tracking_uri: str | None, keys: list[str]) -> tuple[object, list]:
    from quill.training.runs import RunNotFoundError, client_for, resolve_run
    from quill.training.tracking_store import NoTrackingStore, TrackingStoreUnreadable

    try:
        client = client_for(tracking_uri)
        return client, [resolve_run(client, key) for key in keys]
    except (RunNotFoundError, NoTrackingStore, TrackingStoreUnreadable) as exc:
        raise fail(str(exc)) from exc


def _print_table(title: str, columns: list[str], rows: list[list[object]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    # Piped output (files, CI logs) is not squeezed into rich's 80-column default.
    console = Console() if sys.stdout.isatty() else Console(width=200)
    console.print(table)


def _print_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@runs_app.command("list")
def runs_list(
    experiment: Annotated[
        list[str] | None, typer.Option("--experiment", "-e", help="Only these experiments.")
    ] = None,
    filter_string: Annotated[
        str,
        typer.Option(
            "--filter",
            "-f",
            help='MLflow filter, e.g. "metrics.val_cer < 0.2 and tags.quill.model_name = '
            "'ctc_line'\".",
        ),
    ] = "",
    order_by: Annotated[
        str, typer.Option(help="e.g. 'metrics.val_cer ASC'.")
    ] = "attributes.start_time DESC",
    max_results: Annotated[int, typer.Option("--max", min=1, help="At most this many runs.")] = 50,
    staging: Annotated[
        bool,
        typer.Option(
            "--staging", help="Also list staging runs (their metrics are copied from training)."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON records.")] = False,
    csv: Annotated[Path | None, typer.Option(help="Also write every column to this CSV.")] = None,
    tracking_uri: TrackingOption = None,
) -> None:
    """List training runs, newest first, with their key metrics."""
    from quill.training import runs
    from quill.training.tracking_store import NoTrackingStore, TrackingStoreUnreadable

    if csv is not None:
        check_output(csv, folder=False, option="--csv")
    try:
        client = runs.client_for(tracking_uri)
    except NoTrackingStore as exc:  # a fresh checkout: no runs yet, which is an answer
        typer.echo(f"no runs: {exc}")
        return
    except TrackingStoreUnreadable as exc:
        raise fail(str(exc)) from exc
    try:
        found = runs.search(
            client,
            experiment or (),
            filter_string,
            [order_by],
            max_results,
            include_staging=staging,
        )
        names = runs.experiment_names(client)
    except runs.RunQueryError as exc:
        option = "--order-by" if exc.part == "order_by" else "--filter"
        raise fail(f"{option}: {exc}") from exc
    except runs.RunNotFoundError as exc:
        raise fail(str(exc)) from exc
    rows = [runs.summary(r, names) for r in found]
    if csv is not None:
        csv.parent.mkdir(parents=True, exist_ok=True)
        runs.runs_frame(found, names).to_csv(csv, index=False)
    if as_json:
        _print_json(rows)
        return
    if not rows:  # an empty table drew one blank line
        where = "matching the filters in" if experiment or filter_string else "in"
        typer.echo(f"no runs {where} {client.tracking_uri}")
        return
    columns = [c for c in (*runs.LIST_COLUMNS, *runs.KEY_METRICS) if any(c in r for r in rows)]
    table_rows = [[r.get(c) if c != "run" else r["run"][:8] for c in columns] for r in rows]
    _print_table(f"{len(rows)} run(s)", columns, table_rows)


@runs_app.command("show")
def runs_show(
    run: Annotated[str, typer.Argument(help="Run id, id prefix or run name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    tracking_uri: TrackingOption = None,
) -> None:
    """Everything about one run: metrics, params, git and dataset tags, artifacts."""
    from quill.training.runs import details

    client, (found,) = _client_and_runs(tracking_uri, [run])
    info = details(client, found)
    if as_json:
        _print_json(info)
        return
    head = [k for k in info if not isinstance(info[k], dict | list)]
    _print_table(f"run {info['run']}", ["field", "value"], [[k, info[k]] for k in head])
    for section in ("metrics", "params", "tags"):
        rows = [[k, v] for k, v in info[section].items() if not k.startswith("quill.env.")]
        _print_table(section, ["key", "value"], rows)
    _print_table("artifacts", ["path"], [[a] for a in info["artifacts"]])


@runs_app.command("compare")
def runs_compare(
    run_keys: Annotated[list[str], typer.Argument(help="Two or more runs (id, prefix or name).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    tracking_uri: TrackingOption = None,
) -> None:
    """Metrics side by side, and the params that differ."""
    from quill.training.runs import comparison

    _, found = _client_and_runs(tracking_uri, run_keys)
    table = comparison(found)
    if as_json:
        _print_json(table)
        return
    keys = list(next(iter(table.values())))
    _print_table("comparison", ["", *table], [[k, *(table[c][k] for c in table)] for k in keys])


@runs_app.command("report")
def runs_report(
    run_keys: Annotated[list[str], typer.Argument(help="Runs to report on (id, prefix or name).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path(
        "report.html"
    ),
    tracking_uri: TrackingOption = None,
) -> None:
    """A self-contained HTML page: curves, generalization gap, prediction tables."""
    import os

    from quill.training.runs import write_report

    check_output(out, folder=False)  # the page is written after all the downloads
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client, found = _client_and_runs(tracking_uri, run_keys)
    path = write_report(client, found, out)
    typer.echo(f"wrote {path}")


def ui_command(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port on 127.0.0.1.")] = 5000,
    tracking_uri: TrackingOption = None,
) -> None:
    """Open the MLflow UI on http://127.0.0.1:PORT for the run store.

    It starts one server process without MLflow's job runner (which runs GenAI scorers, and
    Quill's runs have none), so it answers in about 15 s on 2 cores instead of 30 (MLflow's
    defaults: four workers, eight job processes). MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true in
    the environment turns the runner back on."""
    import os

    from quill.training.tracking_store import (
        artifact_root,
        default_tracking_uri,
        prepare_store,
    )

    problem = listen_problem("127.0.0.1", {"--port": port})
    if problem is not None:  # MLflow would say so after its start-up, and exit 0
        raise fail(problem)
    uri = tracking_uri or default_tracking_uri()
    try:
        prepare_store(uri)
    except QuillError as exc:
        raise fail(str(exc)) from exc
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    root = artifact_root(uri)
    if root:
        command += ["--default-artifact-root", root]
    typer.echo(f"MLflow UI for {uri} on http://127.0.0.1:{port} (Ctrl+C stops it)")
    os.execv(sys.executable, command)


def sweep_command(
    config: SweepFileOption,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Overrides of the base run config, e.g. trainer.max_epochs=3."),
    ] = None,
    trials: Annotated[int, typer.Option(min=1, help="Trials this worker runs.")] = 10,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Optuna RDB URL shared by all workers, e.g. sqlite:///PATH.db or "
            "postgresql://... (default: $QUILL_OPTUNA_STORAGE or mlruns/optuna.db here)."
        ),
    ] = None,
    study: Annotated[str | None, typer.Option(help="Study name (default: from the file).")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for the sweep plots.")] = None,
    tracking_uri: TrackingOption = None,
) -> None:
    """Hyperparameter search with Optuna; run it on several terminals/hosts to add workers.

    Example: quill sweep --config configs/sweeps/ctc_line.yaml --trials 20
    """
    from quill.training.sweep import load_sweep, run_sweep

    extra = [f"tracking.tracking_uri={tracking_uri}"] if tracking_uri else []
    try:
        spec = load_sweep(config, [*(overrides or []), *extra])
        result = run_sweep(spec, trials, storage, study, out)
    except QuillError as exc:  # a bad sweep file, storage, store, or a trial's setup
        raise fail(str(exc)) from exc
    if result.best_number is None:
        typer.echo(f"study {result.study_name}: no trial completed yet")
    else:
        metric = spec.study["metric"]
        typer.echo(
            f"study {result.study_name}: best trial #{result.best_number}, "
            f"{metric} = {result.best_value:.4f}"
        )
        for key, value in result.best_params.items():
            typer.echo(f"  {key} = {value}")
    typer.echo(f"parent run {result.parent_run_id[:8]}; plots:")
    for plot in result.plots:
        typer.echo(f"  {plot}")


detector_app = typer.Typer(
    help="The learned line detector (SegmentConfig(method='learned')): train it.",
    no_args_is_help=True,
)


@detector_app.command(
    "train",
    help="Train the learned line detector on pages composed from real line crops.\n\n"
    "Pages are composed on the fly from the training writers of the four shared datasets "
    "(../shared/datasets; the bench's four Hooker pages never), normalised as at inference "
    "(ink map at the segmenter's analysis size) and cut into crops. The run logs to MLflow "
    "(experiment line-detector) with its resolved config, and writes the weights to "
    "OUT/line_detector.pt (config key out; default models/line_detector, the shipped ones). "
    "Measure them with `quill bench accuracy --pages ... --segmenter trace --segmenter "
    "learned`.\n\n"
    "Example: quill detector train --config configs/line_detector.yaml trainer.max_steps=200 "
    "out=runs/detector",
)
def detector_train(
    config: ConfigOption = Path("configs/line_detector.yaml"),
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Config overrides as dotted key=value, e.g. trainer.max_steps=500."),
    ] = None,
) -> None:
    """Train the learned line detector from a config (see the command's help)."""
    from quill.training.config import ConfigError
    from quill.training.line_detector import resolve, train_line_detector

    try:
        resolved = resolve(config, overrides or [])
        check_output(Path(resolved["out"]), folder=True, option="out")
        weights = train_line_detector(resolved)
    except (ConfigError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"wrote {weights}")


def register(app: typer.Typer) -> None:
    """Add the training commands to the ``quill`` app."""
    app.command("train")(train_command)
    app.add_typer(detector_app, name="detector")
    app.command("sweep")(sweep_command)
    app.add_typer(runs_app, name="runs")
    app.command("ui")(ui_command)
