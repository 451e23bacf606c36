"""Paragraph/page -> line images, so a line model can read a whole page.

Method (classical, no training, a few tens of ms per page):

1. Ink map (:func:`quill.preprocess.ink_map`, polarity- and colour-free), downscaled so the
   analysis costs the same for any photo size, thresholded to a binary mask.
2. Skew: the angle in ``±max_skew_degrees`` whose sheared row profile has the most energy
   (text lines then fall into sharp peaks). The page is rotated by it.
3. Line spacing: the first peak of the autocorrelation of the row profile.
4. Lines: peaks of the profile smoothed over ~1/3 of a line spacing, at least half a spacing
   apart; each line extends to the deepest valley between it and its neighbours. Bands with
   little ink (specks, bleed-through) or lower than ``min_line_height`` are dropped.
5. Each line's horizontal extent is where its band holds ink. Boxes are axis-aligned in the
   original image's pixels; each crop is the full-resolution line, straightened.

Limits: one text column, mild skew (not curved lines), lines that do not touch over most of
their length. Handwriting with long ascenders/descenders still works because each line is
cut at the valley between profile peaks, not at an empty row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.ndimage import uniform_filter1d
from scipy.signal import find_peaks

from quill.preprocess import ImageSource, ink_mask, read_image

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class SegmentConfig:
    """Knobs of :func:`segment_lines`; the defaults suit scanned letters and phone photos."""

    #: Ink map value above which a pixel counts as ink.
    threshold: float = 0.35
    #: Analysis resolution: the image is scaled so its longer side is at most this.
    analysis_size: int = 1200
    #: Skew search range and step, degrees.
    max_skew_degrees: float = 5.0
    skew_step_degrees: float = 0.25
    #: Bands lower than this (pixels at analysis resolution) are noise, not lines.
    min_line_height: int = 8
    #: A line needs at least this fraction of the median line's ink.
    min_ink_fraction: float = 0.15
    #: Extra margin around each crop, as a fraction of the line spacing.
    margin: float = 0.1
    #: Crops taller than this many pixels are cut at a reduced scale (never enlarged): a
    #: line model's preprocessing shrinks them to its working height anyway
    #: (``preprocess.WORK_SCALE`` x its line height), so cutting and straightening them at
    #: the scan's resolution would be wasted. None: crops at the image's resolution.
    crop_height: int | None = None


@dataclass(frozen=True)
class LineSegment:
    """One text line: its box (x0, y0, x1, y1) in the original image and its crop."""

    box: Box
    image: Image.Image


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


def line_spacing(profile: np.ndarray, min_spacing: int) -> int:
    """Typical distance between text lines: first autocorrelation peak of the row profile.

    >>> profile = np.tile([0, 0, 5, 9, 5, 0, 0, 0, 0, 0], 8).astype(float)
    >>> line_spacing(profile, min_spacing=4)
    10
    """
    centred = profile - profile.mean()
    correlation = np.correlate(centred, centred, mode="full")[len(centred) - 1 :]
    peaks, _ = find_peaks(correlation[: len(centred) // 2 + 1])
    peaks = peaks[peaks >= min_spacing]
    if peaks.size == 0:  # a single line: its spacing is its own height
        return max(min_spacing, int((profile > 0).sum()))
    return int(peaks[np.argmax(correlation[peaks])])


def line_bands(
    profile: np.ndarray, spacing: int, min_height: int, min_row_fraction: float = 0.03
) -> list[tuple[int, int]]:
    """(top, bottom) row ranges of the text lines in a row ``profile``.

    Peaks of the smoothed profile at least half a ``spacing`` apart are line centres; a band
    runs to the lowest point between neighbouring centres and is trimmed to rows holding more
    than ``min_row_fraction`` of the band's fullest row (a speck or a stray stroke from the
    next line is not the line; descenders and ascenders are well above 3%).

    >>> profile = np.zeros(60); profile[5:15] = 10; profile[30:42] = 8; profile[50:52] = 0.2
    >>> line_bands(profile, spacing=22, min_height=4)
    [(5, 15), (30, 42)]
    """
    smoothed = uniform_filter1d(profile, size=max(1, spacing // 3))
    peaks, _ = find_peaks(
        np.pad(smoothed, 1),  # padding lets a line touching the image edge be a peak
        distance=max(1, spacing // 2),
        prominence=0.1 * float(smoothed.max(initial=0.0)),
    )
    peaks = peaks - 1
    bounds = [0]
    for left, right in zip(peaks[:-1], peaks[1:], strict=True):
        bounds.append(int(left + np.argmin(smoothed[left:right])))
    bounds.append(len(profile))
    bands = []
    for top, bottom in zip(bounds[:-1], bounds[1:], strict=True):
        band = profile[top:bottom]
        rows = np.flatnonzero(band > min_row_fraction * band.max(initial=0.0))
        if rows.size and rows[-1] - rows[0] + 1 >= min_height:
            bands.append((top + int(rows[0]), top + int(rows[-1]) + 1))
    return bands


def _ink_extent(columns: np.ndarray, spacing: int) -> tuple[int, int] | None:
    """First and last column of a band with real ink (specks narrower than a stroke ignored)."""
    smoothed = uniform_filter1d(columns.astype(np.float64), size=max(1, spacing // 4))
    filled = np.flatnonzero(smoothed > 0.5)
    if filled.size == 0:
        return None
    return int(filled[0]), int(filled[-1]) + 1


def _to_original(x: float, y: float, skew: float, cx: float, cy: float) -> tuple[float, float]:
    """Where a point of the deskewed image lies in the original: rotate it back by ``skew``
    degrees counter-clockwise about the centre (as PIL's ``rotate`` does, y pointing down)."""
    angle = math.radians(skew)
    dx, dy = x - cx, y - cy
    return (
        cx + dx * math.cos(angle) + dy * math.sin(angle),
        cy - dx * math.sin(angle) + dy * math.cos(angle),
    )


def segment_lines(source: ImageSource, config: SegmentConfig | None = None) -> list[LineSegment]:
    """Split a paragraph or page image into text lines, top to bottom.

    Returns one :class:`LineSegment` per line (an empty list for an image without ink, or
    with too little contrast to hold any: :data:`quill.preprocess.BLANK_CONTRAST`). The crops
    are ordinary images (L for a greyscale source, else RGB): feed them to
    :func:`quill.preprocess.preprocess` like any line photo.
    """
    config = config or SegmentConfig()
    image = read_image(source)
    scale = min(1.0, config.analysis_size / max(image.size))
    small = image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
        Image.Resampling.BOX,
        reducing_gap=2.0,  # a huge photo is first reduced by an integer factor: one cheap pass
    )
    mask = ink_mask(small, config.threshold)  # (h, w) at analysis resolution
    if not mask.any():
        return []
    skew = estimate_skew(mask, config.max_skew_degrees, config.skew_step_degrees)
    if skew:
        # PIL's positive angle is counter-clockwise; undo a rise to the right.
        mask = np.asarray(Image.fromarray(mask).rotate(-skew, Image.Resampling.NEAREST))
    profile = mask.sum(axis=1).astype(np.float64)
    spacing = line_spacing(profile, min_spacing=config.min_line_height)
    bands = line_bands(profile, spacing, config.min_line_height)
    ink = [float(profile[top:bottom].sum()) for top, bottom in bands]
    floor = config.min_ink_fraction * float(np.median(ink)) if ink else 0.0
    paper = _paper_colour(small)
    pad = config.margin * spacing
    segments = []
    for (top, bottom), amount in zip(bands, ink, strict=True):
        extent = _ink_extent(mask[top:bottom].sum(axis=0), spacing)
        if amount < floor or extent is None:
            continue
        # The line's rectangle in the deskewed frame, in full-resolution pixels.
        rect = (
            (extent[0] - pad) / scale,
            (top - pad) / scale,
            (extent[1] + pad) / scale,
            (bottom + pad) / scale,
        )
        segments.append(_deskewed_crop(image, rect, skew, paper, config.crop_height))
    return segments


def _deskewed_crop(
    image: Image.Image,
    rect: tuple[float, float, float, float],
    skew: float,
    paper: tuple | int,
    crop_height: int | None = None,
) -> LineSegment:
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
        return LineSegment(box=box, image=image.crop(box))
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
    return LineSegment(box=box, image=straight)


def _paper_colour(image: Image.Image) -> tuple[int, ...] | int:
    """Median colour: the fill for corners uncovered by deskewing (ink is sparse); an int for
    a greyscale (L) image."""
    pixels = np.asarray(image.resize((64, 64), Image.Resampling.BOX))
    median = np.median(pixels.reshape(64 * 64, -1), axis=0)
    return int(median[0]) if image.mode == "L" else tuple(int(v) for v in median)


__all__ = [
    "LineSegment",
    "SegmentConfig",
    "estimate_skew",
    "line_bands",
    "line_spacing",
    "segment_lines",
]
