"""Short runs that must work: ``--max-steps`` inside one epoch, ``--overfit-batches`` (issue 15).

* A ``--max-steps`` shorter than an epoch crashed any config with early stopping on ("Early
  stopping conditioned on metric 'val_cer' which is not available") and the run was FAILED.
* ``--overfit-batches`` validated on the val split, so the troubleshooting recipe ("the
  prediction table must read the batch back exactly") could not work.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from quill.training.config import resolve_config
from quill.training.train import overfit_config

from .conftest import TINY_CONFIG, make_line_dataset
from .test_train import artifact_paths, only_run, quill, train_args


def test_max_steps_inside_one_epoch_validates_at_its_last_step(
    tiny_lines: Path, tmp_path: Path, tracking_uri: str
) -> None:
    """24 training lines in batches of 8 are 3 batches; 2 steps end inside the epoch."""
    output = quill(
        *train_args(tiny_lines, tracking_uri, tmp_path / "out", "--experiment", "short"),
        "early_stopping.enabled=true",
        "--max-steps",
        "2",
    )
    assert "validating after batch 2" in output
    client = MlflowClient(tracking_uri)
    run = only_run(client, "short")
    assert run.info.status == "FINISHED"
    assert "val_cer" in run.data.metrics and "test_cer" in run.data.metrics
    history = client.get_metric_history(run.info.run_id, "val_cer")
    assert [m.step for m in history] == [1]  # validated once, after the second (last) step
    (checkpoint,) = (tmp_path / "out" / run.info.run_id / "checkpoints").glob("epoch=*")
    assert "val_cer=" in checkpoint.name  # chosen by val_cer, as for a full run


def test_overfit_config_turns_off_what_prevents_memorising() -> None:
    config = resolve_config(
        TINY_CONFIG,
        ["trainer.overfit_batches=1", "data.augment=true", "early_stopping.enabled=true"],
    )
    changed, notes = overfit_config(config)
    assert changed["data"]["augment"] is False and changed["early_stopping"]["enabled"] is False
    assert notes == ["data.augment=false", "early_stopping.enabled=false"]
    assert config["data"]["augment"] is True  # the caller's config is left alone
    plain = resolve_config(TINY_CONFIG, ["data.augment=true"])
    assert overfit_config(plain) == (plain, [])


@pytest.mark.slow
def test_overfit_batches_memorises_the_batch_and_validates_on_it(
    tiny_lines: Path, tmp_path: Path, tracking_uri: str
) -> None:
    """The docs/training.md recipe on one batch of 8 lines: validation reads that same
    batch, and the last prediction table reads it back exactly. tiny.yaml's model with a
    Transformer encoder, which memorises in a fraction of the steps its BiLSTM takes."""
    output = quill(
        *train_args(tiny_lines, tracking_uri, tmp_path / "out", "--experiment", "overfit"),
        "--overfit-batches",
        "1",
        "--max-epochs",
        # this batch reads back exactly from about epoch 60 (48% CER at 40); the BiLSTM took
        # 300-400 epochs (36% CER at 200, 3% at 300)
        "120",
        "model.config.encoder=transformer",
        "optim.schedule=constant",
        "data.augment=true",  # turned off for the run, and the record says so
        "early_stopping.enabled=true",
        # validating, and logging every step's metrics and norms, only cost time (a fifth)
        "trainer.check_val_every_n_epoch=60",
        "trainer.log_every_n_steps=50",
        "tracking.norms_every_n_steps=100",
        "tracking.prediction_table_every_n_epochs=60",
        "tracking.prediction_table_samples=8",
        "tracking.test_after_fit=false",
    )
    assert "validating on the same training batches" in output
    client = MlflowClient(tracking_uri)
    run = only_run(client, "overfit")
    assert run.info.status == "FINISHED"
    assert run.data.metrics["val_cer"] == 0.0, run.data.metrics
    train_texts = [
        json.loads(line)["text"]
        for line in (tiny_lines / "manifest.jsonl").read_text().splitlines()
        if json.loads(line)["split"] == "train"
    ][:8]
    tables = sorted(p for p in artifact_paths(client, run.info.run_id, "predictions"))
    table = json.loads(
        Path(client.download_artifacts(run.info.run_id, tables[-1], str(tmp_path))).read_text()
    )
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert sorted(r["ground_truth"] for r in rows) == sorted(train_texts)  # the training batch
    assert all(r["prediction"] == r["ground_truth"] for r in rows), rows
    resolved = yaml.safe_load(
        Path(
            client.download_artifacts(run.info.run_id, "config/resolved.yaml", str(tmp_path))
        ).read_text()
    )
    assert resolved["data"]["augment"] is False
    assert resolved["early_stopping"]["enabled"] is False


def test_many_prediction_tables_do_not_break_the_run(tracking_uri: str) -> None:
    """MLflow lists a run's tables in one tag cut at 8,000 characters: the 154th table broke
    its JSON and every later table raised (an overfit run logs one per step). Each table
    here has a long name (about 200 characters listed, where ``epoch_NNN.json`` takes 56),
    so 60 tables overrun the tag as far as 200 short ones do, at a quarter of the writes."""
    from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

    from quill.training import tracking
    from quill.training.tracking_store import ensure_experiment, prepare_store

    prepare_store(tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment = ensure_experiment(client, "tables", tracking_uri)
    run_id = client.create_run(experiment).info.run_id
    tracker = tracking.MLflowTracker(client, run_id)
    long_name = "wide_" * 30  # 150 characters
    for epoch in range(60):
        tracker.log_table({"epoch": [epoch]}, f"predictions/{long_name}epoch_{epoch:03d}.json")
    listed = json.loads(client.get_run(run_id).data.tags[MLFLOW_LOGGED_ARTIFACTS])
    assert len(json.dumps(listed)) < 8000 < 60 * len(json.dumps(listed[-1]))  # would overrun
    assert listed[-1]["path"] == f"predictions/{long_name}epoch_059.json"
    assert len(artifact_paths(client, run_id, "predictions")) == 60  # every table kept


@pytest.mark.parametrize(("stop", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_run_exits_as_stopped_and_says_where_its_checkpoints_are(
    tiny_lines: Path, tracking_uri: str, tmp_path: Path, stop: signal.Signals, status: int
) -> None:
    """SIGTERM used to exit 0 (Lightning's own exit), so a script took a killed run for a
    finished one; Ctrl+C exited 1 saying nothing of the checkpoints; the hint on how to go on
    looked for last.ckpt outside the checkpoints folder, so neither printed it."""
    out = tmp_path / "out"
    args = train_args(tiny_lines, tracking_uri, out, "trainer.max_epochs=500")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("quill")), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list(out.glob("*/checkpoints/*.ckpt")) and time.monotonic() < deadline:
        time.sleep(0.2)  # until an epoch has ended: training is under way
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr[-2000:]
    assert "stopped (recorded as KILLED); its checkpoints: " in stderr
    run = only_run(MlflowClient(tracking_uri), "tiny")
    assert run.info.status == "KILLED"
    last = out / run.info.run_id / "checkpoints" / "last.ckpt"
    assert f"go on with `quill train --config {TINY_CONFIG} --resume {last}`" in stderr


def test_a_run_without_val_samples_says_so_and_names_checkpoints_by_epoch(
    tmp_path: Path, tracking_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    """It trained without a word and wrote epoch=001-val_cer=0.0000.ckpt, a CER never
    measured."""
    data = tmp_path / "train-only"
    make_line_dataset(data, {"train": 16})
    with caplog.at_level("WARNING", logger="quill.training.train"):
        quill(*train_args(data, tracking_uri, tmp_path / "out", "trainer.max_epochs=1"))
    assert "no val samples in data.sources" in caplog.text
    names = sorted(p.name for p in (tmp_path / "out").glob("*/checkpoints/*.ckpt"))
    assert names == ["epoch=000.ckpt", "last.ckpt"]
