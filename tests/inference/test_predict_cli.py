"""``quill predict``: files, folders, globs, JSON lines, bad files reported per file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
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


def test_a_path_that_looks_like_markup_is_printed_as_it_is(
    smoke_model: Path, tmp_path: Path
) -> None:
    """A path with ``[/]`` in it was read as Rich markup: a MarkupError, and the good file's
    answer lost; ``[bold]bad.jpg`` was shown as ``bad.jpg``. The error named the path twice."""
    (tmp_path / "x[").mkdir()
    closing = tmp_path / "x[" / "]bad.jpg"
    bold = tmp_path / "[bold]bad.jpg"
    for bad in (closing, bold):
        bad.write_bytes(b"not an image")
    render_line("ink").save(tmp_path / "good.png")
    args = [str(closing), str(bold), str(tmp_path / "good.png"), "-m", str(smoke_model)]
    result = CliRunner().invoke(app, ["predict", *args])
    assert result.exit_code == 1, result.output
    [answer] = result.stdout.splitlines()  # the good file's, not lost
    assert answer.startswith(f"{tmp_path / 'good.png'}\t") and answer.endswith("\tink")
    *errors, summary = result.stderr.splitlines()
    assert summary == "2 of 3 inputs could not be read"
    for bad, line in zip((closing, bold), errors, strict=True):
        assert line.startswith(f"{bad}: not an image"), line
        assert line.count(bad.name) == 1, line


def test_an_image_that_fails_once_decoded_costs_only_its_own_answer(
    smoke_model: Path, tmp_path: Path
) -> None:
    """A page that decodes but fails later raised out of the whole batch: a traceback, and
    every other file's answer lost. Each image of that batch is now read alone, and the
    answers stay in the order given. The page here is a long rule: segmentation cuts it as
    a line 284 times longer than high, which preprocessing refuses (the recognizer blamed
    the image for a crop too thin to read before, and may stop blaming it for this one:
    then the page is read, and the others must still be)."""
    render_line("hello").save(tmp_path / "a.png")
    ruled = Image.new("L", (2000, 400), 255)
    ruled.paste(0, (10, 100, 1990, 103))
    ruled.save(tmp_path / "b_ruled.png")
    render_line("ink").save(tmp_path / "c.png")
    args = [str(tmp_path), "--kind", "paragraph", "--json", "-m", str(smoke_model)]
    result = CliRunner().invoke(app, ["predict", *args])
    # exiting 1 is SystemExit, not an Exception: the ImageError was one
    assert not isinstance(result.exception, Exception), result.exception
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(r["path"]).name for r in records] == ["a.png", "b_ruled.png", "c.png"]
    assert [records[0]["text"], records[2]["text"]] == ["hello", "ink"]
    ruled_answer = records[1]
    if "error" in ruled_answer:  # its own error, not the batch's ("input 1: ...")
        assert not ruled_answer["error"]["message"].startswith("input"), ruled_answer
    assert result.exit_code == (1 if "error" in ruled_answer else 0), result.output


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in kB on Linux only")
def test_a_folder_of_large_photos_is_not_decoded_all_at_once(
    smoke_model: Path, tmp_path: Path
) -> None:
    """A chunk of 16 images was decoded up front, each as RGB: 16 greyscale 8000 x 6000 scans
    peaked at 3.1 GB against 0.33 GB for one. A chunk now ends past CHUNK_PIXELS, and a grey
    scan stays one channel; here 16 of 4000 x 3000 cost little more than one."""
    folder = tmp_path / "scans"
    folder.mkdir()
    Image.new("L", (4000, 3000), 235).save(folder / "00.png")
    for index in range(1, 16):
        shutil.copy(folder / "00.png", folder / f"{index:02}.png")
    one = _peak_rss_mb([str(folder / "00.png"), "-m", str(smoke_model)])
    many = _peak_rss_mb([str(folder), "-m", str(smoke_model)])
    # one more RGB copy of a scan is 36 MB; all 16 decoded together were 690 MB more
    assert many - one < 150, (one, many)


def _peak_rss_mb(args: list[str]) -> float:
    """Peak resident memory of one ``quill predict`` run, in MB: measured by a fresh Python
    whose only child it is (``RUSAGE_CHILDREN`` is the largest child's peak)."""
    quill = str(Path(sys.executable).with_name("quill"))
    probe = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "assert done.returncode == 0, done.stderr\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, quill, "predict", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return int(result.stdout) / 1024  # Linux reports kB


def test_json_names_its_fields_as_the_api_does(smoke_model: Path, tmp_path: Path) -> None:
    """The CLI printed ``timings`` where the API answers ``timings_ms``. Its fields are the
    API's answer but for those of a request, and the path."""
    from quill.serving.api import PredictResponse

    render_line("ink").save(tmp_path / "ink.png")
    args = [str(tmp_path / "ink.png"), "--json", "-m", str(smoke_model)]
    result = CliRunner().invoke(app, ["predict", *args])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    request_fields = {"latency_ms", "request_id", "feedback_token", "cached"}
    assert set(record) == {"path", *PredictResponse.model_fields} - request_fields
    assert set(record["timings_ms"]) == {"preprocess", "model", "total"}


def test_a_folder_is_searched_for_every_format_quill_reads(
    smoke_model: Path, tmp_path: Path
) -> None:
    """TGA, Netpbm and ICO files were read when named but skipped in a folder."""
    line = render_line("ink").convert("RGB")
    for suffix in ("tga", "ppm", "pgm", "ico", "jp2"):
        line.save(tmp_path / f"ink.{suffix}")
    (tmp_path / "notes.txt").write_text("not an image")
    result = CliRunner().invoke(app, ["predict", str(tmp_path), "--json", "-m", str(smoke_model)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    names = [Path(record["path"]).name for record in records]
    assert names == ["ink.ico", "ink.jp2", "ink.pgm", "ink.ppm", "ink.tga"]
    assert all("text" in record for record in records), records


def test_dash_reads_one_image_from_standard_input(smoke_model: Path, tmp_path: Path) -> None:
    """``quill predict -`` was "no input files matched -", and /dev/stdin fails on a pipe
    (not a regular file). ``-`` given twice is read once: standard input is read once."""
    render_line("ink").save(tmp_path / "ink.png")
    render_line("Kew").save(tmp_path / "kew.png")
    args = ["-", str(tmp_path / "kew.png"), "-", "-m", str(smoke_model)]
    data = (tmp_path / "ink.png").read_bytes()
    result = CliRunner().invoke(app, ["predict", *args], input=data)
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [(row[0], row[2]) for row in rows] == [("-", "ink"), (str(tmp_path / "kew.png"), "Kew")]


def test_dash_with_nothing_on_standard_input_is_an_error(smoke_model: Path) -> None:
    """An empty standard input is that input's error: nothing could be read, exit 2."""
    result = CliRunner().invoke(app, ["predict", "-", "--json", "-m", str(smoke_model)], input=b"")
    assert result.exit_code == 2, result.output
    record = json.loads(result.stdout)
    assert (record["path"], record["error"]["code"]) == ("-", "image_empty")


def test_the_shipped_model_is_found_from_any_folder(tmp_path: Path) -> None:
    """Run outside the checkout, the default `models/default` was looked for under the
    working folder: "models/default is not a staged model"."""
    render_line("Kew").save(tmp_path / "kew.png")
    quill = str(Path(sys.executable).with_name("quill"))
    result = subprocess.run(
        [quill, "predict", "kew.png", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model_version"].startswith("quill-")
