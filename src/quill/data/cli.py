"""Commands of the data layer: ``quill data ...``."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer

from quill.errors import check_output, fail

if TYPE_CHECKING:
    from quill.data.manifest import Split
    from quill.data.readers.common import ImportResult

data_app = typer.Typer(help="Make, import, inspect and version datasets.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``quill data`` to the ``quill`` app."""
    from quill.data.synth.commands import add_commands  # synth, show, stats

    add_commands(data_app)
    app.add_typer(data_app, name="data")


class ImportFormat(StrEnum):
    folder = "folder"
    pagexml = "pagexml"
    alto = "alto"
    iam = "iam"


class SplitBy(StrEnum):
    auto = "auto"
    page = "page"
    writer = "writer"


class Vocabulary(StrEnum):
    ascii = "ascii"
    latin = "latin"


class DownloadTarget(StrEnum):
    iam = "iam"


OutOption = Annotated[Path, typer.Option("--out", "-o", help="Dataset folder to write.")]
OverwriteOption = Annotated[bool, typer.Option(help="Replace a dataset already in --out.")]


def require_split_fractions(val_fraction: float, test_fraction: float) -> None:
    """:func:`~quill.data.manifest.check_split_fractions` as a usage error naming both
    options, for every command that makes a dataset (import, annotate import, feedback
    dataset): checked before anything is written, not when the dataset is split at the end."""
    from quill.data.manifest import check_split_fractions

    try:
        check_split_fractions(val_fraction, test_fraction)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--val-fraction/--test-fraction") from exc


def _print_result(result: ImportResult, hint: Callable[[], str | None] | None = None) -> None:
    """The import report (skips in yellow), then the dataset's version and split counts.

    ``hint`` is asked for one more line to print when something was skipped."""
    from rich.console import Console
    from rich.markup import escape

    from quill.data.manifest import MANIFEST_NAME, REPORT_NAME

    console = Console()
    summary = result.report.summary()
    console.print(summary[0])
    for line in summary[1:]:
        console.print(f"[yellow]{escape(line)}[/yellow]", soft_wrap=True)
    manifest = result.manifest
    # an import that loaded nothing leaves a dataset already in --out as it was, report too
    kept = not len(manifest) and (manifest.root / MANIFEST_NAME).is_file()
    if len(manifest):
        counts = ", ".join(f"{split} {n}" for split, n in sorted(manifest.counts().items()))
        console.print(
            f"dataset {manifest.root}  version {manifest.version}  ({counts})", soft_wrap=True
        )
    elif kept:
        console.print(
            f"nothing imported: the dataset already in {manifest.root} is left as it was",
            soft_wrap=True,
        )
    else:
        console.print(f"nothing imported: no dataset written to {manifest.root}", soft_wrap=True)
    if result.report.skipped:
        if not kept:
            console.print(f"full report: {manifest.root / REPORT_NAME}", soft_wrap=True)
        note = hint() if hint else None
        if note:
            console.print(f"[cyan]{escape(note)}[/cyan]", soft_wrap=True)
    if not len(manifest):
        raise typer.Exit(1)


