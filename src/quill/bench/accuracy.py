"""Accuracy: every system reads the same images; CER and WER per dataset and per slice.

Scoring is :mod:`quill.evaluation`'s, the same as ``quill evaluate``'s report card and the
training metric's edit counting: corpus-level rates (total edits / total reference characters
or words over a slice), case-sensitive and case-insensitive (casefolded) alongside, the
case-insensitive column showing how much of a peer's error is capitals alone; references and
predictions get the same light normalisation first (:func:`quill.evaluation.normalise`: NFC,
whitespace runs collapsed, empty lines dropped), since Tesseract ends its output with blank
lines and a peer's spacing convention is not a reading error. Newlines inside paragraphs
stay and count as characters.

The **unseen-writers** figure pools the test lines of every dataset split by writer (hands
that no train line of their dataset has) and scores them as one corpus: total edits over
total reference characters of all those lines, for every system on the same lines, so a
dataset of many short lines weighs by its characters, not by its count.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from quill import evaluation
from quill.bench.datasets import BenchDataset, BenchSample
from quill.bench.systems import KINDS, Kind, QuillSystem, System
from quill.evaluation import ALL, Item, Score

#: Name of the pooled dataset of every writer-split dataset's lines.
UNSEEN_WRITERS = "unseen writers"


@dataclass
class Readings:
    """What one system read on one dataset, aligned with the dataset's samples."""

    system: str
    texts: list[str]
    #: Sample index -> why the system failed on it (its text then counts as empty).
    failures: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class SliceResult:
    """One row of the results: a (slice key, slice value, system) and its score."""

    key: str
    value: str
    system: str
    score: Score

    def to_dict(self) -> dict:
        return {"key": self.key, "value": self.value, "system": self.system, **asdict(self.score)}


@dataclass
class DatasetResult:
    """Everything measured on one dataset."""

    dataset: BenchDataset
    readings: dict[str, Readings]
    slices: list[SliceResult]

    def overall(self, system: str) -> Score:
        """The whole-dataset score of ``system``."""
        return next(r.score for r in self.slices if r.key == ALL and r.system == system)

    def to_dict(self) -> dict:
        spread = writer_spread(self)
        return {
            **self.dataset.describe(),
            "seconds": {name: round(r.seconds, 3) for name, r in self.readings.items()},
            "results": [row.to_dict() for row in self.slices],
            **({"writers": spread} if spread else {}),
        }


def writer_spread(result: DatasetResult) -> dict[str, dict]:
    """Per system, how its CER spreads over the writers of a dataset split by writer: the
    number of writers, the median writer's CER, the 90th percentile's and the worst, and for
    every other system the writers it reads worse than this one (fewer edits per character).
    The pooled figure can hide a few hands read very badly; the person who uploads is one
    hand. Empty when the samples name no writers.

    Each writer's CER is corpus-level over their lines, as every rate of the benchmark.
    """
    samples = result.dataset.samples
    writers = [{"writer": s.writer} for s in samples if s.writer is not None]
    if not writers or len(writers) < len(samples):
        return {}
    cers = {}
    for system, reading in result.readings.items():
        items = [
            Item(sample.text, reading.texts[i], writers[i], i in reading.failures)
            for i, sample in enumerate(samples)
        ]
        rows = evaluation.score_slices(items, ["writer"], repeat_whole=True)
        cers[system] = {row.value: row.score.cer for row in rows if row.key == "writer"}
    spread = {}
    for system, by_writer in cers.items():
        ranked = sorted(by_writer.values())
        spread[system] = {
            "writers": len(ranked),
            "median_cer": statistics.median(ranked),
            "p90_cer": float(np.percentile(ranked, 90, method="inverted_cdf")),  # nearest rank
            "worst_cer": ranked[-1],
            "better_than": {
                other: sum(by_writer[w] < cers[other][w] for w in by_writer)
                for other in cers
                if other != system
            },
        }
    return spread


def score_slices(dataset: BenchDataset, readings: Iterable[Readings]) -> list[SliceResult]:
    """Every system's score on the whole dataset (:data:`~quill.evaluation.ALL`) and on every
    slice of it; a slice holding the whole dataset (one source, one kind) is left out."""
    rows = []
    for reading in readings:
        items = [
            Item(sample.text, reading.texts[index], sample.slices, index in reading.failures)
            for index, sample in enumerate(dataset.samples)
        ]
        for row in evaluation.score_slices(items):
            rows.append(SliceResult(row.key, row.value, reading.system, row.score))
    return rows


