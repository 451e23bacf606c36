"""The compiled parts of the ink map (``quill._paper``) are NumPy's, exactly.

``quill.preprocess.ink._numpy_window_medians`` partitions every window; the compiled one slides a
histogram along each row. Both must give the same integer for every window, on grids shaped
like a line's (wide and short), a page's, tiny ones, odd and even widths, and on values that
change abruptly (ink) as well as slowly (paper). The compiled colour distances count their
squares in one pass; NumPy squares, sums and bincounts: the same integers and the same
percentiles, to the last bit of the float.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from quill.preprocess import ink, ink_map, ink_mask
from quill.preprocess.ink import (
    _colour_distance,
    _numpy_colour_distance,
    _numpy_window_medians,
    _paper_estimate,
    _window_medians,
)


def test_the_compiled_medians_are_built():
    """`make setup` builds them (setup.py); without them the tests below compare NumPy with
    itself."""
    assert ink.COMPILED_PAPER
    assert ink._paper is not None, "quill._paper is missing: reinstall with a C compiler"
    assert ink._paper.ABI_VERSION == ink.COMPILED_PAPER_VERSION


@pytest.mark.parametrize(
    ("height", "width", "size"),
    [(16, 240, 7), (16, 241, 7), (16, 16, 7), (3, 3, 1), (3, 4, 3), (5, 9, 5), (16, 37, 13)],
)
@pytest.mark.parametrize("seed", range(3))
def test_the_same_medians_as_numpy(height, width, size, seed):
    rng = np.random.default_rng(seed)
    paper = np.linspace(150, 220, width)[None, :] + rng.normal(0, 6, (height, width))
    cells = np.clip(paper, 0, 255).astype(np.uint8)
    ink = rng.random((height, width)) < 0.2
    cells[ink] = rng.integers(0, 60, ink.sum())  # strokes: far from the paper, in clumps
    noise = rng.integers(0, 256, (height, width), dtype=np.uint8)  # and pure noise
    for grid in (cells, noise, np.full((height, width), 7, np.uint8)):
        expected = _numpy_window_medians(grid, size)
        assert expected.shape == (height, (width + 1) // 2)
        assert np.array_equal(_window_medians(grid, size), expected)


def test_a_transposed_view_is_read_as_its_values():
    """_local_median hands over a tall grid transposed (a strided view)."""
    rng = np.random.default_rng(5)
    tall = rng.integers(0, 256, (40, 12), dtype=np.uint8)
    assert np.array_equal(_window_medians(tall.T, 5), _numpy_window_medians(tall.T, 5))


def test_the_ink_map_is_the_same_either_way(monkeypatch):
    """The whole ink map and mask of a colour line photo, compiled or NumPy's."""
    rng = np.random.default_rng(9)
    photo = np.clip(rng.normal(200, 8, (90, 700, 3)), 0, 255).astype(np.uint8)
    photo[30:60, 40:650:9] = (30, 40, 120)  # blue strokes
    image = Image.fromarray(photo)
    compiled, compiled_mask = ink_map(image), ink_mask(image, 0.4)
    assert compiled_mask.any() and not compiled_mask.all()
    monkeypatch.setattr(ink, "COMPILED_PAPER", False)
    assert np.array_equal(ink_map(image), compiled)
    assert np.array_equal(ink_mask(image, 0.4), compiled_mask)


@pytest.mark.parametrize(("height", "width"), [(1, 1), (2, 3), (48, 700), (300, 211)])
@pytest.mark.parametrize("seed", range(3))
def test_the_same_colour_distances_as_numpy(height, width, seed):
    """Squares and both percentiles, on a photo with its own paper estimate, on noise against
    another noise, and on an image that is all paper (every distance 0)."""
    rng = np.random.default_rng(seed)
    photo = np.clip(rng.normal((205, 195, 170), 9, (height, width, 3)), 0, 255).astype(np.uint8)
    strokes = rng.random((height, width)) < 0.1
    photo[strokes] = (60, 40, 30)
    paper = np.asarray(_paper_estimate(Image.fromarray(photo)))
    noise = rng.integers(0, 256, (2, height, width, 3), dtype=np.uint8)
    for image, estimate in ((photo, paper), (noise[0], noise[1]), (photo, photo)):
        squared, low, high = _colour_distance(image, estimate)
        expected, expected_low, expected_high = _numpy_colour_distance(image, estimate)
        assert squared.dtype == np.int32 and np.array_equal(squared, expected)
        assert (low, high) == (expected_low, expected_high)


def test_bad_colour_images_are_refused():
    with pytest.raises(ValueError, match="one size"):
        ink._paper.colour_distance(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="non-empty"):
        ink._paper.colour_distance(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8))


def test_bad_grids_are_refused():
    with pytest.raises(ValueError, match="odd size"):
        ink._paper.window_medians(np.zeros((4, 4), np.uint8), 4)
    with pytest.raises(ValueError, match="2-D uint8"):
        ink._paper.window_medians(np.zeros((4, 4), np.float32), 3)
