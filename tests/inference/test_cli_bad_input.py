"""``quill predict`` refuses bad options and unloadable models with one line and exit 2.

Exit 2 is "usage, or a missing or unreadable input or model" (quill.errors); exit 1 stays for
"some inputs could not be read" (test_predict_cli.py).
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quill.cli import app
from quill.errors import EXIT_ERROR
from quill.inference.recognizer import Recognizer
from quill.model_files import METADATA_FILE
from quill.staging.parity import render_line


@pytest.fixture
def line_image(tmp_path: Path) -> Path:
    path = tmp_path / "line.png"
    render_line("quill").save(path)
    return path


@pytest.mark.parametrize(
    ("option", "value", "allowed"),
    [
        ("--kind", "bogus", "auto, line, paragraph"),
        ("--backend", "bogus", "auto, onnx, onnx-int8, torchscript, eager"),
        ("--segmenter", "bogus", "trace, learned"),
        ("--decoding", "bogus", "'greedy' or 'beam'"),
    ],
)
def test_an_unknown_choice_is_refused_before_the_model_loads(
    line_image: Path, tmp_path: Path, option: str, value: str, allowed: str
) -> None:
    # the model does not exist: the option is refused before anything tries to load it
    result = CliRunner().invoke(
        app, ["predict", str(line_image), option, value, "-m", str(tmp_path / "none")]
    )
    assert result.exit_code == EXIT_ERROR, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and option in lines[0] and allowed in lines[0], lines
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("variable", "option", "allowed"),
    [
        ("QUILL_BACKEND", "--backend", "auto, onnx, onnx-int8, torchscript, eager"),
        ("QUILL_SEGMENTER", "--segmenter", "trace, learned"),
    ],
)
def test_an_unknown_choice_from_the_environment_is_refused(
    line_image: Path, tmp_path: Path, variable: str, option: str, allowed: str
) -> None:
    """predict reads QUILL_BACKEND and QUILL_SEGMENTER as serve does, and refuses a value
    that is not a choice as it refuses the option: one line naming both, exit 2."""
    result = CliRunner().invoke(
        app, ["predict", str(line_image), "-m", str(tmp_path / "none")], env={variable: "bogus"}
    )
    assert result.exit_code == EXIT_ERROR, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and option in lines[0] and variable in lines[0], lines
    assert allowed in lines[0] and "'bogus'" in lines[0], lines


def test_the_option_wins_over_the_environment(line_image: Path, tmp_path: Path) -> None:
    # --backend onnx is valid, so QUILL_BACKEND=bogus is never read: the error is the
    # missing model's, not the backend's
    result = CliRunner().invoke(
        app,
        ["predict", str(line_image), "--backend", "onnx", "-m", str(tmp_path / "none")],
        env={"QUILL_BACKEND": "bogus"},
    )
    assert result.exit_code == EXIT_ERROR, result.output
    assert "QUILL_BACKEND" not in result.output and "Traceback" not in result.output


def test_negative_threads_from_the_environment_are_a_usage_error(
    line_image: Path, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        app,
        ["predict", str(line_image), "-m", str(tmp_path / "none")],
        env={"QUILL_THREADS": "-1"},
    )
    assert result.exit_code == EXIT_ERROR
    assert "--threads" in result.output and "Traceback" not in result.output


def test_negative_threads_are_a_usage_error(line_image: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["predict", str(line_image), "--threads", "-1", "-m", str(tmp_path / "none")]
    )
    assert result.exit_code == EXIT_ERROR
    assert "--threads" in result.output and "Traceback" not in result.output


def test_a_glob_that_matches_nothing_exits_2(tmp_path: Path) -> None:
    pattern = str(tmp_path / "nomatch" / "*.jpg")
    result = CliRunner().invoke(app, ["predict", pattern, "-m", str(tmp_path / "none")])
    assert result.exit_code == EXIT_ERROR
    assert "no input files matched" in result.output and pattern in result.output


def _corrupt_metadata(model: Path) -> None:
    (model / METADATA_FILE).write_text('{"name": ')


def _truncate_onnx(model: Path) -> None:
    onnx = model / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:100])


@pytest.mark.parametrize(
    ("damage", "message"),
    [(_corrupt_metadata, "is corrupt"), (_truncate_onnx, "cannot load ONNX model")],
)
def test_an_unloadable_model_exits_2(
    model_copy: Path, line_image: Path, damage: Callable[[Path], None], message: str
) -> None:
    damage(model_copy)
    result = CliRunner().invoke(
        app, ["predict", str(line_image), "-m", str(model_copy), "--backend", "onnx"]
    )
    assert result.exit_code == EXIT_ERROR, result.output
    assert message in result.output and "Traceback" not in result.output


def test_zero_threads_reads_with_all_cores(
    smoke_model: Path, line_image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--threads 0 leaves the thread count to ONNX Runtime, whose intra-op pool then has a
    thread per core (its option 0); any other number is passed on as it is."""
    loaded: list[Recognizer] = []
    load = Recognizer.from_path  # the real loader, watched: what predict loaded is kept

    def watched(*args: object, **kwargs: object) -> Recognizer:
        loaded.append(load(*args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(Recognizer, "from_path", staticmethod(watched))
    for threads, session_threads in (("0", 0), ("2", 2)):
        command = ["predict", str(line_image), "--threads", threads, "--backend", "onnx"]
        result = CliRunner().invoke(app, [*command, "-m", str(smoke_model)])
        assert result.exit_code == 0, result.output
        assert result.stdout.strip().endswith("quill")
        recognizer = loaded.pop()
        assert recognizer.describe()["threads"] == (session_threads or None)
        options = recognizer.runtime.session.get_session_options()
        assert options.intra_op_num_threads == session_threads
    assert loaded == []


def test_adapt_refuses_one_image_labelled_twice_differently(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    for name, text in (("a", "hello"), ("b", "quill")):
        render_line(text).save(folder / f"{name}.png")
    rows = ["file\ttext", "a.png\thello", "b.png\tquill", "a.png\tjello"]
    (folder / "labels.tsv").write_text("\n".join(rows) + "\n")
    result = CliRunner().invoke(
        app, ["adapt", str(folder), "--out", str(tmp_path / "adapted"), "-m", str(tmp_path)]
    )
    assert result.exit_code == EXIT_ERROR, result.output
    assert "labels.tsv:2 (a.png): the same image as labels.tsv:4" in result.output
    assert not (tmp_path / "adapted").exists()


def test_a_folder_with_no_image_says_what_it_skipped(tmp_path: Path) -> None:
    """A folder of HEIC photos was "no input files matched" without a word about them."""
    folder = tmp_path / "phone"
    folder.mkdir()
    for name in ("a.heic", "b.HEIC", "scan.pdf", "README"):
        (folder / name).write_bytes(b"not read")
    result = CliRunner().invoke(app, ["predict", str(folder), "-m", str(tmp_path / "none")])
    assert result.exit_code == EXIT_ERROR, result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith(f"error: no input files matched {folder}: 4 files skipped"), line
    assert "(.heic, .pdf, no extension)" in line and ".png, " in line and ".tga" in line


def test_dash_with_a_terminal_on_standard_input_is_refused(tmp_path: Path) -> None:
    """``quill predict -`` typed at a prompt would wait for an image that never comes."""
    quill = str(Path(sys.executable).with_name("quill"))
    controller, terminal = pty.openpty()
    try:
        result = subprocess.run(
            [quill, "predict", "-", "-m", str(tmp_path / "none")],
            stdin=terminal,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        os.close(terminal)
        os.close(controller)
    assert result.returncode == EXIT_ERROR, result.stderr
    assert "standard input, which is a terminal" in result.stderr
