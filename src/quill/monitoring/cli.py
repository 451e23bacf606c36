"""Commands of the monitoring layer: ``quill monitor ...`` and ``quill evaluate``.

Every command reads the store at ``--url`` (default ``$QUILL_MONITORING_URL``, else
``./monitoring/monitoring.db``) and the thresholds in ``--config`` (default
``configs/monitoring.yaml``). Only ``baseline`` creates a store, as serving does: every other
command refuses a missing SQLite file or a database that is not a Quill store (a typo in
--url, another working directory) rather than create Quill's tables there and report on, or
purge, nothing. Heavy imports stay inside the commands.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from quill.data.cli import Vocabulary, require_split_fractions
from quill.errors import EXIT_FAILED, QuillError, check_output, fail

if TYPE_CHECKING:
    from quill.monitoring.settings import MonitoringSettings
    from quill.monitoring.store import MonitoringStore

monitor_app = typer.Typer(
    help="Watch a served model: store, drift checks, report, export and feedback data.",
    no_args_is_help=True,
)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Store database URL (sqlite:///..., postgresql://...) "
        "(default: $QUILL_MONITORING_URL or ./monitoring/monitoring.db).",
    ),
]
ImagesOption = Annotated[
    str | None,
    typer.Option(
        "--images",
        help="Image store folder or fsspec URL (default: $QUILL_MONITORING_IMAGES or beside "
        "the SQLite file).",
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="Monitoring rules YAML (default: configs/monitoring.yaml)."),
]
SinceOption = Annotated[str, typer.Option("--since", help="How far back: 30m, 24h, 7d, 2w.")]


def register(app: typer.Typer) -> None:
    """Add ``quill monitor`` and ``quill evaluate`` to the ``quill`` app.

    ``quill monitor export`` (stored predictions -> Label Studio tasks) is added to
    ``monitor_app`` by :mod:`quill.annotation.cli`: annotation reads the store, and
    monitoring never imports annotation.
    """
    app.add_typer(monitor_app, name="monitor")
    app.command("evaluate")(evaluate_command)


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, soft_wrap=True)


def _settings(config: Path | None) -> MonitoringSettings:
    from quill.monitoring.settings import MonitoringSettings, SettingsError

    try:
        return MonitoringSettings.load(config)
    except SettingsError as exc:
        raise fail(str(exc)) from exc


def _store(
    url: str | None,
    images: str | None,
    settings: MonitoringSettings,
    *,
    must_exist: bool = False,
) -> MonitoringStore:
    """The store at ``url``; ``must_exist`` for every command but ``baseline``: a missing
    SQLite file (a typo in --url) or a database without Quill's tables is refused in one
    line, never made into an empty store to report on or purge."""
    import sqlite3

    from sqlalchemy.exc import SQLAlchemyError

    from quill.monitoring.database import (
        NoMonitoringStore,
        NotAMonitoringStore,
        default_url,
        sqlite_file,
    )
    from quill.monitoring.store import MonitoringStore

    file = sqlite_file(url or default_url())
    try:
        return MonitoringStore.from_settings(settings, url, images, create=not must_exist)
    except (NoMonitoringStore, NotAMonitoringStore) as exc:
        raise fail(str(exc)) from exc
    except (SQLAlchemyError, sqlite3.Error, ValueError) as exc:
        reason = str(exc).splitlines()[0]
        if file is not None and file.is_file() and not os.access(file.parent, os.W_OK):
            reason = (
                f"its folder {file.parent} is read-only, and SQLite writes a journal beside "
                "the file even to read it: copy the store to a writable folder"
            )
        raise fail(f"cannot open the monitoring store: {reason}") from exc


def _duration(text: str, option: str) -> Any:
    """A duration above zero: an empty window or period judges nothing and says OK."""
    from quill.monitoring.settings import parse_duration

    try:
        duration = parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from exc
    if not duration:
        raise typer.BadParameter(f"must be longer than 0, got {text!r}", param_hint=option)
    return duration


def _progress(description: str, total: int) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    progress = Progress(
        "{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
    )
    task = progress.add_task(description, total=total)
    return progress, lambda n: progress.advance(task, n)


def _recognizer(path: Path, backend: str, threads: int | None, option: str) -> Any:
    from quill.inference.recognizer import Recognizer
    from quill.staged_model import ModelLoadError

    try:
        return Recognizer.from_path(path, backend=backend, threads=threads)
    except (ModelLoadError, OSError, ValueError) as exc:
        raise fail(f"{option} {path}: {exc}") from exc


@monitor_app.command("status")
def status_command(
    url: UrlOption = None, images: ImagesOption = None, config: ConfigOption = None
) -> None:
    """Where the store is, how much it holds, and which baselines exist."""
    settings = _settings(config)
    store = _store(url, images, settings, must_exist=True)
    console = _console()
    console.print(f"store  {store!r}")
    console.print(f"images {store.images.root} (retained: {store.retain_images})")
    console.print(f"rules  v{settings.version} from {settings.source}")
    for name, count in store.counts().items():
        console.print(f"  {name:<20} {count}")
    console.print(f"baselines: {', '.join(store.baseline_names()) or 'none'}")


@monitor_app.command("projections")
def projections_command() -> None:
    """List the projections computed for every prediction (add one with @projection)."""
    from quill.monitoring.projections import REGISTRY

    console = _console()
    for projection in REGISTRY.values():
        console.print(f"{projection.name:<16} {projection.kind:<7} {projection.description}")


@monitor_app.command("baseline")
def baseline_command(
    dataset: Annotated[Path, typer.Option(help="Dataset folder (manifest.jsonl).")],
    model: Annotated[Path, typer.Option(help="Staged model folder (the one that serves).")],
    split: Annotated[str, typer.Option(help="Split to project: test, val, train or all.")] = "test",
    name: Annotated[str, typer.Option(help="Baseline name (replaces one of that name).")] = "",
    limit: Annotated[
        int | None, typer.Option(min=1, help="At most this many samples (default: all).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per predict call.")] = 16,
    backend: Annotated[str, typer.Option(help="auto, onnx, onnx-int8 or torchscript.")] = "auto",
    threads: Annotated[int | None, typer.Option(min=1, help="Inference threads.")] = None,
    url: UrlOption = None,
    images: ImagesOption = None,
    config: ConfigOption = None,
) -> None:
    """Project a labelled test set through the model and store it as the drift reference."""
    from quill.data.manifest import Manifest
    from quill.monitoring.baseline import compute_baseline, save_baseline

    settings = _settings(config)
    try:
        manifest = Manifest.load(dataset)
    except (FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
    recognizer = _recognizer(model, backend, threads, "--model")
    store = _store(url, images, settings)
    total = len([s for s in manifest if split in ("all", s.split)])
    progress, advance = _progress("baseline", min(total, limit or total))
    try:
        with progress:
            data = compute_baseline(
                manifest,
                recognizer,
                split=split,
                limit=limit,
                batch_size=batch_size,
                progress=advance,
            )
    except ValueError as exc:
        raise fail(str(exc)) from exc
    name = name or settings.baseline
    try:
        save_baseline(store, name, data, dataset, split)
    except QuillError as exc:  # a store locked by another process
        raise fail(str(exc)) from exc
    console = _console()
    for note in data.skipped:
        console.print(f"[yellow]skipped {note}[/yellow]")
    rates = data.rates
    console.print(
        f"baseline {name!r}: {len(data.rows)} samples of dataset {data.dataset_version} "
        f"({split}) through model {data.model_version}; CER {rates['cer']:.4f} "
        f"WER {rates['wer']:.4f}"
    )


@monitor_app.command("check")
def check_command(
    window: Annotated[
        str | None, typer.Option(help="Window length (default: the config's window).")
    ] = None,
    baseline: Annotated[str | None, typer.Option(help="Baseline name.")] = None,
    url: UrlOption = None,
    images: ImagesOption = None,
    config: ConfigOption = None,
) -> None:
    """Compare the latest window with the baseline; exit 1 when a threshold is crossed.

    Exit codes: 0 no alert, 1 alert(s), 2 error (no baseline, bad config). Meant for cron
    and CI: the summary names each projection, slice, distance and threshold.
    """
    from quill.monitoring.alerts import run_check

    settings = _settings(config)
    if window:
        settings.window = _duration(window, "--window")
    store = _store(url, images, settings, must_exist=True)
    try:
        result = run_check(store, settings, baseline_name=baseline)
    except KeyError as exc:
        raise fail(str(exc.args[0])) from exc
    console = _console()
    style = "green" if result.ok else "red"
    summary = result.summary().splitlines()
    console.print(f"[{style}]{summary[0]}[/{style}]")
    for line in summary[1:]:
        console.print(line, markup=False)
    if not result.ok:
        raise typer.Exit(1)


@monitor_app.command("report")
def report_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path(
        "report.html"
    ),
    since: SinceOption = "7d",
    baseline: Annotated[str | None, typer.Option(help="Baseline name.")] = None,
    url: UrlOption = None,
    images: ImagesOption = None,
    config: ConfigOption = None,
) -> None:
    """Write a self-contained HTML dashboard (open it in any browser, offline)."""
    from quill.monitoring.report import write_report

    check_output(out, folder=False)
    period = _duration(since, "--since")
    settings = _settings(config)
    store = _store(url, images, settings, must_exist=True)
    try:
        data = write_report(store, settings, out, period, baseline_name=baseline)
    except KeyError as exc:  # the --baseline asked for is not stored
        raise fail(str(exc.args[0])) from exc
    latest = (
        f"latest window: {data.latest.verdict()}"
        if data.latest
        else "no baseline (drift not measured)"
    )
    _console().print(
        f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): {len(data.predictions)} "
        f"predictions; {latest}"
    )


def _since(text: str) -> Any:
    from quill.monitoring.records import utcnow

    return utcnow() - _duration(text, "--since")


@monitor_app.command("feedback-dataset")
def feedback_dataset_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Dataset folder to write.")],
    since: SinceOption = "3650d",
    merge: Annotated[
        list[Path] | None,
        typer.Option(help="Also copy in these dataset folders (e.g. `quill annotate import`)."),
    ] = None,
    val_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of images for validation.")
    ] = 0.1,
    test_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of images for test.")
    ] = 0.1,
    vocabulary: Annotated[
        Vocabulary,
        typer.Option(
            help="Character set corrections must fit: latin (Western European, the shipped "
            "default model's) or ascii."
        ),
    ] = Vocabulary.latin,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the dataset already in --out (its files go).")
    ] = False,
    url: UrlOption = None,
    images: ImagesOption = None,
    config: ConfigOption = None,
) -> None:
    """Turn user corrections (and imported annotations) into a new dataset version.

    Each corrected image becomes a sample with source "feedback"; mix it into training with
    a weight in the run config's data sources. A dataset already in --out is replaced only
    with --overwrite, and never by an empty one: with nothing to write the command exits 1
    and leaves --out as it was.
    """
    from quill.data.manifest import MANIFEST_NAME, DatasetExistsError
    from quill.monitoring.feedback import build_feedback_dataset
    from quill.vocab import Tokenizer

    require_split_fractions(val_fraction, test_fraction)
    check_output(out, folder=True)
    start = _since(since)
    for path in merge or []:
        if not (path / MANIFEST_NAME).is_file():
            raise typer.BadParameter(f"{path} is not a dataset folder", param_hint="--merge")
        if path.resolve() == out.resolve():
            raise typer.BadParameter(
                f"{path} is the --out folder: merge a copy of it, or write elsewhere",
                param_hint="--merge",
            )
    settings = _settings(config)
    store = _store(url, images, settings, must_exist=True)
    try:
        result = build_feedback_dataset(
            store,
            store.predictions(since=start),
            out,
            overwrite=overwrite,
            merge=merge or [],
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            tokenizer=Tokenizer.named(vocabulary.value),
        )
    except DatasetExistsError as exc:
        raise fail(str(exc)) from exc
    console = _console()
    for line in result.report.summary():
        console.print(line, markup=False)
    manifest = result.manifest
    if not len(manifest):
        left = "left as it was" if (out / MANIFEST_NAME).is_file() else "not made"
        raise fail(f"no sample to write: the dataset {out} is {left}", EXIT_FAILED)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(manifest.counts().items()))
    console.print(f"dataset {manifest.root} version {manifest.version} ({counts})")


@monitor_app.command("backfill")
def backfill_command(
    projection: Annotated[
        list[str] | None, typer.Option(help="Only these projections (repeat) (default: all).")
    ] = None,
    recompute: Annotated[bool, typer.Option(help="Recompute values already stored.")] = False,
    url: UrlOption = None,
    images: ImagesOption = None,
    config: ConfigOption = None,
) -> None:
    """Compute projections missing from stored predictions (after adding one)."""
    settings = _settings(config)
    store = _store(url, images, settings, must_exist=True)
    try:
        written = store.backfill(projection or None, recompute=recompute)
    except KeyError as exc:
        raise fail(str(exc.args[0])) from exc
    except QuillError as exc:  # a locked store, an image folder of another store
        raise fail(str(exc)) from exc
    _console().print(f"wrote {written} projection value(s)")


@monitor_app.command("delete")
def delete_command(
    request_id: Annotated[
        list[str], typer.Option("--request-id", help="Request to erase (repeat).")
    ],
    url: UrlOption = None,
    images: ImagesOption = None,
    config: ConfigOption = None,
) -> None:
    """Erase a user's requests: prediction, projections, feedback, shadow rows and image."""
    store = _store(url, images, _settings(config), must_exist=True)
    console = _console()
    missing = []
    for rid in request_id:
        try:
            found = store.delete_request(rid)
        except QuillError as exc:  # a locked store, an image folder of another store
            raise fail(str(exc)) from exc
        if found:
            console.print(f"deleted {rid}")
        else:
            missing.append(rid)
    if missing:
        raise fail(f"no such request(s): {', '.join(missing)}")


