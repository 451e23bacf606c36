"""Paragraph/page -> line images, so a line model can read a whole page.

Method (classical, no training, ~50 ms of analysis per page on one core):

1. Paper: in a photo whose page lies on a darker background (a desk), the largest bright
   region with a sharp edge is the page; the image is cut to it and ink outside its outline
   ignored (:func:`find_paper`).
2. Ink mask (:func:`quill.preprocess.ink_mask`, polarity- and colour-free) at a fixed
   analysis size, so the cost is the same for any photo.
3. Rotation: a page whose words are taller than wide and whose column profile is clearly
   more line-like than its row profile is turned a quarter; after tracing, a page whose lines
   have more ink below their core than above (Latin script has more ascenders than
   descenders) and start ragged but end aligned is turned half (:data:`HALF_TURN`).
4. Skew: the angle in ``±max_skew_degrees`` whose sheared row profile has the most energy.
   Line spacing: the first clear peak of the row profile's autocorrelation, in strips.
5. Blocks: a recursive XY cut at wide empty bands (a section gap of a line spacing, a
   gutter of 1.5 spacings) gives columns, headings and margin notes, in reading order.
6. Lines (:func:`_trace`), on the mask reduced to ~24 pixels per line spacing: crests of
   the ink density smoothed along the line (0.6 spacings) and a little across it (0.1),
   each the highest within 0.4 spacings up and down and not far weaker than the strongest
   line next to it; crest fragments joined along a line (gaps between words, two crests of
   one line at its letters' middle and a heavy baseline), never across a block border or
   with a fragment running beside it at another height (an insertion between lines stays a
   line of its own). Every ink pixel goes to the nearest line (each connected letter whole);
   loops, capitals, accents and a rising last word that made crests of their own rejoin
   their line; specks and faint marks (a stamp, much fainter than the page's lines) are
   dropped, and connected ink taller than 2.5 spacings (a stamp's ring, a frame) ignored;
   a line too faint to keep that was joined from fragments which are text on their own
   keeps those (a stamp's letters beside a small printed line no longer drown it).
7. Each line's box is the extent of its ink (rows with under 3% of its fullest row
   trimmed), padded by ``margin``; boxes are in the pixels of the image as given, crops are
   upright and straightened.

Reading order: block by block (top to bottom, left column before right), lines in a block
by height (an insertion between two lines comes between them), margin notes (a narrow block
beside the main text) last, marked ``margin``.

Learned lines (``method="learned"``): steps 1-4 are the same; the lines are then found by a
small network trained on composed pages (:mod:`quill.models.line_detector`, the shipped
weights :data:`DEFAULT_DETECTOR`) on the deskewed ink map, put in the same reading order
(blocks of step 5, margin notes last), cut and straightened the same way; the upside-down
test of step 3 reads the ink of the lines found.

Limits: straight lines (mild skew, not curved or diagonal writing), Latin script for the
upside-down test, a page darker than its background is not found as paper, a stamp's
letters can still join a line of the letterhead beside them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from scipy.ndimage import (
    binary_dilation,
    binary_erosion,
    binary_fill_holes,
    distance_transform_edt,
    find_objects,
    label,
    maximum_filter1d,
    uniform_filter1d,
)

from quill.errors import QuillError
from quill.preprocess import (
    ImageSource,
    ink_map,
    ink_mask,
    paper_colour,
    read_image,
    sparse_ink_mask,
)
from quill.staged_model import ModelLoadError

Box = tuple[int, int, int, int]

#: The learned line detector's weights shipped with Quill (relative to the working
#: directory, like the default model: ``models/default``, or to this source checkout).
DEFAULT_DETECTOR = Path("models/line_detector/line_detector.pt")
#: The source checkout this module lives in (``src/quill/models/segment.py``).
CHECKOUT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class SegmentConfig:
    """Knobs of :func:`segment_lines`; the defaults suit scanned letters and phone photos."""

    #: How lines are found: ``trace`` follows crests of ink density (classical, no weights);
    #: ``learned`` asks the learned line detector (docs/models.md measures both).
    method: Literal["trace", "learned"] = "trace"
    #: The learned detector's weights (``method="learned"``); None: :data:`DEFAULT_DETECTOR`.
    detector: str | None = None

    #: Ink map value above which a pixel counts as ink.
    threshold: float = 0.35
    #: Analysis resolution: the image is scaled so its longer side is at most this.
    analysis_size: int = 1200
    #: Skew search range and step, degrees.
    max_skew_degrees: float = 5.0
    skew_step_degrees: float = 0.25
    #: Smallest line spacing looked for (pixels at analysis resolution).
    min_line_height: int = 8
    #: Extra margin around each crop, as a fraction of the line spacing.
    margin: float = 0.1
    #: Crops taller than this many pixels are cut at a reduced scale (never enlarged): a
    #: line model's preprocessing shrinks them to its working height anyway
    #: (``preprocess.WORK_SCALE`` x its line height), so cutting and straightening them at
    #: the scan's resolution would be wasted. None: crops at the image's resolution.
    crop_height: int | None = None
    #: Turn a page whose lines run up or down, or that is upside down, upright first.
    find_rotation: bool = True
    #: In a photo, cut the page away from a darker background around it (a desk).
    find_paper: bool = True


@dataclass(frozen=True)
class LineSegment:
    """One text line: its box (x0, y0, x1, y1) in the original image and its crop (upright,
    straightened)."""

    box: Box
    image: Image.Image
    #: The text block the line is in (a column, a heading, a note), numbered in reading order.
    block: int = 0
    #: A note in the margin beside the main text: it comes after the main text's lines.
    margin: bool = False


class Segmentation(list):
    """The lines of a page in reading order (a list of :class:`LineSegment`: main text block
    by block, left column before right, then margin notes), and what was found on the way.

    Attributes:
        rotation: degrees (0, 90, 180, 270) the image was turned counter-clockwise to read
            it, as ``image.rotate(rotation, expand=True)`` would: 90 for a page whose lines
            run top to bottom, 180 for one upside down.
        skew: degrees the upright page was straightened by (positive: its lines rose to the
            right).
        paper: the paper's box in the image when a darker background (a desk) surrounded it
            and was cut away; None when the page fills the image.
        columns: text columns side by side (the most blocks next to each other).
        notes: what a reader of the result should know, in words (no text found, the
            rotation, the paper, columns, margin notes).
        no_text: the image has marks, but far too many scattered pieces to be lines of
            writing (noise, a texture): its text is empty, whatever a line model would make
            of the whole image. False for a blank image, which
            :func:`quill.preprocess.is_blank` already tells, and for specks: a small line
            photo with faint strokes looks like specks at the analysis size (5 of 150 poilus
            line images that are not wide enough to be read as lines directly), and read
            whole, it reads well.
    """

    def __init__(
        self,
        lines: list[LineSegment] | tuple = (),
        *,
        rotation: int = 0,
        skew: float = 0.0,
        paper: Box | None = None,
        columns: int = 0,
        notes: tuple[str, ...] = (),
        no_text: bool = False,
    ) -> None:
        super().__init__(lines)
        self.rotation = rotation
        self.skew = skew
        self.paper = paper
        self.columns = columns
        self.notes = notes
        self.no_text = no_text

    def to_dict(self) -> dict:
        """The page-level findings (not the lines), JSON-ready."""
        return {
            "rotation": self.rotation,
            "skew": round(self.skew, 2),
            "paper": list(self.paper) if self.paper else None,
            "columns": self.columns,
            "notes": list(self.notes),
        }


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


#: Line spacing, in pixels of the map lines are traced on (the ink mask reduced by an integer
#: factor): fine enough to tell an insertion squeezed between two lines from them.
TRACE_SPACING = 24
#: A crest weaker than this fraction of the strongest one within 0.75 line spacings above or
#: below it is part of that line.
WEAK_CREST = 0.4
#: Two fragments are one line when their facing ends (or, side by side, their paths) are at
#: most this many line spacings apart in height.
JOIN_STEP = 0.33


@dataclass
class _Line:
    """A text line traced on the reduced map: its ridge pixels, its region and its box."""

    ys: np.ndarray  # ridge rows
    xs: np.ndarray  # ridge columns
    region: int
    x0: int = 0  # first column of the ridge
    #: Ridge row in each column from x0 (nan: none)
    path: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: Rows holding the middle 80% of the ink nearest the ridge (first, last).
    ink_rows: tuple[float, float] = (0.0, 0.0)
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # x0, y0, x1, y1 on the reduced map
    ink: float = 0.0
    margin: bool = False
    #: Ink in each row of the map (the line's own pixels).
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: The crest fragments it was joined from (their numbers in the fragments' owner map).
    fragments: tuple[int, ...] = ()

    @property
    def centre(self) -> float:
        """Mean row of the ridge."""
        return float(np.nanmean(self.path))


def _reduce(mask: np.ndarray, factor: int) -> np.ndarray:
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


def _smooth(density: np.ndarray, rows: float, columns: float) -> np.ndarray:
    """Two box filters along each axis (about a Gaussian of the given widths, at O(1) cost
    per pixel whatever the width)."""
    out = density
    for axis, size in ((0, rows), (1, columns)):
        size = max(1, round(size))
        if size > 1:
            out = uniform_filter1d(uniform_filter1d(out, size, axis=axis), size, axis=axis)
    return out


def _empty_runs(counts: np.ndarray, tolerance: float) -> list[tuple[int, int]]:
    """Inner runs (start, end) of ``counts`` at or below ``tolerance`` (not touching either
    end)."""
    empty = np.concatenate(([False], counts <= tolerance, [False]))
    edges = np.flatnonzero(np.diff(empty.astype(np.int8)))
    runs = [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]
    return [(a, b) for a, b in runs if a > 0 and b < len(counts)]


def text_blocks(occupied: np.ndarray, spacing: float) -> list[tuple[int, int, int, int]]:
    """Blocks of text (x0, y0, x1, y1) of a boolean map, in reading order: recursive XY cut
    at the widest empty band, a row band of at least one line ``spacing`` (a gap between
    sections) or a column band of 1.5 spacings through a block at least 2.5 lines high (a
    gutter between columns, or between a margin note and the text). Row cuts order blocks
    top to bottom, column cuts left to right.

    >>> page = np.zeros((100, 100), bool); page[10:90, 5:40] = page[10:90, 60:95] = True
    >>> text_blocks(page, 10)
    [(5, 10, 40, 90), (60, 10, 95, 90)]
    """
    blocks: list[tuple[int, int, int, int]] = []

    def cut(x0: int, y0: int, x1: int, y1: int) -> None:
        region = occupied[y0:y1, x0:x1]
        rows, columns = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
        if rows.size == 0:
            return
        x0, x1 = x0 + int(columns[0]), x0 + int(columns[-1]) + 1
        y0, y1 = y0 + int(rows[0]), y0 + int(rows[-1]) + 1
        region = occupied[y0:y1, x0:x1]
        best: tuple[float, str, int, int] | None = None
        for start, end in _empty_runs(region.sum(axis=1), 0):
            if end - start >= spacing:
                best = max(best or (0.0, "", 0, 0), ((end - start) / spacing, "row", start, end))
        if y1 - y0 >= 2.5 * spacing:
            tolerance = 1 + 0.01 * (y1 - y0)  # a speck or two in a gutter
            for start, end in _empty_runs(region.sum(axis=0), tolerance):
                if end - start >= 1.5 * spacing:
                    gap = (end - start) / (1.5 * spacing)
                    best = max(best or (0.0, "", 0, 0), (gap, "column", start, end))
        if best is None:
            blocks.append((x0, y0, x1, y1))
        elif best[1] == "row":
            cut(x0, y0, x1, y0 + best[2])
            cut(x0, y0 + best[3], x1, y1)
        else:
            cut(x0, y0, x0 + best[2], y1)
            cut(x0 + best[3], y0, x1, y1)

    cut(0, 0, occupied.shape[1], occupied.shape[0])
    return blocks


#: The most line fragments (crests of ink, :func:`_ridges`) a page may make. Hooker's
#: letters make 70 to 150 for 12 to 20 lines, about 7 a line, so this is room for some 280
#: lines: more than a page at the analysis size can hold. Noise or a photographed texture
#: makes tens of thousands, and joining them in pairs (:func:`_join`'s n x n arrays) took
#: 12 GB and minutes.
MAX_FRAGMENTS = 2000


class _TooManyFragments(QuillError):
    """The ink breaks into more than :data:`MAX_FRAGMENTS` fragments: not lines of writing.
    Caught by :func:`segment_lines`, which says so in its notes."""

    code = "not_writing"

    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.count = count


def _ridges(
    density: np.ndarray, spacing: float, regions: np.ndarray
) -> tuple[list[_Line], np.ndarray]:
    """Line fragments: runs of pixels where the density, smoothed along the line and a little
    across it, peaks within 0.4 line spacings up and down, with ink nearby; and that smoothed
    density. :class:`_TooManyFragments` past :data:`MAX_FRAGMENTS`, before any is built."""
    along = _smooth(density, 0.1 * spacing, 0.6 * spacing)
    near = _smooth(density, 0.1 * spacing, 0.2 * spacing)
    positive = along[along > 0]
    rank = int(0.99 * (positive.size - 1))
    top = float(np.partition(positive, rank)[rank]) if positive.size else 0.0  # 99th percentile
    window = max(3, int(0.8 * spacing) | 1)
    crest = (along >= maximum_filter1d(along, window, axis=0)) & (along > 0.08 * top)
    crest &= (near > 0.04 * top) & (regions > 0)
    # A weak crest beside a strong line is a piece of it (ascender tops, a t-bar, a quote
    # mark), not a line of its own; an insertion between lines is about as dense as they are.
    crest &= along >= WEAK_CREST * maximum_filter1d(along, int(1.5 * spacing) | 1, axis=0)
    labels, count = label(crest, structure=np.ones((3, 3), bool))
    if count > MAX_FRAGMENTS:
        raise _TooManyFragments(count)
    fragments = []
    for index, found in enumerate(find_objects(labels), start=1):
        ys, xs = np.nonzero(labels[found] == index)
        ys, xs = ys + found[0].start, xs + found[1].start
        columns = xs - found[1].start
        path = np.bincount(columns, weights=ys) / np.bincount(columns)
        region = int(regions[ys[0], xs[0]])
        fragments.append(_Line(ys, xs, region, found[1].start, path, fragments=(index,)))
    return fragments, along


def _join(
    fragments: list[_Line], spacing: float, along: np.ndarray
) -> tuple[list[_Line], list[int]]:
    """Fragments of one line joined: same block, at most two spacings apart along the line
    (a gap between words) and :data:`JOIN_STEP` spacings across it at the facing ends, or
    half a spacing for two crests of one line (side by side with unbroken ink between them,
    or end to end with their ink in the same rows); never two that run side by side at
    different heights (an insertion above a line, the next line). Closest pairs first.
    Returns the lines and the line of each fragment."""
    count = len(fragments)
    if count < 2:
        return fragments, list(range(count))
    half = max(1, round(spacing / 2))
    x0 = np.array([f.x0 for f in fragments])
    x1 = np.array([f.x0 + f.path.size for f in fragments])
    left = np.array([f.path[:half].mean() for f in fragments])
    right = np.array([f.path[-half:].mean() for f in fragments])
    middle = np.array([f.path.mean() for f in fragments])
    region = np.array([f.region for f in fragments])
    top = np.array([f.ink_rows[0] for f in fragments], float)
    bottom = np.array([f.ink_rows[1] for f in fragments], float)
    shared_rows = np.minimum.outer(bottom, bottom) - np.maximum.outer(top, top)
    lowest = np.minimum.outer(bottom - top, bottom - top)
    same_row = shared_rows >= 0.6 * np.maximum(lowest, 1)

    gap = x0[None, :] - x1[:, None]  # [i, j]: from the end of i to the start of j
    candidate = (
        (x0[:, None] <= x0[None, :])
        & (region[:, None] == region[None, :])
        & (gap <= 2 * spacing)
        & ~np.eye(count, dtype=bool)
    )
    step = np.abs(right[:, None] - left[None, :])
    overlapping = (
        candidate & (gap < -spacing / 4) & (np.abs(middle[:, None] - middle[None, :]) < spacing)
    )
    # Pairs that may differ by half a spacing: two crests of one line (its letters' middle
    # and a heavy baseline).
    unbroken: set[tuple[int, int]] = set()
    for i, j in zip(*np.nonzero(overlapping), strict=True):  # side by side: compare there
        step[i, j] = _disagreement(fragments[i], fragments[j])
        if JOIN_STEP * spacing < step[i, j] <= spacing / 2 and _unbroken(
            fragments[i], fragments[j], along
        ):
            step[i, j] = JOIN_STEP * spacing
            unbroken.add((int(i), int(j)))
    # End to end, two pieces whose ink fills the same rows may have their crests further
    # apart (digits or capitals against a hand's heavy baseline).
    abutting = same_row & (gap >= -spacing / 4) & (gap <= spacing) & (step <= spacing / 2)
    accepted = candidate & ((step <= JOIN_STEP * spacing) | abutting)
    unbroken |= {(int(i), int(j)) for i, j in zip(*np.nonzero(accepted & abutting), strict=True)}
    pairs = sorted(
        (float(step[i, j] + 0.1 * max(gap[i, j], 0)), int(i), int(j))
        for i, j in zip(*np.nonzero(accepted), strict=True)
    )
    root = list(range(count))
    paths: dict[int, np.ndarray] = {}

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    def path(i: int) -> np.ndarray:
        if i not in paths:
            full = np.full(along.shape[1], np.nan)
            full[fragments[i].x0 : fragments[i].x0 + fragments[i].path.size] = fragments[i].path
            paths[i] = full
        return paths[i]

    for _, i, j in pairs:
        a, b = find(i), find(j)
        if a == b:
            continue
        pa, pb = path(a), path(b)
        both = ~np.isnan(pa) & ~np.isnan(pb)
        limit = (0.5 if (i, j) in unbroken else JOIN_STEP) * spacing
        if both.any() and np.abs(pa[both] - pb[both]).mean() > limit:
            continue
        root[b] = a
        paths[a] = np.where(np.isnan(pa), pb, np.where(np.isnan(pb), pa, (pa + pb) / 2))
    groups: dict[int, list[_Line]] = {}
    for i, fragment in enumerate(fragments):
        groups.setdefault(find(i), []).append(fragment)
    number = {key: index for index, key in enumerate(groups)}
    lines = []
    for key, parts in groups.items():
        if len(parts) == 1:
            lines.append(parts[0])
            continue
        full = paths[key]
        known = np.flatnonzero(~np.isnan(full))
        lines.append(
            _Line(
                np.concatenate([p.ys for p in parts]),
                np.concatenate([p.xs for p in parts]),
                parts[0].region,
                int(known[0]),
                full[known[0] : known[-1] + 1],
                fragments=tuple(number for part in parts for number in part.fragments),
            )
        )
    return lines, [number[find(i)] for i in range(count)]


def _unbroken(a: _Line, b: _Line, along: np.ndarray) -> bool:
    """Whether the smoothed density stays above 60% of the lower crest all the way between
    two side-by-side fragments (in most shared columns): one line's letters, not two lines
    (or a line and an insertion) with a valley between."""
    start, end = max(a.x0, b.x0), min(a.x0 + a.path.size, b.x0 + b.path.size)
    held = []
    for column in range(start, end):
        ya, yb = a.path[column - a.x0], b.path[column - b.x0]
        if np.isnan(ya) or np.isnan(yb):
            continue
        low, high = sorted((round(ya), round(yb)))
        profile = along[low : high + 1, column]
        held.append(profile.min() >= 0.6 * min(profile[0], profile[-1]))
    return bool(held) and sum(held) > 0.5 * len(held)


def _disagreement(a: _Line, b: _Line) -> float:
    """Mean height difference of two fragments over the columns they share."""
    start, end = max(a.x0, b.x0), min(a.x0 + a.path.size, b.x0 + b.path.size)
    return float(
        np.abs(a.path[start - a.x0 : end - a.x0] - b.path[start - b.x0 : end - b.x0]).mean()
    )


def _nearest(
    density: np.ndarray, fragments: list[_Line], spacing: float, bridged: bool = False
) -> np.ndarray:
    """Owner of each ink pixel of the map: 1 + the index of the nearest ridge (a column step
    counts double a row step), 0 for paper and for ink farther than 0.9 spacing from any.
    ``bridged``: each ridge is its path, interpolated across its gaps."""
    seeds = np.zeros(density.shape, np.int32)
    for number, fragment in enumerate(fragments, start=1):
        if bridged:
            rows = np.rint(_bridged(fragment.path)).astype(np.intp)
            seeds[rows, np.arange(rows.size) + fragment.x0] = number
        else:
            seeds[fragment.ys, fragment.xs] = number
    distance, (iy, ix) = distance_transform_edt(
        seeds == 0, sampling=(1.0, 2.0), return_indices=True
    )
    return np.where((distance <= 0.9 * spacing) & (density > 0), seeds[iy, ix], 0)


def _row_ink(density: np.ndarray, owner: np.ndarray, count: int) -> np.ndarray:
    """Ink in each row of the map per owner: (count, H), row 0 for unowned ink."""
    height = density.shape[0]
    cells = (owner * height + np.arange(height)[:, None]).ravel()
    return np.bincount(cells, density.ravel(), count * height).reshape(count, height)


def _ink_rows(density: np.ndarray, owner: np.ndarray, fragments: list[_Line]) -> None:
    """Each fragment's :attr:`_Line.ink_rows`: 10th and 90th percentile rows of its ink."""
    count = len(fragments) + 1
    cumulative = np.cumsum(_row_ink(density, owner, count), axis=1)
    total = np.maximum(cumulative[:, -1:], 1e-9)
    low = (cumulative < 0.1 * total).sum(axis=1)
    high = (cumulative < 0.9 * total).sum(axis=1)
    for number, fragment in enumerate(fragments, start=1):
        fragment.ink_rows = (float(low[number]), float(high[number]) + 1)


