"""One annotation's ``result`` list -> line regions (box + transcription).

Label Studio writes one region as several results sharing an ``id``: a ``rectanglelabels``
(or plain ``rectangle``) result with the box and its label, and a ``textarea`` result with
the text (which repeats the box geometry). Results without an ``id`` each stand alone.

A region drawn as another shape (a polygon, a brush stroke, an ellipse, keypoints: a config
extended by hand, or an export from another project) is kept with its ``shape`` so the
importer reports it: Quill only cuts out rotated rectangles, and a line dropped without a
word would leave its page's paragraph short of a line.

An export is JSON anyone can edit, so a result may hold a string where an object belongs,
or NaN, Infinity and 1e6 where a percentage belongs. Such a region is kept with a
``malformed`` note instead of being read as a box, so the importer reports it and goes on:
a NaN cannot be cut out, and a box a million percent wide would take minutes to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from quill.annotation.config import LINE_LABEL

GEOMETRY_KEYS = ("x", "y", "width", "height")
BOX_TYPES = ("rectanglelabels", "rectangle")
TEXT_TYPES = ("textarea",)
#: Result types of Label Studio's other image regions (with and without labels).
SHAPE_TYPES = tuple(
    kind + suffix
    for kind in ("polygon", "brush", "ellipse", "keypoint", "bitmask", "vector")
    for suffix in ("labels", "")
)
#: Largest magnitude of a geometry value (percent, or degrees for ``rotation``): a box may
#: reach a little past the edge of its image (the importer judges how much), but a number
#: beyond ten times the image is no box Label Studio drew.
GEOMETRY_LIMIT = 1000.0
#: Largest ``original_width`` / ``original_height`` taken for a pixel count.
SIZE_LIMIT = 1_000_000


@dataclass
class Region:
    """What an annotation says about one region. Geometry is in percent of the image."""

    id: str
    geometry: dict[str, float] | None = None
    original_size: tuple[int, int] | None = None
    labels: list[str] = field(default_factory=list)
    typed: list[str] | None = None
    has_box_result: bool = False
    #: The result type of a region drawn as another shape than a rectangle, or None.
    shape: str | None = None
    #: Why a result of this region cannot be read (e.g. "x is nan"), or None.
    malformed: str | None = None

    @property
    def is_line(self) -> bool:
        """A region is a line unless it carries some other label (a user-extended config)."""
        return not self.labels or LINE_LABEL in self.labels


def _number(value: Any, name: str, limit: float) -> float:
    """``value`` as a float if it is a JSON number within +-``limit``, else ValueError.

    The range test also refuses NaN and the infinities (they fail every comparison or the
    limit), and integers too large for a float.
    """
    number = isinstance(value, int | float) and not isinstance(value, bool)  # JSON true is 1
    if not number or not -limit <= value <= limit:
        raise ValueError(f"{name} is {value!r}")
    return float(value)


def _geometry(value: dict[str, Any]) -> dict[str, float] | None:
    """The box in ``value`` (None when it holds none, as a bare transcription's may)."""
    if not any(k in value for k in GEOMETRY_KEYS):
        return None
    geometry = {k: _number(value.get(k), k, GEOMETRY_LIMIT) for k in GEOMETRY_KEYS}
    geometry["rotation"] = _number(value.get("rotation") or 0.0, "rotation", GEOMETRY_LIMIT)
    return geometry


def _strings(value: Any, name: str) -> list[str]:
    """A label or text field: a string or a list of them (absent: none)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(item) for item in value]
    raise ValueError(f"{name} is {type(value).__name__}, not text")


def _read(region: Region, kind: str, item: dict[str, Any]) -> None:
    """Add what one result says to ``region``; ValueError names what is malformed."""
    value = item.get("value") or {}
    if not isinstance(value, dict):
        raise ValueError(f"value is {type(value).__name__}, not an object")
    width, height = item.get("original_width"), item.get("original_height")
    if width is not None and height is not None:
        size = _number(width, "original_width", SIZE_LIMIT)
        region.original_size = (int(size), int(_number(height, "original_height", SIZE_LIMIT)))
    if kind in SHAPE_TYPES:  # its points or radii are no box; only its label matters
        region.shape = kind
        if kind.endswith("labels"):
            region.labels = _strings(value.get(kind), kind)
        return
    geometry = _geometry(value)
    if geometry is not None:
        region.geometry = region.geometry or geometry
        if kind in BOX_TYPES:  # the box result is authoritative for geometry
            region.geometry = geometry
    if kind in BOX_TYPES:
        region.has_box_result = True
        region.labels = _strings(value.get("rectanglelabels"), "rectanglelabels")
    else:
        region.typed = _strings(value.get("text"), "text")


def parse_regions(result: list[dict[str, Any]]) -> tuple[list[Region], list[str]]:
    """Regions in order of first appearance, and notes on results that were ignored."""
    regions: dict[str, Region] = {}
    ignored: list[str] = []
    for index, item in enumerate(result):
        if not isinstance(item, dict):
            ignored.append(f"result {index} is not an object")
            continue
        kind = item.get("type")
        if kind not in BOX_TYPES + TEXT_TYPES + SHAPE_TYPES:
            ignored.append(f"result {index} has type {kind!r}, not a region or a transcription")
            continue
        rid = str(item.get("id") or f"result-{index}")
        region = regions.setdefault(rid, Region(rid))
        try:
            _read(region, kind, item)
        except ValueError as exc:
            region.malformed = region.malformed or f"{kind} result: {exc}"
    return list(regions.values()), ignored
