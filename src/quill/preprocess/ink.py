"""The ink map: each pixel's colour distance from a local estimate of the paper (a median
over a window much larger than a pen stroke), normalised by the image's contrast, so dark
ink on light paper, light ink on dark paper, coloured ink and a page with a shadow across it
all give the same map. Also the boolean ink masks segmentation works on, and the paper's
colour. The window medians and colour distances run compiled where ``pip install`` built
``quill._paper``, in NumPy otherwise, with the same answers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageChops

from quill.preprocess.images import working_mode

try:  # built by `pip install` where there is a C compiler (setup.py); else NumPy, the same
    from quill import _paper
except ImportError:  # pragma: no cover - a build without a compiler
    _paper = None  # type: ignore[assignment]


#: Short side of the grid the paper colour is estimated on.
PAPER_GRID = 16
#: An image whose ink contrast (:func:`ink_contrast`) is below this holds no readable ink:
#: its ink map is all paper, so a blank or near-blank photo reads as nothing rather than as
#: confident text. Measured: the faintest of the 5,493 Hooker lines is 0.096 (99.9% are above
#: 0.17); blank paper with JPEG noise (sigma 4), a shadow or a paper texture is below 0.03.
BLANK_CONTRAST = 0.05
#: How many pixels of ink :func:`sparse_ink_mask` looks for in an image that seems blank:
#: a short word on a 12-megapixel photo has a few hundred at the segmenter's analysis size
#: (its strokes are under 0.05% of the pixels; the blank test measures at 0.5%).
SPARSE_INK_PIXELS = 40
#: How far those pixels must stand out from the paper to be ink (three times
#: :data:`BLANK_CONTRAST`): JPEG noise and paper grain stay far below.
SPARSE_INK_CONTRAST = 0.15
#: Floor of the contrast the ink map is normalised by (fainter ink is shown fainter).
MIN_CONTRAST = 0.08


def ink_map(image: Image.Image) -> np.ndarray:
    """Ink strength in [0, 1] per pixel, shape (H, W), independent of polarity and colour.

    >>> dark_on_light = Image.new("RGB", (40, 20), "white")
    >>> dark_on_light.paste((0, 0, 0), (10, 5, 30, 8))
    >>> from PIL import ImageOps
    >>> light_on_dark = ImageOps.invert(dark_on_light)
    >>> bool(np.allclose(ink_map(dark_on_light), ink_map(light_on_dark), atol=0.02))
    True
    """
    return _ink(image)[0]


def ink_mask(image: Image.Image, threshold: float = 0.5) -> np.ndarray:
    """``ink_map(image) > threshold`` (H, W) bool, without building the float map: what line
    segmentation needs from a whole page.

    >>> page = Image.new("RGB", (60, 40), (230, 220, 200))
    >>> page.paste((40, 30, 90), (5, 10, 50, 14))
    >>> bool((ink_mask(page, 0.35) == (ink_map(page) > 0.35)).all())
    True
    """
    distance = _PaperDistance.of(image)
    if distance.contrast < BLANK_CONTRAST:
        return np.zeros(distance.values.shape, bool)
    if distance.squared:
        limit = (distance.low + threshold * distance.span) * _COLOUR_UNIT
        return distance.values > limit * limit
    return (distance.table() > threshold)[distance.values]


def sparse_ink_mask(image: Image.Image, threshold: float = 0.5) -> np.ndarray:
    """The ink (H, W) bool of writing that covers too little of ``image`` for
    :func:`ink_mask` to see it (a word on a large, otherwise empty photo: under 0.5% of the
    pixels, below the 99.5th percentile its contrast is measured at): the contrast is taken
    at the :data:`SPARSE_INK_PIXELS`-th most distant pixel instead, and the mask is all
    False unless that stands out from the paper by :data:`SPARSE_INK_CONTRAST`. For an
    image :func:`ink_mask` found blank: elsewhere the two agree less, and this costs a
    histogram more.

    >>> page = Image.new("L", (400, 400), 200)
    >>> page.paste(40, (10, 10, 30, 14))  # 80 pixels of ink: 0.05% of the page
    >>> int(ink_mask(page).sum()), int(sparse_ink_mask(page).sum())
    (0, 80)
    """
    distance = _PaperDistance.of(image)
    upper = max(99.5, 100.0 * (1.0 - SPARSE_INK_PIXELS / distance.values.size))
    if distance.squared:
        counts, value, unit = np.bincount(distance.values.ravel()), math.sqrt, _COLOUR_UNIT
    else:
        counts, value, unit = np.array(Image.fromarray(distance.values).histogram()), float, 255.0
    low, high = (v / unit for v in _percentiles(counts, value, upper))
    if high - low < SPARSE_INK_CONTRAST:
        return np.zeros(distance.values.shape, bool)
    limit = (low + threshold * (high - low)) * unit
    return distance.values > (limit * limit if distance.squared else limit)


def ink_contrast(image: Image.Image) -> float:
    """How far the ink stands out from the paper, in [0, 1] of colour distance: the 99.5th
    percentile of the distance from the local paper colour minus its median. Text is
    0.1-0.8; blank paper (noise, texture, shadows) below :data:`BLANK_CONTRAST`.

    >>> round(ink_contrast(Image.new("L", (60, 30), 200)), 3)
    0.0
    """
    return _PaperDistance.of(image).contrast


_COLOUR_UNIT = 255.0 * math.sqrt(3.0)  # the largest Euclidean distance between two colours


@dataclass(frozen=True)
class _PaperDistance:
    """Each pixel's distance from the local paper colour, and its 50th and 99.5th percentiles
    (``low``, ``high``, in [0, 1]): for greyscale ``values`` is |pixel - paper| (H, W) uint8,
    for colour the squared Euclidean distance (H, W) int32 (``squared``). Percentiles come
    from a histogram of these integers, so they are exact and cost one pass."""

    values: np.ndarray
    squared: bool
    low: float
    high: float

    @classmethod
    def of(cls, image: Image.Image) -> _PaperDistance:
        image = working_mode(image)
        if image.mode == "RGB" and is_grey(image):
            # A grey scan stored as RGB is worked on as one channel: the distance is then
            # |pixel - paper|, what its three equal channels give, at a third of the cost.
            image = image.getchannel(0)
        paper = _paper_estimate(image)
        if image.mode == "L":
            distance = ImageChops.difference(image, paper)
            # PIL counts the 256 levels in C, several times faster than np.bincount
            low, high = _percentiles(np.array(distance.histogram()))
            return cls(np.asarray(distance), False, low / 255.0, high / 255.0)
        squared, low, high = _colour_distance(np.asarray(image), np.asarray(paper))
        return cls(squared, True, low / _COLOUR_UNIT, high / _COLOUR_UNIT)

    @property
    def contrast(self) -> float:
        return max(0.0, self.high - self.low)

    @property
    def span(self) -> float:
        """What the distance is normalised by: the contrast, at least MIN_CONTRAST."""
        return max(self.contrast, MIN_CONTRAST)

    def table(self) -> np.ndarray:
        """Ink value (256,) float32 of each greyscale distance."""
        levels = np.arange(256, dtype=np.float32) / 255.0
        return np.clip((levels - self.low) / self.span, 0.0, 1.0).astype(np.float32)

    def ink(self) -> np.ndarray:
        """The ink map (H, W) float32 in [0, 1]; all paper below BLANK_CONTRAST."""
        if self.contrast < BLANK_CONTRAST:  # no ink worth the name, not stretched noise
            return np.zeros(self.values.shape, np.float32)
        if not self.squared:
            return np.take(self.table(), self.values)  # a faster gather than table[values]
        ink = np.sqrt(self.values, dtype=np.float32)
        ink *= np.float32(1.0 / (_COLOUR_UNIT * self.span))
        ink -= np.float32(self.low / self.span)
        return np.clip(ink, 0.0, 1.0, out=ink)


def _ink(image: Image.Image) -> tuple[np.ndarray, float]:
    """The ink map of an image and its contrast (:func:`ink_contrast`)."""
    distance = _PaperDistance.of(image)
    return distance.ink(), distance.contrast


def _colour_distance(image: np.ndarray, paper: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The squared distance (H, W) int32 of each pixel of an (H, W, 3) uint8 image from its
    paper colour, and the 50th and 99.5th percentiles of the distance. Compiled where ``pip
    install`` built ``quill._paper`` (a page's ink mask ~2x faster), NumPy otherwise: the
    same values."""
    if COMPILED_PAPER:
        squares, low, high = _paper.colour_distance(image, paper)
        return np.frombuffer(squares, np.int32).reshape(image.shape[:2]), low, high
    return _numpy_colour_distance(image, paper)