def read_dataset(
    system: System,
    samples: Sequence[BenchSample],
    batch_size: int = 1,
    advance: Callable[[int], None] | None = None,
) -> Readings:
    """``system``'s text for every sample, in batches of one kind.

    A batch that fails is retried image by image, so one unreadable image costs only itself:
    it is recorded with the reason and scored as an empty reading.
    """
    readings = Readings(system.name, [""] * len(samples))
    start = time.perf_counter()
    for kind in KINDS:
        indices = [i for i, s in enumerate(samples) if s.kind == kind]
        for offset in range(0, len(indices), batch_size):
            batch = indices[offset : offset + batch_size]
            _read_batch(system, samples, batch, kind, readings)
            if advance:
                advance(len(batch))
    readings.seconds = time.perf_counter() - start
    return readings


def _read_batch(
    system: System, samples: Sequence[BenchSample], batch: list[int], kind: Kind, readings: Readings
) -> None:
    try:
        images = [samples[i].image.read_bytes() for i in batch]
        texts = system.read(images, kind)
        if len(texts) != len(batch):
            raise RuntimeError(f"returned {len(texts)} texts for {len(batch)} images")
    except Exception as exc:  # noqa: BLE001 - any failure is isolated and recorded, not fatal
        if len(batch) == 1:
            readings.failures[batch[0]] = f"{type(exc).__name__}: {exc}"
        else:
            for index in batch:
                _read_batch(system, samples, [index], kind, readings)
        return
    for index, text in zip(batch, texts, strict=True):
        readings.texts[index] = text


def evaluate(
    dataset: BenchDataset,
    systems: Sequence[System],
    batch_size: int = 16,
    advance: Callable[[str, int], None] | None = None,
) -> DatasetResult:
    """Every system reads every sample of ``dataset``; scored on every slice.

    ``advance(system_name, n)`` is called as samples are read (for a progress bar).
    """
    readings = {}
    for system in systems:
        # Peers read one image at a time whatever the batch; batches of 1 keep their
        # progress bar moving and isolate a failure without a retry.
        size = batch_size if isinstance(system, QuillSystem) else 1
        step = (lambda n, name=system.name: advance(name, n)) if advance else None
        readings[system.name] = read_dataset(system, dataset.samples, size, step)
    return DatasetResult(dataset, readings, score_slices(dataset, readings.values()))


def pool_unseen_writers(
    results: Sequence[DatasetResult], name: str = UNSEEN_WRITERS
) -> DatasetResult | None:
    """The lines of every dataset split by writer, pooled and scored as one dataset.

    Each system's readings are the ones it made on its dataset (nothing is read again);
    corpus-level rates over the pool are total edits / total reference characters of all its
    lines. Sliced by ``dataset``. None when no dataset was split by writer (or none has lines
    in the split read).
    """
    members = [r for r in results if r.dataset.unseen_writers and r.dataset.samples]
    if not members:
        return None
    systems = [s for s in members[0].readings if all(s in r.readings for r in members)]
    samples: list[BenchSample] = []
    readings = {system: Readings(system, []) for system in systems}
    for result in members:
        offset = len(samples)
        samples += [
            BenchSample(s.image, s.text, s.kind, {"dataset": result.dataset.name}, s.writer)
            for s in result.dataset.samples
        ]
        for system in systems:
            reading, pooled = result.readings[system], readings[system]
            pooled.texts += reading.texts
            pooled.failures.update({offset + i: why for i, why in reading.failures.items()})
            pooled.seconds += reading.seconds
    versions = "+".join(f"{r.dataset.name}:{r.dataset.version}" for r in members)
    dataset = BenchDataset(
        name,
        Path("."),
        "pooled",
        members[0].dataset.split,
        hashlib.sha256(versions.encode()).hexdigest()[:12],
        samples,
        split_by="writer",
        vocabulary=members[0].dataset.vocabulary,
        pooled=tuple(r.dataset.name for r in members),
    )
    return DatasetResult(dataset, readings, score_slices(dataset, readings.values()))