@monitor_app.command("purge")
def purge_command(
    older_than: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Delete data older than DAYS; 0 deletes everything stored until now "
            "(default: the config's retention_days).",
        ),
    ] = None,
    images_older_than: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Delete images older than DAYS; 0 deletes them all "
            "(default: the config's image_retention_days).",
        ),
    ] = None,
    url: UrlOption = None,
    images: ImagesOption = None,
    config: ConfigOption = None,
) -> None:
    """Apply the retention periods (run daily from cron): predictions, projections, feedback
    (also for unknown requests), shadow answers and images older than the period."""
    from datetime import timedelta

    settings = _settings(config)
    store = _store(url, images, settings, must_exist=True)
    image_days = _days(images_older_than, settings.store.get("image_retention_days"))
    days = _days(older_than, settings.store.get("retention_days"))
    console = _console()
    try:
        if image_days is not None:
            counts = store.purge(timedelta(days=image_days), images_only=True)
            console.print(f"images older than {image_days} d: {counts['images']} file(s) deleted")
        if days is not None:
            counts = store.purge(timedelta(days=days))
            console.print(
                f"data older than {days} d: {counts['predictions']} prediction(s), "
                f"{counts['projections']} projection value(s), {counts['feedback']} feedback, "
                f"{counts['shadow_predictions']} shadow answer(s), {counts['images']} image(s) "
                "deleted"
            )
    except QuillError as exc:  # a locked store, an image folder of another store
        raise fail(str(exc)) from exc


