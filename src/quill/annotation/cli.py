"""``quill annotate ...``: raw images to Label Studio, Label Studio exports to datasets;
and ``quill monitor export``: stored predictions to Label Studio tasks.

``quill monitor export`` lives here, on monitoring's ``quill monitor`` group, because it is
annotation's side of the loop: annotation reads the monitoring store, and monitoring never
imports annotation (the layer order is monitoring -> annotation).

Every command imports its machinery inside its body, so ``quill --help`` stays instant.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from quill.data.cli import require_split_fractions
from quill.errors import EXIT_FAILED, check_output, fail, sigterm_as_ctrl_c
from quill.model_files import METADATA_FILE
from quill.monitoring.cli import (
    ConfigOption,
    ImagesOption,
    SinceOption,
    UrlOption,
    _settings,
    _since,
    _store,
    monitor_app,
)

annotate_app = typer.Typer(
    help="Annotate lines of handwriting in Label Studio: config, tasks, import, serve, push, "
    "pull (see docs/annotation.md).",
    no_args_is_help=True,
)


def _console(stderr: bool = True) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, soft_wrap=True)


@annotate_app.command("config")
def config_command(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Folder to write labeling-config.xml and instructions.html to (default: print "
            "the config XML).",
        ),
    ] = None,
) -> None:
    """The labeling config (one rotatable Line box + a transcription per box) and instructions.

    Paste the XML into a project's Settings > Labeling Interface > Code, and the
    instructions into Settings > Instructions (``quill annotate push`` does both).
    """
    from quill.annotation.config import labeling_config, validate_config, write_config

    if out is None:
        xml = labeling_config()
        validate_config(xml)
        typer.echo(xml, nl=False)
        return
    check_output(out, folder=True)
    for path in write_config(out):
        _console().print(f"wrote {path}")


def _progress(description: str, total: int | None) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_console(),
        transient=True,
    )
    return progress, progress.add_task(description, total=total)


@annotate_app.command("tasks")
def tasks_command(
    sources: Annotated[
        list[str],
        typer.Argument(
            help="Image folders, image files, dataset folders / manifest.jsonl, .txt lists of "
            "paths or URLs, or http(s) URLs.",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Task file to write (.json or .csv).")],
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="json or csv (default: from --out's suffix, else json)."),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Staged model folder: pre-annotate each page with its lines."),
    ] = None,
    url_prefix: Annotated[
        str,
        typer.Option(
            help="Prefix of local images' URLs, followed by the path relative to --document-root. "
            "The default is Label Studio's local-files storage; use e.g. https://host/images/ for "
            "a web server."
        ),
    ] = "/data/local-files/?d=",
    document_root: Annotated[
        Path,
        typer.Option(
            help="Folder Label Studio serves local files from "
            "(LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT; `quill annotate serve --document-root`)."
        ),
    ] = Path("."),
    threads: Annotated[
        int | None, typer.Option(min=1, help="Inference threads for --model (default: runtime's).")
    ] = None,
) -> None:
    """Write Label Studio tasks for images, optionally with a model's lines as pre-annotations."""
    from quill.annotation.tasks import (
        TaskSourceError,
        build_tasks,
        collect_images,
        recognizer_predictor,
        write_tasks,
    )

    fmt = fmt or ("csv" if out.suffix.lower() == ".csv" else "json")
    if fmt not in ("json", "csv"):
        raise fail(f"--format must be json or csv, not {fmt!r}")
    if fmt == "csv" and model is not None:
        raise fail("CSV tasks cannot carry pre-annotations: use --format json with --model")
    check_output(out, folder=False)
    try:
        refs = collect_images(sources)
        predictor = recognizer_predictor(model, threads) if model is not None else None
    except (TaskSourceError, ValueError, OSError) as exc:
        raise fail(str(exc)) from exc
    progress, bar = _progress("tasks", len(refs))
    with progress:
        try:
            tasks, notes = build_tasks(
                refs,
                document_root,
                url_prefix,
                predictor,
                progress=lambda n: progress.advance(bar, n),
            )
        except (TaskSourceError, ValueError, OSError) as exc:
            raise fail(str(exc)) from exc
    write_tasks(tasks, out, fmt)
    console = _console()
    for note in notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    predicted = sum(1 for task in tasks if task.get("predictions"))
    console.print(f"wrote {len(tasks)} tasks ({predicted} pre-annotated) to {out}")


