"""Whole pages through the line segmenter: synthetic pages stacked from real line crops of the
four shared datasets (true boxes known), and bad input: a blank page, a rotated page, a photo
of a page on a desk, a two-column page.

``compose_page`` is also the generator behind the synthetic-page figures in docs/models.md:
``python tests/models/test_segment_pages.py 30 100`` prints recall and precision on 30 pages
from seed 100.
"""

from __future__ import annotations

import csv
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quill.bench.pages import detect_score, load_pages
from quill.models.segment import SegmentConfig, segment_lines

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


def compose_lines(
    seed: int, dataset: str | None = None, lines: int | None = None, height: int | None = None
) -> tuple[np.ndarray, list[Box]]:
    """Darkness (H, W) in [0, 1] of 6-12 real line images of one writer (the next writer's
    when one has too few) stacked top to bottom with a random line height, spacing (0.75-1.3
    line heights), left indent and sometimes a short line (the start of a line: a closing
    line or a heading); and each line's true box."""
    rng = np.random.default_rng(seed)
    dataset = dataset or DATASETS[seed % len(DATASETS)]
    writers = line_files(dataset)
    count = lines or int(rng.integers(6, 13))
    files: list[Path] = []
    for writer in rng.permutation(len(writers)):
        if len(files) >= count:
            break
        files += list(writers[writer])[: count - len(files)]
    height = height or int(rng.integers(48, 110))
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
    darkness = np.zeros((y + height + margin, page_width), np.float32)
    boxes = []
    for line, top in zip(picked, ys, strict=True):
        left = min(margin + int(rng.uniform(0, 0.12) * width), page_width - line.shape[1])
        region = darkness[top : top + line.shape[0], left : left + line.shape[1]]
        np.maximum(region, line[: region.shape[0], : region.shape[1]], out=region)
        box = _ink_box(line, left, top)
        if box is not None:
            boxes.append(box)
    return darkness, boxes


def render(darkness: np.ndarray, seed: int) -> Image.Image:
    """Paper-coloured canvas (a random paper and ink colour, light falling off across the
    page, grain) with ``darkness`` as ink."""
    rng = np.random.default_rng(seed + 10_000)
    paper = rng.uniform((205, 195, 170), (245, 240, 228))
    ink = rng.uniform((10, 10, 20), (90, 70, 110))
    width = darkness.shape[1]
    shade = 1.0 - rng.uniform(0, 0.12) * np.linspace(0, 1, width)[None, :, None]
    pixels = paper * shade + (ink - paper) * darkness[..., None]
    pixels += rng.normal(0, 3.0, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def compose_page(
    seed: int, dataset: str | None = None, lines: int | None = None
) -> tuple[Image.Image, list[Box]]:
    """A synthetic page (:func:`compose_lines` rendered) and its lines' true boxes."""
    darkness, boxes = compose_lines(seed, dataset, lines)
    return render(darkness, seed), boxes


def found_on(image: Image.Image, truth: list[Box], **config):
    """Segment ``image`` and score its boxes against ``truth`` (IoU >= 0.5)."""
    segmentation = segment_lines(image, SegmentConfig(**config))
    return segmentation, detect_score([segment.box for segment in segmentation], truth)


def measure(pages: int, start: int = 0) -> tuple[float, float]:
    """Recall and precision (IoU >= 0.5) of the segmenter on ``pages`` synthetic pages."""
    total = None
    for seed in range(start, start + pages):
        found = found_on(*compose_page(seed))[1]
        total = found if total is None else total + found
    return total.recall, total.precision


needs_lines = pytest.mark.skipif(
    not all(line_files(name) for name in DATASETS), reason=f"shared line crops not at {SHARED}"
)


@needs_lines
@pytest.mark.parametrize("seed", [0, 1, 2, 3])  # one page per dataset
def test_synthetic_page_lines_are_found(seed):
    found = found_on(*compose_page(seed))[1]
    assert found.recall >= 0.9 and found.precision >= 0.9, found


def test_hooker_pages_lines_are_found(hooker_dir):
    """The four real pages with PAGE XML (the bench's page set): at least 92% of the lines
    found and 92% of the boxes right (measured 94.4% and 95.8%)."""
    pages = load_pages(str(hooker_dir / "pages"))
    total = None
    for page in pages.pages:
        found = detect_score(
            [segment.box for segment in segment_lines(page.image)],
            [line.box for line in page.text_lines],
            [line.box for line in page.lines if line.blank],
        )
        total = found if total is None else total + found
    assert total.recall >= 0.92 and total.precision >= 0.92, total


# ------------------------------------------------------------------ bad input


def test_a_page_with_no_text_has_no_lines_and_says_so():
    blank = Image.new("RGB", (1200, 1600), (236, 230, 214))
    segmentation = segment_lines(blank)
    assert segmentation == []
    assert segmentation.rotation == 0 and segmentation.paper is None
    assert any("no text" in note for note in segmentation.notes)
    assert segmentation.to_dict()["notes"] == list(segmentation.notes)


@pytest.mark.parametrize("grain", [12, 20, 30])
def test_a_grainy_photo_of_blank_paper_has_no_lines_and_says_so(grain):
    """A phone photo of blank paper is all specks: tens of thousands of them, which traced as
    lines took gigabytes (the process was killed at 20 GB) before specks were dropped."""
    rng = np.random.default_rng(grain)
    pixels = rng.normal(220, grain, (2000, 1400, 3))
    segmentation = segment_lines(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)))
    assert segmentation == []
    assert any("specks" in note for note in segmentation.notes)


