"""The Lightning DataModule every training run reads: several datasets mixed by weight.

A run names its sources as dataset folders with weights, e.g. 70% synthetic and 30% real
lines. Training batches draw from the sources' train splits in those proportions (a
``WeightedRandomSampler`` over all train samples, each weighted ``source weight / source
size``, for a fixed number of samples per epoch), so a small real set is neither drowned by
a large synthetic one nor repeated to exhaustion. Validation and test use every source's own
val/test split, unmixed and unaugmented, in one loader whose batches carry each sample's
source name (``batch["sources"]``), so metrics can be reported per source as well as overall;
validation lines come in one fixed shuffled order, so a limited validation still sees every
source.

Line images are read through an ink cache (:mod:`quill.data.ink_cache`): each image's ink
map is computed once per dataset version, and training batches are augmented as tensors
(:mod:`quill.data.ink_augment`) in the loader workers or, on a GPU, after the batch is moved
there (``augment_on``). ``cache=False`` (and paragraph data) reads and augments every image
per sample instead, the slower path ``quill bench data`` compares against.

Samples the tokenizer cannot encode, or whose image file is missing or unreadable, are
reported when the module is set up and left out; nothing is dropped silently.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from quill.cores import usable_cores
from quill.data import ink_cache
from quill.data.augment import AugmentConfig, Augmenter
from quill.data.ink_augment import InkAugmenter
from quill.data.manifest import Manifest, Split
from quill.data.readers.common import Skip, label_problem
from quill.digest import json_digest
from quill.preprocess import ImageError, PreprocessConfig, batch_images, load_image, preprocess
from quill.vocab import Tokenizer

log = logging.getLogger(__name__)

Task = Literal["line", "paragraph"]
AugmentOn = Literal["auto", "loader", "device"]
#: Consecutive unreadable images tolerated before a loader gives up.
MAX_REPLACEMENTS = 10
#: Where a dataset's ink cache lives, inside the dataset folder unless ``cache_dir`` is given.
CACHE_FOLDER = ".ink-cache"


def default_num_workers() -> int:
    """Loader processes for this machine: one core stays with the training loop, at most 4."""
    return max(0, min(usable_cores() - 1, 4))


SourceRole = Literal["seen", "unseen", "synthetic"]
SOURCE_ROLES: tuple[SourceRole, ...] = ("seen", "unseen", "synthetic")


@dataclass(frozen=True)
class SourceSpec:
    """One dataset folder in the mix. ``name`` (default: the folder name) labels its metrics."""

    path: Path
    weight: float = 1.0
    name: str = ""
    #: ``seen`` (the model trains on these writers), ``unseen`` (val/test writers never in
    #: train: a writer-split multi-writer set) or ``synthetic``. Validation pools the unseen
    #: sources into ``val_cer_unseen`` and selects checkpoints on real data.
    role: SourceRole = "seen"

    @classmethod
    def parse(cls, item: SourceSpec | Mapping | str | Path) -> SourceSpec:
        """A spec from a config entry: ``{"path", "weight", "name", "role"}`` or a path."""
        if isinstance(item, SourceSpec):
            spec = item
        elif isinstance(item, Mapping):
            unknown = set(item) - {"path", "weight", "name", "role"}
            if unknown or "path" not in item:
                raise ValueError(f"a source needs 'path' (and optional weight, name, role): {item}")
            role = item.get("role", "seen")
            if role not in SOURCE_ROLES:
                raise ValueError(f"source {item['path']}: role must be one of {SOURCE_ROLES}")
            spec = cls(
                Path(item["path"]), float(item.get("weight", 1.0)), item.get("name", ""), role
            )
        else:
            spec = cls(Path(item))
        if spec.weight < 0:
            raise ValueError(f"source {spec.path}: weight must be >= 0, got {spec.weight}")
        name = spec.name or Path(spec.path).name
        return cls(spec.path, spec.weight, name, spec.role)


@dataclass(frozen=True)
class Item:
    """One usable sample: absolute image path, label, token ids and source name."""

    path: str
    text: str
    ids: tuple[int, ...]
    source: str
    #: the image's row in its source's ink cache (-1: read from the file)
    row: int = -1


@dataclass
class SourceData:
    """A source's manifest, its ink cache (if cached) and its usable items per split."""

    spec: SourceSpec
    manifest: Manifest
    items: dict[str, list[Item]] = field(default_factory=dict)
    cache: ink_cache.InkCache | None = None


