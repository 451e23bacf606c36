"""XML helpers shared by the PAGE, ALTO and IAM readers.

Ground truth comes in several schema versions (PAGE 2010/2013/2019, ALTO v2-v4), which differ
mostly in their namespace URI. Stripping namespaces once after parsing lets each reader
match on local names and read every version with one code path.
"""

from __future__ import annotations

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
    """A numeric attribute, or None when absent or not a number."""
    try:
        return float(element.attrib[name])
    except (KeyError, ValueError):
        return None
