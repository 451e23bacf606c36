"""Training the learned line detector on composed pages: ``quill detector train``.

Pages come from :func:`quill.data.synth.pages.compose_page_sample` (training writers only),
go through the same normalisation as at inference (the page scaled to the segmenter's
analysis size, :func:`quill.preprocess.ink_map`, area-resized to the detector's size) and
are cut into square crops; the target is the page's core bands at the network's output
scale. Composing a page costs ~0.3 s on one core, as much as a training step, so pages are
kept in a pool that grows by ``data.new_pages`` per batch up to ``data.pool`` pages and
each batch takes crops of pages drawn from it: every page is seen a few times, flipped and
cut differently, and no separate generation pass holds the run up.

The loss is binary cross-entropy (positives weighted: cores are ~5% of a page) plus soft
Dice, which keeps thin bands of small writing from being drowned by the paper. Validation
pages are composed once from the validation writers; the run logs loss and core IoU to
MLflow with the resolved config, and writes the weights (:func:`save_detector`) to
``out``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F  # noqa: N812
from torch.utils.data import DataLoader, IterableDataset

from quill.data.manifest import Split
from quill.data.synth.pages import PageSample, compose_page_sample
from quill.errors import ConfigError
from quill.models.line_detector import (
    OUTPUT_SCALE,
    LineDetector,
    LineDetectorConfig,
    padded,
    resize_ink,
    save_detector,
)
from quill.models.segment import SegmentConfig
from quill.preprocess import ink_map
from quill.training.config import (
    AMOUNT,
    COUNT,
    RATE,
    NumberRule,
    _check_known,
    check_rules,
    deep_merge,
    flatten,
    parse_override,
    read_yaml,
    save_config,
    set_dotted,
)
from quill.training.tracking_store import default_tracking_uri, ensure_experiment, prepare_store

#: Every key a line-detector config may set, with its default.
DEFAULTS: dict[str, Any] = {
    "seed": 17,
    "threads": 1,
    "model": LineDetectorConfig().to_dict(),
    "data": {
        "split": "train",
        "val_split": "val",
        "crop": 256,
        "batch_size": 8,
        "pool": 1000,
        "new_pages": 1,
        "val_pages": 24,
        "root": None,
        #: Also compose what scans show besides writing (show-through, the scanner's edge, a
        #: fold, dust): quill.data.synth.pages._scan_marks.
        "scan_marks": False,
    },
    "optim": {"lr": 3.0e-3, "weight_decay": 1.0e-4, "pos_weight": 2.0, "dice": 0.5},
    "trainer": {
        "max_steps": 3000,
        "max_time": None,
        "val_every_n_steps": 250,
        "log_every_n_steps": 10,
    },
    "tracking": {"experiment": "line-detector", "tracking_uri": None, "run_name": None},
    "out": "models/line_detector",
}


#: The numeric settings a detector run needs right, checked when its config is resolved
#: (as :data:`quill.training.config.VALUE_RULES` are for a recognition model's run).
VALUE_RULES: dict[str, NumberRule] = {
    "model.size": COUNT,
    "data.crop": COUNT,
    "data.batch_size": COUNT,
    "data.pool": COUNT,
    "data.new_pages": COUNT,
    "data.val_pages": COUNT,
    "optim.lr": RATE,
    "optim.weight_decay": AMOUNT,
    "optim.pos_weight": RATE,
    "optim.dice": AMOUNT,
    "trainer.max_steps": NumberRule(whole=True, positive=True, also=(-1,)),
    "trainer.val_every_n_steps": COUNT,
    "trainer.log_every_n_steps": COUNT,
}


def resolve(path: Path | None, overrides: list[str]) -> dict[str, Any]:
    """:data:`DEFAULTS` <- YAML file <- ``key.path=value`` overrides; an unknown section or
    key (a typo) or a value that breaks :data:`VALUE_RULES` is a :class:`ConfigError`, in the
    file as in an override, before any page is composed."""
    file_config = read_yaml(path) if path else {}
    _check_known(file_config, DEFAULTS, str(path))
    config = deep_merge(DEFAULTS, file_config)
    for text in overrides:
        keys, value, _ = parse_override(text)
        set_dotted(config, keys, value)
    check_rules(flatten(config), VALUE_RULES)
    limit = config["trainer"]["max_time"]
    if limit is not None and not re.fullmatch(r"\d+:\d\d:\d\d:\d\d", str(limit)):
        raise ConfigError(f"trainer.max_time must be DD:HH:MM:SS or null, got {limit!r}")
    return config


def page_arrays(page: PageSample, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The network's input and target for a composed page: ink map (H, W) float32 at the
    detector's ``size`` (computed at the segmenter's analysis size first, as at inference)
    and core target (ceil(H/2), ceil(W/2)) float32 in {0, 1}."""
    analysis = SegmentConfig().analysis_size
    image = page.image
    scale = min(1.0, analysis / max(image.size))
    image = image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
        Image.Resampling.BOX,
    )
    ink = resize_ink(ink_map(image), size)
    height, width = -(-ink.shape[0] // OUTPUT_SCALE), -(-ink.shape[1] // OUTPUT_SCALE)
    cores = Image.fromarray(page.cores.astype(np.float32), mode="F")
    target = np.asarray(cores.resize((width, height), Image.Resampling.BOX)) >= 0.4
    return ink, target.astype(np.float32)


def _crop(
    ink: np.ndarray, target: np.ndarray, side: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A random ``side`` square of a page (padded with paper where the page is smaller),
    mirrored left-right half the time (a line is still a line), and its target."""
    ink = np.pad(ink, ((0, max(0, side - ink.shape[0])), (0, max(0, side - ink.shape[1]))))
    half = side // OUTPUT_SCALE
    target = np.pad(
        target, ((0, max(0, half - target.shape[0])), (0, max(0, half - target.shape[1])))
    )
    y = int(rng.integers(0, ink.shape[0] - side + 1)) // OUTPUT_SCALE
    x = int(rng.integers(0, ink.shape[1] - side + 1)) // OUTPUT_SCALE
    ink = ink[
        y * OUTPUT_SCALE : y * OUTPUT_SCALE + side, x * OUTPUT_SCALE : x * OUTPUT_SCALE + side
    ]
    target = target[y : y + half, x : x + half]
    ink = np.pad(ink, ((0, side - ink.shape[0]), (0, side - ink.shape[1])))
    target = np.pad(target, ((0, half - target.shape[0]), (0, half - target.shape[1])))
    if rng.random() < 0.5:
        ink, target = ink[:, ::-1], target[:, ::-1]
    return np.ascontiguousarray(ink), np.ascontiguousarray(target)


class PagePool(IterableDataset):
    """Endless (ink (1, S, S), target (1, S/2, S/2)) crops from a growing pool of pages."""

    def __init__(self, data: Mapping[str, Any], size: int, seed: int):
        self.data, self.size, self.seed = data, size, seed

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rng = np.random.default_rng(self.seed)
        pool: list[tuple[np.ndarray, np.ndarray]] = []
        next_page = self.seed * 1_000_000
        root = Path(self.data["root"]) if self.data["root"] else None
        while True:
            for _ in range(self.data["new_pages"]):
                page = compose_page_sample(
                    next_page, self.data["split"], root, scan_marks=self.data["scan_marks"]
                )
                next_page += 1
                arrays = page_arrays(page, self.size)
                if len(pool) < self.data["pool"]:
                    pool.append(arrays)
                else:
                    pool[int(rng.integers(len(pool)))] = arrays
            for _ in range(self.data["batch_size"]):
                ink, target = _crop(*pool[int(rng.integers(len(pool)))], self.data["crop"], rng)
                yield torch.from_numpy(ink)[None], torch.from_numpy(target)[None]


def validation_pages(
    data: Mapping[str, Any], size: int, split: Split
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Whole validation pages, each (ink (1, 1, H', W') padded to multiples of 8, target
    (1, 1, h, w)), composed from ``split``'s writers (none of them a training writer)."""
    root = Path(data["root"]) if data["root"] else None
    pages = []
    for seed in range(data["val_pages"]):
        page = compose_page_sample(seed, split, root, scan_marks=data["scan_marks"])
        ink, target = page_arrays(page, size)
        pages.append(
            (torch.from_numpy(padded(ink))[None, None], torch.from_numpy(target)[None, None])
        )
    return pages


class LineDetectorModule(L.LightningModule):
    """The detector with its loss (BCE + soft Dice on the cores) and optimiser."""

    def __init__(self, config: Mapping[str, Any]):
        super().__init__()
        self.config = config
        self.net = LineDetector(LineDetectorConfig.from_dict(config["model"]))
        self.val_pages: list[tuple[torch.Tensor, torch.Tensor]] = []

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        optim = self.config["optim"]
        weight = torch.tensor(optim["pos_weight"])
        bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight)
        probabilities = torch.sigmoid(logits)
        overlap = (probabilities * target).sum()
        dice = 1 - (2 * overlap + 1) / (probabilities.sum() + target.sum() + 1)
        return bce + optim["dice"] * dice

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        ink, target = batch  # (B, 1, S, S), (B, 1, S/2, S/2)
        loss = self.loss(self.net(ink), target)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, *_: Any) -> None:
        every = self.config["trainer"]["val_every_n_steps"]
        if self.global_step % every == 0 and self.val_pages and self.logger is not None:
            # To the logger directly: self.log would repeat the value at every logging step.
            self.logger.log_metrics(self.validate_pages(), step=self.global_step)

    def validate_pages(self) -> dict[str, float]:
        """Loss and core IoU over the validation pages, whole (not cropped)."""
        self.net.eval()
        losses, overlap, union = [], 0.0, 0.0
        with torch.no_grad():
            for ink, target in self.val_pages:
                logits = self.net(ink)[..., : target.shape[2], : target.shape[3]]
                losses.append(float(self.loss(logits, target)))
                found = logits > 0
                overlap += float((found & (target > 0)).sum())
                union += float((found | (target > 0)).sum())
        self.net.train()
        return {"val/loss": sum(losses) / len(losses), "val/core_iou": overlap / max(union, 1.0)}

    def configure_optimizers(self) -> Any:
        optim, steps = self.config["optim"], self.config["trainer"]["max_steps"]
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=optim["lr"], weight_decay=optim["weight_decay"]
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def train_line_detector(config: Mapping[str, Any]) -> Path:
    """Train from a resolved config; the weights file written (``config['out']``)."""
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow import MlflowClient

    tracking = config["tracking"]
    uri = tracking["tracking_uri"] or default_tracking_uri()
    prepare_store(uri)
    client = MlflowClient(uri)
    experiment = ensure_experiment(client, tracking["experiment"], uri)
    # Named before seeding: MLflow's random names, drawn after it, were the same every run.
    run_name = tracking["run_name"] or f"line-detector-{time.strftime('%m%d-%H%M%S')}"
    run = client.create_run(experiment, run_name=run_name)
    status = "FAILED"
    try:
        logger = MLFlowLogger(tracking["experiment"], tracking_uri=uri, run_id=run.info.run_id)
        weights = _fit(config, logger)
        client.log_artifact(run.info.run_id, str(weights))
        status = "FINISHED"
        return weights
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:  # a run that stopped on an error is not left RUNNING
        client.set_terminated(run.info.run_id, status)


def _fit(config: Mapping[str, Any], logger: Any) -> Path:
    """Compose the validation pages, train, validate and write the weights into the run of
    ``logger`` (an MLFlowLogger); the weights file."""
    torch.set_num_threads(config["threads"])
    L.seed_everything(config["seed"], workers=True)
    module = LineDetectorModule(config)
    size, data = module.net.config.size, config["data"]
    module.val_pages = validation_pages(data, size, data["val_split"])
    loader = DataLoader(
        PagePool(data, size, config["seed"]), batch_size=data["batch_size"], num_workers=0
    )
    out = Path(config["out"])
    out.mkdir(parents=True, exist_ok=True)
    resolved = save_config(dict(config), out / "config.yaml")
    logger.experiment.log_artifact(logger.run_id, str(resolved))
    logger.log_hyperparams(flatten(config))
    trainer = L.Trainer(
        max_steps=config["trainer"]["max_steps"],
        max_time=config["trainer"]["max_time"],
        logger=logger,
        log_every_n_steps=config["trainer"]["log_every_n_steps"],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(module, loader)
    logger.log_metrics(module.validate_pages(), step=trainer.global_step)
    return save_detector(module.net, out / "line_detector.pt")
