"""Lightning callbacks that record what a metric curve alone does not show.

* :class:`PredictionTable`: image, ground truth and prediction of a fixed set of validation
  samples every N epochs (a CER of 0.3 means little until you see *which* errors).
* :class:`Norms`: global and per-block gradient and weight norms (exploding or vanishing
  gradients, dead blocks), and histograms where the logger draws them.
* :class:`Throughput`: training samples per second, the number a data or model change moves.
* :class:`RunCheckpoint`: the top-k checkpoints, and ``last.ckpt`` rewritten every epoch and
  when the run is stopped (Ctrl+C, SIGTERM), so ``--resume`` goes on from the latest state.
* :class:`CheckpointArtifacts`: the top-k checkpoints uploaded to the run, the best marked.
* :class:`CtrlC`: Ctrl+C stops training at the next batch boundary, as SIGTERM does.
* :class:`ValidateBeforeMaxSteps`: a run that ``max_steps`` ends inside an epoch validates at
  its last step (so checkpointing and early stopping have ``val_cer``).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from PIL import Image

from quill.training.tracking import Tracker


def ink_to_image(ink: np.ndarray, max_width: int = 768) -> Image.Image:
    """Model input (H, W), ink = 1, as a dark-on-light picture a person reads easily."""
    pixels = np.clip((1.0 - ink) * 255.0, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, mode="L")
    if image.width > max_width:
        image = image.resize((max_width, max(1, image.height * max_width // image.width)))
    return image


class PredictionTable(L.Callback):
    """Logs ``predictions/epoch_NNN.json``: image, truth, prediction, confidence, CER.

    The samples are the first ``prediction_table_samples`` of the validation loader (which
    does not shuffle), so the same lines are compared from one epoch to the next.
    """

    def __init__(self, tracker: Tracker, every_n_epochs: int):
        self.tracker = tracker
        self.every_n_epochs = max(1, int(every_n_epochs))

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        examples = getattr(module, "examples", [])
        if trainer.sanity_checking or not trainer.is_global_zero or not examples:
            return
        last = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
        if trainer.current_epoch % self.every_n_epochs and not last:
            return
        from quill.evaluation import cer

        self.tracker.log_table(
            {
                "image": [ink_to_image(e.image) for e in examples],
                "ground_truth": [e.truth for e in examples],
                "prediction": [e.prediction for e in examples],
                "confidence": [round(e.confidence, 4) for e in examples],
                "cer": [round(cer(e.prediction, e.truth), 4) for e in examples],
                "source": [e.path for e in examples],
                "epoch": [trainer.current_epoch] * len(examples),
            },
            f"predictions/epoch_{trainer.current_epoch:03d}.json",
        )


class Norms(L.Callback):
    """Gradient norms just before each optimiser step and weight norms, every N steps.

    Per-block norms use the model's top-level children (e.g. ``cnn``, ``encoder``,
    ``classifier``), which is where a training problem usually shows.
    """

    def __init__(self, tracker: Tracker, every_n_steps: int):
        self.tracker = tracker
        self.every_n_steps = max(1, int(every_n_steps))

    def on_before_optimizer_step(
        self, trainer: L.Trainer, module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if trainer.global_step % self.every_n_steps:
            return
        grads = _block_norms(module, lambda p: p.grad)
        weights = _block_norms(module, lambda p: p.data)
        metrics = {f"grad_norm/{k}": v for k, v in grads.items()}
        metrics.update({f"weight_norm/{k}": v for k, v in weights.items()})
        module.log_dict(metrics, on_step=True, on_epoch=False)
        if trainer.is_global_zero:
            for name, param in module.named_parameters():
                if param.grad is not None:
                    self.tracker.log_histogram(
                        f"grads/{name}", param.grad.detach().float().cpu(), trainer.global_step
                    )


def _block_norms(module: L.LightningModule, pick: Any) -> dict[str, float]:
    """L2 norm of ``pick(param)`` per top-level block of the model, and in total."""
    model = getattr(module, "model", module)
    squares: dict[str, float] = {}
    for name, param in model.named_parameters():
        tensor = pick(param)
        if tensor is None:
            continue
        block = name.split(".", 1)[0]
        squares[block] = squares.get(block, 0.0) + float(tensor.detach().float().pow(2).sum())
    norms = {block: value**0.5 for block, value in squares.items()}
    if squares:
        norms["total"] = sum(squares.values()) ** 0.5
    return norms


class Throughput(L.Callback):
    """Training samples per second, per logging interval and per epoch.

    Measured from batch start to batch start, so it includes waiting for data: it is the
    rate a user gets, not the rate the model could reach with an infinitely fast loader.
    Validation is not training: its time is left out of both rates (Lightning validates at
    the end of an epoch before ``on_train_epoch_end``, so the epoch's clock stops at its last
    training batch). The interval is counted in optimiser steps, as Lightning counts
    ``log_every_n_steps``, across epochs: an epoch of fewer batches than the interval still
    gets its rate logged.
    """

    def __init__(self) -> None:
        self._paused = 0.0  # seconds spent validating, off the clock
        self._validation_start = 0.0
        self._epoch_start = 0.0
        self._last_batch_end = 0.0
        self._epoch_samples = 0
        self._window_start = 0.0
        self._window_samples = 0
        self._logged_step = 0

    def _clock(self) -> float:
        """Seconds of training: wall time less the time spent validating."""
        return time.perf_counter() - self._paused

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._logged_step = trainer.global_step  # (a resumed run's steps go on from its own)
        self._window_start = self._clock()

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._epoch_start = self._last_batch_end = self._clock()
        self._epoch_samples = 0

    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._paused += time.perf_counter() - self._validation_start

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        size = len(batch["texts"]) * trainer.world_size
        self._epoch_samples += size
        self._window_samples += size
        self._last_batch_end = self._clock()
        # Lightning sets log_every_n_steps on the trainer at run time; its Trainer class does
        # not declare it. A step's metrics reach the logger when the step count is a multiple
        # of it; with gradient accumulation, several batches share one step.
        every = trainer.log_every_n_steps  # type: ignore[attr-defined]
        step = trainer.global_step
        if step != self._logged_step and step % every == 0:
            elapsed = self._last_batch_end - self._window_start
            module.log("samples_per_sec", self._window_samples / max(elapsed, 1e-9), on_step=True)
            self._window_start, self._window_samples = self._clock(), 0
            self._logged_step = step

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        elapsed = self._last_batch_end - self._epoch_start
        if self._epoch_samples:
            rate = self._epoch_samples / max(elapsed, 1e-9)
            module.log("samples_per_sec_epoch", rate, on_step=False, on_epoch=True)


class ValidateBeforeMaxSteps(L.Callback):
    """Validate at the last step of a run that ``trainer.max_steps`` ends inside an epoch.

    Lightning validates at the end of each epoch (or every ``val_check_interval`` batches);
    a run whose ``max_steps`` stop it before the first validation had no ``val_cer``, so early
    stopping raised "Early stopping conditioned on metric 'val_cer' which is not available",
    the run was recorded FAILED and no checkpoint was chosen. When the steps left end inside
    the current epoch before any validation, this moves the validation to that last step.
    """

    def __init__(self) -> None:
        #: batch (1-based, in the epoch) of the moved validation, None when nothing was moved
        self.validates_at: int | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # (Lightning skips this hook when it resumes inside an epoch: an epoch starts here.)
        every = trainer.check_val_every_n_epoch
        if (
            trainer.max_steps is None
            or trainer.max_steps < 0
            or trainer.limit_val_batches == 0
            or (every is not None and (trainer.current_epoch + 1) % every != 0)
        ):
            return
        batches = trainer.fit_loop.max_batches
        check = trainer.val_check_batch
        if not isinstance(batches, int) or not isinstance(check, int | float):
            return
        batches_left = (trainer.max_steps - trainer.global_step) * trainer.accumulate_grad_batches
        if 0 < batches_left < batches and check > batches_left:
            trainer.val_check_batch = batches_left
            self.validates_at = batches_left
            if trainer.is_global_zero:
                print(
                    f"max_steps={trainer.max_steps} ends the run inside an epoch of {batches} "
                    f"batches: validating after batch {batches_left}, its last step",
                    flush=True,
                )


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose ``last.ckpt`` always holds the latest state, in rank 0's folder.

    Lightning rewrites ``last.ckpt`` only when a top-k file is saved, that is when the
    monitored metric improved: a run whose val_cer stalled kept epoch 1 there however long it
    trained, and ``--resume`` threw the rest away. Here ``last.ckpt`` is rewritten at every
    epoch's (and every validation's) checkpoint point, and once more when the run is stopped
    at a batch boundary (:meth:`save_stopped`). The folder is rank 0's, so all DDP ranks
    agree on the best file.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.dirpath = trainer.strategy.broadcast(self.dirpath)
        super().setup(trainer, pl_module, stage)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._save_latest(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        # when the top-k choice waits for the epoch's end, so does last.ckpt: saving it here
        # would mark the step saved and make Lightning skip that choice
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_latest(trainer)

    def _save_latest(self, trainer: L.Trainer) -> None:
        """Write ``last.ckpt`` unless this step's state is already saved (Lightning wrote it
        with a top-k file) or nothing may be saved now (fast-dev-run, sanity check)."""
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def save_stopped(self, trainer: L.Trainer, exception: BaseException) -> None:
        """Write ``last.ckpt`` for a run stopped by SIGTERM or a first Ctrl+C (:class:`CtrlC`).

        Lightning raises :class:`SIGTERMException` only between batches, so the state is
        whole; a stop inside validation, a hard stop (a second Ctrl+C, which can land
        mid-step) and any crash write nothing, nor does a DDP run (its other ranks may
        already be gone, and saving waits for all of them).
        """
        if (
            isinstance(exception, SIGTERMException)
            and trainer.world_size == 1
            and trainer.global_step > 0
            and not trainer.validating
        ):
            self._save_latest(trainer)


class CtrlC(L.Callback):
    """Ctrl+C stops training at the next batch boundary, as Lightning stops for SIGTERM.

    A KeyboardInterrupt lands wherever Python happens to be: inside an MLflow SQLite write it
    left the store locked, and every later write (the KILLED status among them) failed. While
    :meth:`deferred` is active the first Ctrl+C only raises a flag: this callback hands it to
    the trainer as if SIGTERM had come, Lightning stops after the batch (a whole state,
    which :class:`RunCheckpoint` saves), and the command exits as interrupted. A second
    Ctrl+C stops at once, as before.
    """

    def __init__(self) -> None:
        self.requested = False
        self._trainer: L.Trainer | None = None

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Catch Ctrl+C as a flag meanwhile (on the main thread: only it can take signals)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, self._requested)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def raise_if_requested(self) -> None:
        """Stop here, between steps of the command, if Ctrl+C was pressed outside training."""
        if self.requested:
            raise KeyboardInterrupt

    def _requested(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this batch (Ctrl+C again to stop at once)", file=sys.stderr)
        self._forward()

    def _forward(self) -> None:
        # Lightning's SIGTERM flag, which its loops check between batches. It is reset when
        # a trainer stage starts, so it is set again from the hooks below.
        if self.requested and self._trainer is not None:
            self._trainer._signal_connector.received_sigterm = True

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._forward()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._forward()

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._forward()


class CheckpointArtifacts(L.Callback):
    """At the end of fitting, upload the kept checkpoints and mark the best.

    The best checkpoint is named by the tags ``quill.best_checkpoint`` (artifact path) and
    ``quill.best_checkpoint_path`` (local file), and ``checkpoints/index.json`` lists every
    uploaded file with its score, so `quill stage` can pick the best without guessing.
    """

    def __init__(self, tracker: Tracker, checkpoint: RunCheckpoint):
        self.tracker = tracker
        self.checkpoint = checkpoint

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            upload_checkpoints(self.tracker, self.checkpoint)

    def on_exception(
        self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException
    ) -> None:
        """A stopped or crashed run keeps the checkpoints it had written, and a stopped one
        its latest state. (Saved from here: Lightning calls checkpoint callbacks last, after
        this upload.)"""
        self.checkpoint.save_stopped(trainer, exception)
        if trainer.is_global_zero:
            upload_checkpoints(self.tracker, self.checkpoint)


def upload_checkpoints(tracker: Tracker, checkpoint: Any) -> Path | None:
    """Upload the top-k and last checkpoints of a ModelCheckpoint; returns the best's path."""
    scores = {Path(p): float(s) for p, s in checkpoint.best_k_models.items()}
    files = list(scores)
    last = Path(checkpoint.last_model_path) if checkpoint.last_model_path else None
    if last is not None and last.is_file() and last not in scores:
        files.append(last)
    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
    if best is None and last is not None and last.is_file():
        best = last  # no validation ran (e.g. limit_val_batches=0): the last weights are it
    index = []
    for path in files:
        if path.is_file():
            tracker.log_artifact(path, "checkpoints")
            index.append(
                {
                    "file": f"checkpoints/{path.name}",
                    "score": scores.get(path),
                    "best": path == best,
                    "monitor": checkpoint.monitor,
                }
            )
    if best is None or not best.is_file():
        return None
    tracker.log_dict({"checkpoints": index}, "checkpoints/index.json")
    tracker.set_tags(
        {
            "quill.best_checkpoint": f"checkpoints/{best.name}",
            "quill.best_checkpoint_path": str(best),
        }
    )
    if checkpoint.best_model_score is not None:
        tracker.log_metric(f"best_{checkpoint.monitor}", float(checkpoint.best_model_score))
    return best
