"""``quill bench accuracy|speed`` on input they cannot use: one ``error:`` line and exit 2,
before any work, never an empty report with exit 0 or a traceback after the work."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quill.cli import app
from quill.errors import EXIT_ERROR

runner = CliRunner()


def _speed(model: Path, data: Path, out: Path, *more: str) -> list[str]:
    """A ``bench speed`` command small enough to finish in seconds if it ran."""
    args = ["bench", "speed", "--model", str(model), "--data", str(data), "--kind", "line"]
    args += ["--batch", "1", "--inputs", "2", "--images", "2", "--warmup", "0"]
    return [*args, "--out", str(out), *more]


def _accuracy(model: Path, data: Path, out: Path, *more: str) -> list[str]:
    args = ["bench", "accuracy", "--model", str(model), "--data", str(data)]
    return [*args, "--out", str(out), *more]


@pytest.mark.parametrize("command", [_speed, _accuracy])
def test_an_unknown_peer_is_an_error_not_a_skipped_system(
    command, tiny_model: Path, printed_dataset: Path, tmp_path: Path
) -> None:
    result = runner.invoke(app, command(tiny_model, printed_dataset, tmp_path, "--peer", "bogus"))
    assert result.exit_code == EXIT_ERROR, result.output
    assert "error: unknown peer bogus; known peers: tesseract, rapidocr" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [_speed, _accuracy])
def test_an_output_folder_that_cannot_be_written_is_refused_before_the_work(
    command, tiny_model: Path, printed_dataset: Path, tmp_path: Path
) -> None:
    """Was FileExistsError / FileNotFoundError from the report writer, after the whole run."""
    afile = tmp_path / "afile"
    afile.write_text("mine")
    for out, problem in (
        (afile, "is a file, not a folder"),
        (afile / "results", f"{afile} is a file, not a folder"),
    ):
        result = runner.invoke(app, command(tiny_model, printed_dataset, out))
        assert result.exit_code == EXIT_ERROR, result.output
        assert f"error: --out {out}: {problem}" in result.output
        assert "Traceback" not in result.output and "timing" not in result.output
    assert afile.read_text() == "mine"


def test_speed_of_a_folder_that_is_no_staged_model_is_an_error(
    printed_dataset: Path, tmp_path: Path
) -> None:
    """Every variant used to be "skipped: not a staged model", with an empty report, exit 0."""
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, _speed(empty, printed_dataset, tmp_path / "out"))
    assert result.exit_code == EXIT_ERROR, result.output
    assert "quill-model.json is missing" in result.output
    assert not (tmp_path / "out").exists()


def test_speed_stops_when_a_variant_asked_for_by_name_cannot_run(
    tiny_model: Path, printed_dataset: Path, tmp_path: Path
) -> None:
    """A model without its TorchScript file: ``--variant torchscript`` cannot be timed, and
    the run says so instead of timing the others and exiting 0."""
    partial = tmp_path / "partial"
    shutil.copytree(tiny_model, partial)
    (partial / "model.pt").unlink()
    args = _speed(partial, printed_dataset, tmp_path / "out", "--variant", "onnx")
    result = runner.invoke(app, [*args, "--variant", "torchscript"])
    assert result.exit_code == EXIT_ERROR, result.output
    assert "error: cannot time quill-torchscript:" in result.output
    assert "model.pt" in result.output
    assert not (tmp_path / "out" / "speed.json").exists()
