"""``quill predict``: files, folders, globs, JSON lines, bad files reported per file."""

from __future__ import annotations

import json
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
