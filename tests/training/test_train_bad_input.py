"""`quill train` with bad values: one line, exit 2, before any data is read or any run is
opened in the store (a FAILED run left behind for a typo is noise in every run list)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from quill.training.cli import register
from quill.training.tracking_store import check_server

from .conftest import TINY_CONFIG
from .test_train import train_args

runner = CliRunner()
app = typer.Typer()
register(app)


def refused(*args: str) -> str:
    """The one error line of a refused command (exit 2)."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=fast", "optim.lr must be a number, got 'fast'"),
        ("optim.lr=-0.01", "optim.lr must be a positive finite number, got -0.01"),
        ("model.name=ctc_lien", "did you mean ctc_line?"),
        # were tracebacks after the data was read, one leaving its run RUNNING
        ("checkpoint.save_top_k=abc", "checkpoint.save_top_k must be a whole number or -1"),
        ("seed=abc", "seed must be a whole number, got 'abc'"),
        ("data.num_workers=x", "data.num_workers must be a whole number or null, got 'x'"),
        ("optim.schedule=foo", "optim.schedule must be one of cosine, onecycle, constant"),
        ("trainer.precision=foo", "trainer.precision must be one of auto, 32-true"),
        ("trainer.accelerator=tpu", "trainer.accelerator must be one of auto, cpu, gpu"),
        ("data.augment=maybe", "data.augment must be true, false or a mapping, got 'maybe'"),
        ("data.sources=ds", "data.sources must be a list such as [{path: DIR, weight: 1.0}]"),
        # tiny.yaml's ctc_line model.config kept for another model
        ("model.name=line_cnn_transformer", "model.config does not fit model line_cnn_transformer"),
    ],
)
def test_bad_config_values_fail_before_a_run_exists(
    override: str, message: str, tiny_lines: Path, tmp_path: Path, tracking_uri: str
) -> None:
    line = refused(*train_args(tiny_lines, tracking_uri, tmp_path / "out", override))
    assert message in line
    assert not (tmp_path / "mlruns").exists()  # the store was never opened: no run in it


def test_a_tracking_uri_that_is_a_file_fails_before_the_data_is_read(
    tmp_path: Path, tracking_uri: str
) -> None:
    store = tmp_path / "store.txt"
    store.write_text("not a store\n")
    # no dataset at all: the store is checked first
    line = refused(*train_args(tmp_path / "nothing", str(store), tmp_path / "out"))
    assert f"tracking URI {store} is a file" in line
    line = refused(*train_args(tmp_path / "nothing", f"sqlite:///{store}", tmp_path / "out"))
    assert f"{store} is not an SQLite database, so not a tracking store" in line


def test_an_output_dir_that_cannot_be_written_fails_before_the_data_is_read(
    tmp_path: Path, tracking_uri: str
) -> None:
    """Was a PermissionError when the first checkpoint was written, after the data was read,
    with a FAILED run left behind."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    args = train_args(tmp_path / "nothing", tracking_uri, tmp_path / "out", f"output_dir={blocker}")
    assert f"output_dir {blocker}: is a file, not a folder" in refused(*args)


def test_a_missing_dataset_names_each_folder_looked_in_once(
    tmp_path: Path, tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no project above: the project root is the working folder
    line = refused(*train_args(Path("nowhere"), tracking_uri, tmp_path / "out"))
    assert f"dataset folder not found: nowhere (looked in {tmp_path});" in line
    line = refused(*train_args(tmp_path / "gone", tracking_uri, tmp_path / "out"))
    assert f"dataset folder not found: {tmp_path / 'gone'}; make one" in line


def _closed_port() -> int:
    """A localhost port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_tracking_server_that_does_not_answer_fails_in_one_line(tmp_path: Path) -> None:
    """MLflow's client would retry for minutes and end in a page of traceback."""
    uri = f"http://127.0.0.1:{_closed_port()}"
    line = refused(*train_args(tmp_path / "nothing", uri, tmp_path / "out"))
    assert f"no MLflow tracking server answers at {uri}" in line
    # the runs commands open the store through the same check, and `quill` (its main) reports
    # what a command leaves uncaught in one line too
    listing = subprocess.run(
        [str(Path(sys.executable).with_name("quill")), "runs", "list", "--tracking-uri", uri],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 2
    assert listing.stderr.startswith("error: no MLflow tracking server answers")
    assert "Traceback" not in listing.stderr


def test_a_tracking_server_that_listens_passes_the_check() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_server(f"http://127.0.0.1:{server.getsockname()[1]}")
    check_server("sqlite:///anything.db")  # a local store is not probed


@pytest.mark.parametrize("value", ["abc", "-1", "1.5"])
def test_a_batch_limit_that_is_no_count_or_fraction_is_a_usage_error(value: str) -> None:
    """Was a ValueError traceback (abc) or Lightning's MisconfigurationException (-1)."""
    for option in ("--limit-train-batches", "--overfit-batches"):
        result = runner.invoke(app, ["train", "--config", str(TINY_CONFIG), option, value])
        assert result.exit_code == 2, result.output
        assert "expected a number of batches or a fraction from 0 to 1" in " ".join(
            result.output.replace("│", " ").split()
        )
