"""Bad input: each problem gives one message naming its file, and the rest still loads."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quill.data.readers import READERS
from quill.data.readers.common import DatasetError
from quill.data.readers.geometry import crop_polygons
from quill.data.readers.pagexml import read_pagexml

from .conftest import PageFixture, draw_page, page_xml, points


def _copy_page(fixture: PageFixture, name: str) -> tuple[Path, Path]:
    """A copy of the fixture page under another name; returns (xml, image)."""
    image = fixture.root / f"{name}.png"
    shutil.copyfile(fixture.image, image)
    xml = fixture.root / f"{name}.xml"
    xml.write_text(fixture.xml.read_text().replace("scan.png", f"{name}.png"))
    return xml, image


def test_each_bad_page_is_named_and_the_good_page_loads(pagexml_page: PageFixture, tmp_path: Path):
    root = pagexml_page.root
    _, missing = _copy_page(pagexml_page, "missing-image")
    missing.unlink()
    _, corrupt = _copy_page(pagexml_page, "corrupt-image")
    corrupt.write_bytes(corrupt.read_bytes()[:200])
    _, other = _copy_page(pagexml_page, "other-image")
    Image.new("L", (300, 600), 255).save(other)
    (root / "broken.xml").write_text("<PcGts><Page>")
    (root / "mets.xml").write_text("<mets/>")

    result = read_pagexml(root, tmp_path / "out")

    reasons = {Path(s.where).name: s.reason for s in result.report.skipped}
    assert "'missing-image.png' not found" in reasons["missing-image.xml"]
    assert "truncated or corrupt" in reasons["corrupt-image.xml"]
    assert "does not match its image" in reasons["other-image.xml"]
    assert "not well-formed XML" in reasons["broken.xml"]
    assert "not a PAGE XML file" in reasons["mets.xml"]
    assert len(result.report.skipped) == 5
    assert {s.group for s in result.manifest} == {"scan"}
    assert result.report.total_loaded == 5


def test_bad_lines_are_skipped_with_their_paragraph(tmp_path: Path):
    texts = ["good line", "café au lait", "", "outside"]
    page, drawn = draw_page(texts[:3] + ["x"], size=(500, 300))
    page.save(tmp_path / "p.png")
    lines = [
        {"id": f"l{i}", "text": text, "coords": points(line.box)}
        for i, (text, line) in enumerate(zip(texts, drawn, strict=True))
    ]
    lines[3]["coords"] = "400,250 900,250 900,290 400,290"
    regions = [
        {"id": "r1", "lines": lines[:2]},
        {"id": "r2", "lines": [lines[0] | {"id": "l0b"}, lines[2]]},
        {"id": "r3", "lines": [lines[3]]},
    ]
    (tmp_path / "p.xml").write_text(page_xml("p.png", page.size, regions))

    result = read_pagexml(tmp_path / "p.xml", tmp_path / "out")

    skipped = {s.where: s.reason for s in result.report.skipped}
    assert skipped["p.xml line l1"] == ("characters outside the vocabulary: 'é' in 'café au lait'")
    assert skipped["p.xml line l2"] == "empty label"
    assert "outside the 500x300 image" in skipped["p.xml line l3"]
    assert "l1 unusable" in skipped["p.xml region r1"]
    assert len(skipped) == 4
    # r2's empty line is a mark without text, so r2 still makes a paragraph.
    assert sorted((s.kind, s.text) for s in result.manifest) == [
        ("line", "good line"),
        ("line", "good line"),
        ("paragraph", "good line"),
    ]


@pytest.mark.parametrize("fmt", sorted(READERS))
def test_missing_source_is_one_clear_error(fmt: str, tmp_path: Path):
    with pytest.raises(DatasetError, match="not found.*no-such-dir"):
        READERS[fmt](tmp_path / "no-such-dir", tmp_path / "out")


def test_folder_rows_each_report_their_problem(folder_dataset: Path, tmp_path: Path):
    labels = folder_dataset / "labels.tsv"
    (folder_dataset / "lines" / "p2_2.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    lines = folder_dataset / "lines"
    for number in (0, 1):  # images of their own: a second text for one image is a conflict
        shutil.copyfile(lines / f"p1_{number}.png", lines / f"p3_{number}.png")
    rows = labels.read_text().splitlines()
    rows += [
        "lines/absent.png\tp3\tnever drawn",
        "lines/p3_0.png\tp3\t",
        "lines/p3_1.png\tp3\tnaïve",
        "lines/p1_2.png\tonly two fields",
    ]
    labels.write_text("\n".join(rows) + "\n")

    result = READERS["folder"](folder_dataset, tmp_path / "out")

    reasons = [str(s) for s in result.report.skipped]
    assert len(reasons) == 5
    assert "labels.tsv:7 (lines/p2_2.png): " in reasons[0] and "not an image" in reasons[0]
    assert reasons[1].startswith("labels.tsv:8 (lines/absent.png): image file not found")
    assert reasons[2] == "labels.tsv:9 (lines/p3_0.png): empty label"
    assert "'ï'" in reasons[3]
    assert reasons[4] == "labels.tsv:11: expected 3 tab-separated fields, got 2"
    assert result.report.total_loaded == 5


def test_crop_paints_outside_the_polygon_with_paper():
    rng = np.random.default_rng(0)
    page = Image.fromarray(rng.integers(0, 40, (60, 80), dtype=np.uint8) + 200)  # paper ~220
    page.paste(0, (10, 10, 70, 14))  # a stroke inside the triangle below
    page.paste(0, (55, 40, 70, 50))  # a blot in its bounding box, but outside it
    triangle = [(10, 10), (69, 10), (10, 49)]
    crop = np.asarray(crop_polygons(page, [triangle]))
    assert crop.shape == (40, 60)
    assert crop[2, 2] == 0  # inside the triangle: the ink
    assert 200 <= crop[-2, -2] < 240  # outside: paper colour, not the ink and not pure white