def _load_tokenizer(path: Path | None) -> Any:
    """The vocabulary to check labels against: a tokenizer JSON's, a staged model's, or by
    default the Latin (Western European) set the shipped model reads: the ASCII default
    left out every line with an accent."""
    from quill.vocab import Tokenizer

    if path is None:
        return Tokenizer.named("latin")
    file = path / METADATA_FILE if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        return Tokenizer.from_dict(data.get("tokenizer", data))
    except (OSError, ValueError, KeyError) as exc:
        raise fail(f"--vocab {path}: not a tokenizer JSON or staged model ({exc})") from exc


@annotate_app.command("import")
def import_command(
    export: Annotated[
        Path, typer.Argument(help="Label Studio JSON export (Export > JSON).", show_default=False)
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Dataset folder to write.")],
    images_root: Annotated[
        Path,
        typer.Option(
            help="Where the tasks' images are: the document root the tasks were made with, or "
            "the folder holding files uploaded to Label Studio."
        ),
    ] = Path("."),
    min_agreement: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Keep a task only if another annotator's transcription agrees at least this much "
            "(1 - edit distance / length); ground-truth annotations always pass. 0 = off.",
        ),
    ] = 0.0,
    val_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of tasks for val.")
    ] = 0.1,
    test_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of tasks for test.")
    ] = 0.1,
    keep_illegible: Annotated[
        bool, typer.Option(help="Keep lines with '#' illegible marks (default: leave them out).")
    ] = False,
    keep_unknown: Annotated[
        bool,
        typer.Option(
            help="Keep lines with characters outside the vocabulary (default: leave out)."
        ),
    ] = False,
    mask_paragraphs: Annotated[
        bool,
        typer.Option(
            "--mask-paragraphs/--no-mask-paragraphs",
            help="Paint everything outside the line boxes paper-coloured in paragraph samples.",
        ),
    ] = True,
    vocab: Annotated[
        Path | None,
        typer.Option(
            help="Tokenizer JSON or staged model whose vocabulary labels must fit (default: "
            "the Latin, Western European, set of the shipped model)."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a dataset already at --out.")] = False,
) -> None:
    """Turn a Label Studio export into line crops + paragraph samples with a manifest.

    Exits 1 when nothing could be imported (every task left out: the table says why), as
    `quill data import` does."""
    from quill.annotation.importer import (
        ImportOptions,
        LabelStudioExportError,
        import_tasks,
        load_export,
    )

    require_split_fractions(val_fraction, test_fraction)
    check_output(out, folder=True)
    options = ImportOptions(
        images_root=images_root,
        min_agreement=min_agreement,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        keep_illegible=keep_illegible,
        keep_unknown=keep_unknown,
        mask_paragraphs=mask_paragraphs,
        tokenizer=_load_tokenizer(vocab),
    )
    try:
        tasks = load_export(export)
        progress, bar = _progress("import", len(tasks))
        with progress:
            result = import_tasks(
                tasks, str(export), out, options, overwrite, lambda n: progress.advance(bar, n)
            )
    except (LabelStudioExportError, FileExistsError) as exc:
        raise fail(str(exc)) from exc
    _print_import(result, out)
    if not len(result.manifest):
        raise typer.Exit(EXIT_FAILED)


def _print_import(result: Any, out: Path) -> None:
    from rich.table import Table

    from quill.annotation.importer import REASONS

    console = _console(stderr=False)
    loaded = result.report.loaded
    console.print(
        f"{result.tasks_used}/{result.tasks} tasks -> {loaded.get('line', 0)} lines, "
        f"{loaded.get('paragraph', 0)} paragraphs in {out} (version {result.manifest.version}, "
        f"splits {dict(sorted(result.manifest.counts().items()))})"
    )
    if result.reasons:
        table = Table("left out", "count", "why", title="skipped (details: import-report.json)")
        for code, count in result.reasons.most_common():
            table.add_row(code, str(count), REASONS[code])
        console.print(table)


@annotate_app.command("serve")
def serve_command(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8080,
    host: Annotated[
        str, typer.Option(help="Address to bind. Anything but loopback needs --allow-remote.")
    ] = "127.0.0.1",
    data_dir: Annotated[Path, typer.Option(help="Label Studio's database and uploads.")] = Path(
        ".cache/labelstudio-data"
    ),
    document_root: Annotated[
        Path, typer.Option(help="Root for /data/local-files/ URLs (as in `quill annotate tasks`).")
    ] = Path("."),
    venv: Annotated[
        Path,
        typer.Option(
            help="Label Studio's own virtualenv ($QUILL_LABELSTUDIO_VENV; `make labelstudio`)."
        ),
    ] = Path(os.environ.get("QUILL_LABELSTUDIO_VENV", ".cache/labelstudio-venv")),
    allow_remote: Annotated[
        bool, typer.Option(help="Allow binding a non-loopback address (put TLS in front of it!).")
    ] = False,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the server to come up.")
    ] = 300.0,
) -> None:
    """Start Label Studio from its own virtualenv, offline, on localhost, password protected.

    Credentials come from LABEL_STUDIO_USERNAME (an e-mail address), LABEL_STUDIO_PASSWORD
    and LABEL_STUDIO_USER_TOKEN. Stops on Ctrl-C or SIGTERM, and stops Label Studio with it.
    """
    from quill.annotation.server import LabelStudioProcess, ServeError, ServeSettings

    settings = ServeSettings(venv, host, port, data_dir, document_root, allow_remote)
    console = _console()
    # a service manager stops with SIGTERM: clean up as for Ctrl-C, leaving no orphan server
    with sigterm_as_ctrl_c():
        try:
            server = LabelStudioProcess(settings).start()
        except (ServeError, OSError) as exc:
            raise fail(str(exc)) from exc
        try:
            starting = "starting Label Studio (a new data folder: a minute, or seconds from "
            with console.status(starting + "`make labelstudio`'s empty database)"):
                waited = server.wait_healthy(timeout)
            console.print(f"Label Studio is up at {settings.url} ({waited:.0f} s); Ctrl-C stops it")
            code = server.wait()
        except ServeError as exc:
            server.stop()
            raise fail(str(exc)) from exc
        except KeyboardInterrupt:
            server.stop()
            console.print("Label Studio stopped")
            code = 0
    raise typer.Exit(code)


