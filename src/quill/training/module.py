"""LightningModules that train the plain ``quill.models`` networks.

One base class holds what every recogniser shares (optimiser and schedule, CER/WER, the
prediction examples the tracking callbacks log); :class:`CTCModule` and
:class:`Seq2SeqModule` add the loss and the decoding of their model family.

The constructor arguments are exactly the checkpoint ``hyper_parameters`` of the shared
contract (``model_name``, ``model_config``, ``tokenizer``, ``preprocess``, ``dataset_version``,
``config``), so :func:`load_module` or staging can rebuild the network from a ``.ckpt``
alone, and the network's weights sit in ``state_dict`` under ``model.``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import nn

from quill.models import build_model
from quill.training.distill import ShiftTeacher, frame_divergence
from quill.training.metrics import CharErrorRate, TextMetrics
from quill.vocab import Tokenizer

Batch = dict[str, Any]


@dataclass
class Example:
    """One validation sample with the model's reading, for prediction tables."""

    image: np.ndarray  # (H, W) model input, ink = 1
    truth: str
    prediction: str
    confidence: float
    path: str


class HTRModule(L.LightningModule):
    """Shared training logic; subclasses define :meth:`loss` and :meth:`transcribe`."""

    family: str = ""

    def __init__(
        self,
        model_name: str,
        model_config: dict[str, Any],
        tokenizer: dict[str, Any],
        preprocess: dict[str, Any],
        dataset_version: str,
        config: dict[str, Any],
        model: nn.Module | None = None,
    ) -> None:
        super().__init__()
        # `model` only saves building the network twice in create_module; it is rebuilt
        # from model_name + model_config when a checkpoint is loaded.
        # logger=False: the run records the flat resolved config itself, once, as params.
        self.save_hyperparameters(ignore=["model"], logger=False)
        self.tokenizer = Tokenizer.from_dict(tokenizer)
        self.model = model or build_model(model_name, len(self.tokenizer), **model_config)
        if getattr(self.model, "family", None) != self.family:
            raise ValueError(
                f"model {model_name!r} has family {getattr(self.model, 'family', None)!r}; "
                f"{type(self).__name__} trains family {self.family!r}"
            )
        self.optim = config["optim"]
        self.decode_config = config["decode"]
        self.examples_wanted = int(config["tracking"]["prediction_table_samples"])
        self.val_text = TextMetrics()
        self.test_text = TextMetrics()
        self.val_source_cer = nn.ModuleDict()
        self.val_unseen_cer: CharErrorRate | None = None
        self.source_roles: dict[str, str] = {}
        self.examples: list[Example] = []

    def track_sources(self, roles: Mapping[str, str]) -> None:
        """Also log validation CER per data source (``val_cer_<name>``), pooled over the
        ``unseen``-role sources (``val_cer_unseen``: writers the model never trained on), and
        ``val_cer_select``, the metric to choose checkpoints by.

        A mix of synthetic and real lines can improve overall while getting worse on the real
        ones, and a model can learn its training writers while reading strangers worse; one
        number per source and one for unseen writers show both. ``val_cer_select`` is the mean
        of the unseen-writers CER and each ``seen`` source's CER (synthetic sources left out),
        so a checkpoint is chosen for strangers' hands and the known ones alike.
        """
        self.source_roles = {metric_key(name): role for name, role in roles.items()}
        if roles:
            self.val_source_cer = nn.ModuleDict({key: CharErrorRate() for key in self.source_roles})
        if "unseen" in self.source_roles.values():
            self.val_unseen_cer = CharErrorRate()

    def _source_metrics(self) -> list[tuple[str, CharErrorRate]]:
        """``val_source_cer``'s items, typed (a ModuleDict holds them so they move with the
        module to its device; it types its values as plain modules)."""
        return [(key, cast(CharErrorRate, metric)) for key, metric in self.val_source_cer.items()]

    def on_validation_epoch_end(self) -> None:
        parts = [
            metric for key, metric in self._source_metrics() if self.source_roles.get(key) == "seen"
        ]
        if self.val_unseen_cer is not None:
            parts.append(self.val_unseen_cer)
        values = [metric.compute() for metric in parts if metric.update_count]
        if values:
            self.log("val_cer_select", torch.stack(values).mean(), sync_dist=True)

    # -- what a model family defines -------------------------------------------------------

    def loss(self, batch: Batch) -> torch.Tensor:
        """Training loss of one batch (scalar)."""
        raise NotImplementedError

    def transcribe(self, batch: Batch) -> list[tuple[str, float]]:
        """(text, confidence in [0, 1]) for every image of the batch, as inference reads."""
        raise NotImplementedError

    def loss_and_readings(self, batch: Batch) -> tuple[torch.Tensor, list[tuple[str, float]]]:
        """Both, for evaluation; a family whose loss and reading share a forward overrides it."""
        return self.loss(batch), self.transcribe(batch)

    # -- Lightning hooks --------------------------------------------------------------------

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        size = len(batch["texts"])
        self.log("train_loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=size)
        self.log("train_loss_epoch", loss, on_step=False, on_epoch=True, batch_size=size)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.examples = []

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        readings = self._evaluate(batch, "val", self.val_text)
        self._update_source_metrics(batch, readings)
        if len(self.examples) < self.examples_wanted:
            self._keep_examples(batch, readings)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_text)

    def predict_step(self, batch: Batch, batch_idx: int) -> list[tuple[str, float]]:
        return self.transcribe(batch)

    def _evaluate(self, batch: Batch, stage: str, metrics: TextMetrics) -> list[tuple[str, float]]:
        """Loss, readings and CER/WER of one batch; the metric objects accumulate the epoch."""
        size = len(batch["texts"])
        loss, readings = self.loss_and_readings(batch)
        self.log(f"{stage}_loss", loss, sync_dist=True, batch_size=size)
        metrics.update([text for text, _ in readings], batch["texts"])
        # Logging the metric objects lets Lightning compute, sync across DDP and reset them.
        self.log(f"{stage}_cer", metrics.cer, prog_bar=True, batch_size=size)
        self.log(f"{stage}_wer", metrics.wer, batch_size=size)
        return readings

    def _update_source_metrics(self, batch: Batch, readings: list[tuple[str, float]]) -> None:
        sources = batch.get("sources")
        if sources is None:
            return
        for key, metric in self._source_metrics():
            rows = [i for i, name in enumerate(sources) if metric_key(name) == key]
            if rows:
                metric.update([readings[i][0] for i in rows], [batch["texts"][i] for i in rows])
                self.log(f"val_cer_{key}", metric, batch_size=len(rows))
        if self.val_unseen_cer is not None:
            roles = self.source_roles
            rows = [i for i, name in enumerate(sources) if roles.get(metric_key(name)) == "unseen"]
            if rows:
                self.val_unseen_cer.update(
                    [readings[i][0] for i in rows], [batch["texts"][i] for i in rows]
                )
                self.log("val_cer_unseen", self.val_unseen_cer, batch_size=len(rows))

    def _keep_examples(self, batch: Batch, readings: list[tuple[str, float]]) -> None:
        images = batch["images"][:, 0].float().cpu().numpy()  # (B, H, W)
        for i, (text, confidence) in enumerate(readings):
            if len(self.examples) >= self.examples_wanted:
                return
            width = int(batch["widths"][i])
            self.examples.append(
                Example(
                    image=images[i, :, :width],
                    truth=batch["texts"][i],
                    prediction=text,
                    confidence=float(confidence),
                    path=str(batch["image_paths"][i]),
                )
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["quill_family"] = self.family

    # -- optimisation ----------------------------------------------------------------------

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        """AdamW (no decay on biases and norms) with warmup then cosine/one-cycle/constant."""
        decay = [p for p in self.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in self.parameters() if p.requires_grad and p.ndim < 2]
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": float(self.optim["weight_decay"])},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=float(self.optim["lr"]),
            betas=tuple(self.optim["betas"]),
        )
        total = self.trainer.estimated_stepping_batches
        total_steps = None if math.isinf(total) else max(1, int(total))
        scheduler = build_scheduler(optimizer, self.optim, total_steps)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def metric_key(name: str) -> str:
    """A source name as a metric-name suffix.

    >>> metric_key("hooker letters/v2")
    'hooker_letters_v2'
    """
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "source"


