"""Commands of the staging layer: ``quill stage`` and ``quill model fetch|promote|quantize``.

``quill stage`` turns a training run or checkpoint into a staged model directory (and
registers it); ``quill model fetch`` brings a registered version back as a directory;
``quill model promote`` points the champion alias at a staged model whose report card
passed; ``quill model quantize`` gives a staged CTC model its checked int8 copy; ``quill
model average`` averages the weights of fine-tunes of one model into a checkpoint. Heavy
libraries (torch, mlflow, onnx) are imported inside the command bodies so
``quill --help`` stays instant.
"""

from __future__ import annotations

import glob
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from quill.data.manifest import MANIFEST_NAME, Manifest, choose
from quill.errors import EXIT_FAILED, fail
from quill.model_files import METADATA_FILE

if TYPE_CHECKING:
    from rich.console import Console

#: The registry alias a promoted model gets (what serving fetches as NAME@champion).
PROMOTE_ALIAS = "champion"
#: Options ``quill stage`` had before fetch and promote became commands of their own.
MOVED = {
    "fetch": "quill model fetch NAME@ALIAS --out DIR",
    "promote": "quill model promote DIR",
}

model_app = typer.Typer(
    help="Registered and staged models: fetch a version as a directory, promote a staged one, "
    "add an int8 copy, average fine-tunes.",
    no_args_is_help=True,
)

TrackingOption = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="MLflow tracking/registry URI (default: $QUILL_TRACKING_URI or mlruns/mlflow.db).",
        show_default=False,
    ),
]
OutOption = Annotated[
    Path, typer.Option("--out", "-o", help="Directory to write the model to.", show_default=False)
]


#: Lines drawn from each Quill dataset folder given as ``--samples``: a seeded draw of its
#: training split (never the lines a model is tested on).
LINES_PER_DATASET = 16
SAMPLES_HELP = (
    "Images (files, directories or globs), or Quill dataset folders (manifest.jsonl), each "
    f"giving {LINES_PER_DATASET} of its training lines (a seeded draw)"
)


def _expand(patterns: list[str]) -> list[str]:
    """The sample files of ``--samples``, or a usage error naming the pattern that gives
    none: an empty folder or a glob (or file name) matching nothing would otherwise fall
    back to the built-in samples, or fail later as a missing image."""
    paths: list[str] = []
    for pattern in patterns:
        if (Path(pattern) / MANIFEST_NAME).is_file():
            paths += _training_lines(Path(pattern))
        elif Path(pattern).is_dir():
            files = sorted(str(p) for p in Path(pattern).iterdir() if p.is_file())
            if not files:
                raise typer.BadParameter(
                    f"{pattern} is a folder with no images", param_hint="--samples"
                )
            paths += files
        else:
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise typer.BadParameter(f"no file matches {pattern}", param_hint="--samples")
            paths += matches
    return paths


def _training_lines(root: Path) -> list[str]:
    try:
        manifest = Manifest.load(root)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--samples") from exc
    lines = [sample for sample in manifest.split("train") if sample.kind == "line"]
    if not lines:
        raise typer.BadParameter(f"{root} has no training lines", param_hint="--samples")
    return [str(manifest.path_of(sample)) for sample in choose(lines, LINES_PER_DATASET)]


def _console() -> Console:
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def _tracking_uri(given: str | None) -> str:
    from quill.training.tracking_store import default_tracking_uri

    return given or default_tracking_uri()


def _moved(value: object, param: typer.CallbackParam) -> object:
    """Old spellings of ``quill stage`` (``--fetch``, ``--promote``) name their new command."""
    if value:
        raise typer.BadParameter(f"moved: use `{MOVED[param.name or '']}`")
    return value


