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
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.strategies import DDPStrategy
from mlflow import MlflowClient

from quill.training.config import resolve_config
from quill.training.train import build_trainer

from .conftest import TINY_CONFIG

QUILL = str(Path(sys.executable).with_name("quill"))
DDP = ["trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu"]


def test_ddp_is_config_only(tmp_path: Path) -> None:
    """The Trainer `quill train` builds takes its strategy, devices and nodes from the config
    alone (built, not fitted: no process is launched). The run below cannot cover nodes."""
    config = resolve_config(TINY_CONFIG, [*DDP, "trainer.num_nodes=2"])
    trainer = build_trainer(config, logger=False, callbacks=[], output_dir=tmp_path)
    assert isinstance(trainer.strategy, DDPStrategy)
    assert isinstance(trainer.accelerator, CPUAccelerator)
    assert (trainer.num_devices, trainer.num_nodes, trainer.world_size) == (2, 2, 4)
    # the same code without the DDP lines: one process on one device
    single_config = resolve_config(TINY_CONFIG, ["trainer.accelerator=cpu"])
    single = build_trainer(single_config, logger=False, callbacks=[], output_dir=tmp_path)
    assert not isinstance(single.strategy, DDPStrategy)
    assert (single.num_devices, single.num_nodes, single.world_size) == (1, 1, 1)


@pytest.mark.slow
def test_two_process_cpu_ddp_records_one_run(
    tiny_lines: Path, tmp_path: Path, tracking_uri: str
) -> None:
    uri = tracking_uri
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