def _days(option: int | None, configured: int | float | str | None) -> int | None:
    """The option when given (0 included), else the configured period (None: keep all)."""
    return option if option is not None else (None if configured is None else int(configured))


def evaluate_command(
    candidate: Annotated[Path, typer.Option(help="Staged candidate model folder.")],
    current: Annotated[Path, typer.Option(help="Staged model serving today.")],
    dataset: Annotated[
        list[Path] | None,
        typer.Option(help="Evaluation dataset folder (repeat) (default: the config's sets)."),
    ] = None,
    split: Annotated[str, typer.Option(help="Split of --dataset folders.")] = "test",
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the card.")] = Path(
        "report-card"
    ),
    config: Annotated[
        Path | None, typer.Option(help="Rules YAML (default: configs/evaluation.yaml).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per predict call.")] = 8,
    backend: Annotated[str, typer.Option(help="auto, onnx, onnx-int8 or torchscript.")] = "auto",
    threads: Annotated[int | None, typer.Option(min=1, help="Inference threads per model.")] = None,
) -> None:
    """Compare a candidate model with the current one on every evaluation set and slice.

    Writes report-card.json and report-card.md; exits 1 when the candidate fails the rules
    (overall regression, a protected slice regressing, or a slower model).
    """
    from quill.data.manifest import Manifest
    from quill.monitoring import evaluate as ev

    check_output(out, folder=True)
    try:
        rules = ev.EvaluationConfig.load(config)
    except (ValueError, OSError) as exc:
        raise fail(str(exc)) from exc
    specs = [ev.EvalSet(p.name, p, split) for p in dataset] if dataset else rules.datasets
    console = _console()
    sets, notes = [], []
    for spec in specs:
        try:
            sets.append((spec, Manifest.load(spec.path)))
        except (FileNotFoundError, ValueError) as exc:
            notes.append(f"{spec.name}: {exc}")
            console.print(f"[yellow]skipped set {spec.name}: {exc}[/yellow]")
    if not sets:
        raise fail("no evaluation set could be read (pass --dataset DIR)")
    models = {
        "candidate": _recognizer(candidate, backend, threads, "--candidate"),
        "current": _recognizer(current, backend, threads, "--current"),
    }
    total = sum(len([s for s in m if spec.split in ("all", s.split)]) for spec, m in sets)
    progress, advance = _progress("evaluate", total)
    with progress:
        items, run_notes = ev.run_models(models, sets, batch_size=batch_size, progress=advance)
    describe = {
        key: {"version": m.model_version, "path": str(path), "backend": m.backend}
        for (key, m), path in zip(models.items(), (candidate, current), strict=True)
    }
    try:
        card = ev.report_card(
            items, rules, describe["candidate"], describe["current"], [*notes, *run_notes]
        )
    except ValueError as exc:
        raise fail(str(exc)) from exc
    json_path, md_path = ev.write_card(card, out)
    for check in card["checks"]:
        mark = "[green]pass[/green]" if check["passed"] else "[red]FAIL[/red]"
        console.print(f"{mark} {check['rule']}: {check['detail']}")
    verdict = "[green]PASS[/green]" if card["passed"] else "[red]FAIL[/red]"
    console.print(f"{verdict}: report card {md_path} ({json_path})")
    if not card["passed"]:
        raise typer.Exit(1)
