"""`quill runs list` lists training runs; staging runs (whose metrics are copies of their
training run's) only when asked (issue 15)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from quill.cli import app
from quill.model_files import METADATA_FILE
from quill.staging.registry import STAGING_EXPERIMENT, register
from quill.training import runs
from quill.training.tracking_store import ensure_experiment

runner = CliRunner()


def quill(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_runs_list_shows_training_runs_unless_staging_runs_are_asked_for(
    smoke_model: Path, tmp_path: Path, tracking_uri: str
) -> None:
    uri = tracking_uri
    client = runs.client_for(uri)
    experiment = ensure_experiment(client, "quill", uri)
    training = client.create_run(experiment, run_name="train ctc")
    metrics = {"val_cer": 0.25, "test_cer": 0.3, "system/disk_usage_megabytes": 9.0}
    for key, value in metrics.items():
        client.log_metric(training.info.run_id, key, value)
    client.set_terminated(training.info.run_id)
    # the real staging path, for a model staged from that run: a run in the staging
    # experiment with the training run's metrics copied in
    staged = tmp_path / "staged"
    shutil.copytree(smoke_model, staged)
    meta = json.loads((staged / METADATA_FILE).read_text())
    meta["metrics"] = metrics
    meta["lineage"]["run_id"] = training.info.run_id
    (staged / METADATA_FILE).write_text(json.dumps(meta))
    registered = register(staged, uri, name="quill-smoke")
    staging = runs.search(client, [STAGING_EXPERIMENT])
    assert len(staging) == 1 and staging[0].data.metrics == metrics  # copied

    listed = json.loads(quill("runs", "list", "--tracking-uri", uri, "--json"))
    assert [r["run"] for r in listed] == [training.info.run_id]

    both = json.loads(quill("runs", "list", "--tracking-uri", uri, "--json", "--staging"))
    assert {r["run"] for r in both} == {training.info.run_id, staging[0].info.run_id}
    assert {r["experiment"] for r in both} == {"quill", STAGING_EXPERIMENT}

    named = json.loads(
        quill("runs", "list", "--tracking-uri", uri, "--json", "-e", STAGING_EXPERIMENT)
    )
    assert [r["run"] for r in named] == [staging[0].info.run_id]

    # a staging run is still found by id prefix
    shown = json.loads(
        quill("runs", "show", staging[0].info.run_id[:8], "--tracking-uri", uri, "--json")
    )
    assert shown["experiment"] == STAGING_EXPERIMENT and registered.name == "quill-smoke"


def test_the_staging_experiment_name_is_the_registrys() -> None:
    assert runs.STAGING_EXPERIMENT == STAGING_EXPERIMENT


def test_an_empty_store_says_it_has_no_runs(tmp_path: Path, tracking_uri: str) -> None:
    """It printed one blank line."""
    uri = tracking_uri
    listed = quill("runs", "list", "--tracking-uri", uri)
    assert listed.strip().splitlines()[-1] == f"no runs in {uri}"
    filtered = quill("runs", "list", "--tracking-uri", uri, "--filter", "metrics.val_cer < 0.1")
    assert filtered.strip().splitlines()[-1] == f"no runs matching the filters in {uri}"


def test_reading_commands_leave_no_store_behind_where_none_is(tmp_path: Path) -> None:
    """`quill runs list` and `quill model fetch` in a folder with no store created an empty
    MLflow database there (with MLflow's set-up lines); a fresh checkout has no runs, which
    is an answer, and no registry to fetch from, which is an error."""
    database = tmp_path / "mlruns" / "mlflow.db"
    uri = f"sqlite:///{database}"
    listed = quill("runs", "list", "--tracking-uri", uri)
    assert listed.startswith(f"no runs: no tracking store at {database}")
    shown = runner.invoke(app, ["runs", "show", "abc", "--tracking-uri", uri])
    assert shown.exit_code == 2 and "no tracking store at" in shown.output
    fetched = runner.invoke(
        app,
        ["model", "fetch", "quill-smoke@1", "--out", str(tmp_path / "m"), "--tracking-uri", uri],
    )
    assert fetched.exit_code == 2 and "no model registry: no tracking store" in fetched.output
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_no_database_is_named_not_a_traceback(tmp_path: Path) -> None:
    """`runs list` and `model fetch` on a store file that is not SQLite ended in a page of
    SQL traceback (sqlalchemy's "file is not a database")."""
    junk = tmp_path / "mlflow.db"
    junk.write_text("junk junk junk\n")
    uri = f"sqlite:///{junk}"
    for args in (
        ["runs", "list", "--tracking-uri", uri],
        ["runs", "show", "abc", "--tracking-uri", uri],
        ["model", "fetch", "quill-smoke@1", "--out", str(tmp_path / "m"), "--tracking-uri", uri],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert f"{junk} is not an SQLite database, so not a tracking store" in result.output
    assert junk.read_text() == "junk junk junk\n"


def test_option_problems_are_one_line_naming_the_option(tmp_path: Path, tracking_uri: str) -> None:
    """`--csv FOLDER` and `runs report --out FOLDER` were tracebacks (the report's after all
    its work), `--csv` under a folder not made yet an OSError traceback, and a bad
    `--order-by` was "bad run filter '': Invalid ordering key", naming the (empty) filter."""
    uri = tracking_uri
    client = runs.client_for(uri)
    run = client.create_run(ensure_experiment(client, "quill", uri), run_name="r")
    client.set_terminated(run.info.run_id)
    folder = tmp_path / "folder"
    folder.mkdir()
    for args, option in (
        (["runs", "list", "--csv", str(folder)], "--csv"),
        (["runs", "report", run.info.run_id, "--out", str(folder)], "--out"),
    ):
        result = runner.invoke(app, [*args, "--tracking-uri", uri])
        assert result.exit_code == 2, result.output
        assert result.output == f"error: {option} {folder}: is a folder; give a file name\n"
    new = tmp_path / "not-yet" / "runs.csv"
    quill("runs", "list", "--tracking-uri", uri, "--csv", str(new))
    assert "r" in new.read_text().splitlines()[1].split(",")

    result = runner.invoke(
        app, ["runs", "list", "--tracking-uri", uri, "--order-by", "metrics.val_cer ASCC"]
    )
    assert result.exit_code == 2, result.output
    assert result.output.startswith(
        "error: --order-by: bad run ordering 'metrics.val_cer ASCC': Invalid ordering key"
    )
    assert "filter" not in result.output


def test_a_store_uri_naming_a_folder_says_what_to_give(tmp_path: Path) -> None:
    """`sqlite:///FOLDER` said "no runs ... nothing has been trained" and exited 0; a plain
    folder path or file:// got MLflow's paragraph about its retired folder store."""
    for uri, problem in (
        (f"sqlite:///{tmp_path}", f"{tmp_path} is a folder, not an SQLite database file"),
        (str(tmp_path), f"tracking URI {tmp_path} is a folder path"),
        (tmp_path.as_uri(), f"tracking URI {tmp_path.as_uri()} is a folder path"),
    ):
        result = runner.invoke(app, ["runs", "list", "--tracking-uri", uri])
        assert result.exit_code == 2, result.output
        assert result.output.startswith(f"error: {problem}")
        assert f"give sqlite:///{tmp_path / 'mlflow.db'}" in result.output
    assert list(tmp_path.iterdir()) == []
