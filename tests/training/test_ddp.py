"""Multi-process training through Lightning's DDP strategy, chosen in the config only.

Two CPU processes (gloo) train one run: Lightning relaunches `quill train` for rank 1, rank 0
alone records the run, and both ranks agree on the checkpoint folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from quill.training.config import resolve_config

from .conftest import TINY_CONFIG

QUILL = str(Path(sys.executable).with_name("quill"))
DDP = ["trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu"]


def test_ddp_is_config_only() -> None:
    config = resolve_config(TINY_CONFIG, [*DDP, "trainer.num_nodes=2"])
    assert config["trainer"]["strategy"] == "ddp" and config["trainer"]["devices"] == 2
    assert config["trainer"]["num_nodes"] == 2


@pytest.mark.slow
def test_two_process_cpu_ddp_records_one_run(tiny_lines: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    command = [
        QUILL,
        "train",
        "--config",
        str(TINY_CONFIG),
        "--tracking-uri",
        uri,
        "--experiment",
        "ddp",
        "--max-epochs",
        "1",
        *DDP,
        f"data.sources=[{{path: {tiny_lines}, weight: 1}}]",
        f"output_dir={tmp_path / 'out'}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in done.stdout + done.stderr

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert {"val_cer", "test_cer", "train_loss"} <= set(run.data.metrics)
    assert run.data.params["trainer.strategy"] == "ddp"
    folders = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    assert [p.name for p in folders] == [run.info.run_id]  # rank 1 made no folder of its own
    assert (folders[0] / "checkpoints" / "last.ckpt").is_file()