class HTRDataset(Dataset):
    """Items -> preprocessed images (H, W) float32 with their labels, augmented if asked."""

    def __init__(
        self,
        items: Sequence[Item],
        config: PreprocessConfig,
        augmenter: Augmenter | None = None,
    ):
        self.items = list(items)
        self.config = config
        self.augmenter = augmenter
        self._rng: np.random.Generator | None = None
        self._rng_pid = -1

    def __len__(self) -> int:
        return len(self.items)

    def rng(self) -> np.random.Generator:
        """This process's augmentation generator, seeded from torch's per-worker seed.

        Each DataLoader worker gets its own torch seed (different every epoch unless workers
        persist), so augmentations differ across workers and epochs yet follow the run seed.
        """
        if self._rng is None or self._rng_pid != os.getpid():
            self._rng = np.random.default_rng(torch.initial_seed())
            self._rng_pid = os.getpid()
        return self._rng

    def __getitem__(self, index: int) -> dict:
        """A sample; an unreadable image is logged with its path and the next one used."""
        failures = []
        for offset in range(MAX_REPLACEMENTS):
            item = self.items[(index + offset) % len(self.items)]
            try:
                image = load_image(item.path)
            except ImageError as exc:
                log.warning("skipping unreadable image %s: %s", item.path, exc)
                failures.append(item.path)
                continue
            return {
                "image": self._pixels(image),  # (H, W) float32, ink = 1
                "text": item.text,
                "ids": item.ids,
                "path": item.path,
                "source": item.source,
            }
        raise RuntimeError(f"{MAX_REPLACEMENTS} unreadable images in a row: {failures}")

    def _pixels(self, image: Image.Image) -> np.ndarray:
        """The preprocessed image, augmented if asked. A distortion that leaves too little
        (a one-letter line shrunk below the minimum side) gives way to the original."""
        if self.augmenter is None:
            return preprocess(image, self.config)
        try:
            return preprocess(self.augmenter(image, self.rng()), self.config)
        except ImageError as exc:
            log.debug("augmentation of a %dx%d image failed (%s); using it as is", *image.size, exc)
            return preprocess(image, self.config)


def collate(samples: list[dict]) -> dict:
    """Stack samples into the batch dict every Quill LightningModule consumes.

    images (B, 1, H, W_max) ink=1, right-padded with 0; widths (B,) true widths; targets
    (B, L_max) token ids padded with 0 (no BOS/EOS); target_lengths (B,); texts,
    image_paths and sources as lists.
    """
    images, widths = batch_images([s["image"] for s in samples])
    return {
        "images": torch.from_numpy(images),
        "widths": torch.from_numpy(widths),
        **_labels(samples),
    }


def _labels(samples: list[dict]) -> dict:
    """Everything in a batch but the images: padded targets, their lengths, texts, paths."""
    lengths = [len(s["ids"]) for s in samples]
    targets = torch.zeros((len(samples), max(lengths, default=0)), dtype=torch.long)
    for row, sample in enumerate(samples):
        targets[row, : len(sample["ids"])] = torch.tensor(sample["ids"], dtype=torch.long)
    return {
        "targets": targets,
        "target_lengths": torch.tensor(lengths, dtype=torch.long),
        "texts": [s["text"] for s in samples],
        "image_paths": [s["path"] for s in samples],
        "sources": [s["source"] for s in samples],
    }


class CachedLineDataset(Dataset):
    """Items -> their cached ink maps (height, W) uint8; no file is read, nothing computed."""

    def __init__(self, items: Sequence[Item], caches: Mapping[str, ink_cache.InkCache]):
        self.items = list(items)
        self.caches = dict(caches)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        return {
            "image": self.caches[item.source].image(item.row),  # (H, W) uint8, ink = 255
            "text": item.text,
            "ids": item.ids,
            "path": item.path,
            "source": item.source,
        }


