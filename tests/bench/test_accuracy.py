"""Slicing, and reading real images through real systems. (Scoring on known strings, the
bench's normalisation included, is tested in tests/evaluation/test_scoring.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from quill.bench.accuracy import (
    UNSEEN_WRITERS,
    Readings,
    evaluate,
    pool_unseen_writers,
    read_dataset,
    score_slices,
    writer_spread,
)
from quill.bench.datasets import BenchDataset, BenchSample, load_dataset
from quill.bench.systems import Kind, QuillSystem
from quill.evaluation import ALL, normalise, slice_groups

from .conftest import render_line
from .test_datasets import _labelled_folder, write_writer_folder, writers_in


def _dataset(slices: list[dict[str, str]], texts: list[str]) -> BenchDataset:
    samples = [
        BenchSample(Path(f"{i}.png"), t, "line", s)
        for i, (t, s) in enumerate(zip(texts, slices, strict=True))
    ]
    return BenchDataset("d", Path("."), "manifest", "test", "v1", samples)


def test_slices_are_corpus_level_per_group_and_skip_whole_dataset_slices() -> None:
    dataset = _dataset(
        [
            {"source": "s", "group": "a"},
            {"source": "s", "group": "a"},
            {"source": "s", "group": "b"},
        ],
        ["abcd", "ef", "ghij"],
    )
    members = slice_groups([sample.slices for sample in dataset.samples])
    assert members == {(ALL, ""): [0, 1, 2], ("group", "a"): [0, 1], ("group", "b"): [2]}
    readings = Readings("sys", ["abcd", "", "ghiX"], failures={1: "ImageError: broken"})
    rows = {(r.key, r.value): r.score for r in score_slices(dataset, [readings])}
    assert rows[ALL, ""].cer == pytest.approx(3 / 10)
    assert rows["group", "a"].cer == pytest.approx(2 / 6)  # not the mean of 0 and 1
    assert rows["group", "a"].failures == 1
    assert rows["group", "b"].cer == pytest.approx(1 / 4)


def test_a_corrupt_image_costs_only_itself(
    tiny_model: Path, printed_dataset: Path, tmp_path
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    dataset = load_dataset(str(printed_dataset))
    samples = [*dataset.samples[:2], BenchSample(broken, "lost", "line"), *dataset.samples[2:]]
    quill = QuillSystem.load(tiny_model, "onnx", threads=1)
    readings = read_dataset(quill, samples, batch_size=4)
    assert list(readings.failures) == [2]
    assert "ImageError" in readings.failures[2]
    assert readings.texts[2] == ""
    # The other images of the failed batch were read one by one, exactly as a batch reads them.
    alone = [quill.read([s.image.read_bytes()], "line")[0] for s in dataset.samples]
    assert readings.texts[:2] + readings.texts[3:] == alone


def test_evaluate_runs_every_system_on_the_same_images(
    tiny_model, printed_dataset, tesseract
) -> None:
    dataset = load_dataset(str(printed_dataset), slices=["group", "inverted"])
    quill = QuillSystem.load(tiny_model, "auto", threads=1, name="quill")
    progress: dict[str, int] = {}

    def advance(name: str, n: int) -> None:
        progress[name] = progress.get(name, 0) + n

    result = evaluate(dataset, [quill, tesseract], batch_size=3, advance=advance)
    assert progress == {"quill": 4, "tesseract": 4}
    assert result.overall("tesseract").cer < 0.05  # printed text, both polarities
    assert result.overall("quill").cer > 0.5  # an untrained network reads garbage
    keys = {(r.key, r.value, r.system) for r in result.slices}
    for system in ("quill", "tesseract"):
        assert {
            (ALL, "", system),
            ("group", "page-a", system),
            ("inverted", "True", system),
        } <= keys


def _edits(a: str, b: str) -> int:
    """Levenshtein distance, by hand (the check must not reuse the code it checks)."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


class ScriptedPeer:
    """A peer that reads each image as scripted (by image bytes): a known mix of errors."""

    name = "scripted"

    def __init__(self, script: dict[bytes, str]):
        self.script = script

    def describe(self) -> dict[str, str]:
        return {}

    def read(self, images, kind: Kind) -> list[str]:  # noqa: ANN001 - the System protocol
        texts = []
        for image in images:
            if self.script[image] == "FAIL":
                raise RuntimeError("scripted failure")
            texts.append(self.script[image])
        return texts


