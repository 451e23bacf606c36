"""`quill sweep`: the YAML search space, and two workers sharing one study at once."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import typer
from mlflow import MlflowClient
from typer.testing import CliRunner, Result

from quill.cli import app
from quill.training.config import ConfigError
from quill.training.sweep import load_sweep, open_study, run_sweep, suggest
from quill.training.tracking_store import ensure_experiment, prepare_store
from quill.training.train import TrainingSetupError

SWEEPS = Path(__file__).resolve().parents[2] / "configs" / "sweeps"
QUILL = str(Path(sys.executable).with_name("quill"))
runner = CliRunner()


def test_shipped_sweeps_load_and_sample_their_space() -> None:
    for path in sorted(SWEEPS.glob("*.yaml")):
        spec = load_sweep(path)
        trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
        values = suggest(trial, spec.search_space)
        assert set(values) == set(spec.search_space)
        lr = spec.search_space["optim.lr"]
        assert lr["low"] <= values["optim.lr"] <= lr["high"]


def test_sweep_file_errors_name_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {SWEEPS / 'tiny.yaml'}\nsearch_space: {{optim.lr: {{type: float}}}}\n")
    with pytest.raises(ConfigError):
        load_sweep(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text(
        f"base: {SWEEPS.parent / 'tiny.yaml'}\n"
        "search_space: {optim.lrate: {type: float, low: 0.1, high: 1}}\n"
    )
    with pytest.raises(ConfigError, match="optim.lrate"):
        load_sweep(typo)


@pytest.mark.slow
def test_two_workers_run_one_study_with_child_runs(tiny_lines: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    command = [
        QUILL,
        "sweep",
        "--config",
        str(SWEEPS / "tiny.yaml"),
        "--trials",
        "2",
        "--storage",
        storage,
        "--tracking-uri",
        uri,
        "--out",
        str(tmp_path / "plots"),
        f"data.sources=[{{path: {tiny_lines}, weight: 1}}]",
        f"output_dir={tmp_path / 'out'}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-3000:]
        assert "best trial #" in output

    study = optuna.load_study(study_name="tiny", storage=storage)
    assert len(study.trials) == 4
    finished = {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert {t.state for t in study.trials} <= finished
    assert any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 4  # no repeats

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("tiny_sweep").experiment_id])
    parents = [r for r in runs if r.data.tags.get("quill.sweep.role") == "parent"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.info.run_id for r in children} == {
        t.user_attrs["mlflow_run_id"] for t in study.trials
    }
    page = (tmp_path / "plots" / "sweep_plots.html").read_text()
    assert 'id="parallel_coordinate"' in page and "Parameter importance" in page


def test_workers_writing_the_same_new_keys_at_once_all_succeed(
    tmp_path: Path, tracking_uri: str
) -> None:
    """Sweep workers finishing together write the same summary keys onto their parent run;
    the first write of a key is an insert, and two inserts at once collide in the store."""
    import threading

    from quill.training.tracking_store import log_to_shared_run

    uri = tracking_uri
    client = MlflowClient(uri)
    run_id = client.create_run(ensure_experiment(client, "shared", uri)).info.run_id
    rounds, workers = 25, 2
    barrier = threading.Barrier(workers)
    failures: list[BaseException] = []

    def write(worker: int) -> None:
        own = MlflowClient(uri)
        for round_ in range(rounds):
            barrier.wait()
            try:
                log_to_shared_run(
                    own, run_id, {f"key{round_}": f"w{worker}"}, {f"metric{round_}": worker}
                )
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                failures.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    data = client.get_run(run_id).data
    assert {f"key{r}" for r in range(rounds)} <= set(data.tags)
    assert {f"metric{r}" for r in range(rounds)} <= set(data.metrics)


def test_a_study_metric_training_never_logs_is_refused_at_load(tmp_path: Path) -> None:
    """A misspelt metric trained a whole trial before Lightning refused it."""
    typo = tmp_path / "typo.yaml"
    typo.write_text(
        f"base: {SWEEPS.parent / 'tiny.yaml'}\nstudy: {{metric: val_cerr}}\n"
        "search_space: {optim.lr: {type: float, low: 0.001, high: 0.01}}\n"
    )
    with pytest.raises(ConfigError, match="'val_cerr' is not logged by training; did you mean"):
        load_sweep(typo)
    source = f"data.sources=[{{path: {tmp_path / 'hooker letters'}, weight: 1, role: unseen}}]"
    per_source = tmp_path / "per-source.yaml"
    per_source.write_text(typo.read_text().replace("val_cerr", "val_cer_hooker_letters"))
    assert load_sweep(per_source, [source]).study["metric"] == "val_cer_hooker_letters"


@pytest.mark.parametrize(
    ("dimension", "problem"),
    [
        ("{type: float, low: 0.01, high: 0.001}", "low 0.01 is above high 0.001"),
        ("{type: int, low: 8, high: 2}", "low 8 is above high 2"),
        ("{type: float, low: 0, high: 1, log: true}", "log: true needs low above 0"),
        ("{type: float, low: small, high: 1}", "low and high must be numbers"),
    ],
)
def test_a_dimension_optuna_would_refuse_is_refused_at_load(
    tmp_path: Path, dimension: str, problem: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"base: {SWEEPS.parent / 'tiny.yaml'}\nsearch_space: {{optim.lr: {dimension}}}\n"
    )
    with pytest.raises(ConfigError, match=f"search_space.optim.lr: {problem}"):
        load_sweep(bad)


def test_an_unwritable_plots_folder_is_refused_before_any_trial(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    spec = load_sweep(SWEEPS / "tiny.yaml", [f"tracking.tracking_uri=sqlite:///{tmp_path}/m.db"])
    with pytest.raises(typer.Exit):
        run_sweep(spec, 1, storage, out_dir=tmp_path / "a-file" / "plots")
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "m.db").exists()


def test_the_parent_run_ends_failed_when_a_trial_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, tracking_uri: str
) -> None:
    """A trial whose data is missing fails at once; the parent run used to stay RUNNING,
    and Optuna's warning about the trial carried two full tracebacks."""
    uri = tracking_uri
    spec = load_sweep(
        SWEEPS / "tiny.yaml",
        [
            f"data.sources=[{{path: {tmp_path / 'missing'}, weight: 1}}]",
            f"output_dir={tmp_path / 'out'}",
            f"tracking.tracking_uri={uri}",
        ],
    )
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna_log = logging.getLogger("optuna")  # it does not propagate to caplog's root handler
    optuna_log.addHandler(caplog.handler)
    try:
        with pytest.raises(TrainingSetupError, match="dataset folder not found"):
            run_sweep(spec, 1, storage, out_dir=tmp_path / "plots")
    finally:
        optuna_log.removeHandler(caplog.handler)
    failed = [r for r in caplog.records if "Trial 0 failed with parameters" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is None
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("tiny_sweep").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("quill.sweep.role") == "parent")
    assert parent.info.status == "FAILED"
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]


