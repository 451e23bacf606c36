"""Polygons, baselines and crops: turning layout coordinates into line and region images.

Ground-truth formats describe a line by a polygon (PAGE ``Coords``, ALTO ``Shape``), a
baseline, or a box. A crop is the polygon's bounding box with everything outside the polygon
painted the paper colour, so the descenders of the line above do not leak in as unlabelled
ink. Painting pure white would draw a visible edge on yellowed paper, which the ink map in
:mod:`quill.preprocess` would read as ink; the paper colour does not.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from quill.preprocess import paper_colour

Point = tuple[float, float]
Polygon = list[Point]

#: A polygon enclosing less than this share of its bounding box is points on a line (a
#: baseline written as Coords, collinear points), not an outline: its crop is a sliver of
#: paper. A real line polygon, even slanted 45 degrees, fills far more of its box.
MIN_FILL = 0.02


def parse_points(text: str | None) -> Polygon:
    """Points from ``"x,y x,y ..."`` (PAGE) or ``"x y x y ..."`` (ALTO); [] if unusable.

    Every value must be a finite number: skipping the ones that are not (``nan``, ``abc``)
    would pair the rest up wrongly.

    >>> parse_points("1,2 3,4")
    [(1.0, 2.0), (3.0, 4.0)]
    >>> parse_points("10 20 30 40.5"), parse_points(".5,-.5 1e1,2")
    ([(10.0, 20.0), (30.0, 40.5)], [(0.5, -0.5), (10.0, 2.0)])
    >>> parse_points("1,2 3"), parse_points("nan,2 3,4"), parse_points("1,2 3,x")
    ([], [], [])
    """
    try:
        numbers = [float(n) for n in (text or "").replace(",", " ").split()]
    except ValueError:
        return []
    if len(numbers) % 2 or not all(math.isfinite(n) for n in numbers):
        return []
    return list(zip(numbers[0::2], numbers[1::2], strict=True))


def polygon_area(points: Polygon) -> float:
    """The area a polygon encloses (shoelace formula).

    >>> polygon_area([(0, 0), (4, 0), (4, 3), (0, 3)]), polygon_area([(10, 30), (300, 80)])
    (12.0, 0.0)
    """
    pairs = zip(points, points[1:] + points[:1], strict=True)
    return abs(sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in pairs)) / 2


def box_polygon(left: float, top: float, width: float, height: float) -> Polygon:
    """The four corners of an axis-aligned box, clockwise from top-left."""
    right, bottom = left + width, top + height
    return [(left, top), (right, top), (right, bottom), (left, bottom)]


def bounding_box(points: Polygon) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of ``points``."""
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    return min(xs), min(ys), max(xs), max(ys)


def union_box(polygons: list[Polygon]) -> Polygon:
    """The box around several polygons (a region drawn from its lines)."""
    return box_polygon(*_ltrb_to_ltwh(bounding_box([p for poly in polygons for p in poly])))


def _ltrb_to_ltwh(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    left, top, right, bottom = box
    return left, top, right - left, bottom - top


def baseline_polygon(baseline: Polygon, ascent: float, descent: float) -> Polygon:
    """A band around a baseline: ``ascent`` pixels above it and ``descent`` below.

    Used when a PAGE line has a Baseline but no usable Coords.

    >>> baseline_polygon([(0, 10), (20, 10)], ascent=8, descent=3)
    [(0, 2), (20, 2), (20, 13), (0, 13)]
    """
    top = [(x, y - ascent) for x, y in baseline]
    bottom = [(x, y + descent) for x, y in reversed(baseline)]
    return top + bottom


def scale_polygon(points: Polygon, sx: float, sy: float) -> Polygon:
    return [(x * sx, y * sy) for x, y in points]


def outside_problem(points: Polygon, size: tuple[int, int], tolerance: float = 0.02) -> str | None:
    """Why ``points`` do not fit an image of ``size`` (w, h), or None if they do.

    Exporters round coordinates a pixel or two past the border, so small overshoots (up to
    ``tolerance`` of the image side) are allowed and clipped later; more than that means the
    XML describes some other image.

    >>> outside_problem([(0, 0), (50, 20)], (100, 40)) is None
    True
    >>> outside_problem([(0, 0), (150, 20)], (100, 40))
    'coordinates span x 0..150, y 0..20: outside the 100x40 image'
    >>> outside_problem([(10, 7), (50, 8), (90, 9)], (100, 40))
    'polygon encloses almost no area (0 of its 80x2 box): its points lie on a line'
    """
    if not all(math.isfinite(value) for point in points for value in point):
        return "coordinates are not finite numbers"
    width, height = size
    left, top, right, bottom = bounding_box(points)
    slack_x, slack_y = tolerance * width, tolerance * height
    if left < -slack_x or top < -slack_y or right > width + slack_x or bottom > height + slack_y:
        return (
            f"coordinates span x {left:.0f}..{right:.0f}, y {top:.0f}..{bottom:.0f}: "
            f"outside the {width}x{height} image"
        )
    if right - left < 2 or bottom - top < 2:
        return f"region is degenerate ({right - left:.0f}x{bottom - top:.0f} pixels)"
    area = polygon_area(points)
    if len(points) >= 3 and area < MIN_FILL * (right - left) * (bottom - top):
        return (
            f"polygon encloses almost no area ({area:.0f} of its "
            f"{right - left:.0f}x{bottom - top:.0f} box): its points lie on a line"
        )
    return None


def crop_polygons(page: Image.Image, polygons: list[Polygon]) -> Image.Image:
    """The bounding box of ``polygons`` cut from ``page``, outside them painted paper colour.

    A line is one polygon; a paragraph is its region's outline together with its lines' (a
    region outline drawn tighter than its lines must not clip their ascenders). Coordinates
    are clipped to the page. Returns an image in the page's mode.
    """
    left, top, right, bottom = bounding_box([p for polygon in polygons for p in polygon])
    box = (
        max(0, int(np.floor(left))),
        max(0, int(np.floor(top))),
        min(page.width, int(np.ceil(right)) + 1),
        min(page.height, int(np.ceil(bottom)) + 1),
    )
    crop = page.crop(box)
    mask = Image.new("L", crop.size, 0)
    draw = ImageDraw.Draw(mask)
    for polygon in polygons:
        draw.polygon([(x - box[0], y - box[1]) for x, y in polygon], fill=255)
    fill = paper_colour(crop, size=None)
    background = Image.new(crop.mode, crop.size, fill if len(fill) > 1 else fill[0])
    return Image.composite(crop, background, mask)
