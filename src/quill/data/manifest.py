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
import os
import random
import shutil
import tempfile
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Literal, get_args

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
SampleKind = Literal["line", "paragraph"]


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
    kind: SampleKind = "line"
    meta: dict = field(default_factory=dict, compare=False)


class ManifestError(QuillError, ValueError):
    """A ``manifest.jsonl`` line is not a valid sample record (the message names file:line)."""

    code = "manifest_invalid"


#: Each record field's type; ``split`` and ``kind`` must moreover be one of their values.
_FIELD_TYPES = {"meta": dict} | {f.name: str for f in fields(Sample) if f.name != "meta"}
_REQUIRED = tuple(
    f.name for f in fields(Sample) if f.default is MISSING and f.default_factory is MISSING
)
_CHOICES: dict[str, tuple[str, ...]] = {"split": SPLITS, "kind": get_args(SampleKind)}


def record_problem(record: object) -> str | None:
    """Why a parsed manifest line is not a sample record, or None if it is.

    Checked on load so a bad value is named with its file and line, not met later as a
    ``KeyError`` in a split lookup or a ``TypeError`` in the statistics.

    >>> record_problem({"image": "a.png", "text": "hi", "split": "Train", "source": "s",
    ...                 "sha256": "ab"})
    "split 'Train' is not one of train, val, test"
    >>> record_problem({"image": None, "text": "", "split": "val", "source": "s", "sha256": ""})
    'image must be a string, not null'
    """
    if not isinstance(record, dict):
        return f"expected a JSON object, got {json.dumps(record)[:40]}"
    missing = [name for name in _REQUIRED if name not in record]
    unknown = [name for name in record if name not in _FIELD_TYPES]
    if missing or unknown:
        return "; ".join(
            f"{what} field(s) {', '.join(names)}"
            for what, names in (("missing", missing), ("unknown", unknown))
            if names
        )
    for name, value in record.items():
        expected = _FIELD_TYPES[name]
        if not isinstance(value, expected):
            wanted = "an object" if expected is dict else "a string"
            return f"{name} must be {wanted}, not {json.dumps(value)[:40]}"
        if name in _CHOICES and value not in _CHOICES[name]:
            return f"{name} {value!r} is not one of {', '.join(_CHOICES[name])}"
    if not record["image"]:
        return "image is empty"
    return None


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
        """Write ``manifest.jsonl`` into the dataset folder and return its path.

        Written beside and then renamed over the old one, so an interrupted save leaves the
        old manifest whole, never half of the new one.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / MANIFEST_NAME
        partial = path.with_name(f".{MANIFEST_NAME}.{os.getpid()}.tmp")
        with open(partial, "w", encoding="utf-8") as handle:
            for sample in self.samples:
                handle.write(json.dumps(asdict(sample), ensure_ascii=False) + "\n")
        os.replace(partial, path)
        return path

    @classmethod
    def load(cls, root: str | Path) -> Manifest:
        """Read a dataset folder (or its manifest file); a clear error if there is none.

        Every record is checked (:func:`record_problem`): a bad one raises
        :class:`ManifestError` naming the file and line.
        """
        root = Path(root)
        path = root if root.is_file() else root / MANIFEST_NAME
        if path.suffix != ".jsonl":  # any file read as a manifest: an empty one was 0 samples
            raise ManifestError(
                f"{root} is not a dataset: give its folder or its {MANIFEST_NAME} (make one "
                "with `quill data`)"
            )
        if not path.is_file():
            raise FileNotFoundError(
                f"no dataset at {root}: expected {MANIFEST_NAME} (make one with `quill data`)"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestError(
                f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from exc
        samples = []
        for number, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{path}:{number}: not a manifest record: {exc}") from exc
            problem = record_problem(record)
            if problem:
                raise ManifestError(f"{path}:{number}: not a manifest record: {problem}")
            samples.append(Sample(**record))
        return cls(path.parent, samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __len__(self) -> int:
        return len(self.samples)


class DatasetExistsError(QuillError, FileExistsError):
    """An output folder already holds a dataset, and replacing it was not asked for."""

    code = "dataset_exists"


def claim_dataset_folder(out: Path, overwrite: bool) -> Manifest | None:
    """The dataset already in ``out`` (None when there is none), refused unless ``overwrite``.

    Writing over a dataset without asking lost it, so every command that makes one asks this
    before any work.
    """
    if not (out / MANIFEST_NAME).is_file():
        return None
    if not overwrite:
        raise DatasetExistsError(f"{out} already holds a dataset: use --overwrite to replace it")
    try:
        return Manifest.load(out)
    except ValueError as exc:
        raise DatasetExistsError(f"{exc}; remove {out} by hand to replace it") from exc


@contextmanager
def building_dataset(out: Path, overwrite: bool, keep: Path | None = None) -> Iterator[Path]:
    """A scratch folder beside ``out`` to write a new dataset in, moved into ``out`` after.

    Deleting the old dataset before the new one existed lost it whenever the new one read
    nothing, failed, was interrupted, or read the old dataset's own images. So the old
    dataset (refused unless ``overwrite``: :func:`claim_dataset_folder`) is touched only
    when the block ends without an error and the scratch holds a manifest with samples:
    then :func:`_install` moves the new dataset in and removes what the old one leaves
    behind. An empty one replaces nothing: only its import report reaches ``out``, and only
    when no dataset is there. The scratch (on the same filesystem, so the move is renames)
    is removed in every case, Ctrl+C included.
    """
    old = claim_dataset_folder(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".new", dir=out.parent))
    try:
        yield scratch
        if (scratch / MANIFEST_NAME).is_file() and len(Manifest.load(scratch)):
            _install(scratch, out, old, keep)
        elif old is None and (scratch / REPORT_NAME).is_file():
            out.mkdir(exist_ok=True)
            os.replace(scratch / REPORT_NAME, out / REPORT_NAME)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _install(scratch: Path, out: Path, old: Manifest | None, keep: Path | None) -> None:
    """Move the dataset built in ``scratch`` into ``out``, then remove the ``old`` one's leftovers.

    Images the new dataset references outside its folder were named relative to the
    scratch; they are renamed relative to ``out`` (a sibling, so only paths into ``out``
    itself change). The manifest is written last but one, atomically; the old dataset's
    files go after it, except those the new manifest names.
    """
    scratch, out = scratch.resolve(), out.resolve()
    built = Manifest.load(scratch)
    samples = []
    for sample in built:
        path = Path(os.path.normpath(scratch / sample.image))
        if not path.is_relative_to(scratch):
            sample = replace(sample, image=Path(os.path.relpath(path, out)).as_posix())
        samples.append(sample)
    new = Manifest(out, samples)
    moved = [p for p in sorted(scratch.rglob("*")) if p.is_file() and p.name != MANIFEST_NAME]
    for path in moved:
        target = out / path.relative_to(scratch)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    new.save()
    if old is not None:
        written = {path.relative_to(scratch).as_posix() for path in moved}
        spared = {new.path_of(sample) for sample in new}
        _remove_dataset(old, spared, keep, kept_files={MANIFEST_NAME, *written})


def _remove_dataset(
    old: Manifest, spared: set[Path], keep: Path | None, kept_files: Collection[str] = ()
) -> None:
    """Delete a dataset's own files: the images it lists under its ``images`` folder, its
    :data:`DATASET_FILES` and its manifest (unless among ``kept_files``, names of files a
    new dataset just wrote there). A file it only referenced (an import without --copy) is
    not its to delete, nor one in ``spared`` (the new dataset's images) or under ``keep``
    (the new command's source, which the old dataset may have referenced in place).
    """
    out = old.root
    images = (out / IMAGE_DIR).resolve()
    kept = keep.resolve() if keep else None
    for sample in old:
        path = old.path_of(sample)
        owned = images in path.parents and path not in spared
        if owned and not (kept and (path == kept or kept in path.parents)):
            path.unlink(missing_ok=True)
    for name in (MANIFEST_NAME, *DATASET_FILES):
        if name not in kept_files:
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
