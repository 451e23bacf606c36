"""The plain folder format: image files and a ``labels.tsv`` naming them with their text.

``labels.tsv`` is UTF-8, tab-separated, with a header row. Columns:

- ``file`` (required): image path relative to the folder holding ``labels.tsv``, or absolute;
- ``text`` (required): the transcription (for ``kind=paragraph`` rows, ``\\n`` marks a line
  break, since a TSV cell cannot hold one);
- ``page`` (optional): the unit splits keep together (a page, a writer); the file itself
  when absent;
- ``split`` (optional): ``train``/``val``/``test`` to fix a row's split yourself;
- ``kind`` (optional): ``line`` (default) or ``paragraph``.

Images are referenced where they are (paths relative to the output folder) unless ``copy``
is asked for, so importing a large collection costs no disk.
"""

from __future__ import annotations

from pathlib import Path

from quill.data.manifest import SPLITS
from quill.data.readers.common import (
    KINDS,
    DatasetError,
    DatasetWriter,
    ImportReport,
    ImportResult,
    progress,
)
from quill.vocab import Tokenizer

LABELS_NAME = "labels.tsv"
REQUIRED_COLUMNS = ("file", "text")


def read_folder(
    src: Path,
    out: Path,
    *,
    tokenizer: Tokenizer | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    copy: bool = False,
    show_progress: bool = False,
) -> ImportResult:
    """Import a folder with ``labels.tsv`` (or the TSV file itself) into dataset ``out``.

    Rows without a ``split`` are split by ``page`` with :func:`assign_splits`.
    """
    labels = _labels_path(Path(src))
    rows = _read_rows(labels)
    report = ImportReport(f"folder:{labels}")
    writer = DatasetWriter(out, labels.parent.name or "folder", report, tokenizer)
    for number, row in progress(rows, "labelled images", len(rows), show_progress):
        if isinstance(row, str):
            report.skip(f"{labels.name}:{number}", row)
            continue
        where = f"{labels.name}:{number} ({row['file']})"
        path = Path(row["file"])
        path = path if path.is_absolute() else labels.parent / path
        problem = _row_problem(row, path)
        if problem:
            report.skip(where, problem)
            continue
        kind = row.get("kind") or "line"
        raw = row["text"].replace("\\n", "\n") if kind == "paragraph" else row["text"]
        text = writer.check(where, raw)
        if text is None:
            continue
        writer.add_file(
            path,
            text,
            group=row.get("page") or row["file"],
            kind=kind,  # type: ignore[arg-type]
            meta={"file": row["file"], **({"page": row["page"]} if row.get("page") else {})},
            split=row.get("split") or None,  # type: ignore[arg-type]
            copy=copy,
            where=where,
        )
    return writer.finish(val_fraction=val_fraction, test_fraction=test_fraction)


def _labels_path(src: Path) -> Path:
    if src.is_file():
        return src
    if not src.exists():
        raise DatasetError(f"folder dataset not found: {src}")
    labels = src / LABELS_NAME
    if not labels.is_file():
        raise DatasetError(f"{src} has no {LABELS_NAME} (header: file<TAB>page<TAB>text)")
    return labels


def _read_rows(labels: Path) -> list[tuple[int, dict[str, str] | str]]:
    """(line number, row as a dict or the reason the line is malformed) for each data line."""
    try:
        lines = labels.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        problem = f"{exc.reason} at byte {exc.start}"
        raise DatasetError(f"{labels} is not UTF-8 text ({problem})") from exc
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


def _row_problem(row: dict[str, str], path: Path) -> str | None:
    if not row["file"]:
        return "no file name"
    if not path.is_file():
        return f"image file not found: {path}"
    if row.get("split") and row["split"] not in SPLITS:
        return f"split {row['split']!r} is not one of {', '.join(SPLITS)}"
    if row.get("kind") and row["kind"] not in KINDS:
        return f"kind {row['kind']!r} is not one of {', '.join(KINDS)}"
    return None
