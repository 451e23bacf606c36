"""Dataset manifests: the versioned list of (image, text, split) every dataset becomes.

A dataset is a folder holding its images and a ``manifest.jsonl`` (one :class:`Sample` per
line, image paths relative to the folder). Its version id is a hash of the samples' image
hashes, texts and splits, so two folders with the same content have the same version and any
change to an image, a label or a split makes a new one. Training logs this id with every run:
if the data is not versioned, the model is not versioned.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from quill.errors import QuillError

MANIFEST_NAME = "manifest.jsonl"
#: Where a dataset's images go when it writes them (imports with --copy, crops, synth).
IMAGE_DIR = "images"
#: What an import skipped and why, beside its manifest.
REPORT_NAME = "import-report.json"
#: The files a dataset folder holds besides its manifest and images: its import report and
#: how a synthetic set was made. They belong to the dataset and go when it is replaced.
DATASET_FILES = (REPORT_NAME, "synth.json")
Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Sample:
    """One labelled image.

    ``group`` is the unit a split must never cut through (a page, a writer, a font), and
    ``kind`` says whether the image holds one line or a paragraph (lines joined by "\\n").
    """

    image: str
    text: str
    split: Split
    source: str
    sha256: str
    group: str = ""
    kind: Literal["line", "paragraph"] = "line"
    meta: dict = field(default_factory=dict, compare=False)


@dataclass
class Manifest:
    """The samples of one dataset folder, loadable, savable and versioned."""

    root: Path
    samples: list[Sample]

    @property
    def version(self) -> str:
        """Content hash of the dataset: 12 hex digits, stable across machines and orders.

        >>> m = Manifest(Path("."), [Sample("a.png", "hi", "train", "synth", "ab")])
        >>> m.version == Manifest(Path("/elsewhere"), list(m.samples)).version
        True
        """
        digest = hashlib.sha256()
        for key in sorted((s.sha256, s.text, s.split, s.kind) for s in self.samples):
            digest.update(json.dumps(key).encode())
        return digest.hexdigest()[:12]

    def path_of(self, sample: Sample) -> Path:
        """Absolute path of a sample's image."""
        return (self.root / sample.image).resolve()

    def split(self, name: Split) -> list[Sample]:
        return [s for s in self.samples if s.split == name]

    def counts(self) -> dict[str, int]:
        """Number of samples per split."""
        return dict(Counter(s.split for s in self.samples))

    def save(self) -> Path:
        """Write ``manifest.jsonl`` into the dataset folder and return its path."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / MANIFEST_NAME
        with open(path, "w", encoding="utf-8") as handle:
            for sample in self.samples:
                handle.write(json.dumps(asdict(sample), ensure_ascii=False) + "\n")
        return path

    @classmethod
    def load(cls, root: str | Path) -> Manifest:
        """Read a dataset folder (or its manifest file); a clear error if there is none."""
        root = Path(root)
        path = root if root.is_file() else root / MANIFEST_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"no dataset at {root}: expected {MANIFEST_NAME} (make one with `quill data`)"
            )
        samples = []
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    samples.append(Sample(**json.loads(line)))
                except (json.JSONDecodeError, TypeError) as exc:
                    raise ValueError(f"{path}:{number}: not a manifest record: {exc}") from exc
        return cls(path.parent, samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __len__(self) -> int:
        return len(self.samples)


class DatasetExistsError(QuillError, FileExistsError):
    """An output folder already holds a dataset, and replacing it was not asked for."""

    code = "dataset_exists"


def prepare_dataset_folder(out: Path, overwrite: bool, keep: Path | None = None) -> None:
    """Make way for a new dataset in ``out``: refuse one already there unless ``overwrite``.

    Every command that makes a dataset calls this before any work: writing over a dataset
    without asking lost it, and writing a new one over the old left the old images behind
    as orphans. With ``overwrite`` the old dataset goes: its manifest, its
    :data:`DATASET_FILES` and the images it lists under ``out/images``. A file it only
    referenced (an import without --copy) is not its to delete, nor one under ``keep`` (the
    new command's source, which the old dataset may have referenced in place).
    """
    if not (out / MANIFEST_NAME).is_file():
        return
    if not overwrite:
        raise DatasetExistsError(f"{out} already holds a dataset: use --overwrite to replace it")
    try:
        old = Manifest.load(out)
    except ValueError as exc:
        raise DatasetExistsError(f"{exc}; remove {out} by hand to replace it") from exc
    images = (out / IMAGE_DIR).resolve()
    kept = keep.resolve() if keep else None
    for sample in old:
        path = old.path_of(sample)
        if images in path.parents and not (kept and (path == kept or kept in path.parents)):
            path.unlink(missing_ok=True)
    for name in (MANIFEST_NAME, *DATASET_FILES):
        (out / name).unlink(missing_ok=True)
    if images.is_dir() and not any(images.iterdir()):
        images.rmdir()


#: Rounding slack of :func:`check_split_fractions`'s sum (0.7 + 0.3 is not exactly 1.0).
FRACTION_TOLERANCE = 1e-9


def check_split_fractions(val_fraction: float, test_fraction: float) -> None:
    """Raise ValueError unless both shares are between 0 and 1 and add up to at most 1.

    Outside that, :func:`assign_splits` would still split, silently: a share above 1 takes
    every group, a negative one none, and the two together can leave train nothing.

    >>> check_split_fractions(0.5, 0.5)
    >>> check_split_fractions(0.7, 0.4)
    Traceback (most recent call last):
    ...
    ValueError: val and test fractions add up to 1.1, more than 1 (val 0.7, test 0.4)
    """
    for name, share in (("val", val_fraction), ("test", test_fraction)):
        if not 0 <= share <= 1:
            raise ValueError(f"the {name} fraction must be between 0 and 1, got {share}")
    total = val_fraction + test_fraction
    if total > 1 + FRACTION_TOLERANCE:
        raise ValueError(
            f"val and test fractions add up to {total:g}, more than 1 "
            f"(val {val_fraction:g}, test {test_fraction:g})"
        )


def assign_splits(
    groups: Iterable[str], val_fraction: float = 0.1, test_fraction: float = 0.1
) -> dict[str, Split]:
    """Split by group, deterministically: a group's samples all land on one side.

    The assignment hashes each group name, so adding a group never moves the others.
    Shares that :func:`check_split_fractions` refuses raise its ValueError.

    >>> splits = assign_splits([f"page{i}" for i in range(1000)])
    >>> sorted(Counter(splits.values()).items())
    [('test', 102), ('train', 787), ('val', 111)]
    """
    check_split_fractions(val_fraction, test_fraction)
    result: dict[str, Split] = {}
    for group in sorted(set(groups)):
        bucket = int(hashlib.sha256(group.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        if bucket < test_fraction:
            result[group] = "test"
        elif bucket < test_fraction + val_fraction:
            result[group] = "val"
        else:
            result[group] = "train"
    return result


#: Separates the writer from the rest of a page id in the multi-writer sets (``writer__page``).
WRITER_SEPARATOR = "__"


def writer_of(page: str) -> str | None:
    """The writer of a ``writer__page`` id (the part before ``__``), None when it has none.

    >>> writer_of("AD78_0005__TestamentsDePoilus_will_AD78_0005-0"), writer_of("JDH_2_16_144")
    ('AD78_0005', None)
    """
    writer, separator, _ = page.partition(WRITER_SEPARATOR)
    return writer if separator and writer else None


def split_by_writer(samples: Iterable[Sample]) -> bool:
    """Whether every sample names its writer (``meta["writer"]``) and no writer is in two splits.

    Then the val and test samples are hands that train never saw: "unseen writers".

    >>> from dataclasses import replace
    >>> a = Sample("a.png", "x", "train", "s", "1", meta={"writer": "w1"})
    >>> b = Sample("b.png", "y", "test", "s", "2", meta={"writer": "w2"})
    >>> split_by_writer([a, b]), split_by_writer([a, replace(b, meta={"writer": "w1"})])
    (True, False)
    >>> split_by_writer([a, replace(b, meta={})]), split_by_writer([])
    (False, False)
    """
    split_of: dict[str, str] = {}
    for sample in samples:
        writer = sample.meta.get("writer")
        if not writer or split_of.setdefault(writer, sample.split) != sample.split:
            return False
    return bool(split_of)


def choose(samples: list[Sample], limit: int | None, seed: int = 0) -> list[Sample]:
    """At most ``limit`` samples, drawn evenly at random (seeded) so every group can appear.

    >>> items = [Sample(f"{i}.png", "t", "test", "s", str(i)) for i in range(10)]
    >>> picked = choose(items, 3)
    >>> len(picked), picked == choose(items, 3), picked == sorted(picked, key=items.index)
    (3, True, True)
    """
    if limit is None or len(samples) <= limit:
        return samples
    chosen = set(random.Random(seed).sample(range(len(samples)), limit))
    return [sample for index, sample in enumerate(samples) if index in chosen]
