"""The geometry of a page, found before its lines: the paper in a photo, the skew, the line
spacing, and whether the lines run up or down the image (steps 1, 3 and 4 of
:mod:`quill.models.segment`).

Both ways of finding lines start from these (the tracer, :mod:`quill.models.line_trace`, and
the learned detector); they work on a boolean ink mask at analysis resolution, except
:func:`find_paper`, which looks at the photo itself.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image
from scipy.ndimage import (
    binary_dilation,
    binary_erosion,
    binary_fill_holes,
    find_objects,
    label,
)

Box = tuple[int, int, int, int]


def sheared_profile(mask: np.ndarray, degrees: float) -> np.ndarray:
    """Row sums of ``mask`` (H, W) along lines tilted by ``degrees`` (positive: the text
    rises to the right, as in an image rotated counter-clockwise).

    >>> mask = np.zeros((20, 40), bool); mask[10, :] = True
    >>> int(sheared_profile(mask, 0.0).argmax()), int(sheared_profile(mask, 0.0).max())
    (10, 40)
    """
    ys, xs = np.nonzero(mask)
    return _sheared_rows(ys, xs - mask.shape[1] / 2, mask.shape[0], degrees)


def _sheared_rows(ys: np.ndarray, xs: np.ndarray, height: int, degrees: float) -> np.ndarray:
    rows = np.rint(ys + xs * np.float32(math.tan(math.radians(degrees)))).astype(np.int32)
    keep = (rows >= 0) & (rows < height)
    return np.bincount(rows[keep], minlength=height).astype(np.float64)


def estimate_skew(mask: np.ndarray, max_degrees: float, step: float) -> float:
    """Angle (degrees) that makes text lines horizontal: the sharpest sheared profile.

    Searched every other step first, then at the steps beside the best one (the energy has
    one sharp peak, so this finds the same angle in about half the projections).

    >>> mask = np.zeros((200, 400), bool)
    >>> for y in (50, 100, 150): mask[[round(y - (x - 200) * math.tan(math.radians(3)))
    ...                                for x in range(400)], range(400)] = True
    >>> estimate_skew(mask, 5.0, 0.5)
    3.0
    """
    ys, xs = np.nonzero(mask)  # once: the search only re-projects these points
    ys, xs = ys.astype(np.float32), (xs - mask.shape[1] / 2).astype(np.float32)
    angles = np.arange(-max_degrees, max_degrees + step / 2, step)
    energy: dict[int, float] = {}

    def search(indices: range) -> int:
        for i in indices:
            if i not in energy and 0 <= i < len(angles):
                energy[i] = float((_sheared_rows(ys, xs, mask.shape[0], angles[i]) ** 2).sum())
        return max(energy, key=lambda i: (energy[i], -abs(angles[i])))

    best = search(range(len(angles) // 2 % 2, len(angles), 2))
    best = search(range(best - 1, best + 2))
    return float(angles[best])


def prominent_peaks(signal: np.ndarray, prominence: float) -> np.ndarray:
    """Indices of the local maxima of ``signal`` (the middle of a flat top) that stand at
    least ``prominence`` above the higher of their two bases, the lowest point on each side
    before a higher sample: ``scipy.signal.find_peaks(signal, prominence=...)``, whose
    import alone costs half a second of reading a page from a cold start.

    >>> prominent_peaks(np.array([0, 3, 1, 2, 1, 5, 5, 0]), 1.5)
    array([1, 5])
    """
    inner = signal[1:-1]
    rising = np.flatnonzero((inner > signal[:-2]) & (inner >= signal[2:])) + 1
    found = []
    for start in rising:
        height = signal[start]
        end = start
        while end + 1 < signal.size and signal[end + 1] == height:
            end += 1
        if end + 1 == signal.size or signal[end + 1] > height:
            continue  # a flat step up, not a top
        bases = []
        for side in (signal[:start][::-1], signal[end + 1 :]):  # outwards from the top
            higher = np.flatnonzero(side > height)
            bases.append(side[: higher[0]].min() if higher.size else side.min())
        if height - max(bases) >= prominence:
            found.append((start + end) // 2)
    return np.array(found, dtype=np.intp)


def line_spacing(mask: np.ndarray, min_spacing: int, strips: int = 4) -> int:
    """Typical distance between text lines of an ink ``mask`` (H, W): the first clear peak
    of the autocorrelation of the row profile, at least 0.6 of the highest (with uneven
    spacing the second or third multiple can come out higher). The profile is taken in
    ``strips`` vertical strips and their autocorrelations summed, so lines that slope
    differently blur less.

    >>> mask = np.zeros((100, 60), bool)
    >>> for top in range(5, 95, 10): mask[top:top + 4] = True
    >>> line_spacing(mask, min_spacing=4)
    10
    """
    columns = np.flatnonzero(mask.any(axis=0))
    if columns.size == 0:
        return min_spacing
    edges = np.linspace(columns[0], columns[-1] + 1, strips + 1).round().astype(int)
    total = np.zeros(mask.shape[0])
    for left, right in zip(edges[:-1], edges[1:], strict=True):
        profile = mask[:, left:right].sum(axis=1).astype(np.float64)
        centred = profile - profile.mean()
        correlation = np.correlate(centred, centred, mode="full")[len(centred) - 1 :]
        if correlation[0] > 0:
            total += correlation / correlation[0] * profile.sum()
    peaks = prominent_peaks(total[: len(total) // 2 + 1], 0.05 * total[0])
    # A peak of negative correlation is no repeat: a single word's profile (one line) has
    # only such peaks, and none would pass the 0.6 test below.
    peaks = peaks[(peaks >= min_spacing) & (total[peaks] > 0)]
    if peaks.size == 0:  # a single line: lines of its height would be ~1.3 heights apart
        rows = np.flatnonzero(mask.any(axis=1))
        return max(min_spacing, round(1.3 * (rows[-1] - rows[0] + 1)))
    return int(peaks[total[peaks] >= 0.6 * total[peaks].max()][0])


def reduce_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """Fraction of ink in each ``factor`` x ``factor`` block of a boolean map (float32;
    blocks over the edge count the missing pixels as paper)."""
    height, width = -(-mask.shape[0] // factor), -(-mask.shape[1] // factor)
    padded = np.zeros((height * factor, width * factor), np.uint8)
    padded[: mask.shape[0], : mask.shape[1]] = mask
    padded *= 255
    if factor == 1:
        return padded.astype(np.float32) * np.float32(1 / 255)
    means = np.asarray(Image.fromarray(padded).reduce(factor))  # box mean, rounded
    return means.astype(np.float32) * np.float32(1 / 255)


#: A page is turned a quarter when its column profile is this much more line-like than its
#: row profile (measured on 34 upright pages, 4 Hooker and 30 synthetic: rows 1.24-4.9 times
#: more line-like) and its words are taller than wide (log aspect of the blobs at 1/8 scale:
#: 0.57 or more on 68 upright pages, printed lines included).
QUARTER_TURN = 1.12


def quarter_turned(mask: np.ndarray) -> bool:
    """Whether the text lines run up or down the image: its words (blobs of ink on a map
    eight times coarser, where letters merge) are taller than wide, and its column profile
    is clearly more line-like than its row profile (:data:`QUARTER_TURN`). Both, so that
    one line of text (whose letters make a peaky column profile) stays as it is."""
    coarse = reduce_mask(mask, 8) > 0
    blobs, count = label(coarse, structure=np.ones((3, 3), bool))
    if count == 0:
        return False
    sizes = np.bincount(blobs.ravel())[1:]
    shapes = np.array(
        [(f[1].stop - f[1].start, f[0].stop - f[0].start) for f in find_objects(blobs)]
    )
    words = sizes >= 4
    if not words.any():
        return False
    tall = np.average(np.log(shapes[words, 1] / shapes[words, 0]), weights=sizes[words]) > 0.2
    fine = reduce_mask(mask, 2) > 0  # the profiles need no detail: a quarter of the points
    return bool(tall and line_likeness(fine.T) > QUARTER_TURN * line_likeness(fine))


def line_likeness(mask: np.ndarray, strips: int = 4) -> float:
    """How much the row profile of ``mask`` concentrates in lines: sum of squares over the
    square of the sum, times the profile's extent (1 for ink spread evenly over the rows,
    about spacing / line height for text lines), at the best of a few skews, in vertical
    strips (ink-weighted mean) so that lines need not be straight across the page."""
    columns = np.flatnonzero(mask.any(axis=0))
    if columns.size == 0:
        return 0.0
    edges = np.linspace(columns[0], columns[-1] + 1, strips + 1).round().astype(int)
    total = weight = 0.0
    for left, right in zip(edges[:-1], edges[1:], strict=True):
        ys, xs = np.nonzero(mask[:, left:right])
        if ys.size < 20:
            continue
        ys, xs = ys.astype(np.float32), (xs - (right - left) / 2).astype(np.float32)
        best = 0.0
        for degrees in (-6.0, -3.0, 0.0, 3.0, 6.0):
            profile = _sheared_rows(ys, xs, mask.shape[0], degrees)
            filled = np.flatnonzero(profile)
            if not filled.size:  # sheared off the mask: a strip much wider than it is high
                continue
            extent = filled[-1] - filled[0] + 1
            best = max(best, float((profile**2).sum()) / float(profile.sum()) ** 2 * extent)
        total += best * ys.size
        weight += ys.size
    return total / weight if weight else 0.0


def find_paper(image: Image.Image) -> Box | None:
    """The page in a photo with a darker background around it (a desk, a table): the box of
    the largest bright region, when it leaves at least 8% of the image around it and its
    edge is sharp (a shadow or uneven light falling off slowly is not a page edge). None
    when the page fills the image.

    >>> desk = Image.new("RGB", (512, 384), (70, 50, 40))
    >>> desk.paste((235, 230, 220), (100, 40, 330, 280))
    >>> find_paper(desk)
    (100, 40, 330, 280)
    """
    found = paper_region(image)
    return found[0] if found else None


#: How far (in r, g chromaticity) a bright pixel's hue may be from the paper's and still be
#: paper: skin is 0.03-0.07 from cream paper; a page's own shading and JPEG noise under 0.01
#: (measured on the Hooker pages photographed on desks with a hand at a corner).
PAPER_HUE = 0.02


def paper_region(image: Image.Image) -> tuple[Box, Image.Image] | None:
    """:func:`find_paper`'s box, and the page's outline as a mask (mode 1, image size)."""
    scale = min(1.0, 256 / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    small = image.convert("RGB").resize(size, Image.Resampling.BOX)
    grey = np.asarray(small.convert("L"), dtype=np.int16)
    threshold = _otsu(grey)
    if threshold is None:
        return None  # one grey level: nothing to tell apart
    bright = grey > threshold
    # Paper is bright and of the paper's hue: a hand holding the sheet is bright too, and
    # would join the desk to the page. Hue as chromaticity (r, g shares of r + g + b) is
    # the same in the light and in a shadow across the page.
    colour = np.asarray(small, dtype=np.float32)
    chroma = colour[..., :2] / np.maximum(colour.sum(axis=2, keepdims=True), 1.0)
    hue_gap = np.linalg.norm(chroma - np.median(chroma[bright], axis=0), axis=2)
    labels, count = label(bright & (hue_gap < PAPER_HUE))
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    page = binary_fill_holes(labels == sizes.argmax())
    rows, columns = np.flatnonzero(page.any(axis=1)), np.flatnonzero(page.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, columns[0], columns[-1] + 1
    area = (bottom - top) * (right - left)
    if area > 0.92 * grey.size or page.sum() < 0.15 * grey.size or page.sum() < 0.6 * area:
        return None  # fills the image, or too small / too ragged to be a sheet
    inside = binary_erosion(page, iterations=2) ^ binary_erosion(page, iterations=4)
    outside = binary_dilation(page, iterations=4) ^ binary_dilation(page, iterations=2)
    if not inside.any() or grey[inside].mean() - grey[outside].mean() < 40:
        return None  # no sharp edge: light falling off, not a sheet on a desk
    box = (
        math.floor(left / scale),
        math.floor(top / scale),
        min(image.width, math.ceil(right / scale)),
        min(image.height, math.ceil(bottom / scale)),
    )
    # The outline, a little inside the edge (the edge itself is dark against the desk).
    outline = Image.fromarray(binary_erosion(page, iterations=2))
    return box, outline.resize(image.size, Image.Resampling.NEAREST)


def _otsu(grey: np.ndarray) -> int | None:
    """The grey level that best splits ``grey`` into two classes (Otsu's method); None for
    an image of one level."""
    counts = np.bincount(grey.ravel(), minlength=256).astype(np.float64)
    levels = np.arange(counts.size)
    weight = np.cumsum(counts)
    mean = np.cumsum(counts * levels)
    total = weight[-1]
    below, above = weight, total - weight
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean[-1] * below / total - mean) ** 2 / (below * above / total)
    valid = (below > 0) & (above > 0)
    return int(np.argmax(np.where(valid, between, -1.0))) if valid.any() else None
