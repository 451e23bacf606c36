"""ALTO XML (v2-v4): the layout format of library digitisation (OCR output, HTR ground truth).

A page holds TextBlocks (possibly inside ComposedBlocks) holding TextLines, whose text is the
sequence of ``String CONTENT`` elements, ``SP`` spaces and ``HYP`` hyphens. Geometry is a box
(``HPOS VPOS WIDTH HEIGHT``) and, when present, a ``Shape/Polygon``. Coordinates are in the
``MeasurementUnit``: ``pixel``, ``mm10`` (tenths of a millimetre) or ``inch1200``; non-pixel
units are converted through the declared page size or the image's DPI. Blocks follow the
``ReadingOrder`` element when there is one (ALTO 4.2+), else document order.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from quill.data.readers.common import ImportResult
from quill.data.readers.geometry import Polygon, box_polygon, parse_points
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
    number_problem,
    page_size,
    parse_without_namespaces,
)

#: Coordinate units per inch for each ALTO MeasurementUnit (None: already pixels).
UNITS_PER_INCH: dict[str, float | None] = {"pixel": None, "mm10": 254.0, "inch1200": 1200.0}
#: The attributes of an element's box.
BOX = ("HPOS", "VPOS", "WIDTH", "HEIGHT")


def parse_alto(path: Path) -> PageLayout:
    """Read one ALTO file into a :class:`PageLayout` (coordinates in the file's unit).

    Raises :class:`LayoutError` if it is not ALTO or uses an unknown MeasurementUnit.
    """
    root = parse_without_namespaces(path)
    if root.tag != "alto":
        raise LayoutError(f"not an ALTO file (root element <{root.tag}>, expected <alto>)")
    unit = (root.findtext("Description/MeasurementUnit") or "pixel").strip()
    if unit not in UNITS_PER_INCH:
        raise LayoutError(f"unknown MeasurementUnit {unit!r} (expected pixel, mm10 or inch1200)")
    page = root.find("Layout/Page")
    if page is None:
        raise LayoutError("ALTO file without a <Layout><Page> element")
    image_name = (root.findtext("Description/sourceImageInformation/fileName") or "").strip()
    size = page_size(page, "WIDTH", "HEIGHT")
    order = _reading_order(root)
    blocks = sorted(
        enumerate(page.iter("TextBlock")),
        key=lambda pair: (order.get(pair[1].get("ID", ""), len(order)), pair[0]),
    )
    return PageLayout(
        xml=path,
        image=find_image(image_name, path),
        image_name=image_name or f"{path.stem}.*",
        page_id=path.stem,
        regions=[_block(block, number) for number, block in blocks],
        size=size,
        units_per_inch=UNITS_PER_INCH[unit],
    )


def _block(element: ET.Element, number: int) -> LayoutRegion:
    return LayoutRegion(
        id=element.get("ID") or f"block{number}",
        lines=[_line(line, i) for i, line in enumerate(element.findall("TextLine"))],
        polygon=_shape(element),
    )


def _line(element: ET.Element, number: int) -> LayoutLine:
    baseline = parse_points(element.get("BASELINE"))
    polygon = _shape(element)
    return LayoutLine(
        id=element.get("ID") or f"line{number}",
        text=line_text(element),
        polygon=polygon,
        baseline=baseline if len(baseline) >= 2 else [],
        problem="" if polygon else number_problem(element, BOX) or "",
    )


def _shape(element: ET.Element) -> Polygon:
    """``Shape/Polygon`` when present, else the element's box, else nothing."""
    polygon = element.find("Shape/Polygon")
    if polygon is not None:
        points = parse_points(polygon.get("POINTS"))
        if len(points) >= 3:
            return points
    box = [float_attr(element, name) for name in BOX]
    if any(value is None for value in box):
        return []
    left, top, width, height = box
    return box_polygon(left, top, width, height)  # type: ignore[arg-type]


def line_text(element: ET.Element) -> str:
    """A TextLine's text from its String, SP and HYP children.

    Producers that omit SP between words still get one space between Strings.

    >>> line = ET.fromstring('<TextLine><String CONTENT="to"/><SP/><String CONTENT="be"/>'
    ...     '<String CONTENT="or"/><HYP CONTENT="-"/></TextLine>')
    >>> line_text(line)
    'to be or-'
    """
    parts: list[str] = []
    previous = ""
    for child in element:
        if child.tag == "String":
            if previous == "String":
                parts.append(" ")
            parts.append(child.get("CONTENT", ""))
        elif child.tag == "SP":
            parts.append(" ")
        elif child.tag == "HYP":
            parts.append(child.get("CONTENT", "-"))
        previous = child.tag
    return "".join(parts)


def _reading_order(root: ET.Element) -> dict[str, int]:
    """Block ID -> rank from ``ReadingOrder`` element references, in document order."""
    refs = [ref.get("REF", "") for ref in root.iterfind("ReadingOrder//ElementRef")]
    return {ref: rank for rank, ref in enumerate(dict.fromkeys(refs))}


def read_alto(src: Path, out: Path, **options: Any) -> ImportResult:
    """Import a folder of ALTO files (or one file) into dataset folder ``out``, split by page.

    Options are those of :func:`~quill.data.readers.layout.read_layout_files`.
    """
    return read_layout_files(src, out, parse_alto, "alto", **options)