def warmup_steps(warmup: float, total_steps: int | None) -> int:
    """Warmup given as steps (>= 1) or as a fraction of all steps (< 1).

    >>> warmup_steps(0.1, 1000), warmup_steps(50, 1000), warmup_steps(0.1, None)
    (100, 50, 0)
    """
    if warmup >= 1:
        return int(warmup)
    return int(warmup * total_steps) if total_steps else 0


def build_scheduler(
    optimizer: torch.optim.Optimizer, optim: dict[str, Any], total_steps: int | None
) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-step learning-rate schedule named by ``optim.schedule``.

    Without a known number of steps (training bounded only by time) cosine and one-cycle
    cannot place their decay, so the schedule is warmup then constant.
    """
    schedule = optim["schedule"]
    warm = warmup_steps(float(optim["warmup"]), total_steps)
    if schedule == "onecycle" and total_steps:
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=float(optim["lr"]),
            total_steps=total_steps,
            pct_start=max(warm / total_steps, 0.01),
        )
    if schedule not in ("cosine", "onecycle", "constant"):
        raise ValueError(f"optim.schedule must be cosine, onecycle or constant, not {schedule!r}")
    floor = float(optim["min_lr_ratio"])
    decays = schedule == "cosine" and total_steps is not None
    span = max(1, total_steps - warm) if total_steps is not None else 1

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if not decays:
            return 1.0
        progress = min(1.0, (step - warm) / span)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class CTCModule(HTRModule):
    """CTC line recogniser: per-frame log-probabilities, blank = 0, greedy best path."""

    family = "ctc"
    #: the model whose readings the run also learns (``learn_from``), and its loss share
    teacher: ShiftTeacher | None = None
    distill_weight = 0.0

    def _frames(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        log_probs = self.model(batch["images"]).float()  # (B, T, C), fp32 for CTC
        # self.model: nn.Module, whose attributes torch types as Tensor | Module.
        widths = self.model.output_lengths(batch["widths"])  # type: ignore[operator]
        lengths = widths.clamp(max=log_probs.shape[1])
        return log_probs, lengths

    def _ctc_loss(
        self, log_probs: torch.Tensor, lengths: torch.Tensor, batch: Batch
    ) -> torch.Tensor:
        # zero_infinity: a line too narrow for its text (T < L) gives no gradient, not NaN.
        return F.ctc_loss(
            log_probs.transpose(0, 1),  # (T, B, C)
            batch["targets"],
            lengths,
            batch["target_lengths"],
            blank=Tokenizer.blank_id,
            zero_infinity=True,
        )

    def _read(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[tuple[str, float]]:
        from quill.models.decoding import ctc_greedy_decode

        decoded = ctc_greedy_decode(log_probs.detach(), lengths)
        return [(self.tokenizer.decode(ids), float(conf)) for ids, conf in decoded]

    def learn_from(self, teacher: ShiftTeacher, weight: float) -> None:
        """Train on ``teacher``'s readings as well as on the labels (``distill``): the
        training loss becomes ``(1 - weight) * CTC + weight * divergence``; validation and
        test losses stay plain CTC, comparable with any run's."""
        self.teacher = teacher
        self.distill_weight = float(weight)

    def loss(self, batch: Batch) -> torch.Tensor:
        log_probs, lengths = self._frames(batch)
        ctc = self._ctc_loss(log_probs, lengths, batch)
        if self.teacher is None:
            return ctc
        targets = self.teacher.log_probs(batch["images"])
        divergence = frame_divergence(log_probs, targets, lengths, batch["target_lengths"])
        size = len(batch["texts"])
        self.log("train_ctc", ctc, on_step=True, on_epoch=False, batch_size=size)
        self.log("train_divergence", divergence, on_step=True, on_epoch=False, batch_size=size)
        return (1 - self.distill_weight) * ctc + self.distill_weight * divergence

    def transcribe(self, batch: Batch) -> list[tuple[str, float]]:
        return self._read(*self._frames(batch))

    def loss_and_readings(self, batch: Batch) -> tuple[torch.Tensor, list[tuple[str, float]]]:
        log_probs, lengths = self._frames(batch)  # one forward for both
        return self._ctc_loss(log_probs, lengths, batch), self._read(log_probs, lengths)


