"""Percent -> pixel conversion and rotated crops, checked against ink drawn at known boxes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from quill.annotation.geometry import (
    Box,
    box_to_percent,
    crop_box,
    enclosing_box,
    mask_outside,
    percent_to_box,
    share_on_image,
)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    a, b = a[:h, :w], b[:h, :w]
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.mark.parametrize("rotation", [0.0, 7.0, -12.0, 90.0, 180.0, 265.0])
def test_crop_of_a_drawn_rotated_line_holds_exactly_its_ink(ls, rotation):
    # A page wider than tall: percent units differ in x and y, so rotating in percent space
    # (instead of pixels) would visibly miss the ink.
    size = (1200, 800)
    x, y = 500.0, 380.0
    theta = np.radians(rotation)
    # The next line down the page, parallel, just below the target's bottom edge.
    gap = 49 + 8
    below = (x - gap * np.sin(theta), y + gap * np.cos(theta))
    page, lines = ls.draw_page(
        [("Dear Mr Hooker, quickly", x, y, rotation), ("the next line", *below, rotation)], size
    )
    target, neighbour = lines
    assert target.box.height == 49
    box = percent_to_box(ls.percent(target.box, *size), *size)
    crop = crop_box(page, box)

    assert crop.size == (round(target.box.width), round(target.box.height))
    ink = ls.ink_of(crop)
    assert iou(ink, target.upright) > 0.8, "the crop must show the line upright, in place"
    # All of the line's ink is inside the crop: nothing cut off at any edge.
    assert ink.sum() >= 0.9 * target.upright.sum()
    # None of the neighbour's ink (it is 8 px below): ink the line does not explain is noise.
    grown = target.upright.copy()
    for dy in (-2, -1, 1, 2):
        for dx in (-2, -1, 1, 2):
            grown |= np.roll(np.roll(target.upright, dy, 0), dx, 1)
    assert (ink & ~grown).sum() < 0.02 * ink.sum()
    # The neighbour is really there, and the same crop one line lower finds it.
    lower = crop_box(page, neighbour.box)
    assert iou(ls.ink_of(lower), neighbour.upright) > 0.8


def test_percent_round_trip_and_label_studio_angle_convention():
    box = Box(123.5, 40.25, 300.0, 48.0, 348.0)
    value = box_to_percent(box, 1448, 2152)
    back = percent_to_box(value, 1448, 2152)
    assert np.allclose(
        [back.x, back.y, back.width, back.height, back.rotation],
        [box.x, box.y, box.width, box.height, box.rotation],
    )
    # 348 degrees and -12 degrees are the same box.
    assert np.allclose(Box(10, 10, 50, 8, 348).corners(), Box(10, 10, 50, 8, -12).corners())


def test_top_left_corner_is_the_pivot():
    for rotation in (0, 30, 90, 200):
        corners = Box(50, 60, 40, 10, rotation).corners()
        assert corners[0].tolist() == [50, 60]
        edge = corners[1] - corners[0]
        assert np.hypot(*edge) == pytest.approx(40)
        assert np.degrees(np.arctan2(edge[1], edge[0])) % 360 == pytest.approx(rotation % 360)


def test_enclosing_box_contains_every_corner_and_levels_a_tilted_page():
    lines = [Box(100, 100 + 40 * i, 300, 30, 10) for i in range(3)]
    outline = enclosing_box(lines, 10.0, margin=2)
    # Every corner of every line lies inside the outline, in the outline's own frame.
    theta = np.radians(outline.rotation)
    for line in lines:
        rel = line.corners() - np.array([outline.x, outline.y])
        u = rel[:, 0] * np.cos(theta) + rel[:, 1] * np.sin(theta)
        v = -rel[:, 0] * np.sin(theta) + rel[:, 1] * np.cos(theta)
        assert (u >= 0).all() and (u <= outline.width).all()
        assert (v >= 0).all() and (v <= outline.height).all()
    # Tight: the lines are 300 wide, the outline only adds the stagger and the margin.
    assert outline.width < 300 + 3 * 40 * np.sin(theta) + 10


def test_mask_outside_wipes_unboxed_ink(ls):
    page, lines = ls.draw_page([("keep me", 50, 50, 0), ("wipe me", 50, 200, 0)], (500, 300))
    masked = mask_outside(page, [lines[0].box])
    ink = ls.ink_of(masked)
    assert ink[lines[0].mask].mean() > 0.9
    assert not ink[lines[1].mask].any()


def test_crops_do_not_carry_the_page_metadata(ls):
    # A scanner's ICC profile is often ~0.7 MB: copied into every line crop, it tripled the
    # size of an imported Hooker dataset and made each PNG save ~0.1 s slower.
    page, lines = ls.draw_page([("profiled", 20, 20, 0)], (300, 100))
    page.info.update(icc_profile=b"\0" * 10_000, exif=b"Exif\0\0", dpi=(300, 300))
    assert crop_box(page, lines[0].box).info == {}


@pytest.mark.parametrize(
    "box",
    [
        Box(20, 20, 100, 30),  # on the image
        Box(250, 40, 100, 30),  # past the right edge
        Box(-60, 150, 120, 40, 30),  # rotated across the left and bottom edges
        Box(280, 60, 90, 50, 200),  # turned upside down across the top edge
        Box(500, 500, 40, 10, 45),  # far off
    ],
)
def test_share_on_image_is_the_drawn_share(box):
    """The clipped area against pixels counted in a drawing of the box around the image."""
    width, height, margin = 300, 200, 400
    canvas = Image.new("L", (width + 2 * margin, height + 2 * margin), 0)
    corners = [(x + margin, y + margin) for x, y in box.corners().tolist()]
    ImageDraw.Draw(canvas).polygon(corners, fill=1)
    drawn = np.asarray(canvas, dtype=np.int64)
    on_image = drawn[margin : margin + height, margin : margin + width].sum()
    expected = on_image / drawn.sum() if drawn.sum() else 0.0
    assert share_on_image(box, width, height) == pytest.approx(expected, abs=0.03)