def _measure(density: np.ndarray, owner: np.ndarray, lines: list[_Line], spacing: float) -> None:
    """Each line's box: the extent of the ink it owns, trimmed of rows with under 3% of its
    fullest row and of columns with only a speck; its ink and ink per row with it."""
    width = density.shape[1]
    count = len(lines) + 1
    rows = _row_ink(density, owner, count)
    cells = (owner * width + np.arange(width)[None, :]).ravel()
    columns = np.bincount(cells, density.ravel(), count * width).reshape(count, width)
    columns = uniform_filter1d(columns, max(1, round(spacing / 4)), axis=1)
    for number, line in enumerate(lines, start=1):
        row = line.rows = rows[number]
        filled = np.flatnonzero(row > 0.03 * row.max(initial=0.0))
        used = np.flatnonzero(columns[number] > 0.02)
        line.ink = 0.0
        if filled.size and used.size:
            line.box = (int(used[0]), int(filled[0]), int(used[-1]) + 1, int(filled[-1]) + 1)
            line.ink = float(row.sum())


def _attached(
    owner: np.ndarray,
    strokes: np.ndarray,
    lines: list[_Line],
    widths: list[float],
    longest: float,
    apart: float,
) -> np.ndarray:
    """Where each short line goes when it is a loop or a stroke of another: most of its ink
    lies in connected strokes that also run into other lines (each holding at least half as
    much of the stroke); it goes to the nearest of those, by ridge height. Returns a lookup
    table for ``owner`` (identity for the others)."""
    count = len(lines) + 1
    owners, stroke_ids, counts = _shares(owner, strokes)
    # For each (owner, stroke) pair: the most any *other* owner holds of that stroke.
    first, second, leader = _two_largest(stroke_ids, counts, owners, int(strokes.max()) + 1)
    rival = np.where(leader[stroke_ids] == owners, second[stroke_ids], first[stroke_ids])
    shared = rival >= 0.5 * counts
    total = np.bincount(owners, counts, minlength=count)
    shared_total = np.bincount(owners, np.where(shared, counts, 0), minlength=count)
    centres = np.array([np.inf] + [line.centre for line in lines])
    lookup = np.arange(count)
    for number in range(1, count):
        if widths[number - 1] > longest or not shared_total[number] > 0.5 * total[number]:
            continue
        mine = owners == number
        touched = stroke_ids[mine]
        holds = counts[mine]
        pairs = np.isin(stroke_ids, touched) & (owners != number)
        # another owner shares a stroke when it holds at least half of what this one does
        needed = dict(zip(touched.tolist(), (0.5 * holds).tolist(), strict=True))
        others = np.unique(
            [
                o
                for o, s, c in zip(owners[pairs], stroke_ids[pairs], counts[pairs], strict=True)
                if c >= needed[int(s)]
            ]
        ).astype(np.int64)
        target = int(others[np.argmin(np.abs(centres[others] - centres[number]))])
        if abs(centres[target] - centres[number]) > apart:  # else: the same line, joined later
            lookup[number] = target
    # A chain (a -> b -> c) ends where it stops; a cycle keeps its first line.
    for number in range(1, count):
        seen = {number}
        while lookup[lookup[number]] != lookup[number] and lookup[number] not in seen:
            seen.add(int(lookup[number]))
            lookup[number] = lookup[lookup[number]]
    return lookup