def _numpy_colour_distance(image: np.ndarray, paper: np.ndarray) -> tuple[np.ndarray, float, float]:
    """:func:`_colour_distance` in NumPy (the compiled one is tested against it)."""
    difference = np.abs(image.astype(np.int16) - paper)
    wide = difference.astype(np.uint16)  # squares of 0..255 fit; their sum needs 32 bits
    squared = (wide[..., 0] * wide[..., 0]).astype(np.int32)
    squared += wide[..., 1] * wide[..., 1]
    squared += wide[..., 2] * wide[..., 2]
    low, high = _percentiles(np.bincount(squared.ravel()), math.sqrt)
    return squared, low, high


def _percentiles(
    counts: np.ndarray, value: Callable[[float], float] = float, upper: float = 99.5
) -> tuple[float, float]:
    """The 50th and ``upper`` percentiles of integers given by their histogram (``value``
    maps an integer to what is interpolated, as :func:`numpy.percentile` does between the
    two order statistics around each percentile).

    >>> _percentiles(np.bincount([0, 0, 1, 5, 9]))
    (1.0, 8.92)
    """
    cumulative = np.cumsum(counts)
    total = int(cumulative[-1])
    result = []
    for q in (50.0, upper):
        position = q / 100.0 * (total - 1)
        below = int(math.floor(position))
        lower = value(int(np.searchsorted(cumulative, below + 1)))
        upper = value(int(np.searchsorted(cumulative, min(below + 2, total))))
        result.append(lower + (upper - lower) * (position - below))
    return result[0], result[1]


