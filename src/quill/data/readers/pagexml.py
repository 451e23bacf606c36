"""PAGE XML (2010, 2013, 2019 schemas): the ground-truth format of Transkribus, eScriptorium,
OCR-D and most public HTR collections.

A page holds TextRegions holding TextLines; a line has a ``Coords`` polygon, usually a
``Baseline`` and its transcription in ``TextEquiv/Unicode``. Regions are ordered by the
``ReadingOrder`` element when there is one, else by the Transkribus ``custom`` attribute
(``readingOrder {index:N;}``), else by document order; lines inside a region likewise by
``custom`` then document order. Each line becomes a line sample and each region a paragraph
sample (its lines joined by newlines).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from quill.data.readers.common import ImportResult
from quill.data.readers.geometry import Polygon, parse_points
from quill.data.readers.layout import (
    LayoutLine,
    LayoutRegion,
    PageLayout,
    find_image,
    read_layout_files,
)
from quill.data.readers.xmlutil import (
    LayoutError,
    float_attr,
    page_size,
    parse_without_namespaces,
)

_CUSTOM_INDEX = re.compile(r"readingOrder\s*\{[^}]*?index\s*:\s*(\d+)")
_LAST = float("inf")


def parse_pagexml(path: Path) -> PageLayout:
    """Read one PAGE XML file into a :class:`PageLayout` in reading order.

    Raises :class:`LayoutError` if the file is not PAGE XML.
    """
    root = parse_without_namespaces(path)
    if root.tag != "PcGts":
        raise LayoutError(f"not a PAGE XML file (root element <{root.tag}>, expected <PcGts>)")
    page = root.find("Page")
    if page is None:
        raise LayoutError("PAGE XML without a <Page> element")
    size = page_size(page, "imageWidth", "imageHeight")
    image_name = page.get("imageFilename", "")
    order = _reading_order(page)
    regions = [
        (_sort_key(element, position, order), _region(element, position))
        for position, element in enumerate(page.iter("TextRegion"))
    ]
    regions.sort(key=lambda pair: pair[0])
    return PageLayout(
        xml=path,
        image=find_image(image_name, path),
        image_name=image_name or f"{path.stem}.*",
        page_id=path.stem,
        regions=[region for _, region in regions],
        size=size,
    )


def _region(element: ET.Element, number: int) -> LayoutRegion:
    lines = [
        (_sort_key(line, position, {}), _line(line, position))
        for position, line in enumerate(element.findall("TextLine"))
    ]
    lines.sort(key=lambda pair: pair[0])
    return LayoutRegion(
        id=element.get("id") or f"region{number}",
        lines=[line for _, line in lines],
        polygon=_coords(element)[0],
        # a region transcribed as a whole: only read when it has no lines of its own
        text=None if lines else _best_text_equiv(element),
    )


def _line(element: ET.Element, position: int) -> LayoutLine:
    baseline = element.find("Baseline")
    polygon, problem = _coords(element)
    return LayoutLine(
        id=element.get("id") or f"line{position}",
        text=_line_text(element),
        polygon=polygon,
        baseline=parse_points(baseline.get("points")) if baseline is not None else [],
        problem=problem,
    )


def _coords(element: ET.Element) -> tuple[Polygon, str]:
    """A ``Coords`` polygon: ``points`` attribute (2013+) or ``Point`` children (2010); and
    why it is unusable when it has values that are not finite numbers ("" when it has none).
    """
    coords = element.find("Coords")
    if coords is None:
        return [], ""
    text = coords.get("points")
    if text is None:  # PAGE 2010
        text = " ".join(f"{p.get('x')},{p.get('y')}" for p in coords.findall("Point"))
    polygon = parse_points(text)
    if text.strip() and not polygon:
        return [], f"Coords points {text[:80]!r} are not x,y pairs of finite numbers"
    return polygon, ""


def _line_text(element: ET.Element) -> str:
    """The line's own transcription, else its words' joined by spaces.

    With several ``TextEquiv`` (alternatives, 2019 schema) the lowest ``index`` wins, which
    PAGE defines as the preferred reading.
    """
    text = _best_text_equiv(element)
    if text is None:
        words = [_best_text_equiv(word) for word in element.findall("Word")]
        text = " ".join(w for w in words if w)
    return text


def _best_text_equiv(element: ET.Element) -> str | None:
    candidates = element.findall("TextEquiv")
    if not candidates:
        return None
    best = min(
        enumerate(candidates),
        key=lambda pair: (float_attr(pair[1], "index") or 0.0, pair[0]),
    )[1]
    unicode = best.find("Unicode")
    return (unicode.text or "") if unicode is not None else None


def _sort_key(element: ET.Element, position: int, order: dict[str, int]) -> tuple:
    """ReadingOrder position, then ``custom`` index, then document order."""
    match = _CUSTOM_INDEX.search(element.get("custom", ""))
    custom = int(match.group(1)) if match else _LAST
    return (order.get(element.get("id", ""), _LAST), custom, position)


def _reading_order(page: ET.Element) -> dict[str, int]:
    """Region id -> rank from the ``ReadingOrder`` element (nested groups flattened)."""
    reading_order = page.find("ReadingOrder")
    if reading_order is None:
        return {}
    ranked: list[str] = []

    def walk(group: ET.Element) -> None:
        children = list(group)
        indexed = all(child.get("index") is not None for child in children)
        if indexed:
            children.sort(key=lambda child: float_attr(child, "index") or 0.0)
        for child in children:
            if child.get("regionRef"):
                ranked.append(child.get("regionRef", ""))
            walk(child)

    walk(reading_order)
    return {region: rank for rank, region in enumerate(dict.fromkeys(ranked))}


def read_pagexml(src: Path, out: Path, **options: Any) -> ImportResult:
    """Import a folder of PAGE XML files (or one file) into dataset folder ``out``, split by page.

    Options are those of :func:`~quill.data.readers.layout.read_layout_files`.
    """
    return read_layout_files(src, out, parse_pagexml, "pagexml", **options)
