"""``quill annotate import`` through the CLI: exit 1 when nothing was imported (as ``quill
data import``), 0 when something was, 2 for split shares that cannot add up."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from quill.cli import app
from quill.errors import EXIT_ERROR, EXIT_FAILED, EXIT_OK

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