class CachedCollate:
    """Batches of cached ink maps: the :func:`collate` dict, augmented here if asked.

    ``augmenter`` set: the batch is augmented in the loader process. ``defer``: it is
    returned at the cache geometry with ``batch["augment"] = True`` for the DataModule to
    augment on the device. Neither: widths are padded as :func:`quill.preprocess.preprocess`
    pads them, so an unaugmented cached batch is the model input inference would compute.
    """

    def __init__(
        self, width_multiple: int, augmenter: InkAugmenter | None = None, defer: bool = False
    ):
        self.width_multiple = width_multiple
        self.augmenter = augmenter
        self.defer = defer

    def __call__(self, samples: list[dict]) -> dict:
        multiple = self.width_multiple
        # each width padded as preprocessing pads it: CTC output lengths follow from these
        widths = [-(-s["image"].shape[1] // multiple) * multiple for s in samples]
        pixels = np.zeros((len(samples), 1, samples[0]["image"].shape[0], max(widths)), np.uint8)
        for row, sample in enumerate(samples):
            pixels[row, 0, :, : sample["image"].shape[1]] = sample["image"]
        batch = {
            "images": torch.from_numpy(pixels).float().div_(255.0),  # (B, 1, H, W)
            "widths": torch.tensor(widths, dtype=torch.long),
            **_labels(samples),
        }
        if self.defer:
            batch["augment"] = True
        elif self.augmenter is not None:
            batch["images"], batch["widths"] = self.augmenter(batch["images"], batch["widths"])
        return batch


class HTRDataModule(pl.LightningDataModule):
    """Line or paragraph data from weighted sources, for training and evaluation.

    ``sources``: dataset folders as ``{"path", "weight", "name"}`` mappings, specs or paths.
    ``epoch_size``: training samples per epoch (default: all train samples of all sources).
    ``augment``: an :class:`AugmentConfig`, True for the defaults or False/None for none
    (applied to training samples only). ``num_workers``: None picks
    :func:`default_num_workers`.
    """

    def __init__(
        self,
        sources: Iterable[SourceSpec | Mapping | str | Path],
        task: Task = "line",
        tokenizer: Tokenizer | None = None,
        preprocess_config: PreprocessConfig | None = None,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        epoch_size: int | None = None,
        augment: AugmentConfig | bool | None = True,
        seed: int = 0,
        cache: bool = True,
        cache_dir: str | Path | None = None,
        augment_on: AugmentOn = "auto",
    ):
        super().__init__()
        self.specs = [SourceSpec.parse(s) for s in sources]
        if not self.specs:
            raise ValueError("a DataModule needs at least one source")
        names = [spec.name for spec in self.specs]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must differ (set 'name'): {names}")
        self.task = task
        self.tokenizer = tokenizer or Tokenizer()
        self.preprocess_config = preprocess_config or PreprocessConfig(kind=task)
        if self.preprocess_config.kind != task:
            raise ValueError(f"task {task!r} needs PreprocessConfig(kind={task!r})")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.epoch_size = epoch_size
        if augment is True:
            augment = AugmentConfig()
        self.augment_config = augment or None
        self.seed = seed
        self.cache = cache and task == "line"
        self.cache_dir = Path(cache_dir) if cache_dir else None
        if augment_on not in ("auto", "loader", "device"):
            raise ValueError(f"augment_on must be auto, loader or device, not {augment_on!r}")
        self.augment_on = augment_on
        pp = self.preprocess_config
        #: the batch augmenter of cached lines (in the loader or on the device), if augmenting
        self.ink_augment = (
            InkAugmenter(self.augment_config, pp.width_multiple, pp.max_width)
            if self.cache and self.augment_config
            else None
        )
        self.skipped: list[Skip] = []
        self._data: list[SourceData] | None = None

    # ------------------------------------------------------------------ versions

    @cached_property
    def manifests(self) -> dict[str, Manifest]:
        """Source name -> its manifest (a missing dataset raises, naming the folder)."""
        return {spec.name: Manifest.load(spec.path) for spec in self.specs}

    @property
    def source_versions(self) -> dict[str, str]:
        return {name: manifest.version for name, manifest in self.manifests.items()}

    @property
    def dataset_version(self) -> str:
        """One id for this mix: the sources' manifest versions, weights and the task.

        Logged with every run; changing any dataset, weight or the task changes it.
        """
        key = [
            [spec.name, self.manifests[spec.name].version, round(spec.weight, 6)]
            for spec in self.specs
        ]
        return json_digest([self.task, sorted(key)], 12)

    # ------------------------------------------------------------------ setup

    def setup(self, stage: str | None = None) -> None:
        """Load and check every source once; report what is left out."""
        if self._data is not None:
            return
        self._data = [self._load(spec) for spec in self.specs]
        if self.skipped:
            reasons = Counter(skip.reason.split(":")[0] for skip in self.skipped)
            log.warning(
                "left out %d samples (%s); first: %s",
                len(self.skipped),
                ", ".join(f"{n} {reason}" for reason, n in reasons.most_common()),
                "; ".join(str(s) for s in self.skipped[:5]),
            )
        if stage in (None, "fit") and not self.train_items:
            raise ValueError(f"no usable {self.task} training samples in {self._paths()}")

    def _paths(self) -> str:
        return ", ".join(str(spec.path) for spec in self.specs)

    def _load(self, spec: SourceSpec) -> SourceData:
        manifest = self.manifests[spec.name]
        cache = self._ink_cache(spec, manifest) if self.cache else None
        data = SourceData(spec, manifest, {"train": [], "val": [], "test": []}, cache)
        for sample in manifest:
            if sample.kind != self.task:
                continue
            where = f"{spec.name}:{sample.image}"
            path = manifest.path_of(sample)
            problem = label_problem(sample.text, self.tokenizer)
            if problem is None and cache is not None and sample.image not in cache:
                problem = f"unreadable image: {cache.failures.get(sample.image, 'not cached')}"
            elif problem is None and cache is None and not path.is_file():
                problem = f"image file missing: {path}"
            if problem:
                self.skipped.append(Skip(where, problem))
                continue
            ids = tuple(self.tokenizer.encode(sample.text))
            row = cache.row(sample.image) if cache is not None else -1
            data.items[sample.split].append(Item(str(path), sample.text, ids, spec.name, row))
        return data

    def _ink_cache(self, spec: SourceSpec, manifest: Manifest) -> ink_cache.InkCache:
        """The source's ink cache, built on first use (a progress bar shows it)."""
        directory = self.cache_dir or Path(spec.path) / CACHE_FOLDER
        return ink_cache.dataset_cache(
            manifest,
            spec.name if self.cache_dir else "lines",
            self.preprocess_config,
            directory,
            workers=default_num_workers(),
            show_progress=True,
        )

    @property
    def data(self) -> list[SourceData]:
        if self._data is None:
            raise RuntimeError("call setup() first")
        return self._data

    @property
    def train_items(self) -> list[Item]:
        return [item for source in self.data for item in source.items["train"]]

    def split_items(self, split: Split) -> list[Item]:
        """All sources' items of ``split``, concatenated in source order."""
        return [item for source in self.data for item in source.items[split]]

    @property
    def val_sources(self) -> dict[str, str]:
        """Name -> role of the sources that have validation samples (per-source metrics)."""
        return {s.spec.name: s.spec.role for s in self.data if s.items["val"]}

    # ------------------------------------------------------------------ loaders

    def train_sampler(self) -> WeightedRandomSampler:
        """Draws train indices so each source's share of an epoch is its normalised weight."""
        sources = [s for s in self.data if s.items["train"] and s.spec.weight > 0]
        if not sources:
            raise ValueError(f"no source with training samples and weight > 0 in {self._paths()}")
        total = sum(s.spec.weight for s in sources)
        weights = []
        for source in self.data:
            share = source.spec.weight / total if source in sources else 0.0
            weights += [share / len(source.items["train"])] * len(source.items["train"])
        generator = torch.Generator().manual_seed(self.seed)
        return WeightedRandomSampler(
            weights, num_samples=self.epoch_size or len(weights), generator=generator
        )

    @property
    def caches(self) -> dict[str, ink_cache.InkCache]:
        return {s.spec.name: s.cache for s in self.data if s.cache is not None}

    def augments_on_device(self) -> bool:
        """Whether training batches are augmented after they reach the device (a GPU)."""
        if self.ink_augment is None:
            return False
        if self.augment_on == "auto":
            trainer = getattr(self, "trainer", None)
            root = getattr(trainer, "strategy", None)
            device = getattr(root, "root_device", None)
            return device is not None and device.type == "cuda"
        return self.augment_on == "device"

    def train_dataloader(self) -> DataLoader:
        if not self.cache:
            augmenter = (
                Augmenter(self.augment_config, self.preprocess_config)
                if self.augment_config
                else None
            )
            dataset = HTRDataset(self.train_items, self.preprocess_config, augmenter)
            return self._loader(dataset, self.batch_size, sampler=self.train_sampler())
        defer = self.augments_on_device()
        collate_fn = CachedCollate(
            self.preprocess_config.width_multiple,
            None if defer else self.ink_augment,
            defer,
        )
        cached = CachedLineDataset(self.train_items, self.caches)
        return self._loader(cached, self.batch_size, self.train_sampler(), collate_fn)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Augment a deferred training batch where it now is (the GPU)."""
        if batch.pop("augment", False) and self.ink_augment is not None:
            batch["images"], batch["widths"] = self.ink_augment(batch["images"], batch["widths"])
        return batch

    def val_dataloader(self) -> DataLoader | list:
        """One loader over every source's val split (batch["sources"] names each sample)."""
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader | list:
        return self._eval_loader("test")

    def _eval_loader(self, split: Split) -> DataLoader | list:
        items = self.split_items(split)
        if not items:
            return []
        if split == "val":
            # One fixed shuffle, so that a limited validation (trainer.limit_val_batches)
            # samples every source, the same lines each epoch.
            order = np.random.default_rng(self.seed).permutation(len(items))
            items = [items[i] for i in order]
        if self.cache:
            collate_fn = CachedCollate(self.preprocess_config.width_multiple)
            dataset = CachedLineDataset(items, self.caches)
            return self._loader(dataset, self.eval_batch_size, collate_fn=collate_fn)
        return self._loader(HTRDataset(items, self.preprocess_config), self.eval_batch_size)

    def _loader(
        self,
        dataset: Dataset,
        batch_size: int,
        sampler: WeightedRandomSampler | None = None,
        collate_fn: CachedCollate | None = None,
    ) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_fn or collate,
            pin_memory=torch.cuda.is_available(),
        )