def _invoke_sweep(config: Path, storage: str, uri: str, plots: Path) -> Result:
    """``quill sweep`` of ``config`` into ``storage`` and the run store ``uri``, in process."""
    command = ["sweep", "--config", str(config), "--storage", storage, "--tracking-uri", uri]
    return runner.invoke(app, [*command, "--out", str(plots)])


def _sweep_file(tmp_path: Path, name: str, metric: str, space: str) -> Path:
    path = tmp_path / name
    path.write_text(
        f"base: {SWEEPS.parent / 'tiny.yaml'}\noverrides: [tracking.experiment=tiny_sweep]\n"
        f"study: {{name: shared, metric: {metric}}}\nsearch_space: {space}\n"
    )
    return path


def test_joining_a_study_made_with_other_settings_is_refused(
    tmp_path: Path, tracking_uri: str
) -> None:
    """A second sweep on val_loss with a smaller space joined a val_cer study and printed
    trial 0's val_cer as "val_loss = 0.9720", pruning against the old trials."""
    lr = "optim.lr: {type: float, low: 0.001, high: 0.01}"
    first = _sweep_file(
        tmp_path,
        "first.yaml",
        "val_cer",
        f"{{{lr}, model.config.hidden: {{type: int, low: 8, high: 16}}}}",
    )
    other = _sweep_file(tmp_path, "other.yaml", "val_loss", f"{{{lr}}}")
    uri = tracking_uri
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    prepare_store(uri)
    client = MlflowClient(uri)
    experiment = ensure_experiment(client, "tiny_sweep", uri)
    _, parent = open_study(load_sweep(first), storage, "shared", client, experiment)
    assert open_study(load_sweep(first), storage, "shared", client, experiment)[1] == parent

    result = _invoke_sweep(other, storage, uri, tmp_path / "plots")
    assert result.exit_code == 2, result.output
    assert result.output.startswith(
        f"error: study 'shared' in {storage} was made with metric val_cer (minimize), not "
        "val_loss (minimize); another search space (differing in model.config.hidden): "
    )
    assert len(result.output.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match=r"another base config \(differing in trainer\)"):
        open_study(
            load_sweep(first, ["trainer.max_epochs=9"]), storage, "shared", client, experiment
        )
    study = optuna.load_study(study_name="shared", storage=storage)
    assert study.trials == []


@pytest.mark.parametrize(
    ("storage", "problem"),
    [
        ("{tmp}/optuna.db", "is not a database URL: give sqlite:///PATH.db"),
        ("sqlite:///{tmp}", "names a folder, not a database file: give sqlite:///PATH.db"),
    ],
)
def test_a_storage_that_is_no_database_url_is_one_line_before_any_work(
    tmp_path: Path, storage: str, problem: str
) -> None:
    """A plain path was a SQLAlchemy ArgumentError traceback after the store was set up."""
    storage = storage.format(tmp=tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = _invoke_sweep(SWEEPS / "tiny.yaml", storage, uri, tmp_path / "plots")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: --storage ") and problem in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_sweep_file_error_is_one_line_not_a_usage_box(tmp_path: Path) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text(
        f"base: {SWEEPS.parent / 'tiny.yaml'}\nstudy: {{metric: val_ce}}\n"
        "search_space: {optim.lr: {type: float, low: 0.001, high: 0.01}}\n"
    )
    result = runner.invoke(app, ["sweep", "--config", str(typo)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {typo}: study.metric 'val_ce' is not logged")
    assert "Usage" not in result.output and len(result.output.strip().splitlines()) == 1


def test_a_model_config_key_the_model_lacks_is_refused_at_load(tmp_path: Path) -> None:
    """`model.config.hiden` trained up to building the model, then a ValueError traceback."""
    typo = tmp_path / "typo.yaml"
    typo.write_text(
        f"base: {SWEEPS.parent / 'tiny.yaml'}\n"
        "search_space: {model.config.hiden: {type: categorical, choices: [32, 64]}}\n"
    )
    with pytest.raises(
        ConfigError,
        match=r"search_space.model.config.hiden: unknown key 'hiden' \(did you mean 'hidden'\?\)",
    ):
        load_sweep(typo)


def test_the_sweep_help_describes_a_sweep_file() -> None:
    result = runner.invoke(app, ["sweep", "--help"], env={"COLUMNS": "200"})
    assert "Sweep file YAML" in result.output and "Run config YAML" not in result.output
