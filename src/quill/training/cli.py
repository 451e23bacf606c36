"""Commands of the training layer: ``quill train``, ``quill sweep``, ``quill runs``, ``quill ui``.

Heavy libraries (torch, lightning, mlflow, optuna) are imported inside the command bodies so
``quill --help`` stays instant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

runs_app = typer.Typer(
    help="List, inspect, compare and report tracked training runs.", no_args_is_help=True
)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Run config YAML (see configs/).", exists=True)
]
TrackingOption = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="MLflow store or server; default $QUILL_TRACKING_URI or mlruns/mlflow.db here.",
    ),
]
ExperimentOption = Annotated[
    str | None, typer.Option("--experiment", help="MLflow experiment name (default: quill).")
]


def _number(text: str) -> int | float:
    """Lightning's limit_* semantics: an integer is a batch count, a fraction a share.

    >>> _number("10"), _number("0.25"), _number("1.0")
    (10, 0.25, 1.0)
    """
    value = float(text)
    return int(value) if value.is_integer() and "." not in text else value


def _max_time(text: str) -> str:
    """HH:MM:SS (or DD:HH:MM:SS) -> Lightning's DD:HH:MM:SS.

    >>> _max_time("01:30:00"), _max_time("02:01:30:00")
    ('00:01:30:00', '02:01:30:00')
    """
    parts = text.split(":")
    if len(parts) not in (3, 4) or not all(p.isdigit() for p in parts):
        raise typer.BadParameter(f"{text!r} is not HH:MM:SS or DD:HH:MM:SS")
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
        "trainer.overfit_batches": _number(overfit_batches) if overfit_batches else None,
        "trainer.limit_train_batches": _number(limit_train_batches)
        if limit_train_batches
        else None,
        "trainer.limit_val_batches": _number(limit_val_batches) if limit_val_batches else None,
        "trainer.max_epochs": max_epochs,
        "trainer.max_steps": max_steps,
        "trainer.max_time": _max_time(max_time) if max_time else None,
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
        raise typer.BadParameter(str(exc)) from exc
    if resume is not None and not resume.is_file():
        raise typer.BadParameter(f"checkpoint not found: {resume}", param_hint="--resume")

    from quill.training.train import TrainingSetupError, train

    try:
        train(resolved, config_path=str(config), resume=resume)
    except (TrainingSetupError, ConfigError, FileNotFoundError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc


def register(app: typer.Typer) -> None:
    """Add the training commands to the ``quill`` app."""
    app.command("train")(train_command)
    app.add_typer(runs_app, name="runs")
