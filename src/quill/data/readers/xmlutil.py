"""XML helpers shared by the PAGE, ALTO and IAM readers.

Ground truth comes in several schema versions (PAGE 2010/2013/2019, ALTO v2-v4), which differ
mostly in their namespace URI. Stripping namespaces once after parsing lets each reader
match on local names and read every version with one code path.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

from quill.errors import QuillError


class LayoutError(QuillError, ValueError):
    """An XML file is not a well-formed document of the expected format."""

    code = "layout_invalid"


def parse_without_namespaces(path: Path) -> ET.Element:
    """Parse ``path`` and drop namespace prefixes from every tag and attribute name.

    Raises :class:`LayoutError` naming the file and position for malformed XML.
    """
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise LayoutError(f"not well-formed XML ({exc})") from exc
    except OSError as exc:
        raise LayoutError(f"cannot be read ({exc.strerror or exc})") from exc
    for element in root.iter():
        element.tag = local_name(element.tag)
        if any(name.startswith("{") for name in element.attrib):
            element.attrib = {local_name(k): v for k, v in element.attrib.items()}
    return root


def local_name(tag: str) -> str:
    """``{uri}Name`` -> ``Name``.

    >>> local_name("{http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15}Page")
    'Page'
    """
    return tag.rsplit("}", 1)[-1]


def float_attr(element: ET.Element, name: str) -> float | None:
    """A numeric attribute, or None when absent or not a finite number (``NaN``, ``inf``)."""
    try:
        value = float(element.attrib[name])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) else None


def number_problem(element: ET.Element, names: tuple[str, ...]) -> str | None:
    """Why attributes ``names`` of ``element`` (present ones) are not all finite numbers.

    >>> number_problem(ET.fromstring('<cmp x="1" width="nan"/>'), ("x", "y", "width"))
    "width='nan' is not a number"
    """
    for name in names:
        if name in element.attrib and float_attr(element, name) is None:
            return f"{name}={element.attrib[name]!r} is not a number"
    return None


def page_size(element: ET.Element, width: str, height: str) -> tuple[float, float] | None:
    """The page size ``element`` declares in attributes ``width`` and ``height``; None when
    it declares none (or 0, "unknown").

    Raises :class:`LayoutError` for a size that is not one (``NaN``, ``inf``, text, below
    0): the coordinates cannot be scaled by it, and reading it as unknown would crop the
    image at the wrong scale without a word.
    """
    problem = number_problem(element, (width, height))
    values = (float_attr(element, width) or 0.0, float_attr(element, height) or 0.0)
    if problem or min(values) < 0:
        declared = f"{element.get(width)!r} x {element.get(height)!r}"
        raise LayoutError(f"page size {declared} ({width}, {height}) is not a size")
    return values if min(values) > 0 else None
