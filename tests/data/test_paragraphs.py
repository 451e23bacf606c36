"""Synthetic paragraphs from stacked real lines: per-split, seeded, one ink band per line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quill.data.manifest import Manifest
from quill.data.paragraphs import make_paragraphs
from quill.data.readers.common import DatasetError
from quill.preprocess import ink_map

TEXTS = {
    "train": [f"train line {i}" for i in range(10)],
    "val": ["val one", "val two", "val three"],
    "test": ["test one", "test two", "test three"],
}


def _ink_bands(image: Image.Image) -> int:
    """Number of separate horizontal bands of ink (text lines) in a page."""
    rows = (ink_map(image) > 0.5).any(axis=1)
    return int(np.sum(rows[1:] & ~rows[:-1]) + rows[0])


def test_paragraphs_stay_in_their_split(make_line_dataset, tmp_path: Path):
    lines = make_line_dataset("lines", TEXTS)
    result = make_paragraphs(lines.root, tmp_path / "para", 8, seed=3, workers=1)
    manifest = result.manifest
    assert result.report.skipped == []
    assert manifest.counts() == {"train": 5, "val": 2, "test": 1}
    by_image = {s.image: s for s in lines}
    for sample in manifest:
        assert sample.kind == "paragraph" and sample.source == "lines-paragraphs"
        used = [by_image[name] for name in sample.meta["lines"]]
        assert {u.split for u in used} == {sample.split}
        assert sample.text == "\n".join(u.text for u in used)
        assert 2 <= len(used) <= 8 and len(set(sample.meta["lines"])) == len(used)


def test_each_stacked_line_is_a_separate_band_of_ink(make_line_dataset, tmp_path: Path):
    lines = make_line_dataset("lines", TEXTS)
    manifest = make_paragraphs(lines.root, tmp_path / "para", 6, seed=0, workers=1).manifest
    assert len(manifest) == 6
    for sample in manifest:
        image = Image.open(manifest.path_of(sample)).convert("RGB")
        assert _ink_bands(image) == sample.text.count("\n") + 1


def test_seeded_and_reproducible_across_worker_counts(make_line_dataset, tmp_path: Path):
    lines = make_line_dataset("lines", TEXTS)
    a = make_paragraphs(lines.root, tmp_path / "a", 5, seed=1, workers=1).manifest
    b = make_paragraphs(lines.root, tmp_path / "b", 5, seed=1, workers=2).manifest
    c = make_paragraphs(lines.root, tmp_path / "c", 5, seed=2, workers=1).manifest
    assert a.version == b.version
    assert a.version != c.version
    assert Manifest.load(tmp_path / "a").version == a.version


def test_unreadable_lines_are_reported_once_and_avoided(make_line_dataset, tmp_path: Path):
    lines = make_line_dataset("lines", {"train": TEXTS["train"]})
    broken = lines.samples[0]
    lines.path_of(broken).write_bytes(b"not a png")
    result = make_paragraphs(lines.root, tmp_path / "para", 12, seed=0, workers=2)
    reported = [s for s in result.report.skipped if s.where == broken.image]
    assert len(reported) == 1 and "not an image" in reported[0].reason
    assert all(broken.image not in s.meta["lines"] for s in result.manifest)
    assert len(result.manifest) == 12


def test_no_lines_is_a_clear_error(make_line_dataset, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no dataset"):
        make_paragraphs(tmp_path / "missing", tmp_path / "out", 3)
    empty = make_line_dataset("empty", {})
    with pytest.raises(DatasetError, match="no line samples"):
        make_paragraphs(empty.root, tmp_path / "out", 3)
