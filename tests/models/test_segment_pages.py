"""Whole pages through the line segmenter: synthetic pages stacked from real line crops of the
four shared datasets (true boxes known), and bad input: a blank page, a rotated page, a photo
of a page on a desk, a two-column page.

The pages come from :mod:`quill.data.synth.pages` (``compose_page``), also the generator
behind the synthetic-page figures in docs/models.md:
``python tests/models/test_segment_pages.py 30 100`` prints recall and precision on 30 pages
from seed 100.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from quill.bench.detection import box_iou, detect_score
from quill.bench.page_sets import load_pages
from quill.data.synth.pages import (
    DATASETS,
    Box,
    compose_lines,
    compose_page,
    line_files,
    render,
    shared_datasets,
)
from quill.models.line_trace import MAX_FRAGMENTS
from quill.models.segment import SCATTERED_PIECES, SegmentConfig, segment_lines


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
    not all(line_files(name) for name in DATASETS),
    reason=f"shared line crops not at {shared_datasets()}",
)


@needs_lines
@pytest.mark.parametrize("seed", [0, 1, 2, 3])  # one page per dataset
def test_synthetic_page_lines_are_found(seed):
    found = found_on(*compose_page(seed))[1]
    assert found.recall >= 0.9 and found.precision >= 0.9, found


def test_hooker_pages_lines_are_found(hooker_dir):
    """The four real pages with PAGE XML (the bench's page set): at least 95% of the lines
    found and 95% of the boxes right (measured 95.8% and 98.6%: 69 of 72 lines, 70 boxes)."""
    pages = load_pages(str(hooker_dir / "pages"))
    total = None
    for page in pages.pages:
        found = detect_score(
            [segment.box for segment in segment_lines(page.image)],
            [line.box for line in page.text_lines],
            [line.box for line in page.lines if line.blank],
        )
        total = found if total is None else total + found
    assert total.recall >= 0.95 and total.precision >= 0.95, total


def test_a_letterhead_line_beside_a_stamp_is_found(hooker_dir):
    """Hooker's 146_001: the small printed "THE CAMP." just under the large handwritten
    date, a museum stamp's faint letters a word's gap to its left at its height. Joined to
    them, its ink per box area fell under the faintness test and the whole line was dropped;
    it is kept, without the stamp's letters (its box alone matches the truth)."""
    page = next(
        p for p in load_pages(str(hooker_dir / "pages")).pages if p.page_id.endswith("146_001")
    )
    (camp,) = [line.box for line in page.text_lines if line.text == "THE CAMP."]
    found = [segment.box for segment in segment_lines(page.image)]
    assert max(box_iou(box, camp) for box in found) >= 0.5, found


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


def test_noise_that_is_not_specks_has_no_lines_and_says_so():
    """Random ink on a fifth of the pixels is not specks: it breaks into thousands of small
    pieces, almost none the size of a letter (scattered, refused before tracing). Grey noise
    makes larger pieces, whose crests, joined in pairs, took 12 GB and minutes before the
    tracer gave up on more than MAX_FRAGMENTS of them."""
    noise = np.random.default_rng(0).random((1000, 1000)) < 0.2
    segmentation = segment_lines(Image.fromarray(np.where(noise, 0, 255).astype(np.uint8)))
    assert segmentation == [] and segmentation.no_text
    [note] = segmentation.notes
    assert "too few of them the size of a letter" in note
    assert int(note.split("breaks into ")[1].split()[0]) > SCATTERED_PIECES

    grey = np.random.default_rng(0).integers(0, 256, (1000, 800), dtype=np.uint8)
    segmentation = segment_lines(Image.fromarray(grey))
    assert segmentation == [] and segmentation.no_text
    [note] = segmentation.notes
    assert "too many to be lines of writing" in note
    assert int(note.split("breaks into ")[1].split()[0]) > MAX_FRAGMENTS


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


@needs_lines
@pytest.mark.parametrize("shaded", [False, True], ids=["lit", "shaded"])
def test_a_hand_holding_the_page_is_neither_paper_nor_text(shaded):
    """A hand over the page's corner reaching to the desk is bright like paper: the page is
    still found by its hue (in a shadow too), and no line is read on the hand or the desk."""
    image, truth = compose_page(2)
    width, height = image.size
    origin = (300, 200)
    photo = Image.new("RGB", (width + 500, height + 400), (92, 64, 45))
    photo.paste(image, origin)
    hand = Image.new("L", photo.size, 0)
    draw = ImageDraw.Draw(hand)
    x, y = origin
    draw.ellipse((x - 260, y + 0.7 * height, x + 120, y + 0.7 * height + 300), fill=255)
    draw.ellipse((x + 20, y + 0.72 * height, x + 220, y + 0.72 * height + 70), fill=255)
    photo = Image.composite(
        Image.new("RGB", photo.size, (214, 160, 130)),
        photo,
        hand.filter(ImageFilter.GaussianBlur(6)),
    )
    if shaded:
        pixels = np.asarray(photo, np.float32) * np.linspace(1.0, 0.65, photo.width)[None, :, None]
        photo = Image.fromarray(pixels.astype(np.uint8))
    segmentation = segment_lines(photo)
    assert segmentation.paper is not None
    x0, y0, x1, y1 = segmentation.paper
    assert abs(x0 - x) < 30 and abs(y0 - y) < 30 and abs(x1 - x - width) < 30
    assert all(box[0] >= x0 for box in (s.box for s in segmentation))
    score = detect_score(
        [s.box for s in segmentation], [(a + x, b + y, c + x, d + y) for a, b, c, d in truth]
    )
    assert score.precision >= 0.85 and score.recall >= 0.7  # the hand hides a line or two


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
