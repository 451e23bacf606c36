"""A manifest whose records are not samples is refused on load, naming file:line, so the
commands that read it exit 2 with that message instead of a traceback later."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quill.cli import app
from quill.data.manifest import Manifest, ManifestError
from quill.errors import EXIT_ERROR

GOOD = {"image": "a.png", "text": "hi", "split": "train", "source": "s", "sha256": "ab"}


def _manifest(folder: Path, *records: object) -> Path:
    folder.mkdir()
    lines = [json.dumps(GOOD), *(json.dumps(record) for record in records)]
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"split": "Train"}, "split 'Train' is not one of train, val, test"),
        ({"kind": "word"}, "kind 'word' is not one of line, paragraph"),
        ({"image": None}, "image must be a string, not null"),
        ({"meta": []}, "meta must be an object, not []"),
        ({"colour": "red"}, "unknown field(s) colour"),
    ],
)
def test_a_bad_record_is_named_with_its_file_and_line(tmp_path: Path, change: dict, problem: str):
    folder = _manifest(tmp_path / "ds", GOOD | change)
    with pytest.raises(ManifestError) as caught:
        Manifest.load(folder)
    assert str(caught.value) == f"{folder / 'manifest.jsonl'}:2: not a manifest record: {problem}"
    for command in ("stats", "show"):
        extra = ["--out", str(tmp_path / "sheet.png")] if command == "show" else []
        result = CliRunner().invoke(app, ["data", command, str(folder), *extra])
        assert result.exit_code == EXIT_ERROR, result.output
        assert problem in result.output and "Traceback" not in result.output


def test_a_manifest_that_is_not_utf8_is_named(tmp_path: Path):
    folder = _manifest(tmp_path / "ds")
    path = folder / "manifest.jsonl"
    path.write_bytes(path.read_bytes() + b'{"text": "\xff"}\n')
    with pytest.raises(
        ManifestError, match=r"manifest.jsonl is not UTF-8 text \(invalid start byte at byte"
    ):
        Manifest.load(folder)


def test_a_file_that_is_no_manifest_is_not_a_dataset(tmp_path: Path):
    """`quill data manifest empty.txt` reported a dataset "." of 0 samples, exit 0: any file
    was read as a manifest."""
    for name in ("empty.txt", "labels.tsv"):
        (tmp_path / name).write_text("")
        with pytest.raises(ManifestError, match=rf"{name} is not a dataset: give its folder"):
            Manifest.load(tmp_path / name)
    (tmp_path / "manifest.jsonl").write_text("")
    assert len(Manifest.load(tmp_path / "manifest.jsonl")) == 0  # a real, empty manifest