def stage(
    reference: Annotated[
        str,
        typer.Argument(
            help="MLflow run (id, id prefix or name; its best checkpoint is staged) or path "
            "to a .ckpt file.",
            show_default=False,
        ),
    ],
    out: OutOption,
    name: Annotated[
        str | None,
        typer.Option(
            help="Model name in quill-model.json and the registry (default: --out's name)."
        ),
    ] = None,
    alias: Annotated[
        str | None, typer.Option(help="Registry alias to point at the new version.")
    ] = None,
    register: Annotated[
        bool, typer.Option("--register/--no-register", help="Register the staged model in MLflow.")
    ] = True,
    run_id: Annotated[
        str | None, typer.Option(help="Training run to record as lineage when REFERENCE is a file.")
    ] = None,
    samples: Annotated[
        list[str] | None,
        typer.Option(
            "--samples",
            help=f"{SAMPLES_HELP} for the parity check (default: rendered sample sentences).",
        ),
    ] = None,
    tracking_uri: TrackingOption = None,
    card_notes: Annotated[
        Path | None,
        typer.Option(
            "--card-notes",
            help="Markdown file appended to the generated model card (data attribution, the "
            "commands that produced the model, its measured status), e.g. "
            "configs/default_model_card.md for the shipped default.",
            show_default=False,
        ),
    ] = None,
    fetch: Annotated[
        str | None, typer.Option("--fetch", hidden=True, callback=_moved, is_eager=True)
    ] = None,
    promote: Annotated[
        bool, typer.Option("--promote", hidden=True, callback=_moved, is_eager=True)
    ] = False,
) -> None:
    """Export a checkpoint to ONNX + TorchScript, check parity, write a model card, register.

    Staging fails (exit code 1, nothing written or registered) if an export decodes the
    sample set differently from eager PyTorch; an unreadable checkpoint or a failed export
    exits 2. `quill model promote` then makes a staged model the champion; `quill model
    fetch` brings a registered one back.
    """
    from quill.models.onnx_export import ModelExportError
    from quill.preprocess import ImageError
    from quill.staging.parity import ParityError
    from quill.staging.registry import RegistryError
    from quill.staging.registry import register as register_model
    from quill.staging.stage import StagingTargetError, stage_checkpoint
    from quill.training.checkpoint import CheckpointError, resolve_source

    if card_notes is not None and not card_notes.is_file():
        raise typer.BadParameter(f"no such file: {card_notes}", param_hint="--card-notes")
    sample_files = _expand(samples or [])
    console = _console()
    uri = _tracking_uri(tracking_uri)
    try:
        with console.status("staging") as status, tempfile.TemporaryDirectory() as scratch:
            source = resolve_source(reference, uri, Path(scratch))
            if run_id:
                source.run_id = run_id
            staged = stage_checkpoint(
                source,
                out,
                name or out.name,
                sample_files,
                progress=lambda step: status.update(step),
                card_notes=card_notes.read_text() if card_notes else "",
            )
        parity = staged.parity or {"backends": {}}
        for backend, result in parity["backends"].items():
            console.print(
                f"parity {backend}: {result['identical']}/{result['total']} identical, "
                f"{result['median_ms']:.1f} ms (eager {parity['eager_median_ms']:.1f} ms)"
            )
        console.print(f"[green]staged[/] {staged.version} -> {out}")
        if register:
            version = register_model(out, uri, name or out.name, alias)
            console.print(f"[green]registered[/] {version.name} version {version.version} in {uri}")
    except ParityError as exc:  # a check that failed: EXIT_FAILED, as a refused promotion
        raise fail(str(exc), EXIT_FAILED) from exc
    except ImageError as exc:  # a --samples file that is no image: staging reads no other
        raise fail(f"a sample to check parity on (--samples): {exc}") from exc
    except (CheckpointError, ModelExportError, RegistryError, StagingTargetError) as exc:
        raise fail(str(exc)) from exc


@model_app.command("fetch")
def fetch_command(
    reference: Annotated[
        str,
        typer.Argument(
            help="NAME (its latest version), NAME@ALIAS or NAME@VERSION in the registry.",
            show_default=False,
        ),
    ],
    out: OutOption,
    tracking_uri: TrackingOption = None,
) -> None:
    """Download a registered model version's staged files into a directory.

    The directory is replaced whole (a new or empty one, or a staged model's; anything else
    is refused), so it never mixes two models' files."""
    import os

    from quill.staging.registry import RegistryError, fetch
    from quill.staging.stage import StagingTargetError

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    console = _console()
    try:
        path = fetch(reference, out, _tracking_uri(tracking_uri))
    except (RegistryError, StagingTargetError) as exc:
        raise fail(str(exc)) from exc
    console.print(f"[green]fetched[/] {reference} -> {path}")


@model_app.command("promote")
def promote_command(
    staged_dir: Annotated[
        Path,
        typer.Argument(
            help="A staged model directory (as `quill stage` or `quill model fetch` write).",
            show_default=False,
        ),
    ],
    report_card: Annotated[
        Path, typer.Option(help="The candidate's report card (`quill evaluate`).")
    ] = Path("report-card/report-card.json"),
    force: Annotated[
        bool, typer.Option("--force", help="Promote despite a failing card (warns).")
    ] = False,
    name: Annotated[
        str | None,
        typer.Option(help="Registered model name (default: the name in quill-model.json)."),
    ] = None,
    alias: Annotated[str, typer.Option(help="Registry alias to point at it.")] = PROMOTE_ALIAS,
    tracking_uri: TrackingOption = None,
) -> None:
    """Register a staged model under the champion alias, only if its report card passed.

    The card (`quill evaluate`) must be for this version and show no regression overall or on
    a protected slice; otherwise nothing is registered and the exit code is 1, unless
    `--force` (which warns about each failed check).
    """
    from quill.staged_model import ModelLoadError, StagedModel
    from quill.staging.promotion import PromotionRefused, ReportCardError, check_promotion
    from quill.staging.registry import RegistryError, register

    if not StagedModel.is_staged(staged_dir):
        raise typer.BadParameter(
            f"{staged_dir} is not a staged model (no {METADATA_FILE}); stage one with "
            "`quill stage RUN --out DIR` or fetch one with `quill model fetch NAME --out DIR`",
            param_hint="STAGED_DIR",
        )
    console = _console()
    uri = _tracking_uri(tracking_uri)
    try:
        version = StagedModel.load(staged_dir).version
    except ModelLoadError as exc:
        raise fail(str(exc)) from exc
    try:
        for failure in check_promotion(report_card, version, force=force):
            console.print(f"[yellow]warning:[/] promoting despite a failed check: {failure}")
        registered = register(staged_dir, uri, name, alias)
    except PromotionRefused as exc:
        raise fail(str(exc), EXIT_FAILED) from exc
    except (RegistryError, ReportCardError) as exc:
        raise fail(str(exc)) from exc
    console.print(f"[green]promoted[/] {registered.name} version {registered.version} in {uri}")


