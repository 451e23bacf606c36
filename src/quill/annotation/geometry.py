"""Label Studio's box geometry: percent <-> pixels, rotated corners, crops by affine warp.

Label Studio stores a rectangle as ``x, y, width, height`` in **percent** of the original
image (the image as the browser shows it, EXIF orientation applied) and ``rotation`` in
degrees, clockwise on screen, about the rectangle's top-left corner: ``(x, y)`` is that
corner *after* rotation, and it stays fixed while the box turns. Coordinates are always in
the frame of the unrotated image, whatever the annotator's ``image_rotation`` was.

Everything here is pure arithmetic on plain numbers so it can be checked against boxes drawn
into a picture (see ``tests/annotation/test_geometry.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from quill.preprocess import paper_colour


@dataclass(frozen=True)
class Box:
    """A rotated rectangle in pixels: top-left corner, size, clockwise rotation in degrees."""

    x: float
    y: float
    width: float
    height: float
    rotation: float = 0.0

    def corners(self) -> np.ndarray:
        """The four corners (4, 2) as (x, y): top-left, top-right, bottom-right, bottom-left.

        Image y grows downwards, so a positive angle turns the box clockwise on screen.

        >>> Box(10, 20, 4, 2, 90).corners().round(6).tolist()
        [[10.0, 20.0], [10.0, 24.0], [8.0, 24.0], [8.0, 20.0]]
        """
        theta = math.radians(self.rotation)
        along = np.array([math.cos(theta), math.sin(theta)])  # direction of the top edge
        down = np.array([-math.sin(theta), math.cos(theta)])  # direction of the left edge
        origin = np.array([self.x, self.y])
        return np.stack(
            [
                origin,
                origin + self.width * along,
                origin + self.width * along + self.height * down,
                origin + self.height * down,
            ]
        )

    def center(self) -> tuple[float, float]:
        cx, cy = self.corners().mean(axis=0)
        return float(cx), float(cy)

    def bounds(self) -> tuple[float, float, float, float]:
        """Axis-aligned bounds (left, top, right, bottom) enclosing the rotated box."""
        pts = self.corners()
        return (
            float(pts[:, 0].min()),
            float(pts[:, 1].min()),
            float(pts[:, 0].max()),
            float(pts[:, 1].max()),
        )


def percent_to_box(value: dict, image_width: float, image_height: float) -> Box:
    """Pixel box of a Label Studio ``value`` (percent units) on an image of the given size.

    >>> percent_to_box({"x": 10, "y": 50, "width": 25, "height": 5, "rotation": 3}, 800, 600)
    Box(x=80.0, y=300.0, width=200.0, height=30.0, rotation=3.0)
    """
    return Box(
        x=float(value["x"]) / 100.0 * image_width,
        y=float(value["y"]) / 100.0 * image_height,
        width=float(value["width"]) / 100.0 * image_width,
        height=float(value["height"]) / 100.0 * image_height,
        rotation=float(value.get("rotation", 0.0) or 0.0),
    )


def share_on_image(box: Box, image_width: float, image_height: float) -> float:
    """The part of ``box``'s area (0 to 1) that lies on an image of the given size.

    A crop fills what lies off the image with paper colour, so a box mostly off the page
    would become a blank picture labelled with text. The rotated box is clipped to each edge
    of the image in turn (Sutherland-Hodgman) and the area left is measured (shoelace).

    >>> share_on_image(Box(-50, 10, 100, 20), 200, 100), share_on_image(Box(300, 0, 9, 9), 200, 100)
    (0.5, 0.0)
    >>> round(share_on_image(Box(10, 50, 100, 20, 90), 200, 100), 6)  # turned across an edge
    0.25
    """
    polygon = [(float(x), float(y)) for x, y in box.corners()]
    edges = ((0, 0.0, -1), (0, image_width, 1), (1, 0.0, -1), (1, image_height, 1))
    for axis, limit, sign in edges:  # left, right, top, bottom: keep the side facing inwards
        polygon = _clip(polygon, axis, limit, sign)
    if len(polygon) < 3:
        return 0.0
    xs, ys = np.array(polygon).T
    area = 0.5 * abs(float(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))))
    return area / abs(box.width * box.height)


def _clip(
    polygon: list[tuple[float, float]], axis: int, limit: float, sign: int
) -> list[tuple[float, float]]:
    """The part of a convex polygon where ``sign * (coordinate[axis] - limit) <= 0``."""

    def inside(point: tuple[float, float]) -> bool:
        return sign * (point[axis] - limit) <= 0

    clipped = []
    for index, current in enumerate(polygon):
        previous = polygon[index - 1]
        if inside(current) != inside(previous):  # the edge crosses the line: keep the crossing
            t = (limit - previous[axis]) / (current[axis] - previous[axis])
            clipped.append(
                (
                    previous[0] + t * (current[0] - previous[0]),
                    previous[1] + t * (current[1] - previous[1]),
                )
            )
        if inside(current):
            clipped.append(current)
    return clipped


def box_to_percent(box: Box, image_width: float, image_height: float) -> dict[str, float]:
    """Label Studio ``value`` geometry (percent units) of a pixel box; inverse of the above.

    >>> box_to_percent(Box(80, 300, 200, 30, 3), 800, 600)
    {'x': 10.0, 'y': 50.0, 'width': 25.0, 'height': 5.0, 'rotation': 3.0}
    """
    return {
        "x": box.x * 100.0 / image_width,
        "y": box.y * 100.0 / image_height,
        "width": box.width * 100.0 / image_width,
        "height": box.height * 100.0 / image_height,
        "rotation": float(box.rotation),
    }


def signed_angle(degrees: float) -> float:
    """An angle folded into (-180, 180], since Label Studio writes 350 for -10.

    >>> signed_angle(350), signed_angle(10), signed_angle(-190), signed_angle(180)
    (-10.0, 10.0, 170.0, 180.0)
    """
    folded = math.fmod(float(degrees), 360.0)
    if folded > 180.0:
        folded -= 360.0
    elif folded <= -180.0:
        folded += 360.0
    return folded


def enclosing_box(boxes: Sequence[Box], rotation: float, margin: float = 0.0) -> Box:
    """Smallest box at ``rotation`` degrees holding every corner of ``boxes`` (+ margin px).

    Used for a paragraph: the lines' common slant becomes the paragraph crop's rotation, so
    a page photographed at an angle comes out level.

    >>> enclosing_box([Box(10, 10, 20, 5), Box(12, 30, 30, 6)], 0.0)
    Box(x=10.0, y=10.0, width=32.0, height=26.0, rotation=0.0)
    """
    theta = math.radians(rotation)
    cos, sin = math.cos(theta), math.sin(theta)
    points = np.concatenate([b.corners() for b in boxes])  # (4N, 2) image coordinates
    # Coordinates in the frame turned by `rotation`: u along the top edge, v down the side.
    u = points[:, 0] * cos + points[:, 1] * sin
    v = -points[:, 0] * sin + points[:, 1] * cos
    u0, v0 = u.min() - margin, v.min() - margin
    u1, v1 = u.max() + margin, v.max() + margin
    return Box(
        x=float(u0 * cos - v0 * sin),
        y=float(u0 * sin + v0 * cos),
        width=float(u1 - u0),
        height=float(v1 - v0),
        rotation=float(rotation),
    )


def crop_box(image: Image.Image, box: Box, fill: tuple[int, ...] | None = None) -> Image.Image:
    """Cut a rotated box out of ``image`` as an upright picture of width x height pixels.

    An affine warp maps each output pixel (u, v) to ``top_left + u * along + v * down`` in the
    source, so the box's top edge becomes the crop's top row. Parts of the box outside the
    image are filled with ``fill`` (default: the page's paper colour).
    """
    width, height = max(1, round(box.width)), max(1, round(box.height))
    theta = math.radians(box.rotation)
    cos, sin = math.cos(theta), math.sin(theta)
    # PIL's AFFINE data (a, b, c, d, e, f): source = (a*u + b*v + c, d*u + e*v + f), in
    # continuous coordinates where pixel (i, j) spans [j, j+1) x [i, i+1) on both sides.
    rgb = image if image.mode == "RGB" else image.convert("RGB")  # a page copy costs ~50 ms
    crop = rgb.transform(
        (width, height),
        Image.Transform.AFFINE,
        (cos, -sin, box.x, sin, cos, box.y),
        resample=Image.Resampling.BICUBIC,
        fillcolor=fill if fill is not None else paper_colour(rgb),
    )
    # transform() copies the page's metadata: a scanner's ICC profile (often ~0.7 MB) would be
    # compressed into every line crop. The crop is plain RGB pixels.
    crop.info.clear()
    return crop


def mask_outside(
    image: Image.Image, boxes: Sequence[Box], fill: tuple[int, ...] | None = None
) -> Image.Image:
    """A copy of ``image`` where everything outside ``boxes`` is painted paper colour.

    A paragraph sample must show exactly the text its label holds: printed prompts, struck
    lines and marginalia nobody boxed are wiped rather than left as unlabelled ink.
    """
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    mask = Image.new("L", rgb.size, 0)
    draw = ImageDraw.Draw(mask)
    for box in boxes:
        draw.polygon([tuple(p) for p in box.corners().tolist()], fill=255)
    paper = Image.new("RGB", rgb.size, fill if fill is not None else paper_colour(rgb))
    return Image.composite(rgb, paper, mask)