def _make_dataset(
    src: Path, what: str, out: Path, overwrite: bool, make: Callable[[Path], ImportResult]
) -> ImportResult:
    """Run ``make`` (which writes a dataset read from ``src`` into the folder it is given)
    after the checks every command that makes a dataset owes its --out, and put the dataset
    in ``out`` only once it is complete.

    Before any work: ``out`` must be writable (:func:`check_output`), not the source folder
    itself (``src``, or its folder when it is a file: ``quill data paragraphs ds --out ds``
    replaced the lines it read with its paragraphs; a folder inside it is fine) and free of a
    dataset unless ``overwrite``. ``make`` writes into a scratch folder
    (:func:`~quill.data.manifest.building_dataset`): a dataset already in ``out`` is
    replaced only by one with samples, so an import that fails, is interrupted or loads
    nothing leaves it as it was. Where there was none, an import that loads nothing leaves
    only its report (the reasons, exit 1): an empty manifest would pass for a dataset.
    """
    from quill.data.manifest import DatasetExistsError, Manifest, building_dataset
    from quill.data.readers import DatasetError

    check_output(out, folder=True)
    if not src.exists():
        raise fail(f"{what} not found: {src}")
    source = (src if src.is_dir() else src.parent).resolve()
    if out.resolve() == source:
        raise fail(f"--out {out}: is the source folder {source}; write the dataset elsewhere")
    try:
        with building_dataset(out, overwrite, keep=source) as scratch:
            result = make(scratch)
    except (DatasetExistsError, DatasetError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc
    result.manifest = Manifest.load(out) if len(result.manifest) else Manifest(out, [])
    return result


@data_app.command(
    "import",
    help="Import real ground truth into a dataset folder (images + manifest.jsonl).\n\n"
    "FORMAT is folder (images + labels.tsv), pagexml, alto or iam (forms/ + xml/). "
    "Splits go by page or by writer (IAM: by writer, or its official task lists), never by "
    "line; folder: --split-by auto splits by writer when every page id is writer__page. "
    "Anything unusable is listed with its file and reason; the rest is imported.",
)
def import_command(
    fmt: Annotated[ImportFormat, typer.Argument(metavar="FORMAT", help="Source format.")],
    src: Annotated[Path, typer.Argument(metavar="SRC", help="Source folder (or file).")],
    out: OutOption,
    kinds: Annotated[
        str, typer.Option(help="Samples to make from layouts: line, paragraph or both.")
    ] = "line,paragraph",
    val_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of groups for validation.")
    ] = 0.1,
    test_fraction: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Share of groups for test (with val's, at most 1)."),
    ] = 0.1,
    copy: Annotated[
        bool, typer.Option(help="folder: copy images into OUT instead of referencing them.")
    ] = False,
    split_lists: Annotated[
        Path | None, typer.Option(help="iam: folder with trainset.txt etc. (default: SRC).")
    ] = None,
    split_by: Annotated[
        SplitBy,
        typer.Option(
            help="folder: keep each page or each writer (the part of a page id before __) "
            "on one side of the split; auto = writer when every page id has __, else page."
        ),
    ] = SplitBy.auto,
    vocabulary: Annotated[
        Vocabulary,
        typer.Option(help="Character set labels must fit: ascii, or latin (Western European)."),
    ] = Vocabulary.ascii,
    overwrite: OverwriteOption = False,
) -> None:
    """Import real ground truth in FORMAT from SRC into dataset folder OUT."""
    from quill.data.readers import READERS
    from quill.data.readers.common import KINDS
    from quill.vocab import Tokenizer

    require_split_fractions(val_fraction, test_fraction)
    # checked for every format: the folder's rows name their own kind (labels.tsv's kind
    # column), but a misspelt --kinds must not pass unnoticed there either
    chosen = tuple(k.strip() for k in kinds.split(",") if k.strip())
    unknown = [kind for kind in chosen if kind not in KINDS]
    if not chosen or unknown:
        raise typer.BadParameter(
            f"{', '.join(unknown) or 'none'} given; the kinds are {', '.join(KINDS)} "
            "(comma-separated)",
            param_hint="--kinds",
        )
    tokenizer = Tokenizer.named(vocabulary.value)
    options: dict = {
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "tokenizer": tokenizer,
    }
    if fmt is ImportFormat.folder:
        options["copy"] = copy
        options["split_by"] = split_by.value
    else:
        if split_by is not SplitBy.auto:
            raise typer.BadParameter("only the folder format takes it", param_hint="--split-by")
        options["kinds"] = chosen
    if fmt is ImportFormat.iam:
        options["split_lists"] = split_lists
    result = _make_dataset(
        src,
        f"{fmt.value} source",
        out,
        overwrite,
        lambda folder: READERS[fmt.value](src, folder, show_progress=True, **options),
    )
    hinted = fmt is ImportFormat.folder and vocabulary is Vocabulary.ascii
    _print_result(result, (lambda: _latin_hint(src)) if hinted else None)


def _latin_hint(src: Path) -> str | None:
    """A hint when an ascii import skipped lines whose characters the latin set has."""
    from quill.data.readers.folder import rows_only_in
    from quill.vocab import Tokenizer

    count, characters = rows_only_in(src, Tokenizer.named("ascii"), Tokenizer.named("latin"))
    if not count:
        return None
    shown = " ".join(characters[:12]) + (" ..." if len(characters) > 12 else "")
    return (
        f"hint: {count} {'line was' if count == 1 else 'lines were'} skipped for characters "
        "the latin vocabulary has "
        f"({shown}); import with --vocabulary latin to keep them"
    )