@dataclass
class _Trace:
    """The lines traced on a deskewed mask, in reading order, with what the page told."""

    lines: list[_Line]
    blocks: list[tuple[int, int, int, int]]
    factor: int  # mask pixels per traced-map pixel
    #: Evidence the page is upright (> 0) or upside down (< 0); 0 without enough lines.
    upright: float


def _trace(mask: np.ndarray, spacing: int) -> _Trace:
    """Trace the text lines of a deskewed ink ``mask`` whose lines are ``spacing`` apart."""
    factor = max(1, round(spacing / TRACE_SPACING))
    density = _reduce(mask, factor)
    step = spacing / factor
    density = _without_graphics(density, step)
    occupied = density > 0
    blocks = text_blocks(occupied, step)
    regions = np.zeros(density.shape, np.int32)
    for number, (x0, y0, x1, y1) in enumerate(blocks, start=1):
        regions[y0:y1, x0:x1] = number
    fragments, along = _ridges(density, step, regions)
    owner = _nearest(density, fragments, step)
    strokes = _letter_strokes(occupied, 1.5 * step)
    # Loops and strokes of a line that made ridges of their own go to that line...
    lengths = [f.path.size / step for f in fragments]
    lookup = _attached(owner, strokes, fragments, lengths, 1.0, JOIN_STEP * step)
    kept = [i for i in range(len(fragments)) if lookup[i + 1] == i + 1]
    _ink_rows(density, owner, fragments)
    fragment_of = lookup[owner]  # each pixel's fragment (an attached stroke's: its host's)
    dense = _dense(density, fragment_of, fragments, step)
    lines, group = _join([fragments[i] for i in kept], step, along)
    line_of = np.zeros(len(fragments) + 1, np.int64)
    line_of[[i + 1 for i in kept]] = np.asarray(group) + 1
    # Ink goes to the nearest line, its ridge bridged across gaps between words (else an
    # underline below a gap goes to the line above), except what went to absorbed strokes.
    absorbed = lookup[owner] != owner
    nearest = _nearest(density, lines, step, bridged=True)
    owner = np.where(absorbed, line_of[lookup[owner]], nearest)
    _measure(density, owner, lines, step)
    # ... and so do short lines that are mostly such strokes (a lone loop, a flourish), and
    # small pieces inside or at the end of a line (a capital, a tall "!").
    widths = [(line.box[2] - line.box[0]) / step for line in lines]
    lookup = _attached(owner, strokes, lines, widths, 3.0, JOIN_STEP * step)
    for number, text in enumerate(_is_text(lines, step), start=1):
        if not text and lookup[number] == number:
            lookup[number] = 0  # a speck, a faint mark: nobody's
    lookup = _absorb(lines, lookup, step)
    for _ in range(len(lines)):  # a piece of a line that went to another goes there too
        if (lookup[lookup] == lookup).all():
            break
        lookup = lookup[lookup]
    if (lookup != np.arange(lookup.size)).any():
        kept = [i for i in range(len(lines)) if lookup[i + 1] == i + 1]
        renumber = np.zeros(len(lines) + 1, np.int64)
        renumber[[i + 1 for i in kept]] = np.arange(1, len(kept) + 1)
        owner = renumber[lookup[owner]]
        lines = [lines[i] for i in kept]
    owner = _by_letter(owner, strokes, 0.9 * step)
    _measure(density, owner, lines, step)
    owner = _without_faint_company(density, owner, fragment_of, dense, lines, step)
    upright = _upright(lines, step)
    lines = [line for line, text in zip(lines, _is_text(lines, step), strict=True) if text]
    _mark_margins(lines, blocks)
    lines.sort(key=lambda line: (line.margin, line.region, line.centre, line.box[0]))
    return _Trace(lines, blocks, factor, upright)


