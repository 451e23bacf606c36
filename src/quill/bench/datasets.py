"""Benchmark datasets: any Quill dataset, or a raw source imported through the data readers.

A ``--data`` argument is ``PATH`` or ``NAME=PATH``. PATH may be:

- a Quill dataset folder (``manifest.jsonl``), e.g. the output of ``quill data synth``, whose
  test split holds the fonts kept out of training;
- a folder of images with ``labels.tsv`` (the Hooker letters, the multi-writer sets), imported
  with the folder reader and its ``auto`` split rule, as ``quill data import folder`` does:
  by writer when every page id is ``writer__page`` (the test writers are hands training
  never saw), else by page (the Hooker test pages are the ones training never sees), each
  with :func:`~quill.data.manifest.assign_splits`;
- an IAM copy (``xml/`` + ``forms*/``), imported with the IAM reader, whose test split is the
  official writer-independent test set when its task lists are present.

Raw sources are imported with a vocabulary that fits the model being benched
(:func:`bench_tokenizer`: the Latin set plus any other character the model reads), so lines
with accents are read and scored rather than left out, and only characters no system here
could write are reported and skipped. They are imported once into a cache folder and reused
while the source, the split rule and the vocabulary are unchanged.

The benchmark reads the chosen split (``test`` by default) and tags each sample with the slice
values it is reported under (source, kind, group, and ``meta`` fields such as ``inverted``).
A dataset whose writers never straddle splits (:func:`~quill.data.manifest.split_by_writer`)
is marked ``split_by="writer"``: its val and test lines are unseen writers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from quill.bench.systems import Kind
from quill.data.manifest import (
    MANIFEST_NAME,
    Manifest,
    Sample,
    Split,
    choose,
    split_by_writer,
)
from quill.errors import QuillError
from quill.model_files import METADATA_FILE
from quill.vocab import VOCABULARIES, Tokenizer

#: Slices reported by default: a sample attribute or a key of its ``meta`` (the synthetic
#: generator records ``style``, handwriting or printed, and ``inverted``, the polarity).
DEFAULT_SLICES = ("source", "kind", "group", "style", "inverted")
FINGERPRINT_NAME = "bench-source.json"
#: The folder reader's split rule for raw sources: writer for ``writer__page`` ids, else page.
FOLDER_SPLIT_BY = "auto"


class BenchDataError(QuillError, ValueError):
    """A ``--data`` argument does not name a dataset the bench can read."""

    code = "bench_data_invalid"


@dataclass(frozen=True)
class BenchSample:
    """One image to read, its reference text and the slices it counts in."""

    image: Path
    text: str
    kind: Kind
    slices: dict[str, str] = field(default_factory=dict)
    #: Who wrote it, in a dataset split by writer (``dataset/writer``: unique across sets).
    writer: str | None = None


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
    #: ``writer`` when no writer is in two splits (val/test are unseen writers), else ``group``.
    split_by: str = "group"
    #: The vocabulary a raw source was imported with ("" for a ready-made dataset).
    vocabulary: str = ""
    #: Why the dataset has no samples in the split, when it has none (e.g. no test writers).
    note: str = ""
    #: For a pool of several datasets' samples (the unseen-writers row): their names.
    pooled: tuple[str, ...] = ()

    @property
    def unseen_writers(self) -> bool:
        """Whether these samples are hands that no train sample of the dataset has."""
        return self.split_by == "writer" and self.split != "train"

    def describe(self) -> dict:
        return {
            "name": self.name,
            "path": str(self.path),
            "format": self.format,
            "split": self.split,
            "split_by": self.split_by,
            "vocabulary": self.vocabulary,
            "version": self.version,
            "samples": len(self.samples),
            "import_skipped": self.import_skipped,
            **({"note": self.note} if self.note else {}),
            **({"pooled": list(self.pooled)} if self.pooled else {}),
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


def bench_tokenizer(model_dir: Path | None = None) -> Tokenizer:
    """The vocabulary raw sources are imported with: Latin, plus the model's other characters.

    A model's own character set would leave out the lines an ASCII model cannot write (every
    French line with an accent), and each model would be scored on different lines; the
    Latin set keeps them, so every system reads the same lines and a missing accent counts
    as the error it is. Characters of the staged model outside the Latin set are added.
    """
    characters = VOCABULARIES["latin"]
    if model_dir is not None and (Path(model_dir) / METADATA_FILE).is_file():
        meta = json.loads((Path(model_dir) / METADATA_FILE).read_text(encoding="utf-8"))
        own = meta.get("tokenizer", {}).get("characters", "")  # only the tokenizer is needed
        characters += "".join(dict.fromkeys(c for c in own if c not in characters))
    return Tokenizer(characters=characters)


def vocabulary_name(tokenizer: Tokenizer) -> str:
    """``ascii``/``latin`` for a named set, else ``latin+N`` or a hash of the characters.

    >>> vocabulary_name(Tokenizer.named("latin")), vocabulary_name(Tokenizer(characters="ab"))
    ('latin', 'chars-fb8e20fc2e4c')
    """
    for name, characters in VOCABULARIES.items():
        if tokenizer.characters == characters:
            return name
    latin = VOCABULARIES["latin"]
    if tokenizer.characters.startswith(latin):
        return f"latin+{tokenizer.characters[len(latin) :]}"
    return "chars-" + hashlib.sha256(tokenizer.characters.encode()).hexdigest()[:12]


def source_fingerprint(path: Path, source_format: str, tokenizer: Tokenizer | None = None) -> dict:
    """What identifies a raw source's import cheaply: its label/XML files' sizes and times,
    the split rule and the vocabulary (a cache made under other rules is rebuilt)."""
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
        "split_by": FOLDER_SPLIT_BY if source_format == "folder" else "reader",
        "vocabulary": hashlib.sha256(
            (tokenizer or bench_tokenizer()).characters.encode()
        ).hexdigest()[:16],
    }


def import_source(
    path: Path,
    source_format: str,
    cache: Path,
    show_progress: bool = False,
    tokenizer: Tokenizer | None = None,
) -> Manifest:
    """The dataset of a raw source, imported into ``cache`` unless an up-to-date copy is there
    (same files, same split rule, same vocabulary; ``tokenizer`` defaults to
    :func:`bench_tokenizer`)."""
    from quill.data.readers import READERS

    tokenizer = tokenizer or bench_tokenizer()
    fingerprint = source_fingerprint(path, source_format, tokenizer)
    stamp = cache / FINGERPRINT_NAME
    cached = (cache / MANIFEST_NAME).is_file() and stamp.is_file()
    if cached and json.loads(stamp.read_text()) == fingerprint:
        return Manifest.load(cache)
    stamp.unlink(missing_ok=True)  # an interrupted import must not look up to date
    options: dict = {"tokenizer": tokenizer, "show_progress": show_progress}
    if source_format == "folder":
        options["split_by"] = FOLDER_SPLIT_BY
    result = READERS[source_format](path, cache, **options)
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


def load_dataset(
    spec: str,
    *,
    split: Split = "test",
    limit: int | None = None,
    slices: Sequence[str] = DEFAULT_SLICES,
    cache_root: Path = Path(".cache/bench-datasets"),
    show_progress: bool = False,
    tokenizer: Tokenizer | None = None,
) -> BenchDataset:
    """Resolve one ``--data`` argument into the samples the benchmark reads.

    Raw sources are imported with ``tokenizer`` (default :func:`bench_tokenizer`). A dataset
    split by writer may have no samples in ``split`` (a set of few writers can have none in
    test): it comes back empty with a note; any other dataset without them is an error.
    """
    name, path = parse_spec(spec)
    source_format = detect_format(path)
    vocabulary = ""
    if source_format == "manifest":
        manifest = Manifest.load(path)
    else:
        tokenizer = tokenizer or bench_tokenizer()
        vocabulary = vocabulary_name(tokenizer)
        manifest = import_source(
            path, source_format, cache_root / name, show_progress, tokenizer=tokenizer
        )
    by_writer = split_by_writer(manifest)
    chosen = choose(manifest.split(split), limit)
    counts = ", ".join(f"{k}={v}" for k, v in sorted(manifest.counts().items())) or "none"
    note = ""
    if not chosen:
        if not by_writer:
            raise BenchDataError(f"{name} ({path}) has no {split!r} samples (splits: {counts})")
        writers = len({s.meta["writer"] for s in manifest})
        note = (
            f"no {split} samples: the writer split put all {writers} writers elsewhere ({counts})"
        )
    samples = [
        BenchSample(
            manifest.path_of(s),
            s.text,
            s.kind,
            slice_values(s, slices),
            f"{name}/{s.meta['writer']}" if by_writer else None,
        )
        for s in chosen
    ]
    return BenchDataset(
        name,
        path,
        source_format,
        split,
        manifest.version,
        samples,
        import_skips(manifest),
        split_by="writer" if by_writer else "group",
        vocabulary=vocabulary,
        note=note,
    )
