"""What `--resume` goes on from: ``last.ckpt`` holds the latest state, a stopped run saves its
own, and a resume that changes what the checkpoint's state decides is refused.

* ``last.ckpt`` was only rewritten when the monitored metric improved: a run whose val_cer
  stalled at 1.0 kept epoch 1 there, and a run stopped at epoch 31 resumed at epoch 2.
* A run stopped by Ctrl+C or SIGTERM saved nothing of the epoch under way, and the hint on how
  to go on looked for ``last.ckpt`` in the wrong folder, so it was never printed.
* ``--resume ... optim.lr=0.5`` recorded 0.5 while the optimiser went on at the checkpoint's
  rate.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from mlflow import MlflowClient
from typer.testing import CliRunner

from quill.training.train import train

from .test_train import app, only_run, quill, tiny_config, train_args

runner = CliRunner()


@pytest.fixture(scope="module")
def stalled_run(tiny_lines: Path, tmp_path_factory: pytest.TempPathFactory):
    """Three epochs whose monitored metric never improves after the first: val_loss, falling
    as the model learns, watched for its maximum. Returns (client, run, last.ckpt)."""
    folder = tmp_path_factory.mktemp("stalled")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    quill(
        *train_args(tiny_lines, uri, folder / "out", "--max-epochs", "3"),
        "checkpoint.monitor=val_loss",
        "checkpoint.mode=max",
        "checkpoint.save_top_k=1",
    )
    client = MlflowClient(uri)
    run = only_run(client, "tiny")
    return client, run, folder / "out" / run.info.run_id / "checkpoints" / "last.ckpt"


def test_last_checkpoint_holds_the_last_epoch_when_the_metric_stalls(stalled_run) -> None:
    client, run, last = stalled_run
    losses = [m.value for m in client.get_metric_history(run.info.run_id, "val_loss")]
    assert max(losses) == losses[0]  # only the first epoch was "best"
    (best,) = last.parent.glob("epoch=*")
    assert best.name.startswith("epoch=000")
    state = torch.load(last, weights_only=False)
    assert (state["epoch"], state["global_step"]) == (2, 9)  # the third epoch's end


class SignalAtStep(L.Callback):
    """Sends this process ``signum`` after training step ``step``, as a user or a scheduler
    would: the signal arrives while a batch is under way."""

    def __init__(self, signum: signal.Signals, step: int) -> None:
        self.signum, self.step = signum, step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize(("stop", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_run_saves_its_latest_state_and_says_how_to_go_on(
    stop: signal.Signals,
    status: int,
    tiny_lines: Path,
    tracking_uri: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Stopped after the first batch of the second epoch (step 4): last.ckpt holds step 4,
    not the end of the first epoch. Ctrl+C stops at the batch boundary, as SIGTERM does (a
    KeyboardInterrupt inside a store write once left the store locked and the run RUNNING)."""
    config = tiny_config(tiny_lines, tracking_uri, tmp_path / "out", "trainer.max_epochs=50")
    # Python's default_int_handler, or SIG_IGN where the suite was started in the background
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit) as stopped:
        train(config, config_path="tiny.yaml", extra_callbacks=[SignalAtStep(stop, 4)])
    assert stopped.value.code == status
    run = only_run(MlflowClient(tracking_uri), "tiny")
    assert run.info.status == "KILLED"
    last = tmp_path / "out" / run.info.run_id / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 4
    stderr = capsys.readouterr().err
    assert f"go on with `quill train --config tiny.yaml --resume {last}`" in stderr
    if stop == signal.SIGINT:
        assert "stopping after this batch (Ctrl+C again to stop at once)" in stderr
    assert signal.getsignal(signal.SIGINT) is before  # given back


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ["optim.lr=0.5", "optim.schedule=constant"],
            "was trained with optim.lr=0.003, optim.schedule=cosine, this config says "
            "optim.lr=0.5, optim.schedule=constant",
        ),
        (
            ["optim.betas=[0.8, 0.9]"],
            "was trained with optim.betas=[0.9, 0.999], this config says optim.betas=[0.8, 0.9]",
        ),
    ],
)
def test_a_resume_that_changes_the_optimiser_is_refused(
    stalled_run, tiny_lines: Path, tmp_path: Path, change: list[str], message: str
) -> None:
    """The checkpoint's optimiser and schedule state win over the config: the new values
    were recorded as the run's but not used. A new schedule is --init-from's job."""
    client, _, last = stalled_run
    args = train_args(tiny_lines, client.tracking_uri, tmp_path, "--experiment", "changed")
    result = runner.invoke(app, [*args, "--resume", str(last), *change])
    assert result.exit_code == 2, result.output
    assert f"error: --resume {last} {message}" in result.output
    assert f"--init-from {last}" in result.output
    assert client.get_experiment_by_name("changed") is None  # refused before any run