def _upright(lines: list[_Line], spacing: float) -> float:
    """Evidence that the text is upright (> 0) rather than upside down (< 0), in [-2, 2]:

    - Latin script has more ascenders (b d f h k l t, capitals, accents, i-dots) than
      descenders (g j p q y): the share of ink above each line's core (rows with at least
      half its fullest row's ink) minus the share below;
    - lines start at a margin and end ragged: how much more the right ends of the lines
      scatter than their left starts (median deviations, per line spacing).

    0 with fewer than three lines two spacings long: too little to tell.
    """
    long = [i for i, line in enumerate(lines) if line.box[2] - line.box[0] >= 2 * spacing]
    if len(long) < 3:
        return 0.0
    above = below = 0.0
    for index in long:
        row = lines[index].rows
        core = np.flatnonzero(row >= 0.5 * row.max())
        above += row[: core[0]].sum()
        below += row[core[-1] + 1 :].sum()
    starts = np.array([lines[i].box[0] for i in long], float)
    ends = np.array([lines[i].box[2] for i in long], float)
    left = np.median(np.abs(starts - np.median(starts)))
    right = np.median(np.abs(ends - np.median(ends)))
    return float(
        (above - below) / max(above + below, 1e-9) + (right - left) / (right + left + spacing)
    )


def _without_graphics(density: np.ndarray, spacing: float) -> np.ndarray:
    """The map without connected ink taller than 2.5 line spacings: a stamp's ring, a frame,
    a rule down the margin, a drawing. (Handwriting whose lines touch spans two spacings at
    most: none taller on the four Hooker pages and 30 synthetic ones but a stamp.)"""
    blobs, _ = label(density > 0, structure=np.ones((3, 3), bool))
    tall = np.asarray(
        [False] + [f[0].stop - f[0].start > 2.5 * spacing for f in find_objects(blobs)]
    )  # (labels + 1,): label 0 is the background
    return np.where(tall[blobs], np.float32(0), density) if tall.any() else density


def _letter_strokes(occupied: np.ndarray, tallest: float) -> np.ndarray:
    """Connected strokes of the map (labels), without those taller than ``tallest`` (a
    stamp's circle, a rule, a long flourish: not a letter tying a loop to its line)."""
    strokes, _ = label(occupied, structure=np.ones((3, 3), bool))
    tall = [False] + [found[0].stop - found[0].start > tallest for found in find_objects(strokes)]
    return np.where(np.asarray(tall)[strokes], 0, strokes)


