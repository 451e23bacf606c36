"""Whole pages through the line segmenter: synthetic pages stacked from real line crops of the
four shared datasets (true boxes known), and bad input: a blank page, a rotated page, a photo
of a page on a desk, a two-column page.

``compose_page`` is also the generator behind the synthetic-page figures in docs/models.md
(``python tests/models/test_segment_pages.py 30`` prints recall and precision on 30 pages).
"""

from __future__ import annotations

import csv
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quill.bench.pages import detect_score
from quill.models.segment import segment_lines

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
DATASETS = ("copiste", "poilus", "mss19", "hooker-letters")

Box = tuple[int, int, int, int]


@cache
def line_files(dataset: str) -> tuple[tuple[Path, ...], ...]:
    """The line images of one shared dataset, grouped by writer (the page id's part before
    ``__``; the page for Hooker's letters); empty where the dataset is absent."""
    labels = SHARED / dataset / "labels.tsv"
    if not labels.is_file():
        return ()
    writers: dict[str, list[Path]] = {}
    with labels.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            writers.setdefault(row["page"].split("__")[0], []).append(
                SHARED / dataset / row["file"]
            )
    return tuple(tuple(files) for _, files in sorted(writers.items()))


def _ink_line(path: Path, height: int) -> np.ndarray:
    """A line crop as darkness in [0, 1] (paper 0), scaled to ``height`` pixels."""
    image = Image.open(path).convert("L")
    width = max(1, round(image.width * height / image.height))
    grey = np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), np.float32)
    inside = grey[grey < 250]  # the polygon's own paper (outside it is painted white)
    paper = np.percentile(inside, 75) if inside.size else 255.0
    darkness = np.clip(1.0 - grey / max(paper, 1.0), 0.0, 1.0)
    return np.clip(darkness / max(float(np.percentile(darkness, 99.5)), 0.2), 0.0, 1.0)


def _ink_box(darkness: np.ndarray, x: int, y: int) -> Box | None:
    """The true box of a pasted line: its crop (the annotator's polygon box) trimmed to ink."""
    ink = darkness > 0.4
    if ink.sum() < 20:
        return None
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    return (x + int(cols[0]), y + int(rows[0]), x + int(cols[-1]) + 1, y + int(rows[-1]) + 1)


def compose_page(
    seed: int, dataset: str | None = None, lines: int | None = None
) -> tuple[Image.Image, list[Box]]:
    """A page of 6-12 real line images stacked top to bottom on paper-coloured canvas, with a
    random line height, spacing (0.75-1.3 line heights), left indent and sometimes a short
    line (the start of a line: a closing line or a heading); and each line's ink box."""
    rng = np.random.default_rng(seed)
    dataset = dataset or DATASETS[seed % len(DATASETS)]
    writers = line_files(dataset)
    count = lines or int(rng.integers(6, 13))
    files: list[Path] = []  # one writer's lines, then the next writer's, as many as needed
    for writer in rng.permutation(len(writers)):
        if len(files) >= count:
            break
        files += list(writers[writer])[: count - len(files)]
    height = int(rng.integers(48, 110))
    picked = [_ink_line(path, int(height * rng.uniform(0.95, 1.05))) for path in files]
    for index in rng.choice(count, int(rng.integers(0, 3)), replace=False):
        line = picked[index]  # a short line: its first 15-40%
        picked[index] = line[:, : max(height, int(line.shape[1] * rng.uniform(0.15, 0.4)))]
    width = max(line.shape[1] for line in picked)
    margin = int(rng.integers(30, 160))
    page_width = int(width * rng.uniform(1.05, 1.3)) + 2 * margin
    spacing = rng.uniform(0.75, 1.3)
    ys, y = [], margin
    for _ in picked:
        ys.append(y)
        y += int(height * spacing * rng.uniform(0.92, 1.08))
    page_height = y + height + margin
    darkness = np.zeros((page_height, page_width), np.float32)
    boxes = []
    for line, top in zip(picked, ys, strict=True):
        left = margin + int(rng.uniform(0, 0.12) * width)
        left = min(left, page_width - line.shape[1])
        region = darkness[top : top + line.shape[0], left : left + line.shape[1]]
        np.maximum(region, line[: region.shape[0], : region.shape[1]], out=region)
        box = _ink_box(line, left, top)
        if box is not None:
            boxes.append(box)
    paper = rng.uniform((205, 195, 170), (245, 240, 228))
    ink = rng.uniform((10, 10, 20), (90, 70, 110))
    shade = 1.0 - rng.uniform(0, 0.12) * np.linspace(0, 1, page_width)[None, :, None]
    pixels = paper * shade + (ink - paper) * darkness[..., None]
    pixels += rng.normal(0, 3.0, pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image, boxes


def measure(pages: int, start: int = 0) -> tuple[float, float]:
    """Recall and precision (IoU >= 0.5) of the segmenter on ``pages`` synthetic pages."""
    total = None
    for seed in range(start, start + pages):
        image, truth = compose_page(seed)
        found = detect_score([segment.box for segment in segment_lines(image)], truth)
        total = found if total is None else total + found
    return total.recall, total.precision


needs_lines = pytest.mark.skipif(
    not all(line_files(name) for name in DATASETS), reason=f"shared line crops not at {SHARED}"
)


@needs_lines
@pytest.mark.parametrize("seed", [0, 1, 2, 3])  # one page per dataset
def test_synthetic_page_lines_are_found(seed):
    image, truth = compose_page(seed)
    found = detect_score([segment.box for segment in segment_lines(image)], truth)
    assert found.recall >= 0.9 and found.precision >= 0.9, found


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    recall, precision = measure(count)
    print(f"{count} synthetic pages: recall {recall:.1%}, precision {precision:.1%}")
