"""ALTO reader: v2 and v4, SP/HYP text, reading order, mm10 units, polygons."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

from quill.data.readers.alto import parse_alto, read_alto
from quill.data.readers.xmlutil import LayoutError

EXPECTED_LINES = ["Ink on paper", "alters every-", "Two blocks here"]


def _by_page(manifest, page: str, kind: str) -> list:
    return [s for s in manifest if s.group == page and s.kind == kind]


def test_v2_pixel_and_v4_mm10_give_the_same_lines(alto_pages: Path, tmp_path: Path):
    result = read_alto(alto_pages, tmp_path / "out")
    assert result.report.skipped == []
    manifest = result.manifest
    for page in ("v2", "v4"):
        assert [s.text for s in _by_page(manifest, page, "line")] == EXPECTED_LINES
        paragraphs = [s.text for s in _by_page(manifest, page, "paragraph")]
        assert paragraphs == ["Ink on paper\nalters every-", "Two blocks here"]
    # mm10 coordinates converted through the page size land on the same pixels.
    for v2, v4 in zip(
        _by_page(manifest, "v2", "line"), _by_page(manifest, "v4", "line"), strict=True
    ):
        w2, h2 = Image.open(manifest.path_of(v2)).size
        w4, h4 = Image.open(manifest.path_of(v4)).size
        assert abs(w2 - w4) <= 3 and abs(h2 - h4) <= 3


def test_mm10_without_page_size_uses_image_dpi(alto_pages: Path, tmp_path: Path):
    xml = alto_pages / "v4.xml"
    text = xml.read_text()
    start = text.index('WIDTH="', text.index("<Page"))
    end = text.index(">", start)
    xml.write_text(text[:start] + text[end:])
    assert parse_alto(xml).size is None
    result = read_alto(xml, tmp_path / "out")
    assert [s.text for s in result.manifest if s.kind == "line"] == EXPECTED_LINES

    Image.open(alto_pages / "v2.png").save(alto_pages / "v4.png")  # same pixels, no DPI
    result = read_alto(xml, tmp_path / "out2")
    assert result.report.total_loaded == 0
    (skip,) = result.report.skipped
    assert skip.where.endswith("v4.xml") and "mm10" in skip.reason and "DPI" in skip.reason


def test_polygon_is_preferred_over_the_box(alto_pages: Path):
    layout = parse_alto(alto_pages / "v4.xml")
    assert [r.id for r in layout.regions] == ["B1", "B2"]
    line = layout.regions[1].lines[0]
    # The fixture's polygon hugs the ink 3 px out, its HPOS/VPOS box 4 px: 1 px = 254/300 mm10.
    root = ET.parse(alto_pages / "v4.xml").getroot()
    box_left = float(next(e for e in root.iter() if e.get("ID") == "L2").get("HPOS"))
    assert min(x for x, _ in line.polygon) == pytest.approx(box_left + 254 / 300, abs=0.1)


def test_unknown_unit_and_other_formats_are_refused(alto_pages: Path, tmp_path: Path):
    xml = alto_pages / "v2.xml"
    xml.write_text(xml.read_text().replace(">pixel<", ">furlong<"))
    with pytest.raises(LayoutError, match="furlong"):
        parse_alto(xml)
    page = tmp_path / "page.xml"
    page.write_text('<PcGts xmlns="x"><Page/></PcGts>')
    with pytest.raises(LayoutError, match="not an ALTO file"):
        parse_alto(page)
