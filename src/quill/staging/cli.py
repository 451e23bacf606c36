"""``quill stage``: turn a training run or checkpoint into a served, registered model."""

from __future__ import annotations

import glob
import tempfile
from pathlib import Path

import typer


def _expand(patterns: list[str]) -> list[str]:
    paths: list[str] = []
    for pattern in patterns:
        if Path(pattern).is_dir():
            paths += sorted(str(p) for p in Path(pattern).iterdir() if p.is_file())
        else:
            paths += sorted(glob.glob(pattern)) or [pattern]
    return paths


def stage(
    reference: str = typer.Argument(
        None,
        help="MLflow run id (its best checkpoint is staged) or path to a .ckpt file.",
        show_default=False,
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write the staged model to."),
    name: str = typer.Option(
        None, help="Model name in quill-model.json and the registry [default: --out's name]."
    ),
    fetch: str = typer.Option(
        None,
        "--fetch",
        help="Instead of staging, download NAME, NAME@ALIAS or NAME@VERSION from the registry.",
    ),
    alias: str = typer.Option(None, help="Registry alias to point at the new version."),
    register: bool = typer.Option(
        True, "--register/--no-register", help="Register the staged model in MLflow."
    ),
    run_id: str = typer.Option(
        None, help="Training run to record as lineage when REFERENCE is a file."
    ),
    samples: list[str] = typer.Option(
        [],
        "--samples",
        help="Images (files, directories or globs) for the parity check [default: rendered "
        "sample sentences].",
    ),
    tracking_uri: str = typer.Option(
        None,
        help="MLflow tracking/registry URI [default: $QUILL_TRACKING_URI or mlruns/mlflow.db].",
    ),
) -> None:
    """Export a checkpoint to ONNX + TorchScript, check parity, write a model card, register.

    Staging fails (exit code 1, nothing written or registered) if an export decodes the
    sample set differently from eager PyTorch.
    """
    from rich.console import Console

    from quill.staging.checkpoint import CheckpointError, resolve_source
    from quill.staging.export import ExportError
    from quill.staging.parity import ParityError
    from quill.staging.registry import RegistryError
    from quill.staging.registry import fetch as fetch_model
    from quill.staging.registry import register as reg
    from quill.staging.stage import stage_checkpoint
    from quill.training.tracking import default_tracking_uri

    console = Console(stderr=True, soft_wrap=True)
    uri = tracking_uri or default_tracking_uri()
    try:
        if fetch:
            path = fetch_model(fetch, out, uri)
            console.print(f"[green]fetched[/] {fetch} -> {path}")
            return
        if not reference:
            raise typer.BadParameter("give a run id or checkpoint path, or --fetch NAME")
        with console.status("staging") as status, tempfile.TemporaryDirectory() as scratch:
            source = resolve_source(reference, uri, Path(scratch))
            if run_id:
                source.run_id = run_id
            staged = stage_checkpoint(
                source,
                out,
                name or out.name,
                _expand(samples),
                progress=lambda step: status.update(step),
            )
        parity = staged.meta["parity"]
        for backend, result in parity["backends"].items():
            console.print(
                f"parity {backend}: {result['identical']}/{result['total']} identical, "
                f"{result['median_ms']:.1f} ms (eager {parity['eager_median_ms']:.1f} ms)"
            )
        console.print(f"[green]staged[/] {staged.meta['version']} -> {out}")
        if register:
            version = reg(out, uri, name or out.name, alias)
            console.print(f"[green]registered[/] {version.name} version {version.version} in {uri}")
    except (CheckpointError, ExportError, ParityError, RegistryError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc


def register(app: typer.Typer) -> None:
    """Add this layer's commands to the `quill` app."""
    app.command("stage")(stage)