@needs_lines
def test_lines_under_heavy_grain_are_still_found():
    darkness, truth = compose_lines(5)
    image = np.asarray(render(darkness, 5), np.float32)
    image += np.random.default_rng(5).normal(0, 12, image.shape)
    grainy = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    _, score = found_on(grainy, truth)
    assert score.recall >= 0.9 and score.precision >= 0.9


def _turned(box: Box, degrees: int, size: tuple[int, int]) -> Box:
    """Where a box of an image of ``size`` lies once the image is rotated ``degrees``
    counter-clockwise (``Image.rotate(degrees, expand=True)``)."""
    width, height = size
    x0, y0, x1, y1 = box
    return {
        90: (y0, width - x1, y1, width - x0),
        180: (width - x1, height - y1, width - x0, height - y0),
        270: (height - y1, x0, height - y0, x1),
    }[degrees]


@needs_lines
@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_a_rotated_page_is_read_upright(degrees):
    image, truth = compose_page(0)
    turned = image.rotate(degrees, expand=True)
    segmentation, found = found_on(turned, [_turned(box, degrees, image.size) for box in truth])
    assert segmentation.rotation == 360 - degrees  # turning it back
    assert found.recall >= 0.9 and found.precision >= 0.9, found
    assert all(s.image.width > 2 * s.image.height for s in segmentation if s.image.width > 200)
    assert any("turned" in note for note in segmentation.notes)


def test_a_real_page_turned_sideways_is_found_sideways(hooker_dir):
    page = Image.open(hooker_dir / "pages" / "JDH_2_16_146_004.jpg")
    upright = segment_lines(page)
    sideways = segment_lines(page.rotate(90, expand=True))
    assert upright.rotation == 0 and sideways.rotation == 270
    assert abs(len(sideways) - len(upright)) <= 1
    assert sideways[0].image.width > sideways[0].image.height