def _by_letter(owner: np.ndarray, strokes: np.ndarray, tallest: float) -> np.ndarray:
    """Each connected stroke no taller than ``tallest`` (a letter or a word, not two lines
    touching) goes whole to the line that owns most of it: a t-bar or a capital's flourish
    nearer the next line stays with its letter."""
    count = int(strokes.max()) + 1
    if count == 1:
        return owner
    owners, stroke_ids, counts = _shares(owner, strokes)
    _, _, major = _two_largest(stroke_ids, counts, owners, count)
    heights = np.zeros(count)
    for number, found in enumerate(find_objects(strokes), start=1):
        if found is not None:
            heights[number] = found[0].stop - found[0].start
    letter = (heights <= tallest) & (major > 0)
    return np.where(letter[strokes], major[strokes], owner)


def _shares(owner: np.ndarray, strokes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How much of each connected stroke each line owns, as three aligned arrays (owner,
    stroke, pixels), pairs with no pixels, no owner or no stroke left out. Sparse: a noisy
    page has thousands of both, whose full table would not fit in memory."""
    strokes_count = int(strokes.max()) + 1
    keys, counts = np.unique(owner.astype(np.int64) * strokes_count + strokes, return_counts=True)
    owners, stroke_ids = np.divmod(keys, strokes_count)
    keep = (owners > 0) & (stroke_ids > 0)
    return owners[keep], stroke_ids[keep], counts[keep]


def _two_largest(
    stroke_ids: np.ndarray, counts: np.ndarray, owners: np.ndarray, strokes_count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per stroke: the largest share, the second largest, and the owner of the largest
    (the lowest-numbered on a tie; 0 and 0 where nobody owns any of it)."""
    first = np.zeros(strokes_count, np.int64)
    second = np.zeros(strokes_count, np.int64)
    leader = np.zeros(strokes_count, np.int64)
    if not stroke_ids.size:  # no line owns any stroke (a dot and a rule, say)
        return first, second, leader
    order = np.lexsort((owners, -counts, stroke_ids))
    ids, shares, holders = stroke_ids[order], counts[order], owners[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    first[ids[starts]] = shares[starts]
    leader[ids[starts]] = holders[starts]
    runner_up = starts + 1
    has_second = runner_up < ids.size
    has_second[has_second] &= ids[runner_up[has_second]] == ids[starts[has_second]]
    second[ids[starts[has_second]]] = shares[runner_up[has_second]]
    return first, second, leader


def _absorb(lines: list[_Line], lookup: np.ndarray, spacing: float) -> np.ndarray:
    """Pieces of a line traced apart join a longer line of their block, the one whose ridge
    (bridged across its gaps) is nearest to the piece's middle or to its own ridge:

    - in the line: over a stretch where the line has no ridge of its own (the piece's taller
      letters, digits or brackets took the crest there), or with most of its ink in the
      line's core rows, within half a spacing, at most four spacings wide;
    - over the line's ink: within a third of a spacing, at most two spacings wide (a capital,
      a tall "!"), and no other line under it nearer;
    - beyond one end (at most 1.5 spacings away): a last word that rises or drops, within
      half a spacing of the ridge's end, at most 2.5 spacings wide;
    - a speck (at most 0.7 spacings wide: a loop, an accent, a quote mark) within 0.6 of a
      spacing, over the line or half a spacing beyond its end.

    An insertion between two lines lies over the ink of both and further from them."""
    lookup = lookup.copy()
    boxes = np.array([line.box for line in lines]).reshape(-1, 4)
    widths = boxes[:, 2] - boxes[:, 0]
    half = max(1, round(spacing / 2))
    ridges = [_bridged(line.path) for line in lines]
    for index, line in enumerate(lines):
        if widths[index] > 4 * spacing or lookup[index + 1] != index + 1:
            continue
        x0, y0, x1, y1 = boxes[index]
        heights = ((y0 + y1) / 2, line.centre)
        speck = widths[index] <= 0.7 * spacing
        best, nearest_under = None, np.inf
        for other, host in enumerate(lines):
            if other == index or host.region != line.region or lookup[other + 1] != other + 1:
                continue
            start, end = max(x0, host.x0), min(x1, host.x0 + host.path.size)
            if end - start >= widths[index] / 2:  # over the host
                stretch = slice(start - host.x0, end - host.x0)
                distance = min(abs(h - ridges[other][stretch].mean()) for h in heights)
                if speck:
                    fits = distance <= 0.6 * spacing
                elif np.isnan(host.path[stretch]).mean() >= 0.6 or _in_core(line, host):
                    fits = distance <= spacing / 2  # in a gap of its ridge, or its letters
                else:
                    nearest_under = min(nearest_under, distance)
                    fits = widths[index] <= 2 * spacing and distance <= spacing / 3
            else:  # beyond one end (or hardly over it): the ridge's height at that end
                right = x0 + x1 >= 2 * host.x0 + host.path.size
                ridge = (ridges[other][-half:] if right else ridges[other][:half]).mean()
                distance = min(abs(h - ridge) for h in heights)
                fits = (
                    start - end <= (0.5 if speck else 1.5) * spacing
                    and distance <= (0.6 if speck else 0.5) * spacing
                    and widths[index] <= 2.5 * spacing
                )
            if fits and widths[other] > widths[index] and (best is None or distance < best[0]):
                best = (distance, other)
        if best is not None and best[0] <= nearest_under:
            lookup[index + 1] = best[1] + 1
    return lookup


def _in_core(piece: _Line, line: _Line) -> bool:
    """Whether most of ``piece``'s ink lies in the core rows of ``line`` (those with at least
    half its fullest row's ink): written in that line, not above or below it."""
    if not piece.rows.size or not line.rows.size:
        return False
    core = np.flatnonzero(line.rows >= 0.5 * line.rows.max())
    return bool(piece.rows[core[0] : core[-1] + 1].sum() >= 0.5 * piece.ink)


def _bridged(path: np.ndarray) -> np.ndarray:
    """A ridge path with its gaps (nan) filled by straight lines."""
    known = ~np.isnan(path)
    if known.all():
        return path
    columns = np.arange(path.size)
    return np.interp(columns, columns[known], path[known])


def _is_text(lines: list[_Line], spacing: float) -> list[bool]:
    """Which lines are text: not specks (at least a third of a spacing wide, a fifth high,
    with ink of a 0.02-square-spacing blot) and not much fainter than the page's lines
    (:func:`_faint`: a stamp, bleed-through, a ruled edge)."""
    solid = _solid(lines, spacing)
    return [ok and not faint for ok, faint in zip(solid, _faint(lines, solid), strict=True)]


def _solid(lines: list[_Line], spacing: float) -> list[bool]:
    """Which lines are more than a speck: at least a third of a spacing wide, a fifth high,
    with ink of a 0.02-square-spacing blot."""
    return [
        line.box[2] - line.box[0] >= spacing / 3
        and line.box[3] - line.box[1] >= spacing / 5
        and line.ink >= 0.02 * spacing**2
        for line in lines
    ]


#: A line whose ink per box area is under this fraction of the median of the page's solid
#: lines is a faint mark, not text (a stamp's letters: 0.1 of the median on Hooker's page
#: 146_001; its small printed letterhead, the thinnest real text seen, 0.5).
FAINT = 0.3


def _faint(lines: list[_Line], solid: list[bool]) -> list[bool]:
    """Which lines are much fainter than the ``solid`` ones: ink per box area under
    :data:`FAINT` of their median; none when no line is solid (nothing to compare with)."""
    density = [
        line.ink / max(1, (line.box[2] - line.box[0]) * (line.box[3] - line.box[1]))
        for line in lines
    ]
    if not any(solid):
        return [False] * len(lines)
    typical = float(np.median([d for d, ok in zip(density, solid, strict=True) if ok]))
    return [d < FAINT * typical for d in density]


def _dense(
    density: np.ndarray, owner: np.ndarray, fragments: list[_Line], spacing: float
) -> np.ndarray:
    """Which crest fragments are text on their own (:func:`_is_text` among the fragments,
    each measured on the ink it owns), as a lookup by fragment number (0: none)."""
    _measure(density, owner, fragments, spacing)
    return np.array([False, *_is_text(fragments, spacing)])


def _without_faint_company(
    density: np.ndarray,
    owner: np.ndarray,
    fragment_of: np.ndarray,
    dense: np.ndarray,
    lines: list[_Line],
    spacing: float,
) -> np.ndarray:
    """``owner`` with each line that is too faint to be text (:func:`_faint`) but was
    joined from some fragments that are text on their own (``dense``, by fragment number;
    ``fragment_of``: each pixel's fragment) left with the ink of those alone.

    Faint marks at a line's height a word's gap beside it join it like words: a stamp's
    letters beside a small printed letterhead line (Hooker's 146_001: "THE CAMP." and the
    stamp's date, 0.9 spacings apart) dilute its ink per box area below the faintness test,
    and the whole line was dropped. What is kept is what the test would keep had it been
    traced alone, so whether a line survives no longer depends on the faint marks beside
    it; a stamp or bleed-through whose pieces are all faint is still dropped, and a line
    that passes the test is left as it is. The lines changed are measured again."""
    solid = _solid(lines, spacing)
    company = np.zeros(owner.shape, bool)
    for number, (line, faint) in enumerate(zip(lines, _faint(lines, solid), strict=True), 1):
        kept = [part for part in line.fragments if dense[part]]
        if solid[number - 1] and faint and 0 < len(kept) < len(line.fragments):
            company |= (owner == number) & ~np.isin(fragment_of, kept)
    if not company.any():
        return owner
    owner = np.where(company, 0, owner)
    _measure(density, owner, lines, spacing)
    return owner


def _mark_margins(lines: list[_Line], blocks: list[tuple[int, int, int, int]]) -> None:
    """Lines of a narrow block beside the main text (the block with the most lines), left or
    right of it and overlapping its rows, are margin notes."""
    if not lines:
        return
    counts = np.bincount([line.region for line in lines], minlength=len(blocks) + 1)
    main = int(counts.argmax())
    mx0, my0, mx1, my1 = blocks[main - 1]
    for line in lines:
        x0, y0, x1, y1 = blocks[line.region - 1]
        beside = x1 <= mx0 or x0 >= mx1
        overlapping = min(y1, my1) - max(y0, my0) > 0
        line.margin = (
            line.region != main and beside and overlapping and x1 - x0 < 0.35 * (mx1 - mx0)
        )


def _to_original(x: float, y: float, skew: float, cx: float, cy: float) -> tuple[float, float]:
    """Where a point of the deskewed image lies in the original: rotate it back by ``skew``
    degrees counter-clockwise about the centre (as PIL's ``rotate`` does, y pointing down)."""
    angle = math.radians(skew)
    dx, dy = x - cx, y - cy
    return (
        cx + dx * math.cos(angle) + dy * math.sin(angle),
        cy - dx * math.sin(angle) + dy * math.cos(angle),
    )


#: A page is turned a quarter when its column profile is this much more line-like than its
#: row profile (measured on 34 upright pages, 4 Hooker and 30 synthetic: rows 1.24-4.9 times
#: more line-like) and its words are taller than wide (log aspect of the blobs at 1/8 scale:
#: 0.57 or more on 68 upright pages, printed lines included).
QUARTER_TURN = 1.12
#: Upside-down evidence (:func:`_upright`) beyond which a page is turned half (measured on
#: the same 34 pages: upright +0.24 or more, turned -0.28 or less; four lines of a printed
#: pangram, heavy in descenders and indented, -0.20).
HALF_TURN = 0.25


def segment_lines(source: ImageSource, config: SegmentConfig | None = None) -> Segmentation:
    """Split a paragraph or page image into text lines, in reading order.

    Returns a :class:`Segmentation`: a list of :class:`LineSegment` (empty for an image
    without ink, or with too little contrast to hold any:
    :data:`quill.preprocess.BLANK_CONTRAST`, with a note saying so) that also tells the
    rotation found, the paper found in a photo, the columns and notes. Boxes are in the
    pixels of the image as given; crops are upright and straightened, ordinary images (L for
    a greyscale source, else RGB): feed them to :func:`quill.preprocess.preprocess` like
    any line photo.
    """
    return _segment(read_image(source), config or SegmentConfig(), look_closer=True)


def _segment(image: Image.Image, config: SegmentConfig, look_closer: bool) -> Segmentation:
    """:func:`segment_lines` of a decoded image; ``look_closer``: where the analysis size
    finds no ink, look for writing too small a part of the image to be seen there, and
    segment the part of the image around it."""
    scale = min(1.0, config.analysis_size / max(image.size))
    small = image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
        Image.Resampling.BOX,
        reducing_gap=2.0,  # a huge photo is first reduced by an integer factor: one cheap pass
    )
    notes: list[str] = []
    found = _paper(small) if config.find_paper else None
    paper, offset, outline = None, (0, 0), None
    if found is not None:
        paper, outline = found[0], np.asarray(found[1].crop(found[0]))
        x0, y0, x1, y1 = paper
        offset = (math.floor(x0 / scale), math.floor(y0 / scale))
        image = image.crop((*offset, math.ceil(x1 / scale), math.ceil(y1 / scale)))
        small = small.crop(paper)
        notes.append("cut the page away from the background around it")
    mask = ink_mask(small, config.threshold)  # (h, w) at analysis resolution
    if outline is not None:
        mask &= outline  # the desk in the corners of a tilted page is not ink
    paper_box = _scaled(paper, 1 / scale) if paper else None
    if not mask.any():
        closer = _around_sparse_writing(small, outline, config) if look_closer else None
        if closer is not None:
            region = _scaled(closer, 1 / scale)
            inner = _segment(image.crop(region), config, look_closer=False)
            moved = (offset[0] + region[0], offset[1] + region[1])
            return _moved(inner, moved, paper_box, [*notes, SMALL_WRITING_NOTE])
        notes.append("no text found: the image is blank or its ink too faint")
        return Segmentation(paper=paper_box, notes=tuple(notes))
    mask, speckled, scattered = _without_specks(mask)
    if speckled:
        notes.append("no text found: the marks are specks (grain, noise or paper texture)")
        return Segmentation(paper=paper_box, notes=tuple(notes))
    if scattered:
        notes.append(
            f"no text found: the ink breaks into {scattered} small pieces, too few of them the "
            "size of a letter to be writing (noise, a texture or a picture)"
        )
        return Segmentation(paper=paper_box, notes=tuple(notes), no_text=True)
    rotation = 0
    if config.find_rotation and _quarter_turned(mask):
        rotation, mask = 90, np.rot90(mask)
    ink = None
    if config.method == "learned":
        ink = np.rot90(ink_map(small) * (outline if outline is not None else 1.0), rotation // 90)
    try:
        skew, spacing, trace = _find_lines(mask, ink, config)
        if config.find_rotation and trace.upright < -HALF_TURN:
            rotation, mask = rotation + 180, np.rot90(mask, 2)
            turned = None if ink is None else np.rot90(ink, 2)
            skew, spacing, trace = _find_lines(mask, turned, config)
    except _TooManyFragments as exc:
        notes.append(
            f"no text found: the ink breaks into {exc.count} pieces, too many to be lines of "
            "writing (noise, a texture or a picture)"
        )
        return Segmentation(paper=paper_box, notes=tuple(notes), no_text=True)
    if rotation:
        notes.append(f"turned the page {rotation} degrees counter-clockwise to read it")
    if not trace.lines:
        notes.append("no text lines found")
    upright = image.transpose(TRANSPOSE[rotation]) if rotation else image
    fill = paper_colour(small)
    pad = config.margin * spacing
    segments = []
    for line in trace.lines:
        x0, y0, x1, y1 = (v * trace.factor for v in line.box)
        # The line's rectangle in the deskewed frame, in full-resolution pixels.
        rect = ((x0 - pad) / scale, (y0 - pad) / scale, (x1 + pad) / scale, (y1 + pad) / scale)
        box, crop = _deskewed_crop(upright, rect, skew, fill, config.crop_height)
        box = _unturned(box, rotation, image.size)
        box = _moved_box(box, offset)
        segments.append(LineSegment(box, crop, line.region - 1, line.margin))
    columns = _columns(trace.blocks, trace.lines)
    if columns > 1:
        notes.append(f"{columns} columns, read left to right")
    margins = sum(segment.margin for segment in segments)
    if margins:
        notes.append(f"{margins} margin note line(s), read after the main text")
    return Segmentation(
        segments, rotation=rotation, skew=skew, paper=paper_box, columns=columns, notes=tuple(notes)
    )


#: How an image is turned by a rotation (degrees counter-clockwise) of :class:`Segmentation`.
TRANSPOSE = {
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


#: Connected marks of at most this many pixels at analysis resolution are specks (sensor
#: grain, dust), not writing: the dot of an i is larger.
SPECK_PIXELS = 3
#: A mask whose specks hold more than this share of its ink is grain or texture, not a page
#: of writing (Hooker's pages: under 1%; blank paper photographed with grain: over 80%).
SPECKLED = 0.5


#: A piece of ink this many pixels at analysis resolution is the size of a letter or more.
LETTER_PIXELS = 30
#: An ink mask of at least this many pieces (not specks) with less than
#: :data:`LETTERS_IN_WRITING` of their ink in pieces the size of a letter is scattered noise,
#: not writing: random colour pixels make 2,900-14,700 pieces with 3% of their ink in such
#: pieces, and a whole page is read as 35 lines of made-up text; the 44 real and composed
#: pages measured make at most 1,163 pieces with at least 66% of their ink in letters, line
#: images at most 199 pieces.
SCATTERED_PIECES = 500
#: See :data:`SCATTERED_PIECES`.
LETTERS_IN_WRITING = 0.3


def _without_specks(mask: np.ndarray) -> tuple[np.ndarray, bool, int]:
    """``mask`` without its specks; whether specks were most of it; and, when its other
    pieces are scattered noise rather than writing (:data:`SCATTERED_PIECES`), how many
    there are (else 0). Tracing a grainy blank photo's tens of thousands of specks as lines
    would take minutes and gigabytes."""
    marks, _ = label(mask, structure=np.ones((3, 3), bool))
    sizes = np.bincount(marks.ravel())
    speck = sizes <= SPECK_PIXELS
    speck[0] = False
    speck_ink = int(sizes[speck].sum())
    pieces = sizes[1:][~speck[1:]]
    letters = int(pieces[pieces >= LETTER_PIXELS].sum())
    scattered = len(pieces) >= SCATTERED_PIECES and letters < LETTERS_IN_WRITING * pieces.sum()
    speckled = speck_ink > SPECKLED * int(sizes[1:].sum())
    return mask & ~speck[marks], speckled, len(pieces) if scattered else 0


def _find_lines(
    mask: np.ndarray, ink: np.ndarray | None, config: SegmentConfig
) -> tuple[float, int, _Trace]:
    """Skew, line spacing and lines of an upright page, by ``config.method``: traced on its
    ink mask, or found by the learned detector on its ink map (``ink``, the mask's size)."""
    if ink is None:
        return _trace_page(mask, config)
    return _detect_page(mask, ink, config)


def _trace_page(mask: np.ndarray, config: SegmentConfig) -> tuple[float, int, _Trace]:
    """Skew, line spacing and lines of an upright ink mask."""
    skew, mask = _deskewed(mask, config)
    spacing = line_spacing(mask, min_spacing=config.min_line_height)
    return skew, spacing, _trace(mask, spacing)


def _deskewed(mask: np.ndarray, config: SegmentConfig) -> tuple[float, np.ndarray]:
    """The skew of an upright ink mask, and the mask straightened."""
    mask = np.ascontiguousarray(mask)
    skew = estimate_skew(mask, config.max_skew_degrees, config.skew_step_degrees)
    if skew:
        # PIL's positive angle is counter-clockwise; undo a rise to the right.
        mask = np.asarray(Image.fromarray(mask).rotate(-skew, Image.Resampling.NEAREST))
    return skew, mask


def _detect_page(
    mask: np.ndarray, ink: np.ndarray, config: SegmentConfig
) -> tuple[float, int, _Trace]:
    """Skew, line spacing and lines of an upright page: skew and spacing from its ink mask as
    the tracer finds them, lines from the learned detector on its ink map (same size as the
    mask) straightened by the same angle, in the tracer's reading order."""
    # Imported here: the detector needs torch, which the traced method (and a cold start of
    # a line model on ONNX) never loads.
    from quill.models.line_detector import detect_lines, shared_detector

    skew, mask = _deskewed(mask, config)
    if skew:
        turned = Image.fromarray(np.ascontiguousarray(ink, np.float32), mode="F")
        ink = np.asarray(turned.rotate(-skew, Image.Resampling.BILINEAR))
    spacing = line_spacing(mask, min_spacing=config.min_line_height)
    detector = shared_detector(str(detector_weights(config.detector)))
    return skew, spacing, _in_reading_order(detect_lines(detector, ink), mask, spacing)


def detector_weights(detector: str | None = None) -> Path:
    """The learned line detector's weights: ``detector``, or the shipped ones
    (:data:`DEFAULT_DETECTOR` under the working directory, else under this checkout), so
    that ``quill predict --segmenter learned`` works from any folder. A
    :class:`~quill.staged_model.ModelLoadError` naming where it looked when there are none.
    """
    candidates = [Path(detector)] if detector else [DEFAULT_DETECTOR, CHECKOUT / DEFAULT_DETECTOR]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = " or ".join(str(c) for c in candidates)
    raise ModelLoadError(f"no line detector weights at {looked} (quill detector train makes them)")


def _in_reading_order(boxes: list[Box], mask: np.ndarray, spacing: int) -> _Trace:
    """Line boxes found on a deskewed mask as a :class:`_Trace` (factor 1: boxes in the
    mask's pixels) in the tracer's reading order: each line in the text block (step 5) it
    overlaps most, blocks in order, lines of a block by height, margin notes last."""
    factor = max(1, round(spacing / TRACE_SPACING))
    step = spacing / factor
    occupied = _without_graphics(_reduce(mask, factor), step) > 0
    blocks = [
        (x0 * factor, y0 * factor, x1 * factor, y1 * factor)
        for x0, y0, x1, y1 in text_blocks(occupied, step)
    ] or [(0, 0, mask.shape[1], mask.shape[0])]
    lines = []
    for box in boxes:
        overlaps = [
            max(0, min(box[2], b[2]) - max(box[0], b[0]))
            * max(0, min(box[3], b[3]) - max(box[1], b[1]))
            for b in blocks
        ]
        line = _Line(
            np.zeros(0),
            np.zeros(0),
            region=int(np.argmax(overlaps)) + 1,
            path=np.array([(box[1] + box[3]) / 2]),
            box=box,
        )
        x0, y0, x1, y1 = box
        line.rows = np.zeros(mask.shape[0])  # its ink per row, for the upside-down test
        line.rows[y0:y1] = mask[y0:y1, x0:x1].sum(axis=1)
        lines.append(line)
    upright = _upright(lines, spacing)
    _mark_margins(lines, blocks)
    lines.sort(key=lambda line: (line.margin, line.region, line.centre, line.box[0]))
    return _Trace(lines, blocks, 1, upright)


def _unturned(box: Box, rotation: int, size: tuple[int, int]) -> Box:
    """A box in an image turned ``rotation`` degrees counter-clockwise, in the image before
    it was turned (``size``: that image's width and height).

    >>> _unturned((0, 0, 10, 20), 90, (100, 50))  # the turned image's top left was top right
    (80, 0, 100, 10)
    """
    width, height = size
    x0, y0, x1, y1 = box
    if rotation == 90:
        return (width - y1, x0, width - y0, x1)
    if rotation == 180:
        return (width - x1, height - y1, width - x0, height - y0)
    if rotation == 270:
        return (y0, height - x1, y1, height - x0)
    return box


def turned_box(box: Box, rotation: int, size: tuple[int, int]) -> Box:
    """A box of an image (``size``: its width and height) in that image turned ``rotation``
    degrees counter-clockwise (:attr:`Segmentation.rotation`): where a line found on a page
    read sideways is on the page turned to be read. The inverse of :func:`_unturned`.

    >>> all(_unturned(turned_box((5, 10, 30, 20), r, (100, 50)), r, (100, 50)) == (5, 10, 30, 20)
    ...     for r in (0, 90, 180, 270))
    True
    """
    width, height = size
    x0, y0, x1, y1 = box
    if rotation == 90:
        return (y0, width - x1, y1, width - x0)
    if rotation == 180:
        return (width - x1, height - y1, width - x0, height - y0)
    if rotation == 270:
        return (height - y1, x0, height - y0, x1)
    return box


#: Said when the writing covers so small a part of the image that it was looked for closer.
SMALL_WRITING_NOTE = "the writing covers a small part of the image: read it from closer"
#: Around writing found closer, the part of the image segmented holds this many times the
#: writing's height above, below and beside it (room for lines the first look missed).
CLOSER_MARGIN = 2.0


def _around_sparse_writing(
    small: Image.Image, outline: np.ndarray | None, config: SegmentConfig
) -> Box | None:
    """The part of the analysis image ``small`` around writing that covers too small a part
    of it to pass the blank test (:func:`quill.preprocess.sparse_ink_mask`); None when there
    is none, or only specks."""
    mask = sparse_ink_mask(small, config.threshold)
    if outline is not None:
        mask &= outline
    mask, speckled, scattered = _without_specks(mask)
    if speckled or scattered or not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    margin = CLOSER_MARGIN * max(int(ys.max() - ys.min()) + 1, config.min_line_height)
    return (
        max(0, int(xs.min() - margin)),
        max(0, int(ys.min() - margin)),
        min(small.width, int(xs.max() + 1 + margin)),
        min(small.height, int(ys.max() + 1 + margin)),
    )


def _moved(
    inner: Segmentation, by: tuple[int, int], paper: Box | None, notes: list[str]
) -> Segmentation:
    """``inner``, the segmentation of a part of an image whose corner is at ``by`` in it,
    with its boxes in the whole image's pixels, the whole image's paper and ``notes`` first."""
    lines = [replace(line, box=_moved_box(line.box, by)) for line in inner]
    return Segmentation(
        lines,
        rotation=inner.rotation,
        skew=inner.skew,
        paper=paper,
        columns=inner.columns,
        notes=(*notes, *inner.notes),
        no_text=inner.no_text,
    )


def _moved_box(box: Box, by: tuple[int, int]) -> Box:
    """``box`` of a part of an image whose corner is at ``by``, in the whole image's pixels.

    >>> _moved_box((1, 2, 3, 4), (10, 20))
    (11, 22, 13, 24)
    """
    dx, dy = by
    return box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy


def _scaled(box: Box, factor: float) -> Box:
    return (
        math.floor(box[0] * factor),
        math.floor(box[1] * factor),
        math.ceil(box[2] * factor),
        math.ceil(box[3] * factor),
    )


def _quarter_turned(mask: np.ndarray) -> bool:
    """Whether the text lines run up or down the image: its words (blobs of ink on a map
    eight times coarser, where letters merge) are taller than wide, and its column profile
    is clearly more line-like than its row profile (:data:`QUARTER_TURN`). Both, so that
    one line of text (whose letters make a peaky column profile) stays as it is."""
    coarse = _reduce(mask, 8) > 0
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
    fine = _reduce(mask, 2) > 0  # the profiles need no detail: a quarter of the points
    return bool(tall and _line_likeness(fine.T) > QUARTER_TURN * _line_likeness(fine))


def _line_likeness(mask: np.ndarray, strips: int = 4) -> float:
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


def _columns(blocks: list[tuple[int, int, int, int]], lines: list[_Line]) -> int:
    """The most blocks of main text side by side (sharing rows), counting blocks of at least
    three lines (a date beside a letterhead is not a column)."""
    counts = np.bincount(
        [line.region for line in lines if not line.margin], minlength=len(blocks) + 1
    )
    if not counts.any():
        return 0
    tall = [number for number in range(1, len(blocks) + 1) if counts[number] >= 3]
    best = 1
    for number in tall:
        y0, y1 = blocks[number - 1][1], blocks[number - 1][3]
        beside = [o for o in tall if min(y1, blocks[o - 1][3]) > max(y0, blocks[o - 1][1])]
        best = max(best, len(beside))
    return best


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
    found = _paper(image)
    return found[0] if found else None


#: How far (in r, g chromaticity) a bright pixel's hue may be from the paper's and still be
#: paper: skin is 0.03-0.07 from cream paper; a page's own shading and JPEG noise under 0.01
#: (measured on the Hooker pages photographed on desks with a hand at a corner).
PAPER_HUE = 0.02


def _paper(image: Image.Image) -> tuple[Box, Image.Image] | None:
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


def _deskewed_crop(
    image: Image.Image,
    rect: tuple[float, float, float, float],
    skew: float,
    paper: tuple[int, ...],
    crop_height: int | None = None,
) -> tuple[Box, Image.Image]:
    """Cut one line: its axis-aligned box in the original image, and the straightened crop.

    The crop is sampled from the original in one affine transform (rotation back by
    ``skew`` about the image centre, then the line's rectangle), so its cost is the line's
    own pixels, not those of the page or of a rotated box. With ``crop_height``, the box is
    first shrunk with an area filter and the line sampled from it at that height.
    """
    centre = (image.width / 2, image.height / 2)
    corners = [
        _to_original(x, y, skew, *centre) for x in (rect[0], rect[2]) for y in (rect[1], rect[3])
    ]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    box = (
        max(0, math.floor(min(xs))),
        max(0, math.floor(min(ys))),
        min(image.width, math.ceil(max(xs))),
        min(image.height, math.ceil(max(ys))),
    )
    zoom = 1.0 if crop_height is None else min(1.0, crop_height / (rect[3] - rect[1]))
    if not skew and zoom == 1.0:
        return box, image.crop(box)
    source, origin, scale = image, (0, 0), (1.0, 1.0)
    if zoom < 1.0:
        region = image.crop(box)
        size = (max(1, round(region.width * zoom)), max(1, round(region.height * zoom)))
        source = region.resize(size, Image.Resampling.BOX)
        origin, scale = box[:2], (size[0] / region.width, size[1] / region.height)
    angle = math.radians(skew)
    cos, sin = math.cos(angle), math.sin(angle)
    left, top = _to_original(rect[0], rect[1], skew, *centre)
    size = (max(1, round((rect[2] - rect[0]) * zoom)), max(1, round((rect[3] - rect[1]) * zoom)))
    # Output (x, y) is the deskewed point (rect[0] + x / zoom, rect[1] + y / zoom), i.e. the
    # original point (left, top) + (x / zoom) * (cos, -sin) + (y / zoom) * (sin, cos), in
    # the source's pixels (the original, or the shrunk box).
    sx, sy = scale
    straight = source.transform(
        size,
        Image.Transform.AFFINE,
        (
            cos / zoom * sx,
            sin / zoom * sx,
            (left - origin[0]) * sx,
            -sin / zoom * sy,
            cos / zoom * sy,
            (top - origin[1]) * sy,
        ),
        Image.Resampling.BILINEAR,
        fillcolor=paper,
    )
    return box, straight


__all__ = [
    "LineSegment",
    "SegmentConfig",
    "Segmentation",
    "find_paper",
    "estimate_skew",
    "line_spacing",
    "segment_lines",
]