class Seq2SeqModule(HTRModule):
    """Encoder-decoder recogniser: teacher forcing with optional label smoothing."""

    family = "seq2seq"

    def loss(self, batch: Batch) -> torch.Tensor:
        sequence = bos_eos_sequences(batch["targets"], batch["target_lengths"])  # (B, L+2)
        logits = self.model(batch["images"], sequence[:, :-1])  # (B, L+1, C)
        return F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]),
            sequence[:, 1:].reshape(-1),
            ignore_index=Tokenizer.pad_id,
            label_smoothing=float(self.optim["label_smoothing"]),
        )

    def transcribe(self, batch: Batch) -> list[tuple[str, float]]:
        limit = self.decode_config["max_length"]
        ceiling = getattr(self.model, "max_output_length", None)
        if limit is not None and ceiling is not None:
            limit = min(int(limit), int(ceiling))  # its position table ends there
        # self.model: nn.Module, whose attributes torch types as Tensor | Module.
        ids, scores = self.model.generate(  # type: ignore[operator]
            batch["images"],
            max_length=limit,
            beam_size=int(self.decode_config["beam_size"]),
        )
        return [
            (self.tokenizer.decode(row.tolist()), float(score))
            for row, score in zip(ids, scores, strict=True)
        ]


def bos_eos_sequences(targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, L) padded targets -> (B, L+2) rows ``BOS t_1 .. t_n EOS PAD..``.

    >>> bos_eos_sequences(torch.tensor([[5, 6, 7], [8, 0, 0]]), torch.tensor([3, 1])).tolist()
    [[1, 5, 6, 7, 2], [1, 8, 2, 0, 0]]
    """
    batch, length = targets.shape
    out = torch.full(
        (batch, length + 2), Tokenizer.pad_id, dtype=targets.dtype, device=targets.device
    )
    out[:, 0] = Tokenizer.bos_id
    out[:, 1:-1] = targets
    out[torch.arange(batch, device=targets.device), lengths + 1] = Tokenizer.eos_id
    return out


MODULES: dict[str, type[HTRModule]] = {"ctc": CTCModule, "seq2seq": Seq2SeqModule}


def create_module(
    config: dict[str, Any], tokenizer: Tokenizer, preprocess: dict[str, Any], dataset_version: str
) -> HTRModule:
    """The LightningModule for ``config['model']``, its family read off the built network.

    The checkpoint stores the network's full resolved config (its defaults filled in), not
    just the keys the YAML set, so a later change of a default cannot change a staged model.
    """
    name = config["model"]["name"]
    model = build_model(name, len(tokenizer), **config["model"]["config"])
    to_dict = getattr(getattr(model, "config", None), "to_dict", None)
    model_config = to_dict() if to_dict is not None else config["model"]["config"]
    family = getattr(model, "family", None)
    if family not in MODULES:
        raise ValueError(f"model {name!r} has family {family!r}; expected one of {list(MODULES)}")
    return MODULES[family](
        model_name=name,
        model_config=model_config,
        tokenizer=tokenizer.to_dict(),
        preprocess=preprocess,
        dataset_version=dataset_version,
        config=config,
        model=model,
    )


def load_module(checkpoint_path: str, map_location: str = "cpu") -> HTRModule:
    """Rebuild the trained module of a Quill ``.ckpt`` (whatever its model family)."""
    checkpoint = torch.load(checkpoint_path, map_location=map_location, weights_only=False)
    family = checkpoint.get("quill_family")
    if family not in MODULES:
        raise ValueError(f"{checkpoint_path} is not a Quill training checkpoint (no model family)")
    return MODULES[family].load_from_checkpoint(checkpoint_path, map_location=map_location)
