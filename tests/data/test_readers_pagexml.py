"""PAGE XML reader: reading order, crops against the drawn ink, both schemas, real pages."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from quill.data.manifest import Manifest
from quill.data.readers.pagexml import parse_pagexml, read_pagexml

from .conftest import PAGE_2013, PAGE_2019, Box, PageFixture


def ink_pixels(image: Image.Image, box: Box | None = None) -> int:
    """Dark pixels (ink) in ``image`` or in ``box`` of it."""
    region = image.convert("L").crop(box) if box else image.convert("L")
    return int((np.asarray(region) < 128).sum())


def test_regions_and_lines_follow_reading_order(pagexml_page: PageFixture, tmp_path: Path):
    result = read_pagexml(pagexml_page.root, tmp_path / "out")
    texts = [line.text for line in pagexml_page.lines]
    lines = [s for s in result.manifest if s.kind == "line"]
    paragraphs = [s for s in result.manifest if s.kind == "paragraph"]
    assert [s.text for s in lines] == texts
    assert [s.text for s in paragraphs] == [f"{texts[0]}\n{texts[1]}", texts[2]]
    assert result.report.skipped == []
    assert {s.group for s in result.manifest} == {"scan"}
    assert len({s.split for s in result.manifest}) == 1


def test_line_crops_hold_their_own_ink_and_no_other(pagexml_page: PageFixture, tmp_path: Path):
    result = read_pagexml(pagexml_page.root, tmp_path / "out")
    page = Image.open(pagexml_page.image)
    lines = [s for s in result.manifest if s.kind == "line"]
    for sample, drawn in zip(lines, pagexml_page.lines, strict=True):
        expected = ink_pixels(page, drawn.box)
        got = ink_pixels(Image.open(result.manifest.path_of(sample)))
        # Line l2 has only a Baseline: its band is estimated, so allow a little clipping.
        assert expected * 0.95 <= got <= expected, (sample.meta["line"], got, expected)
    paragraph = Image.open(
        result.manifest.path_of(next(s for s in result.manifest if s.kind == "paragraph"))
    )
    first_two = sum(ink_pixels(page, d.box) for d in pagexml_page.lines[:2])
    assert ink_pixels(paragraph) == first_two


def test_2019_schema_reads_the_same(pagexml_page: PageFixture, tmp_path: Path):
    xml = pagexml_page.xml.read_text().replace(PAGE_2013, PAGE_2019)
    pagexml_page.xml.write_text(xml)
    layout = parse_pagexml(pagexml_page.xml)
    assert [r.id for r in layout.regions] == ["rA", "rB"]
    assert [ln.id for ln in layout.regions[0].lines] == ["l1", "l2"]
    result = read_pagexml(pagexml_page.xml, tmp_path / "out")
    assert result.report.total_loaded == 5


def test_custom_reading_order_without_reading_order_element(pagexml_page: PageFixture):
    root = ET.parse(pagexml_page.xml).getroot()
    page = root.find(f"{{{PAGE_2013}}}Page")
    page.remove(page.find(f"{{{PAGE_2013}}}ReadingOrder"))
    for region, index in zip(page.findall(f"{{{PAGE_2013}}}TextRegion"), (1, 0), strict=True):
        region.set("custom", f"readingOrder {{index:{index};}}")
    ET.ElementTree(root).write(pagexml_page.xml)
    assert [r.id for r in parse_pagexml(pagexml_page.xml).regions] == ["rA", "rB"]
    for region in page.findall(f"{{{PAGE_2013}}}TextRegion"):
        del region.attrib["custom"]
    ET.ElementTree(root).write(pagexml_page.xml)
    assert [r.id for r in parse_pagexml(pagexml_page.xml).regions] == ["rB", "rA"]


def test_transkribus_layout_finds_image_one_folder_up(pagexml_page: PageFixture, tmp_path: Path):
    (pagexml_page.root / "page").mkdir()
    pagexml_page.xml.rename(pagexml_page.root / "page" / "scan.xml")
    result = read_pagexml(pagexml_page.root, tmp_path / "out")
    assert result.report.total_loaded == 5
    assert {s.group for s in result.manifest} == {"page__scan"}


def _textlines(xml: Path) -> list[str]:
    """Each TextLine's own transcription, counted independently of the reader."""
    ns = {"p": ET.parse(xml).getroot().tag.split("}")[0][1:]}
    lines = ET.parse(xml).getroot().iterfind(".//p:TextLine", ns)
    return [(ln.findtext("p:TextEquiv/p:Unicode", "", ns) or "").strip() for ln in lines]


def test_real_hooker_pages_load_every_xml_line(hooker_dir: Path, tmp_path: Path):
    pages = hooker_dir / "pages"
    result = read_pagexml(pages, tmp_path / "hooker-pages")
    manifest = Manifest.load(tmp_path / "hooker-pages")
    assert manifest.version == result.manifest.version
    for xml in sorted(pages.glob("*.xml")):
        expected = _textlines(xml)
        loaded = [s for s in manifest if s.kind == "line" and s.group == xml.stem]
        empty = [
            s
            for s in result.report.skipped
            if s.where.startswith(xml.name) and "empty label" in s.reason
        ]
        assert len(loaded) + len(empty) == len(expected), xml.name
        assert [s.text for s in loaded] == [t for t in expected if t]
    lines = [s for s in manifest if s.kind == "line"]
    assert len(lines) == 72
    sizes = [Image.open(manifest.path_of(s)).size for s in lines]
    assert all(20 <= h <= 250 for _, h in sizes)
    assert sum(w > 2 * h for w, h in sizes) >= 65  # a few lines hold one character ('9', 'y')
    # Five regions; empty lines are marks, not text, so their regions still become paragraphs,
    # except a region holding nothing but one empty line (JDH_2_16_145_001 r1).
    assert sum(s.kind == "paragraph" for s in manifest) == 4


def test_import_is_deterministic(pagexml_page: PageFixture, tmp_path: Path):
    first = read_pagexml(pagexml_page.root, tmp_path / "a").manifest
    second = read_pagexml(pagexml_page.root, tmp_path / "b").manifest
    assert first.version == second.version
    assert [s.sha256 for s in first] == [s.sha256 for s in second]
