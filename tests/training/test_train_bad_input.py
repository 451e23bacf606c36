"""`quill train` with bad values: one line, exit 2, before any data is read or any run is
opened in the store (a FAILED run left behind for a typo is noise in every run list)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from mlflow import MlflowClient
from typer.testing import CliRunner

from quill.training.cli import register
from quill.training.tracking_store import check_server
from quill.training.train import train

from .conftest import TINY_CONFIG
from .test_train import only_run, tiny_config, train_args

runner = CliRunner()
app = typer.Typer()
register(app)


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    """A store nobody has opened yet (not the conftest's ready copy): a refused command must
    leave it so."""
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


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
        # were tracebacks (exit 1) after the run was opened, several leaving it RUNNING
        ("early_stopping.patience=x", "early_stopping.patience must be a whole number, got 'x'"),
        ("checkpoint.mode=minn", "checkpoint.mode must be one of min, max, got 'minn'"),
        (
            "tracking.prediction_table_every_n_epochs=x",
            "tracking.prediction_table_every_n_epochs must be a whole number, got 'x'",
        ),
        (
            "trainer.check_val_every_n_epoch=0",
            "trainer.check_val_every_n_epoch must be a positive whole number or null, got 0",
        ),
        ("checkpoint.save_last=flase", "checkpoint.save_last must be true or false, got 'flase'"),
        # a run that trained a whole epoch, then FAILED
        ("checkpoint.monitor=val_ce", "checkpoint.monitor 'val_ce' is not logged by training; "),
        ("early_stopping.monitor=val_cer_tiny", "did you mean val_cer_tiny_lines"),
        # was "optim.lr must be a number, got None"
        ("optim=3", "optim must be a mapping of lr, weight_decay, betas"),
    ],
)
def test_bad_config_values_fail_before_a_run_exists(
    override: str, message: str, tiny_lines: Path, tmp_path: Path, tracking_uri: str
) -> None:
    line = refused(*train_args(tiny_lines, tracking_uri, tmp_path / "out", override))
    assert message in line
    assert not (tmp_path / "mlruns").exists()  # the store was never opened: no run in it


def test_tags_that_are_no_mapping_fail_before_a_run_exists(
    tiny_lines: Path, tmp_path: Path, tracking_uri: str
) -> None:
    """``tracking: {tags: 5}`` in a file was an AttributeError traceback."""
    config = tmp_path / "tags.yaml"
    config.write_text(f"extends: {TINY_CONFIG}\ntracking: {{tags: 5}}\n")
    args = train_args(tiny_lines, tracking_uri, tmp_path / "out")
    args[args.index(str(TINY_CONFIG))] = str(config)
    assert "tracking.tags must be a mapping of names to values, got 5" in refused(*args)
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize("scheme", ["", "file://"])
def test_a_folder_store_says_what_to_give_instead(
    tiny_lines: Path, tmp_path: Path, scheme: str
) -> None:
    """A folder path got MLflow's paragraph about its file store's maintenance mode."""
    folder = tmp_path / "mlruns"
    folder.mkdir()
    line = refused(*train_args(tiny_lines, f"{scheme}{folder}", tmp_path / "out"))
    assert (
        f"is a folder path, and MLflow no longer opens folder stores: give sqlite:///{folder}/mlflow.db"
        in line
    )
    assert list(folder.iterdir()) == []


def test_sources_without_a_weight_to_train_on_fail_before_a_run_exists(
    tiny_lines: Path, tmp_path: Path, tracking_uri: str
) -> None:
    """Every weight 0: the sampler refused when fit asked for the first batch, a traceback
    after the run was opened."""
    args = train_args(tiny_lines, tracking_uri, tmp_path / "out")
    args = [*args, f"data.sources=[{{path: {tiny_lines}, weight: 0}}]"]
    assert "data: no source with training samples and weight > 0" in refused(*args)
    assert MlflowClient(tracking_uri).get_experiment_by_name("tiny") is None  # no run made


def test_a_failure_once_the_run_exists_leaves_it_failed_not_running(
    tiny_lines: Path, tmp_path: Path, tracking_uri: str
) -> None:
    """A config handed to train() as a dict skips the checks of resolve_config (a sweep, a
    script): the callbacks were built after the run was opened and before it was recorded,
    so their failure left the run RUNNING for ever."""
    config = tiny_config(tiny_lines, tracking_uri, tmp_path / "out")
    config["tracking"]["prediction_table_every_n_epochs"] = "x"
    with pytest.raises(ValueError, match="invalid literal for int"):
        train(config)
    assert only_run(MlflowClient(tracking_uri), "tiny").info.status == "FAILED"


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