@model_app.command("quantize")
def quantize_command(
    staged_dir: Annotated[
        Path,
        typer.Argument(help="A staged CTC model directory, changed in place.", show_default=False),
    ],
    samples: Annotated[
        list[str] | None,
        typer.Option(
            "--samples",
            help=f"{SAMPLES_HELP}: the convolutions' int8 ranges are calibrated on them and the "
            "copy is checked on them. Lines of your own data calibrate it best (default: "
            "staging's rendered sample sentences).",
        ),
    ] = None,
    max_drift: Annotated[
        float | None,
        typer.Option(
            "--max-drift",
            min=0.0,
            help="The most the copy's readings of the samples may differ from the float "
            "graph's, as CER (default 0.02, i.e. 2%). Hard real lines move more than rendered "
            "ones: the default model's copy reads 64 of its training lines 2.2% apart, and "
            "its test lines within 0.1 point of float.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Add an int8 copy of the model's ONNX graph: the `onnx-int8` runtime.

    The convolutions are int8 with ranges calibrated on the samples (the first, on one
    greyscale channel, stays float); the matrix products (the LSTM's among them) use int8
    weights and quantise their inputs on the fly. It is checked first: its readings of the
    samples must stay within --max-drift of the float graph's, or nothing is written (exit
    code 1). The model gets a new version, and `--backend auto` serves with the copy on machines
    where it is measured faster.
    """
    from quill.staged_model import StagedModel
    from quill.staging.model_card import with_runtime_sections
    from quill.staging.quantize import MAX_DRIFT_CER, Int8Drift, QuantizeError, add_int8

    if not StagedModel.is_staged(staged_dir):
        raise typer.BadParameter(
            f"{staged_dir} is not a staged model (no {METADATA_FILE})", param_hint="STAGED_DIR"
        )
    console = _console()
    try:
        with console.status("quantising and checking the int8 copy"):
            model = add_int8(
                staged_dir,
                _expand(samples or []),
                MAX_DRIFT_CER if max_drift is None else max_drift,
            )
    except Int8Drift as exc:  # a check that failed: EXIT_FAILED, as a failed parity check
        raise fail(str(exc), EXIT_FAILED) from exc
    except QuantizeError as exc:
        raise fail(str(exc)) from exc
    if model.card_path.is_file():
        model.card_path.write_text(with_runtime_sections(model.card_path.read_text(), model))
    check = (model.parity or {})["backends"]["onnx-int8"]
    console.print(
        f"int8 copy: {check['identical']}/{check['total']} readings identical to onnx, CER "
        f"{check['drift_cer']:.2%} against them; {check['median_ms']:.1f} ms a batch against "
        f"{check['reference_median_ms']:.1f} ms"
    )
    console.print(f"[green]quantised[/] {model.version} -> {staged_dir}")


@model_app.command("average")
def average_command(
    sources: Annotated[
        list[Path],
        typer.Argument(
            help="Two or more models of one architecture and character set: training "
            "checkpoints (.ckpt) or staged model directories; at least one .ckpt.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="The averaged checkpoint (.ckpt) to write.")
    ],
    weight: Annotated[
        list[float] | None,
        typer.Option(
            "--weight",
            help="Each model's share, in the order given (repeat; normalised to sum to 1; "
            "default: equal shares).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Average the weights of fine-tunes of one model (a "model soup") into a checkpoint.

    Fine-tunes of the same model can be averaged, and the average often reads new hands
    better than either; it costs no training. Stage the result (`quill stage FILE --out
    DIR`) and measure it like any candidate, or start a run from it (`--init-from`).
    """
    from quill.training.average import AveragingError, average_weights

    try:
        averaged = average_weights(sources, out, weight)
    except AveragingError as exc:
        raise fail(str(exc)) from exc
    console = _console()
    for source, share in averaged.sources:
        console.print(f"{share:.3f} x {source}")
    console.print(f"[green]averaged[/] -> {averaged.path}")


def register(app: typer.Typer) -> None:
    """Add this layer's commands to the `quill` app."""
    app.command("stage")(stage)
    app.add_typer(model_app, name="model")
