"""One annotation's ``result`` list -> line regions (box + transcription).

Label Studio writes one region as several results sharing an ``id``: a ``rectanglelabels``
(or plain ``rectangle``) result with the box and its label, and a ``textarea`` result with
the text (which repeats the box geometry). Results without an ``id`` each stand alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from quill.annotation.config import LINE_LABEL

GEOMETRY_KEYS = ("x", "y", "width", "height")
BOX_TYPES = ("rectanglelabels", "rectangle")
TEXT_TYPES = ("textarea",)


@dataclass
class Region:
    """What an annotation says about one region. Geometry is in percent of the image."""

    id: str
    geometry: dict[str, float] | None = None
    original_size: tuple[int, int] | None = None
    labels: list[str] = field(default_factory=list)
    typed: list[str] | None = None
    has_box_result: bool = False

    @property
    def is_line(self) -> bool:
        """A region is a line unless it carries some other label (a user-extended config)."""
        return not self.labels or LINE_LABEL in self.labels


def _geometry(value: dict[str, Any]) -> dict[str, float] | None:
    if not all(isinstance(value.get(k), int | float) for k in GEOMETRY_KEYS):
        return None
    geometry = {k: float(value[k]) for k in GEOMETRY_KEYS}
    geometry["rotation"] = float(value.get("rotation") or 0.0)
    return geometry


def parse_regions(result: list[dict[str, Any]]) -> tuple[list[Region], list[str]]:
    """Regions in order of first appearance, and notes on results that were ignored."""
    regions: dict[str, Region] = {}
    ignored: list[str] = []
    for index, item in enumerate(result):
        if not isinstance(item, dict):
            ignored.append(f"result {index} is not an object")
            continue
        kind = item.get("type")
        if kind not in BOX_TYPES + TEXT_TYPES:
            ignored.append(f"result {index} has type {kind!r}, not a box or a transcription")
            continue
        rid = str(item.get("id") or f"result-{index}")
        region = regions.setdefault(rid, Region(rid))
        value = item.get("value") or {}
        geometry = _geometry(value)
        if geometry is not None:
            region.geometry = region.geometry or geometry
            if kind in BOX_TYPES:  # the box result is authoritative for geometry
                region.geometry = geometry
        width, height = item.get("original_width"), item.get("original_height")
        if isinstance(width, int | float) and isinstance(height, int | float):
            region.original_size = (int(width), int(height))
        if kind in BOX_TYPES:
            region.has_box_result = True
            region.labels = [str(label) for label in value.get("rectanglelabels") or []]
        else:
            text = value.get("text")
            region.typed = [text] if isinstance(text, str) else [str(t) for t in text or []]
    return list(regions.values()), ignored
