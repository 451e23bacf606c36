"""``quill model fetch`` replaces its folder whole, refuses a folder of other things, and says
in one line what is wrong with the registry or the reference."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quill.cli import app
from quill.errors import EXIT_ERROR
from quill.staging.registry import register

runner = CliRunner()


def _files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


@pytest.fixture(scope="module")
def registry(smoke_model: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real SQLite store holding the smoke model as ``smoke`` version 1."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlruns') / 'mlflow.db'}"
    register(smoke_model, uri, "smoke", "champion")
    return uri


def _fetch(reference: str, out: Path, uri: str) -> tuple[int, str]:
    result = runner.invoke(
        app, ["model", "fetch", reference, "--out", str(out), "--tracking-uri", uri]
    )
    return result.exit_code, " ".join(result.output.split())


def test_fetch_refuses_a_folder_that_is_not_a_staged_model(registry: str, tmp_path: Path) -> None:
    """It used to merge the model's files into the folder, exit 0."""
    mine = tmp_path / "userdir"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    code, output = _fetch("smoke", mine, registry)
    assert code == EXIT_ERROR, output
    assert "is not empty and is not a staged model" in output
    assert _files(mine) == {"notes.txt": hashlib.sha256(b"mine").hexdigest()}
    afile = tmp_path / "afile"
    afile.write_text("mine")
    code, output = _fetch("smoke", afile, registry)  # was a FileExistsError traceback
    assert code == EXIT_ERROR and "afile is a file, not a folder" in output, output
    assert afile.read_text() == "mine"


def test_fetch_over_a_staged_model_replaces_it_whole(
    smoke_model: Path, registry: str, tmp_path: Path
) -> None:
    """Fetched onto another model's folder, nothing of the old model is left beside the new
    one (its int8 graph and language models were, and made a mixed model)."""
    out = tmp_path / "models" / "current"
    shutil.copytree(smoke_model, out)
    for leftover in ("model-int8.onnx", "lm.json", "identify.json"):
        (out / leftover).write_text("the old model's")
    (out / "model.onnx").write_bytes(b"the old model's graph")
    code, output = _fetch("smoke@champion", out, registry)
    assert code == 0, output
    assert _files(out) == _files(smoke_model)
    assert [p.name for p in out.parent.iterdir()] == ["current"]  # no scratch folder left


def test_a_missing_version_is_not_found_and_a_failing_lookup_says_why(
    registry: str, tmp_path: Path
) -> None:
    for reference in ("smoke@nope", "smoke@7"):
        code, output = _fetch(reference, tmp_path / "out", registry)
        assert code == EXIT_ERROR and f"'{reference}' not found in the registry" in output
    # the store fails the lookup (a version number SQLite cannot hold): not "not found"
    huge = "smoke@" + "9" * 30
    code, output = _fetch(huge, tmp_path / "out", registry)
    assert code == EXIT_ERROR, output
    assert f"could not look up '{huge}' in the registry" in output and "not found" not in output
    assert not (tmp_path / "out").exists()


def test_a_store_mlflow_will_not_open_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """A file:// store (MLflow's file store, refused by the MLflow Quill pins) was an
    MlflowException traceback; it is refused before MLflow sees it, saying what to give."""
    uri = f"file://{tmp_path / 'noreg'}"
    code, output = _fetch("smoke", tmp_path / "out", uri)
    assert code == EXIT_ERROR, output
    assert output.startswith(f"error: no model registry: tracking URI {uri} is a folder path")
    assert f"give sqlite:///{tmp_path / 'noreg' / 'mlflow.db'}" in output
    assert "Traceback" not in output and not (tmp_path / "out").exists()
