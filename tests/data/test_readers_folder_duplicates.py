"""A labels.tsv naming one image twice: different texts conflict (every such row is refused,
naming the others), an exact repeat is refused (adapt) or skipped (import) while its first
row stands. ``labelled_lines`` (quill adapt) and ``read_folder`` (quill data import) agree
on which rows are unusable; each keeps its own policy for them (refuse all / skip and report)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from quill.cli import app
from quill.data.readers import DatasetError
from quill.data.readers.folder import labelled_lines, read_folder

from .conftest import draw_page


def _folder(root: Path, rows: list[tuple[str, str]]) -> Path:
    """A folder of line images a.png, b.png and labels.tsv with ``rows`` (file, text)."""
    root.mkdir()
    for name in ("a", "b"):
        image, _ = draw_page([f"line {name}"], size=(200, 50), origin=(10, 10))
        image.save(root / f"{name}.png")
    lines = ["file\ttext", *(f"{file}\t{text}" for file, text in rows)]
    (root / "labels.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_conflicting_rows_are_refused_naming_both(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "f", [("a.png", "one"), ("b.png", "two"), ("./a.png", "other")])
    with pytest.raises(DatasetError) as caught:
        labelled_lines(folder)
    message = str(caught.value)
    assert "labels.tsv:2 (a.png): the same image as labels.tsv:4, with a different text" in message
    assert "labels.tsv:4 (./a.png): the same image as labels.tsv:2" in message
    assert "labels.tsv:3" not in message


def test_an_exact_repeat_is_refused_for_adapt(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "f", [("a.png", "one"), ("b.png", "two"), ("a.png", "one")])
    with pytest.raises(DatasetError, match=r"labels.tsv:4 \(a.png\): repeats labels.tsv:2"):
        labelled_lines(folder)


def test_data_import_skips_the_same_rows_and_keeps_the_rest(tmp_path: Path) -> None:
    rows = [("a.png", "one"), ("b.png", "two"), ("a.png", "other"), ("b.png", "two")]
    result = read_folder(_folder(tmp_path / "f", rows), tmp_path / "out")
    # a.png conflicts (both rows out); b.png's repeat is skipped, its first row imported
    assert [sample.text for sample in result.manifest] == ["two"]
    skipped = result.report.summary()
    assert any("labels.tsv:2 (a.png): the same image as labels.tsv:4" in line for line in skipped)
    assert any("labels.tsv:5 (b.png): repeats labels.tsv:3" in line for line in skipped)


def test_quill_data_import_reports_a_conflict(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "f", [("a.png", "one"), ("a.png", "other"), ("b.png", "two")])
    result = CliRunner().invoke(
        app, ["data", "import", "folder", str(folder), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    assert "loaded 1 samples" in result.output and "with a different text" in result.output
