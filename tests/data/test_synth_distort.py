"""The shared distortions: deterministic per seed, type preserving, polarity aware."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from quill.data import distort

WARPS = [
    distort.shear,
    distort.rotate,
    distort.scale,
    distort.perspective,
    distort.elastic,
    distort.baseline_wave,
    distort.blur,
    distort.gaussian_noise,
    distort.stroke_width,
    distort.brightness_contrast,
]


@pytest.fixture()
def line() -> Image.Image:
    """Dark strokes on white paper, 48 x 200."""
    image = Image.new("L", (200, 48), 255)
    draw = ImageDraw.Draw(image)
    draw.line([(20, 10), (20, 38), (60, 38)], fill=0, width=4)
    draw.ellipse([80, 12, 120, 38], outline=0, width=4)
    return image


@pytest.mark.parametrize("warp", WARPS, ids=lambda f: f.__name__)
def test_same_seed_same_result_and_type(warp, line):
    first = warp(line, np.random.default_rng(7))
    again = warp(line, np.random.default_rng(7))
    assert isinstance(first, Image.Image) and first.mode == "L"
    assert np.array_equal(np.asarray(first), np.asarray(again))

    as_uint8 = warp(np.asarray(line), np.random.default_rng(7))
    assert as_uint8.dtype == np.uint8
    ink_map = 1.0 - np.asarray(line, dtype=np.float32) / 255.0
    as_float = warp(ink_map, np.random.default_rng(7))
    assert as_float.dtype == np.float32 and as_float.min() >= 0.0 and as_float.max() <= 1.0

    colour = warp(line.convert("RGB"), np.random.default_rng(7))
    assert colour.mode == "RGB"


def test_different_seeds_differ(line):
    a = distort.elastic(line, np.random.default_rng(1), alpha=(2, 2))
    b = distort.elastic(line, np.random.default_rng(2), alpha=(2, 2))
    assert not np.array_equal(np.asarray(a), np.asarray(b))


def test_geometric_fill_is_background_for_both_polarities(line):
    rng = np.random.default_rng(0)
    dark_on_light = np.asarray(distort.rotate(line, rng, degrees=(10, 10)))
    assert dark_on_light[0, 0] == 255  # the uncovered corner is paper, not black
    ink_map = 1.0 - np.asarray(line, dtype=np.float32) / 255.0
    rotated_map = distort.rotate(ink_map, rng, degrees=(10, 10))
    assert rotated_map[0, 0] == 0.0


def test_shear_expands_canvas_to_keep_ink(line):
    slanted = distort.shear(line, np.random.default_rng(0), slant=(0.5, 0.5))
    assert slanted.size[0] >= line.size[0] + 0.5 * line.size[1] - 1
    # A shear keeps area, so the total ink (darkness summed) is kept: nothing was cut off.
    ink_before = (255.0 - np.asarray(line, dtype=np.float64)).sum()
    ink_after = (255.0 - np.asarray(slanted, dtype=np.float64)).sum()
    assert abs(ink_after - ink_before) / ink_before < 0.02


def test_stroke_width_adds_ink_in_either_polarity(line):
    rng = np.random.default_rng(0)
    dark = np.asarray(line)
    thick = distort.stroke_width(dark, rng, radius=(1, 1))
    assert (thick < 128).sum() > (dark < 128).sum()
    light = 255 - dark
    thick_light = distort.stroke_width(light, rng, radius=(1, 1))
    assert (thick_light > 128).sum() > (light > 128).sum()
    thin = distort.stroke_width(dark, rng, radius=(-1, -1))
    assert (thin < 128).sum() < (dark < 128).sum()


def test_invert_is_an_involution(line):
    assert np.array_equal(np.asarray(distort.invert(distort.invert(line))), np.asarray(line))


def test_paper_and_composite():
    rng = np.random.default_rng(3)
    paper = distort.paper_texture(40, 120, rng)
    assert paper.shape == (40, 120, 3) and paper.dtype == np.uint8
    ink = np.zeros((40, 120), dtype=np.float32)
    ink[10:30, 10:20] = 1.0
    colour = (10, 20, 200)
    page = distort.composite(ink, paper, colour)
    assert tuple(page[20, 15]) == colour
    assert np.array_equal(page[0, 50], paper[0, 50])
    with pytest.raises(ValueError, match="differ in size"):
        distort.composite(ink[:10], paper, colour)


def test_rejects_non_images():
    with pytest.raises(ValueError, match="shape"):
        distort.blur(np.zeros((2, 2, 2, 2)), np.random.default_rng(0))