@needs_lines
def test_a_photo_of_a_page_on_a_desk_finds_the_paper():
    """The page, tilted a little, on a dark grained desk: the paper is found and cut out, and
    the lines are the page's, none on the desk."""
    image, truth = compose_page(1)
    rng = np.random.default_rng(7)
    grain = np.cumsum(rng.normal(0, 1, (1, image.width + 600)), axis=1) * 3
    desk = np.clip(
        (85, 58, 40) + grain[..., None] + rng.normal(0, 6, (image.height + 500, 1, 3)), 0, 255
    )
    desk = np.broadcast_to(desk, (image.height + 500, image.width + 600, 3))
    photo = Image.fromarray(desk.astype(np.uint8))
    tilted = image.convert("RGBA").rotate(2, expand=True, resample=Image.Resampling.BICUBIC)
    origin = (310, 240)
    photo.paste(tilted, origin, tilted)
    segmentation = segment_lines(photo)
    assert segmentation.paper is not None
    x0, y0, x1, y1 = segmentation.paper
    assert abs(x0 - origin[0]) < 30 and abs(y0 - origin[1]) < 30
    assert abs(x1 - origin[0] - tilted.width) < 30 and abs(y1 - origin[1] - tilted.height) < 30
    for box in (s.box for s in segmentation):
        assert x0 <= box[0] and y0 <= box[1] and box[2] <= x1 and box[3] <= y1
    assert len(segmentation) >= len(truth) - 1
    assert any("background" in note for note in segmentation.notes)


def test_a_blank_sheet_with_light_falling_off_is_no_paper_on_a_desk():
    shade = np.linspace(1.0, 0.55, 900)[None, :, None]
    pixels = np.full((1200, 900, 3), (232, 226, 212), np.float32) * shade
    assert segment_lines(Image.fromarray(pixels.astype(np.uint8))).paper is None


@needs_lines
def test_a_two_column_page_reads_the_left_column_then_the_right():
    left, left_truth = compose_lines(2, "poilus", lines=8, height=70)
    right, right_truth = compose_lines(3, "poilus", lines=7, height=70)
    gutter = 160
    height = max(left.shape[0], right.shape[0])
    darkness = np.zeros((height, left.shape[1] + gutter + right.shape[1]), np.float32)
    darkness[: left.shape[0], : left.shape[1]] = left
    shift = left.shape[1] + gutter
    darkness[: right.shape[0], shift:] = right
    right_truth = [(x0 + shift, y0, x1 + shift, y1) for x0, y0, x1, y1 in right_truth]
    segmentation, found = found_on(render(darkness, 3), left_truth + right_truth)
    assert len(segmentation) == len(left_truth + right_truth)
    assert found.recall >= 0.7, found  # short lines of grey crops: boxes a little tall
    assert segmentation.columns == 2
    middle = left.shape[1] + gutter / 2
    sides = [segment.box[2] <= middle for segment in segmentation]  # True: left column
    assert not any(s.box[0] < middle < s.box[2] for s in segmentation)  # none spans both
    assert sides == sorted(sides, reverse=True)  # all of the left column first


@needs_lines
def test_a_margin_note_comes_after_the_main_text_and_is_marked():
    main, truth = compose_lines(5, "poilus", lines=9, height=70)
    note, note_truth = compose_lines(9, "poilus", lines=3, height=50)
    note = note[:, : int(note.shape[1] * 0.22)]  # three short lines beside the text
    margin = note.shape[1] + 120
    darkness = np.zeros((main.shape[0], main.shape[1] + margin), np.float32)
    darkness[:, margin:] = main
    top = main.shape[0] // 3
    rows = min(note.shape[0], main.shape[0] - top)
    darkness[top : top + rows, : note.shape[1]] = np.maximum(
        darkness[top : top + rows, : note.shape[1]], note[:rows]
    )
    truth = [(x0 + margin, y0, x1 + margin, y1) for x0, y0, x1, y1 in truth]
    segmentation, found = found_on(render(darkness, 5), truth)
    assert found.recall >= 0.85, found
    notes = [s for s in segmentation if s.margin]
    assert notes and all(s.box[2] < margin for s in notes)
    assert [s.margin for s in segmentation] == sorted(s.margin for s in segmentation)
    assert any("margin" in note for note in segmentation.notes)


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    start = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    recall, precision = measure(count, start)
    print(
        f"{count} synthetic pages from seed {start}: recall {recall:.1%}, precision {precision:.1%}"
    )
