"""A labels.tsv naming one image twice: different texts conflict (every such row is refused,
naming the others), an exact repeat is refused (adapt) or skipped (import) while its first
row stands. ``labelled_lines`` (quill adapt) and ``read_folder`` (quill data import) agree
on which rows are unusable; each keeps its own policy for them (refuse all / skip and report)."""

from __future__ import annotations

import shutil
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


def test_a_row_skipped_for_its_own_problem_does_not_cost_its_repeat_the_image(
    tmp_path: Path,
) -> None:
    root = _folder(tmp_path / "f", [])
    rows = ["file\ttext\tsplit", "a.png\tone\tTrain", "a.png\tone\ttrain"]
    rows += ["b.png\tline  b\t", "b.png\tline b \t"]  # spacing the scoring drops anyway
    (root / "labels.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = read_folder(root, tmp_path / "out")
    reasons = {skip.where: skip.reason for skip in result.report.skipped}
    assert reasons == {
        "labels.tsv:2 (a.png)": "split 'Train' is not one of train, val, test",
        "labels.tsv:5 (b.png)": "repeats labels.tsv:4 (same image, same text)",
    }
    assert sorted((s.meta["file"], s.text) for s in result.manifest) == [
        ("a.png", "one"),
        ("b.png", "line  b"),  # the first row stands as written
    ]


def test_a_byte_identical_copy_under_another_page_lands_in_the_same_split(tmp_path: Path) -> None:
    """Pages are hashed to splits by name: the same image as two pages went to train and
    test apart. Groups sharing an image are put on one side, with a note."""
    root = _folder(tmp_path / "f", [])
    rows = ["file\tpage\ttext"]
    for number in range(30):
        draw_page([f"line {number}"], size=(200, 50), origin=(10, 10))[0].save(
            root / f"p{number}.png"
        )
        shutil.copyfile(root / f"p{number}.png", root / f"copy{number}.png")
        rows += [f"p{number}.png\tpage{number}\tline {number}"]
        rows += [f"copy{number}.png\tother{number}\tline {number}"]
    (root / "labels.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = read_folder(root, tmp_path / "out", val_fraction=0.3, test_fraction=0.3)
    splits: dict[str, set[str]] = {}
    for sample in result.manifest:
        splits.setdefault(sample.sha256, set()).add(sample.split)
    assert len(result.manifest) == 60 and all(len(found) == 1 for found in splits.values())
    assert {s.split for s in result.manifest} == {"train", "val", "test"}
    assert len(result.report.notes) == 30
    assert "groups other0, page0 hold byte-identical images" in result.report.notes[0]
    assert "note: groups" in result.report.summary()[1]