def is_grey(image: Image.Image) -> bool:
    """Whether an RGB image has three equal channels (a sample is checked first): a grey
    scan saved in colour, which reads exactly as its mode L copy."""
    rgb = np.asarray(image)
    sample = rgb[::7, ::7]
    if not ((sample[..., 0] == sample[..., 1]).all() and (sample[..., 1] == sample[..., 2]).all()):
        return False
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def _paper_estimate(image: Image.Image) -> Image.Image:
    """The paper colour around each pixel of an L or RGB image, as an image of its size and
    mode: a median over a window ~40% of the short side.

    Computed on a copy ``PAPER_GRID`` pixels on its short side, so it costs the same for a
    64-pixel line and a 12-megapixel photo, then scaled back up. Ink is thin and sparse, so
    the median lands on paper.
    """
    width, height = image.size
    scale = PAPER_GRID / min(width, height)
    grid = image.resize(
        (max(3, round(width * scale)), max(3, round(height * scale))), Image.Resampling.BOX
    )
    size = 2 * max(1, min(grid.size) * 2 // 5 // 2) + 1  # the window, ~40% of the short side
    if grid.mode == "L":
        paper = np.clip(_local_median(grid, size) + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(paper, "L").resize((width, height), Image.Resampling.BILINEAR)
    # Colour: the paper's brightness is the local median of the luminance, its hue the
    # image's median colour (a shadow dims all three channels alike). A third of the cost of
    # a median per channel, which on a photo's noisy colour is most of a line's budget.
    luminance = grid.convert("L")
    pixels = np.asarray(grid, np.float32).reshape(-1, 3)
    hue = np.median(pixels, axis=0) / max(1.0, float(np.median(np.asarray(luminance))))
    paper = _local_median(luminance, size)[..., None] * hue.astype(np.float32)  # (h, w, 3)
    paper = np.clip(paper + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(paper, "RGB").resize((width, height), Image.Resampling.BILINEAR)


def _local_median(grid: Image.Image, size: int) -> np.ndarray:
    """The median of each ``size`` x ``size`` window of an L image (edges repeated), (h, w)
    float32: exact at every other cell along the long side, the mean of its two neighbours
    in between (the paper changes slowly along a line; this halves the cost).

    >>> cells = Image.fromarray(np.array([[0, 9, 0, 9, 0], [9, 0, 9, 0, 9]], np.uint8))
    >>> _local_median(cells, 3).tolist()
    [[0.0, 4.5, 9.0, 4.5, 0.0], [9.0, 4.5, 0.0, 4.5, 9.0]]
    """
    cells = np.asarray(grid)
    transposed = cells.shape[0] > cells.shape[1]
    if transposed:
        cells = cells.T
    height, width = cells.shape
    exact = _window_medians(cells, size).astype(np.float32)  # (h, ceil(w / 2))
    median = np.empty((height, width), np.float32)
    median[:, ::2] = exact
    between = median[:, 1::2]
    inner = exact.shape[1] - 1
    between[:, :inner] = (exact[:, :-1] + exact[:, 1:]) / 2
    if between.shape[1] > inner:  # an even width ends on an in-between cell
        between[:, -1] = exact[:, -1]
    return median.T if transposed else median


#: The compiled paper functions' version this module speaks (a stale build is not used).
COMPILED_PAPER_VERSION = 2
#: Whether the window medians and colour distances run compiled (:func:`_window_medians`,
#: :func:`_colour_distance`).
COMPILED_PAPER = _paper is not None and _paper.ABI_VERSION == COMPILED_PAPER_VERSION


def _window_medians(cells: np.ndarray, size: int) -> np.ndarray:
    """The median of the ``size`` x ``size`` window (edges repeated) centred on every other
    cell of each row of an (h, w) uint8 grid: (h, ceil(w / 2)) uint8. Compiled where
    ``pip install`` built ``quill._paper`` (a line's preprocessing is ~25% faster), NumPy
    otherwise: the same values."""
    height, width = cells.shape
    if COMPILED_PAPER:
        medians = _paper.window_medians(np.ascontiguousarray(cells, dtype=np.uint8), size)
        return np.frombuffer(medians, np.uint8).reshape(height, (width + 1) // 2)
    return _numpy_window_medians(cells, size)


def _numpy_window_medians(cells: np.ndarray, size: int) -> np.ndarray:
    """:func:`_window_medians` in NumPy (the compiled one is tested against it)."""
    height, width = cells.shape
    radius, middle = size // 2, size * size // 2
    rows = np.clip(np.arange(-radius, height + radius), 0, height - 1)
    cols = np.clip(np.arange(-radius, width + radius), 0, width - 1)
    windows = sliding_window_view(cells[rows[:, None], cols], (size, size))[:, ::2]
    windows = windows.reshape(height, -1, size * size)  # (h, ceil(w / 2), size**2)
    return np.partition(windows, middle, axis=-1)[..., middle]


def paper_colour(
    image: Image.Image, size: int | None = 64, mode: str | None = None
) -> tuple[int, ...]:
    """The paper's colour, one value per band: the median, since ink covers a small share of
    a page or a line. It fills what cropping, masking or deskewing uncovers, so that the ink
    map reads it as paper. ``size``: measured on the image reduced to size x size pixels (a
    whole page costs under a millisecond); None: on every pixel (exact, for crops whose
    pixels are part of a dataset's version). ``mode``: the colour in that mode (e.g. RGB
    for a greyscale page drawn in colour), converted after the reduction.

    >>> page = Image.new("L", (20, 10), 230); page.paste(0, (5, 4, 15, 6))
    >>> paper_colour(page, size=None), paper_colour(page.convert("RGB"))
    ((230,), (230, 230, 230))
    """
    if size is not None:
        image = image.resize((size, size), Image.Resampling.BOX)
    if mode is not None and image.mode != mode:
        image = image.convert(mode)
    pixels = np.asarray(image).reshape(-1, len(image.getbands()))
    return tuple(int(v) for v in np.median(pixels, axis=0))
