"""Lightning callbacks that record what a metric curve alone does not show.

* :class:`PredictionTable`: image, ground truth and prediction of a fixed set of validation
  samples every N epochs (a CER of 0.3 means little until you see *which* errors).
* :class:`Norms`: global and per-block gradient and weight norms (exploding or vanishing
  gradients, dead blocks), and histograms where the logger draws them.
* :class:`Throughput`: training samples per second, the number a data or model change moves.
* :class:`CheckpointArtifacts`: the top-k checkpoints uploaded to the run, the best marked.
* :class:`ValidateBeforeMaxSteps`: a run that ``max_steps`` ends inside an epoch validates at
  its last step (so checkpointing and early stopping have ``val_cer``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
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
    """

    def __init__(self) -> None:
        self._epoch_start = 0.0
        self._epoch_samples = 0
        self._window_start = 0.0
        self._window_samples = 0

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._epoch_start = self._window_start = time.perf_counter()
        self._epoch_samples = self._window_samples = 0

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
        # Lightning sets log_every_n_steps on the trainer at run time; its Trainer class does
        # not declare it.
        every = trainer.log_every_n_steps  # type: ignore[attr-defined]
        if (batch_idx + 1) % every == 0:
            elapsed = time.perf_counter() - self._window_start
            module.log("samples_per_sec", self._window_samples / max(elapsed, 1e-9), on_step=True)
            self._window_start, self._window_samples = time.perf_counter(), 0

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        elapsed = time.perf_counter() - self._epoch_start
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


class CheckpointArtifacts(L.Callback):
    """At the end of fitting, upload the kept checkpoints and mark the best.

    The best checkpoint is named by the tags ``quill.best_checkpoint`` (artifact path) and
    ``quill.best_checkpoint_path`` (local file), and ``checkpoints/index.json`` lists every
    uploaded file with its score, so `quill stage` can pick the best without guessing.
    """

    def __init__(self, tracker: Tracker, checkpoint: L.pytorch.callbacks.ModelCheckpoint):
        self.tracker = tracker
        self.checkpoint = checkpoint

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            upload_checkpoints(self.tracker, self.checkpoint)

    def on_exception(
        self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException
    ) -> None:
        """A stopped or crashed run keeps the checkpoints it had written."""
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