@data_app.command(
    "paragraphs",
    help="Make paragraphs by stacking real line crops of SRC (texts joined by newlines).\n\n"
    "Each split's paragraphs use only that split's lines, so no test line leaks into "
    "training. The same seed gives the same paragraphs.",
)
def paragraphs_command(
    src: Annotated[
        Path, typer.Argument(metavar="SRC", help="Dataset folder holding line samples.")
    ],
    out: OutOption,
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Paragraphs to make.")] = 1000,
    seed: Annotated[int, typer.Option(min=0, help="Random seed (same seed, same paragraphs).")] = 0,
    min_lines: Annotated[int, typer.Option(min=1, help="Fewest lines per paragraph.")] = 2,
    max_lines: Annotated[int, typer.Option(min=1, help="Most lines per paragraph.")] = 8,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Processes (default: one per core).")
    ] = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Stack line crops of dataset SRC into N paragraphs in OUT."""
    from quill.data.paragraphs import ParagraphConfig, make_paragraphs

    if max_lines < min_lines:
        raise typer.BadParameter("must be at least --min-lines", param_hint="--max-lines")
    config = ParagraphConfig(min_lines=min_lines, max_lines=max_lines)
    result = _make_dataset(
        src,
        "dataset",
        out,
        overwrite,
        lambda folder: make_paragraphs(
            src, folder, n, seed=seed, config=config, workers=workers, show_progress=True
        ),
    )
    _print_result(result)


@data_app.command(
    "pages",
    help="Compose whole pages from real line crops of the shared datasets, as JPEG + PAGE XML "
    "(a page set for `quill bench accuracy --pages NAME=OUT`).\n\n"
    "Pages look like letters and wills: one hand per page, its own line height, spacing and "
    "slope, indents, headings, notes in a margin, a word inserted between lines, a faint "
    "pencil note, a stamp's ring, tinted and shaded paper. Only writers of --split are used "
    "(writers split as `quill data import folder --split-by writer` splits them; the four "
    "Hooker pages with PAGE XML never), and only whole lines, so every line's text is known. "
    "The same seed gives the same pages.",
)
def pages_command(
    out: OutOption,
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Pages to make.")] = 40,
    split: Annotated[str, typer.Option(help="Writers of this split: train, val or test.")] = "test",
    seed: Annotated[
        int, typer.Option(min=0, help="Seed of the first page (then seed+1, ...).")
    ] = 0,
    dataset: Annotated[
        list[str] | None,
        typer.Option(
            help="Shared dataset whose writers write the pages (repeat; default: all four: "
            "copiste, poilus, mss19, hooker-letters). Hooker's letters are one hand, split by "
            "page: leave it out for pages of writers never trained on."
        ),
    ] = None,
    shared: Annotated[
        Path | None,
        typer.Option(help="Folder holding the shared datasets (default: ../shared/datasets)."),
    ] = None,
) -> None:
    """Write N composed pages of SPLIT's writers to OUT."""
    from quill.data.manifest import SPLITS
    from quill.data.synth.pages import DATASETS, write_page_set

    if split not in SPLITS:
        raise typer.BadParameter(f"one of {', '.join(SPLITS)}", param_hint="--split")
    unknown = [name for name in dataset or [] if name not in DATASETS]
    if unknown:
        raise typer.BadParameter(
            f"{unknown[0]!r}: one of {', '.join(DATASETS)}", param_hint="--dataset"
        )
    try:
        written = write_page_set(
            out, n, cast("Split", split), seed, shared, tuple(dataset or DATASETS)
        )
    except FileNotFoundError as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"wrote {len(written)} pages (JPEG + PAGE XML) to {out}")


@data_app.command("manifest")
def manifest_command(
    folder: Annotated[
        Path, typer.Argument(metavar="DIR", help="Dataset folder (or its manifest.jsonl).")
    ],
) -> None:
    """Print a dataset's version id and its sample counts per split, kind and source."""
    from collections import Counter

    from rich.console import Console
    from rich.table import Table

    from quill.data.manifest import SPLITS, Manifest

    try:
        manifest = Manifest.load(folder)
    except (FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
    console = Console()
    groups = len({s.group for s in manifest})
    console.print(f"{manifest.root}  version [bold]{manifest.version}[/bold]")
    console.print(f"{len(manifest)} samples in {groups} groups")
    cells = Counter((s.source, s.kind, s.split) for s in manifest)
    table = Table("source", "kind", *SPLITS)
    for source, kind in sorted({(s, k) for s, k, _ in cells}):
        table.add_row(source, kind, *(str(cells[source, kind, split]) for split in SPLITS))
    console.print(table)


@data_app.command(
    "download",
    help="Download IAM (needs a network and, for the official site, a free IAM account).\n\n"
    "Set IAM_USERNAME and IAM_PASSWORD for --source fki. Every archive's SHA-256 is "
    "checked before it is unpacked. Then: quill data import iam DIR --out DATASET.",
)
def download_command(
    dataset: Annotated[
        DownloadTarget, typer.Argument(metavar="DATASET", help="Dataset to download.")
    ],
    to: Annotated[Path, typer.Option("--to", help="Folder to download and unpack into.")],
    source: Annotated[
        str, typer.Option(help="fki (official site, needs IAM_USERNAME/IAM_PASSWORD) or fsdl.")
    ] = "fki",
) -> None:
    """Download, verify and unpack DATASET into TO."""
    from quill.data.download import DownloadError, download_iam

    try:
        notes = download_iam(to, source=source, show_progress=True)
    except DownloadError as exc:
        raise fail(str(exc)) from exc
    for note in notes:
        typer.echo(note)
    typer.echo(f"IAM is in {to}; next: quill data import iam {shlex.quote(str(to))} --out data/iam")
