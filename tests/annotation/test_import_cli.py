"""``quill annotate import`` through the CLI: exit 1 when nothing was imported (as ``quill
data import``), 0 when something was, 2 for split shares that cannot add up and for an
export or output path that cannot be used (one line, no traceback)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from quill.cli import app
from quill.errors import EXIT_ERROR, EXIT_FAILED, EXIT_OK

needs_proc = pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
SIZE = (700, 300)
TEXT = "Kew, 3rd May"


@pytest.fixture
def export(tmp_path: Path, ls: SimpleNamespace) -> Path:
    """An export of one task: a page with one line, boxed and transcribed."""
    image, lines = ls.draw_page([(TEXT, 60, 80, 0.0)], SIZE)
    (tmp_path / "images").mkdir()
    image.save(tmp_path / "images" / "page.png")
    regions = ls.region("r0", lines[0].box, lines[0].text, SIZE)
    data = {"ocr": "/data/local-files/?d=page.png", "image_path": "page.png"}
    task = ls.task(1, data, [ls.annotation(1, regions)])
    return ls.write_export(tmp_path / "export.json", [task])


def _import(export: Path, images_root: Path, out: Path, *options: str) -> tuple[int, str]:
    args = ["annotate", "import", str(export), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--images-root", str(images_root), *options])
    return result.exit_code, result.output


def test_an_import_that_keeps_a_line_exits_0(export: Path, tmp_path: Path) -> None:
    code, output = _import(export, tmp_path / "images", tmp_path / "dataset")
    assert code == EXIT_OK, output
    assert "1/1 tasks -> 1 lines" in output


def test_an_import_of_nothing_exits_1_and_says_why(export: Path, tmp_path: Path) -> None:
    # the images root holds no page: the one task is left out
    (tmp_path / "elsewhere").mkdir()
    code, output = _import(export, tmp_path / "elsewhere", tmp_path / "dataset")
    assert code == EXIT_FAILED, output
    assert "0/1 tasks -> 0 lines" in output and "image_not_found" in output


def test_split_shares_above_1_are_refused_before_importing(export: Path, tmp_path: Path) -> None:
    options = ("--val-fraction", "0.6", "--test-fraction", "0.6")
    code, output = _import(export, tmp_path / "images", tmp_path / "dataset", *options)
    assert code == EXIT_ERROR, output
    assert "add up to 1.2" in output and not (tmp_path / "dataset").exists()


def test_accented_lines_fit_the_default_vocabulary(tmp_path: Path, ls: SimpleNamespace) -> None:
    """The default was ASCII: every line with an accent was left out, for a shipped model that
    reads French."""
    text = "Reçu à Kew, été"
    image, lines = ls.draw_page([(text, 60, 80, 0.0)], SIZE)
    (tmp_path / "images").mkdir()
    image.save(tmp_path / "images" / "page.png")
    task = ls.task(
        1,
        {"ocr": "/data/local-files/?d=page.png", "image_path": "page.png"},
        [ls.annotation(1, ls.region("r0", lines[0].box, text, SIZE))],
    )
    export = ls.write_export(tmp_path / "export.json", [task])
    code, output = _import(export, tmp_path / "images", tmp_path / "dataset")
    assert code == EXIT_OK, output
    assert "1/1 tasks -> 1 lines" in output


def _one_line_error(output: str, message: str) -> None:
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1, output
    assert message in output


def test_a_folder_given_as_the_export_is_one_line(export: Path, tmp_path: Path) -> None:
    code, output = _import(export.parent, tmp_path / "images", tmp_path / "dataset")
    assert code == EXIT_ERROR, output
    _one_line_error(output, f"{export.parent} is a folder; give the export's JSON file")


def test_a_csv_export_is_named_as_such(tmp_path: Path) -> None:
    csv_export = tmp_path / "export.csv"
    csv_export.write_text("id,ocr,transcription\n1,/data/local-files/?d=page.png,Kew\n")
    code, output = _import(csv_export, tmp_path, tmp_path / "dataset")
    assert code == EXIT_ERROR, output
    _one_line_error(output, "export.csv is a CSV export; export the project as JSON")


def test_a_file_as_the_dataset_folder_is_refused_before_importing(
    export: Path, tmp_path: Path
) -> None:
    a_file = tmp_path / "base.json"
    a_file.write_text("{}")
    code, output = _import(export, tmp_path / "images", a_file)
    assert code == EXIT_ERROR, output
    _one_line_error(output, f"--out {a_file}: is a file, not a folder")
    assert a_file.read_text() == "{}"


@needs_proc
def test_an_unwritable_dataset_folder_is_refused_before_importing(
    export: Path, tmp_path: Path
) -> None:
    code, output = _import(export, tmp_path / "images", Path("/proc/x"))
    assert code == EXIT_ERROR, output
    _one_line_error(output, "--out /proc/x: cannot write in /proc")
