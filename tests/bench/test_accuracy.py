"""Scoring on known strings, slicing, and reading real images through real systems."""

from __future__ import annotations

from pathlib import Path

import pytest

from quill.bench.accuracy import (
    ALL,
    Readings,
    evaluate,
    normalise,
    read_dataset,
    score,
    score_slices,
    slice_members,
)
from quill.bench.datasets import BenchDataset, BenchSample, load_dataset
from quill.bench.systems import QuillSystem


def test_cer_and_wer_on_known_strings() -> None:
    # kitten -> sitting: 3 edits over 7 reference characters; 1 of 1 word wrong.
    result = score(["kitten"], ["sitting"])
    assert result.cer == pytest.approx(3 / 7)
    assert result.wer == 1.0
    # Two lines: 1 + 0 char edits over 11 + 5 chars; 1 wrong word of 2 + 1.
    result = score(["helo world", "fine."], ["hello world", "fine."])
    assert (result.n, result.chars, result.words) == (2, 16, 3)
    assert result.cer == pytest.approx(1 / 16)
    assert result.wer == pytest.approx(1 / 3)


def test_case_insensitive_rates_ignore_only_case() -> None:
    result = score(["KEW gardens", "Lndon"], ["Kew Gardens", "London"])
    assert result.cer == pytest.approx((3 + 1) / (11 + 6))  # E, W, g + the missing o
    assert result.cer_nocase == pytest.approx(1 / 17)
    assert result.wer == 1.0
    assert result.wer_nocase == pytest.approx(1 / 3)


def test_whitespace_and_blank_lines_are_not_errors() -> None:
    assert normalise("\n  My  dear\tDyer \n\n") == "My dear Dyer"
    assert score(["My  dear Dyer\n\n"], ["My dear Dyer"]).cer == 0.0
    # ...but a missing line break inside a paragraph is one.
    assert score(["My dear Dyer"], ["My dear\nDyer"]).cer == pytest.approx(1 / 12)


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
    members = slice_members(dataset.samples)
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
