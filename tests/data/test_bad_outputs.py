"""Bad outputs and resources of ``quill data synth`` and ``quill data paragraphs``: refused
before any work with one line and exit 2, never a traceback after it; fonts that are not
installed are said out loud."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quill.cli import app
from quill.data.synth.fonts import FONT_DIR_ENV, FONTS
from quill.errors import EXIT_ERROR, output_problem

runner = CliRunner()
#: A folder nothing can be written in, even by root (writes there fail with ENOENT).
PROC = Path("/proc")
needs_proc = pytest.mark.skipif(not (PROC / "self").is_dir(), reason="needs Linux /proc")


def _quill(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_output_problem_names_what_is_in_the_way(tmp_path: Path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    assert output_problem(tmp_path / "new" / "deeper", folder=True) is None
    assert output_problem(tmp_path / "new" / "report.html", folder=False) is None
    assert output_problem(tmp_path, folder=False) == "is a folder; give a file name"
    assert output_problem(a_file, folder=True) == "is a file, not a folder"
    assert output_problem(a_file / "x" / "y", folder=True) == f"{a_file} is a file, not a folder"
    assert not (tmp_path / "new").exists()


@needs_proc
def test_output_problem_finds_an_unwritable_folder() -> None:
    problem = output_problem(PROC / "nope" / "x", folder=True)
    assert problem is not None and problem.startswith("cannot write in /proc")


def test_synth_refuses_a_file_as_its_output_folder(tmp_path: Path) -> None:
    in_the_way = tmp_path / "small.txt"
    in_the_way.write_text("keep me")
    code, output = _quill("data", "synth", "-o", in_the_way, "-n", "1", "--workers", "1")
    assert code == EXIT_ERROR, output
    assert f"{in_the_way}: is a file, not a folder" in output and "Traceback" not in output
    assert in_the_way.read_text() == "keep me"


@needs_proc
def test_synth_refuses_an_unwritable_output_before_rendering(tmp_path: Path) -> None:
    code, output = _quill("data", "synth", "-o", PROC / "nope" / "x", "-n", "1")
    assert code == EXIT_ERROR, output
    assert "/proc/nope/x: cannot write in /proc" in output and "Rendering" not in output


def test_synth_refuses_a_font_dir_that_is_not_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FONT_DIR_ENV, str(tmp_path / "typo"))
    code, output = _quill("data", "synth", "-o", tmp_path / "out", "-n", "1", "--workers", "1")
    assert code == EXIT_ERROR, output
    assert f"${FONT_DIR_ENV}={tmp_path / 'typo'} is not a folder" in output
    assert not (tmp_path / "out").exists()


def test_synth_warns_with_the_count_of_fonts_not_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty font folder (no npm fonts): the Debian fonts still cover every split, and
    the command says how many registered fonts it leaves out."""
    (tmp_path / "fonts").mkdir()
    monkeypatch.setenv(FONT_DIR_ENV, str(tmp_path / "fonts"))
    out = tmp_path / "out"
    code, output = _quill("data", "synth", "-o", out, "-n", "1", "--workers", "1")
    assert code == 0, output
    absent = json.loads((out / "synth.json").read_text())["fonts_not_installed"]
    npm = [spec.name for spec in FONTS if spec.source == "npm"]
    assert sorted(absent) == sorted(npm)
    assert f"warning: {len(npm)} of {len(FONTS)} registered fonts are not installed" in output


TEXTS = {"train": [f"train line {i}" for i in range(6)], "val": ["val one", "val two"]}


def test_paragraphs_refuse_more_lines_than_a_split_has(make_line_dataset, tmp_path: Path):
    lines = make_line_dataset("lines", TEXTS)
    out = tmp_path / "para"
    code, output = _quill(
        "data", "paragraphs", lines.root, "-o", out, "-n", "4", "--workers", "1",
        "--min-lines", "5", "--max-lines", "5",
    )  # fmt: skip
    assert code == EXIT_ERROR, output
    assert "the val split has 2 line(s) with an image file (of 2), fewer than the 5" in output
    assert not out.exists()


def test_paragraphs_refuse_a_split_whose_line_images_are_missing(make_line_dataset, tmp_path: Path):
    lines = make_line_dataset("lines", TEXTS)
    lines.path_of(lines.split("val")[0]).unlink()
    out = tmp_path / "para"
    code, output = _quill("data", "paragraphs", lines.root, "-o", out, "-n", "4", "--workers", "1")
    assert code == EXIT_ERROR, output
    assert "the val split has 1 line(s) with an image file (of 2), fewer than the 2" in output
    assert not out.exists()


def test_paragraphs_refuse_a_split_whose_lines_do_not_decode(make_line_dataset, tmp_path: Path):
    """Present but broken images are only found when drawn: still refused, naming counts."""
    lines = make_line_dataset("lines", TEXTS)
    lines.path_of(lines.split("val")[0]).write_bytes(b"not a png")
    code, output = _quill(
        "data", "paragraphs", lines.root, "-o", tmp_path / "para", "-n", "4", "--workers", "1"
    )
    assert code == EXIT_ERROR, output
    assert "the val split has 1 readable line(s) (of 2), fewer than the 2" in output
