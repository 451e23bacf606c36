"""Benchmark datasets: any Quill dataset, or a raw source imported through the data readers.

A ``--data`` argument is ``PATH`` or ``NAME=PATH``. PATH may be:

- a Quill dataset folder (``manifest.jsonl``), e.g. the output of ``quill data synth``, whose
  test split holds the fonts kept out of training;
- a folder of images with ``labels.tsv`` (the Hooker letters), imported with the folder
  reader, which splits by ``page`` with :func:`~quill.data.manifest.assign_splits`: the test
  pages are the same ones training never sees;
- an IAM copy (``xml/`` + ``forms*/``), imported with the IAM reader, whose test split is the
  official writer-independent test set when its task lists are present.

Raw sources are imported once into a cache folder and reused while the source is unchanged.
The benchmark reads the chosen split (``test`` by default) and tags each sample with the slice
values it is reported under (source, kind, group, and ``meta`` fields such as ``inverted``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from quill.bench.systems import Kind
from quill.data.manifest import MANIFEST_NAME, Manifest, Sample, Split

#: Slices reported by default: a sample attribute or a key of its ``meta`` (the synthetic
#: generator records ``style``, handwriting or printed, and ``inverted``, the polarity).
DEFAULT_SLICES = ("source", "kind", "group", "style", "inverted")
FINGERPRINT_NAME = "bench-source.json"


class BenchDataError(ValueError):
    """A ``--data`` argument does not name a dataset the bench can read."""


@dataclass(frozen=True)
class BenchSample:
    """One image to read, its reference text and the slices it counts in."""

    image: Path
    text: str
    kind: Kind
    slices: dict[str, str] = field(default_factory=dict)


@dataclass
class BenchDataset:
    """The samples of one benchmark dataset, with where they came from."""

    name: str
    path: Path
    format: str
    split: str
    version: str
    samples: list[BenchSample]
    #: Reasons the import left samples out (e.g. a character outside the vocabulary).
    import_skipped: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "path": str(self.path),
            "format": self.format,
            "split": self.split,
            "version": self.version,
            "samples": len(self.samples),
            "import_skipped": self.import_skipped,
        }


def parse_spec(spec: str) -> tuple[str, Path]:
    """``NAME=PATH`` or ``PATH`` -> (name, path); the name defaults to the folder's name.

    >>> parse_spec("hooker=/data/hooker-letters")
    ('hooker', PosixPath('/data/hooker-letters'))
    >>> parse_spec("/data/synth-test/")
    ('synth-test', PosixPath('/data/synth-test'))
    """
    name, sep, path = spec.partition("=")
    if not sep:
        name, path = "", spec
    location = Path(path).expanduser()
    return (name or location.resolve().name or str(location)), location


def detect_format(path: Path) -> str:
    """Which kind of source ``path`` is: ``manifest``, ``folder`` or ``iam``."""
    if (path / MANIFEST_NAME).is_file() or (path.is_file() and path.name == MANIFEST_NAME):
        return "manifest"
    if (path / "labels.tsv").is_file() or (path.is_file() and path.name == "labels.tsv"):
        return "folder"
    if (path / "xml").is_dir() and any(p.is_dir() for p in path.glob("forms*")):
        return "iam"
    if not path.exists():
        raise BenchDataError(f"dataset not found: {path}")
    raise BenchDataError(
        f"{path} is not a dataset the bench can read: expected {MANIFEST_NAME} (a Quill "
        "dataset), labels.tsv (a folder of labelled images) or xml/ + forms*/ (IAM)"
    )


def source_fingerprint(path: Path, source_format: str) -> dict:
    """What identifies a raw source's content cheaply: its label/XML files' sizes and times."""
    if source_format == "folder":
        files = [path / "labels.tsv"]
    else:
        files = sorted((path / "xml").glob("*.xml"))
    stats = [f.stat() for f in files if f.is_file()]
    return {
        "source": str(path.resolve()),
        "format": source_format,
        "files": len(stats),
        "bytes": sum(s.st_size for s in stats),
        "mtime_ns": max((s.st_mtime_ns for s in stats), default=0),
    }


def import_source(
    path: Path, source_format: str, cache: Path, show_progress: bool = False
) -> Manifest:
    """The dataset of a raw source, imported into ``cache`` unless an up-to-date copy is there."""
    from quill.data.readers import READERS

    fingerprint = source_fingerprint(path, source_format)
    stamp = cache / FINGERPRINT_NAME
    cached = (cache / MANIFEST_NAME).is_file() and stamp.is_file()
    if cached and json.loads(stamp.read_text()) == fingerprint:
        return Manifest.load(cache)
    result = READERS[source_format](path, cache, show_progress=show_progress)
    stamp.write_text(json.dumps(fingerprint, indent=1))
    return result.manifest


def import_skips(manifest: Manifest) -> list[str]:
    """The reasons recorded by the reader that built ``manifest`` (none for plain datasets)."""
    report = manifest.root / "import-report.json"
    if not report.is_file():
        return []
    return [f"{s['where']}: {s['reason']}" for s in json.loads(report.read_text())["skipped"]]


def slice_values(sample: Sample, keys: Sequence[str]) -> dict[str, str]:
    """The slices ``sample`` is counted in: each key's value where the sample has one.

    >>> s = Sample("a.png", "hi", "test", "synth", "ab", group="caveat", meta={"inverted": False})
    >>> slice_values(s, ["source", "group", "inverted", "style"])
    {'source': 'synth', 'group': 'caveat', 'inverted': 'False'}
    """
    values = {}
    for key in keys:
        value = getattr(sample, key, None) if key in Sample.__dataclass_fields__ else None
        if value in (None, ""):
            value = sample.meta.get(key)
        if value not in (None, ""):
            values[key] = str(value)
    return values


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


def load_dataset(
    spec: str,
    *,
    split: Split = "test",
    limit: int | None = None,
    slices: Sequence[str] = DEFAULT_SLICES,
    cache_root: Path = Path(".cache/bench-datasets"),
    show_progress: bool = False,
) -> BenchDataset:
    """Resolve one ``--data`` argument into the samples the benchmark reads."""
    name, path = parse_spec(spec)
    source_format = detect_format(path)
    if source_format == "manifest":
        manifest = Manifest.load(path)
    else:
        manifest = import_source(path, source_format, cache_root / name, show_progress)
    chosen = choose(manifest.split(split), limit)
    if not chosen:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(manifest.counts().items())) or "none"
        raise BenchDataError(f"{name} ({path}) has no {split!r} samples (splits: {counts})")
    samples = [
        BenchSample(manifest.path_of(s), s.text, s.kind, slice_values(s, slices)) for s in chosen
    ]
    return BenchDataset(
        name, path, source_format, split, manifest.version, samples, import_skips(manifest)
    )
