"""The plain folder format: image files and a ``labels.tsv`` naming them with their text.

``labels.tsv`` is UTF-8, tab-separated, with a header row. Columns:

- ``file`` (required): image path relative to the folder holding ``labels.tsv``, or absolute;
- ``text`` (required): the transcription (for ``kind=paragraph`` rows, ``\\n`` marks a line
  break, since a TSV cell cannot hold one);
- ``page`` (optional): the unit splits keep together; the file itself when absent. A page id
  ``writer__page`` names its writer (the part before ``__``), as the multi-writer sets do;
- ``split`` (optional): ``train``/``val``/``test`` to fix a row's split yourself;
- ``kind`` (optional): ``line`` (default) or ``paragraph``.

Splits (``split_by``): ``page`` keeps each page on one side; ``writer`` keeps each writer on
one side, so val and test hold only hands that train never saw; ``auto`` (the default) is
``writer`` when every row's page id names a writer, else ``page`` (the Hooker letters, one
writer, keep their page split); when most page ids name a writer but some do not, ``auto``
refuses, naming those rows: a typo there (``wC_p2`` for ``wC__p2``) would otherwise put
the whole set on a page split, writers across train and test. Both hash the unit with
:func:`assign_splits`. A sample's
group is that unit, and its meta records ``file``, ``page`` and, where named, ``writer``.

Images are referenced where they are (paths relative to the output folder) unless ``copy``
is asked for, so importing a large collection costs no disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from quill.data.manifest import SPLITS, writer_of
from quill.data.readers.common import (
    KINDS,
    DatasetError,
    DatasetWriter,
    ImportReport,
    ImportResult,
    normalise_text,
    progress,
)
from quill.evaluation.normalise import normalise
from quill.vocab import Tokenizer

LABELS_NAME = "labels.tsv"
REQUIRED_COLUMNS = ("file", "text")
SplitBy = Literal["page", "writer", "auto"]
SPLIT_BY: tuple[SplitBy, ...] = ("page", "writer", "auto")


def read_folder(
    src: Path,
    out: Path,
    *,
    tokenizer: Tokenizer | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    copy: bool = False,
    split_by: SplitBy = "auto",
    show_progress: bool = False,
) -> ImportResult:
    """Import a folder with ``labels.tsv`` (or the TSV file itself) into dataset ``out``.

    Rows without a ``split`` are split by ``split_by`` (page, writer, or auto: writer when
    every page id is ``writer__page``) with :func:`assign_splits`. Unusable rows are skipped
    and reported, among them rows that name one image with different texts (all of them)
    and exact repeats of a row (the repeat; the first is imported): see
    :func:`_unusable_rows`.
    """
    labels = _labels_path(Path(src))
    rows = _read_rows(labels)
    unit = resolve_split_by(rows, split_by, labels)
    unusable = _unusable_rows(labels, rows)
    report = ImportReport(f"folder:{labels}")
    writer = DatasetWriter(out, labels.parent.name or "folder", report, tokenizer)
    if not rows:
        report.skip(labels, f"{labels.name} has no rows below its header")
    for number, row in progress(rows, "labelled images", len(rows), show_progress):
        if isinstance(row, str):
            report.skip(f"{labels.name}:{number}", row)
            continue
        where = f"{labels.name}:{number} ({row['file']})"
        path = row_image(labels, row)
        problem = unusable.get(number)
        if problem:
            report.skip(where, problem)
            continue
        kind = row.get("kind") or "line"
        raw = row["text"].replace("\\n", "\n") if kind == "paragraph" else row["text"]
        text = writer.check(where, raw)
        if text is None:
            continue
        page = row.get("page") or ""
        hand = writer_of(page)
        meta = {"file": row["file"], **({"page": page} if page else {})}
        if hand:
            meta["writer"] = hand
        writer.add_file(
            path,
            text,
            group=(hand if unit == "writer" else page) or row["file"],
            kind=kind,  # type: ignore[arg-type]
            meta=meta,
            split=row.get("split") or None,  # type: ignore[arg-type]
            copy=copy,
            where=where,
        )
    return writer.finish(val_fraction=val_fraction, test_fraction=test_fraction)


def labelled_lines(src: Path) -> list[tuple[Path, str]]:
    """Each row of a folder's ``labels.tsv`` (or the TSV itself) as (image path, text), in
    file order: a handful of lines to read or adapt on, not a dataset to import. Raises
    :class:`DatasetError` naming every row that cannot be used (malformed, no image, an
    image another row names too): rows that give one image different texts are refused
    naming each other, and so is an exact repeat of a row (same image, same text), which
    would count that line twice."""
    labels = _labels_path(Path(src))
    rows = _read_rows(labels)
    unusable = _unusable_rows(labels, rows)
    lines, problems = [], []
    for number, row in rows:
        if isinstance(row, str):
            problems.append(f"{labels.name}:{number}: {row}")
            continue
        path = row_image(labels, row)
        problem = unusable.get(number)
        if problem:
            problems.append(f"{labels.name}:{number} ({row['file']}): {problem}")
        else:  # NFC, as an import makes it: a decomposed é is a letter the model writes
            lines.append((path, normalise_text(row["text"])))
    if problems:
        raise DatasetError("; ".join(problems))
    if not lines:
        raise DatasetError(f"{labels} lists no lines")
    return lines


def resolve_split_by(
    rows: list[tuple[int, dict[str, str] | str]], split_by: str, labels: Path
) -> Literal["page", "writer"]:
    """The unit rows are split by: ``auto`` is writer when every page id names a writer,
    page when at most half do; in between it refuses, naming the rows that do not."""
    if split_by not in SPLIT_BY:
        raise DatasetError(f"split_by {split_by!r} is not one of {', '.join(SPLIT_BY)}")
    pages = [(n, row.get("page") or "") for n, row in rows if not isinstance(row, str)]
    nameless = [page for _, page in pages if not writer_of(page)]
    if split_by == "auto" and nameless and len(nameless) < len(pages) / 2:
        shown = ", ".join(
            f"{labels.name}:{n} ({page!r})" for n, page in pages if not writer_of(page)
        )
        raise DatasetError(
            f"{labels}: {len(pages) - len(nameless)} of {len(pages)} page ids name their "
            f"writer (writer__page) but {len(nameless)} do not: {shown}. Fix those page ids "
            "to split by writer, or pass --split-by page to split by page (writers may then "
            "be on both sides of the split)"
        )
    if split_by == "page" or (split_by == "auto" and (nameless or not pages)):
        return "page"
    if nameless:
        raise DatasetError(
            f"{labels}: splitting by writer needs every page id to be writer__page, but "
            f"{len(nameless)} rows are not (e.g. {nameless[0]!r}); use --split-by page"
        )
    return "writer"


def rows_only_in(src: Path, narrow: Tokenizer, wide: Tokenizer) -> tuple[int, list[str]]:
    """Rows of ``src``'s labels that ``narrow`` rejects for characters ``wide`` has.

    Returns how many there are and those characters (first seen first): the lines an import
    with the ``narrow`` vocabulary skipped that ``wide`` would have kept.
    """
    count, characters = 0, dict[str, None]()
    for _, row in _read_rows(_labels_path(Path(src))):
        if isinstance(row, str):
            continue
        text = normalise_text(row["text"])
        missing = narrow.unknown_characters(text)
        if missing and not wide.unknown_characters(text):
            count += 1
            characters.update(dict.fromkeys(missing))
    return count, list(characters)


def row_image(labels: Path, row: dict[str, str]) -> Path:
    """The image a ``labels.tsv`` row names: its ``file``, relative to the folder holding
    ``labels.tsv`` unless absolute.

    >>> row_image(Path("/data/lines/labels.tsv"), {"file": "a/1.png"}).as_posix()
    '/data/lines/a/1.png'
    """
    image = Path(row["file"])
    return image if image.is_absolute() else labels.parent / image


def _labels_path(src: Path) -> Path:
    if src.is_file():
        return src
    if not src.exists():
        raise DatasetError(f"folder dataset not found: {src}")
    labels = src / LABELS_NAME
    if not labels.is_file():
        raise DatasetError(
            f"{src} has no {LABELS_NAME} (header: file<TAB>text, and an optional page column)"
        )
    return labels


def _read_rows(labels: Path) -> list[tuple[int, dict[str, str] | str]]:
    """(line number, row as a dict or the reason the line is malformed) for each data line.

    Rows end at ``\\n`` only (a CRLF's ``\\r`` is dropped): ``str.splitlines`` also breaks at
    U+2028, U+0085, form feeds and lone ``\\r``, which cut a text in two, kept its first part
    as the label and shifted every later line number.
    """
    try:
        text = labels.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        problem = f"{exc.reason} at byte {exc.start}"
        raise DatasetError(f"{labels} is not UTF-8 text ({problem})") from exc
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    header = lines[0].split("\t") if lines else []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DatasetError(
            f"{labels}: the first line must be a header with columns file and text "
            f"(tab-separated); missing {', '.join(missing)} in {lines[0][:80] if lines else ''!r}"
        )
    rows: list[tuple[int, dict[str, str] | str]] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            rows.append((number, f"expected {len(header)} tab-separated fields, got {len(fields)}"))
        else:
            rows.append((number, dict(zip(header, fields, strict=True))))
    return rows


def _unusable_rows(labels: Path, rows: list[tuple[int, dict[str, str] | str]]) -> dict[int, str]:
    """Why each well-formed row that cannot be used cannot, by line number.

    A row's own problem comes first (:func:`_row_problem`). Among the rows left, those naming
    the same image file conflict when their texts differ once normalised
    (:func:`~quill.evaluation.normalise.normalise`: spacing that the label loses anyway is
    no difference): which text is right is not for the reader to guess, so each names the
    others. A row that repeats an earlier one (same image, same text) is a duplicate: the
    repeat is refused, the first row stands. A row skipped for its own problem never counts
    as the first, so it cannot cost a good repeat its image. Paths are compared resolved,
    so ``a.png`` and ``./a.png`` are one image.
    """
    problems: dict[int, str] = {}
    by_image: dict[Path, list[tuple[int, str]]] = {}
    for number, row in rows:
        if isinstance(row, str):
            continue
        path = row_image(labels, row)
        problem = _row_problem(row, path)
        if problem:
            problems[number] = problem
        else:
            by_image.setdefault(path.resolve(), []).append((number, normalise(row["text"])))
    for named in by_image.values():
        numbers = [number for number, _ in named]
        if len({text for _, text in named}) > 1:
            for number in numbers:
                others = ", ".join(f"{labels.name}:{n}" for n in numbers if n != number)
                problems[number] = f"the same image as {others}, with a different text"
        else:
            for number in numbers[1:]:
                problems[number] = f"repeats {labels.name}:{numbers[0]} (same image, same text)"
    return problems


def _row_problem(row: dict[str, str], path: Path) -> str | None:
    if not row["file"]:
        return "no file name"
    if not path.is_file():
        if path.is_symlink():
            return f"image file is a symbolic link that leads nowhere (a loop?): {path}"
        return f"image file not found: {path}"
    if row.get("split") and row["split"] not in SPLITS:
        return f"split {row['split']!r} is not one of {', '.join(SPLITS)}"
    if row.get("kind") and row["kind"] not in KINDS:
        return f"kind {row['kind']!r} is not one of {', '.join(KINDS)}"
    return None