def test_unseen_writers_pool_the_test_lines_of_writer_split_datasets(
    tiny_model: Path, tmp_path: Path
) -> None:
    """Two multi-writer folders and a page-split one, read by a staged model and a peer:
    the pool holds exactly the writer-split test lines, and its CER is total edits over
    total reference characters of those lines, as computed by hand from each reading."""
    long_hands = writers_in("test", 2, "long") + writers_in("train", 2, "long")
    write_writer_folder(tmp_path / "long", long_hands, pages=3)
    short = tmp_path / "short"
    (short / "lines").mkdir(parents=True)
    short_hands = writers_in("test", 3, "short") + writers_in("train", 1, "short")
    rows = ["file\tpage\ttext"]
    for writer in short_hands:
        name = f"lines/{writer}.png"
        (short / name).write_bytes(render_line(f"{writer[-2:]}"))
        rows.append(f"{name}\t{writer}__p0\t{writer[-2:]}")
    (short / "labels.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    _labelled_folder(tmp_path / "letters", pages=30)

    cache = tmp_path / "cache"
    datasets = [
        load_dataset(f"{name}={tmp_path / name}", cache_root=cache)
        for name in ("long", "letters", "short")
    ]
    assert [d.unseen_writers for d in datasets] == [True, False, True]
    # The peer: perfect on some lines, one character off on others, fails on one image.
    script = {}
    for dataset in datasets:
        for index, sample in enumerate(dataset.samples):
            text = sample.text if index % 2 else sample.text[:-1] + "#"
            script[sample.image.read_bytes()] = text
    script[datasets[2].samples[0].image.read_bytes()] = "FAIL"
    quill = QuillSystem.load(tiny_model, "onnx", threads=1, name="quill")
    results = [evaluate(d, [quill, ScriptedPeer(script)], batch_size=4) for d in datasets]

    pooled = pool_unseen_writers(results)
    assert pooled is not None and pooled.dataset.name == UNSEEN_WRITERS
    assert pooled.dataset.pooled == ("long", "short")
    assert [s.image for s in pooled.dataset.samples] == [
        s.image for d in (datasets[0], datasets[2]) for s in d.samples
    ]
    references = [normalise(s.text) for s in pooled.dataset.samples]
    for system in ("quill", "scripted"):
        texts = results[0].readings[system].texts + results[2].readings[system].texts
        assert pooled.readings[system].texts == texts
        edits = sum(_edits(normalise(t), r) for t, r in zip(texts, references, strict=True))
        expected = edits / sum(len(r) for r in references)
        assert pooled.overall(system).cer == pytest.approx(expected)
        assert pooled.overall(system).n == len(references)
    peer = pooled.overall("scripted")
    assert peer.failures == 1 and 0 < peer.cer < 1
    per_dataset = [results[i].overall("scripted").cer for i in (0, 2)]
    assert peer.cer != pytest.approx(sum(per_dataset) / 2)  # weighed by characters
    slices = {(r.key, r.value, r.system): r.score for r in pooled.slices}
    assert slices["dataset", "long", "scripted"] == results[0].overall("scripted")
    assert pool_unseen_writers([results[1]]) is None  # no writer split, no pool

    # Per writer: each test hand's lines scored together, named by dataset and writer.
    members: dict[str | None, list[int]] = {}
    for index, sample in enumerate(pooled.dataset.samples):
        members.setdefault(sample.writer, []).append(index)
    assert len(members) == 5 and all(w and w.startswith(("long/", "short/")) for w in members)
    spread = writer_spread(pooled)
    cers = {}
    for system in ("quill", "scripted"):
        texts = pooled.readings[system].texts
        cers[system] = {
            writer: sum(_edits(normalise(texts[i]), references[i]) for i in indices)
            / sum(len(references[i]) for i in indices)
            for writer, indices in members.items()
        }
        ranked = sorted(cers[system].values())
        assert spread[system]["writers"] == 5
        assert spread[system]["median_cer"] == pytest.approx(ranked[2])
        assert spread[system]["p90_cer"] == spread[system]["worst_cer"] == pytest.approx(ranked[-1])
    better = sum(cers["quill"][w] < cers["scripted"][w] for w in members)
    assert spread["quill"]["better_than"] == {"scripted": better}
    assert writer_spread(results[1]) == {}  # one hand's letters: no writers to spread over
