"""``quill predict``: files, folders, globs, JSON lines, bad files reported per file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from quill.cli import app
from quill.staging.parity import render_line


def test_json_lines_for_a_folder_with_one_bad_file(smoke_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    render_line("hello").save(folder / "a.png")
    render_line("ink").convert("RGB").save(folder / "b.jpg", quality=95)
    (folder / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result = CliRunner().invoke(
        app, ["predict", str(folder), "--json", "--model", str(smoke_model)]
    )
    assert result.exit_code == 1  # one input failed, the others were still read
    records = {Path(r["path"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert records["a.png"]["text"] == "hello"
    assert records["b.jpg"]["text"] == "ink"
    assert 0 < records["a.png"]["confidence"] <= 1 and records["a.png"]["lines"]
    assert records["c.png"]["error"]["code"] == "image_corrupt"


def test_plain_output_with_a_glob(smoke_model: Path, tmp_path: Path) -> None:
    render_line("quill").save(tmp_path / "q.png")
    result = CliRunner().invoke(
        app, ["predict", str(tmp_path / "*.png"), "--model", str(smoke_model)]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("quill")


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    render_line("quill").save(tmp_path / "q.png")
    result = CliRunner().invoke(
        app, ["predict", str(tmp_path / "q.png"), "--model", str(tmp_path / "nope")]
    )
    assert result.exit_code == 2  # a missing model: nothing was read
    assert "not a staged model" in result.output


def test_json_for_blank_paper_says_it_is_blank(smoke_model: Path, tmp_path: Path) -> None:
    from PIL import Image

    from quill.inference.recognizer import BLANK_NOTE

    Image.new("RGB", (600, 90), (246, 242, 232)).save(tmp_path / "blank.png")
    Image.new("L", (300, 60), 200).save(tmp_path / "grey.png")
    result = CliRunner().invoke(
        app, ["predict", str(tmp_path / "*.png"), "--json", "--model", str(smoke_model)]
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 2
    for record in records:
        assert (record["text"], record["confidence"], record["note"]) == ("", 1.0, BLANK_NOTE)


def test_plain_output_says_why_blank_paper_read_as_nothing(
    smoke_model: Path, tmp_path: Path
) -> None:
    from PIL import Image

    from quill.inference.recognizer import BLANK_NOTE

    Image.new("RGB", (800, 1000), (246, 242, 232)).save(tmp_path / "blank.png")
    result = CliRunner().invoke(
        app, ["predict", str(tmp_path / "blank.png"), "-m", str(smoke_model)]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().split("\t")[1:] == ["1.00"]  # path, confidence, no text
    assert f"blank.png: {BLANK_NOTE}" in result.stderr
    assert "no text found" in result.stderr


def test_inputs_are_the_files_named_each_read_once(smoke_model: Path, tmp_path: Path) -> None:
    """scan[1].png was read as a pattern (scan1.png read in its place); a pattern matching
    nothing beside other inputs was dropped without a word; a symlinked folder was not
    searched; ./a.png and a.png were read twice."""
    render_line("hello").save(tmp_path / "scan[1].png")
    render_line("ink").save(tmp_path / "scan1.png")
    (tmp_path / "real").mkdir()
    render_line("Kew").save(tmp_path / "real" / "kew.png")
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "real").symlink_to(tmp_path / "real")
    (tmp_path / "linked" / "loop").symlink_to(tmp_path / "linked")
    (tmp_path / "linked" / "folder.png").mkdir()  # a folder named like an image is none
    args = [
        str(tmp_path / "scan[1].png"),
        str(tmp_path / "." / "scan[1].png"),
        str(tmp_path / "nomatch" / "*.png"),
        str(tmp_path / "linked"),
    ]
    result = CliRunner().invoke(app, ["predict", *args, "--json", "--model", str(smoke_model)])
    assert result.exit_code == 1, result.output  # the pattern that matched nothing
    records = [json.loads(line) for line in result.stdout.splitlines()]
    read = [(Path(r["path"]).name, r.get("text") or r["error"]["code"]) for r in records]
    # in the order given, the error among the answers (errors used to come first)
    assert read == [("scan[1].png", "hello"), ("*.png", "image_not_found"), ("kew.png", "Kew")]


def test_inputs_none_of_which_can_be_read_exit_2(smoke_model: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"not an image")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "bad.png"), "-m", str(smoke_model)])
    assert result.exit_code == 2, result.output
    assert "1 of 1 inputs could not be read" in result.output


def test_an_output_that_cannot_be_written_is_one_line_and_exit_2(
    smoke_model: Path, tmp_path: Path
) -> None:
    """A full disk behind stdout was a traceback (OSError: No space left on device)."""
    render_line("ink").save(tmp_path / "ink.png")
    quill = str(Path(sys.executable).with_name("quill"))
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [quill, "predict", str(tmp_path / "ink.png"), "-m", str(smoke_model)],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2, result.stderr
    assert "error: cannot write the results to standard output" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_folder_read_into_a_log_leaves_stderr_empty(smoke_model: Path, tmp_path: Path) -> None:
    """The progress bar is for a person watching: redirected, it left a blank line on
    standard error for every run over a folder."""
    for word in ("ink", "Kew", "fern"):
        render_line(word).save(tmp_path / f"{word}.png")
    quill = str(Path(sys.executable).with_name("quill"))
    result = subprocess.run(
        [quill, "predict", str(tmp_path), "-m", str(smoke_model)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 3 and result.stderr == ""


def test_a_page_read_as_one_line_says_so(smoke_model: Path, tmp_path: Path) -> None:
    """`--kind line` on a page read it as one squeezed line without a word."""
    from PIL import Image

    page = Image.new("RGB", (600, 900), "white")
    for top in (100, 300, 500):
        page.paste(render_line("ink").resize((500, 80)), (50, top))
    page.save(tmp_path / "page.png")
    render_line("ink").save(tmp_path / "line.png")
    args = [str(tmp_path / "page.png"), str(tmp_path / "line.png"), "-m", str(smoke_model)]
    result = CliRunner().invoke(app, ["predict", *args, "--kind", "line"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"{tmp_path / 'page.png'}: read as one line (--kind line), but it is taller than wide "
        "(600 x 900), as a page is: --kind auto finds its lines and reads each"
    ]