def _client(url: str | None) -> Any:
    from quill.annotation.client import LabelStudioClient, LabelStudioError

    try:
        return LabelStudioClient.from_env(url)
    except LabelStudioError as exc:
        raise fail(str(exc)) from exc


URL_HELP = "Label Studio URL (default: $LABEL_STUDIO_URL or http://127.0.0.1:8080)."


@annotate_app.command("push")
def push_command(
    tasks_file: Annotated[
        Path, typer.Argument(help="Tasks JSON from `quill annotate tasks`.", show_default=False)
    ],
    project: Annotated[
        str, typer.Option(help="Project title (created if missing).")
    ] = "Quill handwriting",
    url: Annotated[str | None, typer.Option(help=URL_HELP)] = None,
    document_root: Annotated[
        Path,
        typer.Option(
            help="The server's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT, for local-files tasks."
        ),
    ] = Path("."),
) -> None:
    """Create/find the project (config + instructions) and import tasks into it.

    API token from LABEL_STUDIO_API_KEY or LABEL_STUDIO_USER_TOKEN.
    """
    from quill.annotation.client import LabelStudioError, TaskFileError, storage_folder
    from quill.annotation.config import LabelingConfigError

    try:
        tasks = json.loads(tasks_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise fail(f"{tasks_file}: cannot read tasks JSON ({exc})") from exc
    if not isinstance(tasks, list):
        raise fail(f"{tasks_file}: tasks JSON must be a list")
    try:  # before the project is made: a bad file must leave the server as it was
        folder = storage_folder(tasks, document_root)
    except TaskFileError as exc:
        raise fail(f"{tasks_file}: {exc}") from exc
    with _client(url) as client:
        try:
            found, created = client.ensure_project(project)
            if folder is not None:
                client.ensure_local_storage(found["id"], folder)
            count = client.import_tasks(found["id"], tasks)
        except (LabelStudioError, LabelingConfigError) as exc:
            raise fail(str(exc)) from exc
    verb = "created" if created else "found"
    _console().print(
        f"{verb} project {found.get('title')!r} (id {found['id']}); imported {count} tasks; "
        f"open {client.url}/projects/{found['id']}"
    )


@annotate_app.command("pull")
def pull_command(
    *,
    project: Annotated[str, typer.Option(help="Project title or id.")] = "Quill handwriting",
    out: Annotated[Path, typer.Option("--out", "-o", help="Export JSON file to write.")],
    url: Annotated[str | None, typer.Option(help=URL_HELP)] = None,
) -> None:
    """Download a project's JSON export (every task) for `quill annotate import`."""
    from quill.annotation.client import LabelStudioError

    check_output(out, folder=False)
    with _client(url) as client:
        try:
            found = client.project(project)
            if found is None:
                raise fail(f"no project {project!r} on {client.url}")
            tasks = client.export(found["id"])
        except LabelStudioError as exc:
            raise fail(str(exc)) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(tasks, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    annotated = sum(1 for task in tasks if task.get("annotations"))
    _console().print(f"wrote {len(tasks)} tasks ({annotated} annotated) to {out}")


@monitor_app.command("export")
def export_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Task file (JSON) to write.")],
    to: Annotated[str, typer.Option("--to", help="Target tool.")] = "labelstudio",
    flagged: Annotated[bool, typer.Option(help="Only predictions users flagged.")] = False,
    corrected: Annotated[bool, typer.Option(help="Only predictions users corrected.")] = False,
    slice_: Annotated[
        list[str] | None,
        typer.Option(
            "--slice",
            help="Only KEY=VALUE, e.g. polarity=light-on-dark (repeat); an unknown key or value "
            "is an error naming the known ones.",
        ),
    ] = None,
    since: SinceOption = "7d",
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many tasks.")] = None,
    document_root: Annotated[
        Path | None,
        typer.Option(help="Label Studio's local-files document root (default: OUT's folder)."),
    ] = None,
    url: UrlOption = None,
    images: ImagesOption = None,
    config: ConfigOption = None,
) -> None:
    """Export predictions as Label Studio tasks, pre-annotated with the model's answer.

    Images are copied to OUT's folder/images/. Import the tasks into a project made with
    `quill annotate config`, then bring the annotations back with `quill annotate import`.
    Exits 1 when no task is left (nothing matched, or no matched prediction kept its image):
    OUT is then left as it was if it holds tasks, since an empty list would silently replace
    tasks not yet imported.
    """
    from quill.annotation.from_monitoring import (
        FORMATS,
        labelstudio_tasks,
        parse_slices,
        select,
    )
    from quill.annotation.tasks import write_tasks

    if to not in FORMATS:
        raise typer.BadParameter(f"use one of {FORMATS}", param_hint="--to")
    check_output(out, folder=False)
    settings = _settings(config)
    try:
        slices = parse_slices(slice_ or [], settings)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--slice") from exc
    store = _store(url, images, settings, must_exist=True)
    start = _since(since)
    chosen = select(
        store.predictions(since=start, flagged=flagged),
        settings,
        flagged=flagged,
        corrected=corrected,
        slices=slices,
    )[:limit]
    try:
        result = labelstudio_tasks(store, chosen, out, document_root=document_root)
    except ValueError as exc:  # an image outside the document root
        raise fail(str(exc)) from exc
    console = _console(stderr=False)
    for note in result.skipped:
        console.print(f"[yellow]skipped {note}[/yellow]")
    if not result.tasks:
        why = (
            f"none of the {len(chosen)} matching prediction(s) has its image"
            if chosen
            else "no prediction matched the filters"
        )
        if _holds_tasks(out):
            raise fail(f"{why}; {out} left as it was", EXIT_FAILED)
        write_tasks([], out)
        raise fail(f"{why}; wrote an empty task list to {out}", EXIT_FAILED)
    write_tasks(result.tasks, out)
    console.print(f"wrote {len(result.tasks)} task(s) to {out} (images in {out.parent / 'images'})")


def _holds_tasks(path: Path) -> bool:
    """Whether ``path`` holds something an empty task list would replace: anything but
    nothing at all or an empty JSON list."""
    if not path.is_file():
        return False
    try:
        text = path.read_text(encoding="utf-8")
        return bool(text.strip()) and json.loads(text) != []
    except (OSError, ValueError):  # unreadable or not JSON: not ours to replace with []
        return True


def register(app: typer.Typer) -> None:
    """Add ``quill annotate`` to the ``quill`` app (``quill monitor export`` is on
    ``monitor_app`` as soon as this module is imported)."""
    app.add_typer(annotate_app, name="annotate")
