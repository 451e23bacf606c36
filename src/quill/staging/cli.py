"""``quill stage``: turn a training run or checkpoint into a served, registered model."""

from __future__ import annotations

import glob
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from quill.staging.registry import METADATA_FILE

if TYPE_CHECKING:
    from rich.console import Console

#: The registry alias a promoted model gets (what serving fetches as NAME@champion).
PROMOTE_ALIAS = "champion"


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
        help="MLflow run id (its best checkpoint is staged) or path to a .ckpt file; with "
        "--promote, also an already staged model directory.",
        show_default=False,
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="Directory to write the staged model to.", show_default=False
    ),
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
    promote: bool = typer.Option(
        False,
        "--promote",
        help=f"Register the model under the alias {PROMOTE_ALIAS!r} (or --alias), only if its "
        "report card (`quill evaluate`) passed: no regression overall or on a protected slice.",
    ),
    report_card: Path = typer.Option(
        Path("report-card/report-card.json"),
        help="The candidate's report card, for --promote.",
    ),
    force: bool = typer.Option(
        False, "--force", help="With --promote: promote despite a failing card (warns)."
    ),
    card_notes: Path = typer.Option(
        None,
        "--card-notes",
        help="Markdown file appended to the generated model card (data attribution, the "
        "commands that produced the model, its measured status), e.g. "
        "configs/default_model_card.md for the shipped default.",
        show_default=False,
    ),
) -> None:
    """Export a checkpoint to ONNX + TorchScript, check parity, write a model card, register.

    Staging fails (exit code 1, nothing written or registered) if an export decodes the
    sample set differently from eager PyTorch. ``--promote`` refuses (exit code 1, nothing
    registered) a model whose report card failed, unless ``--force``.
    """
    from rich.console import Console

    from quill.monitoring.evaluate import PromotionRefused
    from quill.staging.export import ExportError
    from quill.staging.parity import ParityError
    from quill.staging.registry import RegistryError
    from quill.staging.registry import fetch as fetch_model
    from quill.staging.registry import register as reg
    from quill.staging.stage import stage_checkpoint
    from quill.training.checkpoint import CheckpointError, resolve_source
    from quill.training.tracking import default_tracking_uri

    console = Console(stderr=True, soft_wrap=True)
    uri = tracking_uri or default_tracking_uri()
    if card_notes is not None and not card_notes.is_file():
        raise typer.BadParameter(f"no such file: {card_notes}", param_hint="--card-notes")
    staged_dir = Path(reference) if reference else None
    if not (promote and staged_dir is not None and (staged_dir / METADATA_FILE).is_file()):
        staged_dir = None
        if out is None:
            raise typer.BadParameter("--out is required to stage or fetch a model")
    try:
        if fetch:
            path = fetch_model(fetch, out, uri)
            console.print(f"[green]fetched[/] {fetch} -> {path}")
            return
        if not reference:
            raise typer.BadParameter("give a run id or checkpoint path, or --fetch NAME")
        if staged_dir is not None:
            _promote(staged_dir, report_card, force, console)
            version = reg(staged_dir, uri, name, alias or PROMOTE_ALIAS)
            console.print(f"[green]promoted[/] {version.name} version {version.version} in {uri}")
            return
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
                card_notes=card_notes.read_text() if card_notes else "",
            )
        parity = staged.meta["parity"]
        for backend, result in parity["backends"].items():
            console.print(
                f"parity {backend}: {result['identical']}/{result['total']} identical, "
                f"{result['median_ms']:.1f} ms (eager {parity['eager_median_ms']:.1f} ms)"
            )
        console.print(f"[green]staged[/] {staged.meta['version']} -> {out}")
        if promote:
            _promote(out, report_card, force, console)
        if register or promote:
            version = reg(out, uri, name or out.name, alias or (PROMOTE_ALIAS if promote else None))
            console.print(f"[green]registered[/] {version.name} version {version.version} in {uri}")
    except (CheckpointError, ExportError, ParityError, RegistryError, PromotionRefused) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc


def _promote(staged_dir: Path, card: Path, force: bool, console: Console) -> None:
    """The promotion gate: the staged version's report card must have passed (or ``force``)."""
    from quill.monitoring.evaluate import check_promotion

    version = json.loads((staged_dir / METADATA_FILE).read_text())["version"]
    for failure in check_promotion(card, version, force=force):
        console.print(f"[yellow]warning:[/] promoting despite a failed check: {failure}")


def register(app: typer.Typer) -> None:
    """Add this layer's commands to the `quill` app."""
    app.command("stage")(stage)
