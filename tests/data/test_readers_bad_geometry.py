"""Layout coordinates that are not an outline: each such line is skipped with its reason
(never a traceback, never a blank or sliver crop under a full label), and the rest of the
page, and of the import, still loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from quill.data.readers.alto import read_alto
from quill.data.readers.iam import read_iam
from quill.data.readers.pagexml import read_pagexml

from .conftest import IAM_FORMS, PAGE_2013, alto_xml, draw_page, page_xml, points

TEXTS = ["good line", "second line", "third line"]


def _page(root: Path, coords: list[str], size: tuple[int, int] = (500, 300)) -> Path:
    """A drawn page with a PAGE XML giving its lines ``coords`` (one region); returns root."""
    root.mkdir()
    page, drawn = draw_page(TEXTS, size=size)
    page.save(root / "p.png")
    lines = [
        {"id": f"l{i}", "text": text, "coords": coords[i] if i < len(coords) else points(ln.box)}
        for i, (text, ln) in enumerate(zip(TEXTS, drawn, strict=True))
    ]
    (root / "p.xml").write_text(page_xml("p.png", page.size, [{"id": "r1", "lines": lines}]))
    return root


def _reasons(result) -> dict[str, str]:
    return {skip.where: skip.reason for skip in result.report.skipped}


@pytest.mark.parametrize(
    "coords",
    ["10,70 150,74 300,78", "10,30 300,80 10,30"],
    ids=["baseline written as Coords", "collinear"],
)
def test_a_polygon_without_area_is_refused(tmp_path: Path, coords: str):
    result = read_pagexml(_page(tmp_path / "src", [coords]), tmp_path / "out")
    reason = _reasons(result)["p.xml line l0"]
    assert reason.startswith("polygon encloses almost no area") and "lie on a line" in reason
    assert sorted(s.text for s in result.manifest if s.kind == "line") == TEXTS[1:]


@pytest.mark.parametrize("coords", ["nan,10 90,10 90,40 10,40", "1e999,10 90,10 90,40 10,40"])
def test_coordinates_that_are_not_finite_are_refused(tmp_path: Path, coords: str):
    result = read_pagexml(_page(tmp_path / "src", [coords]), tmp_path / "out")
    assert "are not x,y pairs of finite numbers" in _reasons(result)["p.xml line l0"]
    assert len([s for s in result.manifest if s.kind == "line"]) == 2


@pytest.mark.parametrize("x", ["nan", "abc"])
def test_page_2010_points_that_are_not_numbers_skip_their_line(tmp_path: Path, x: str):
    root = _page(tmp_path / "src", [])
    xml = root / "p.xml"
    first = points(draw_page(TEXTS, size=(500, 300))[1][0].box)
    corners = [pair.split(",") for pair in first.split()]
    corners[1][0] = x
    old = "".join(f'<Point x="{a}" y="{b}"/>' for a, b in corners)
    xml.write_text(
        xml.read_text().replace(f'<Coords points="{first}"/>', f"<Coords>{old}</Coords>")
    )
    result = read_pagexml(root, tmp_path / "out")
    assert "Coords points" in _reasons(result)["p.xml line l0"]
    assert len([s for s in result.manifest if s.kind == "line"]) == 2


@pytest.mark.parametrize("width", ["NaN", "inf", "wide"])
def test_a_page_size_that_is_not_one_skips_the_page_only(tmp_path: Path, width: str):
    root = _page(tmp_path / "src", [])
    (root / "q.xml").write_text(
        (root / "p.xml").read_text().replace('imageWidth="500"', f'imageWidth="{width}"')
    )
    result = read_pagexml(root, tmp_path / "out")
    assert _reasons(result) == {
        "q.xml": f"page size {width!r} x '300' (imageWidth, imageHeight) is not a size"
    }
    assert len(result.manifest) == 4  # p.xml: three lines and their paragraph


def test_alto_box_that_is_not_a_number_skips_its_line(tmp_path: Path):
    root = tmp_path / "alto"
    root.mkdir()
    page, drawn = draw_page(TEXTS[:2], size=(500, 200))
    page.save(root / "a.png")

    def box(line) -> tuple[float, ...]:
        left, top, right, bottom = line.box
        return (left - 4, top - 4, right - left + 8, bottom - top + 8)

    lines = [
        {"id": f"L{i}", "box": box(ln), "words": [(ln.text, box(ln))]} for i, ln in enumerate(drawn)
    ]
    xml = alto_xml("a.png", page.size, [{"id": "B1", "box": (0, 0, 500, 200), "lines": lines}])
    start = xml.index('<TextLine ID="L0" HPOS="') + len('<TextLine ID="L0" HPOS="')
    xml = xml[:start] + "NaN" + xml[xml.index('"', start) :]
    (root / "a.xml").write_text(xml)
    result = read_alto(root, tmp_path / "out", kinds=("line",))
    assert _reasons(result) == {"a.xml line L0": "HPOS='NaN' is not a number"}
    assert [s.text for s in result.manifest] == [TEXTS[1]]


@pytest.mark.parametrize("value", ["abc", "nan"])
def test_iam_component_box_that_is_not_a_number_skips_its_line(
    iam_dir: Path, tmp_path: Path, value: str
):
    xml = iam_dir / "xml" / "a01-000u.xml"
    text = xml.read_text(encoding="iso-8859-1")
    start = text.index('<cmp x="')
    width = text.index('width="', start) + len('width="')
    xml.write_text(text[:width] + value + text[text.index('"', width) :], encoding="iso-8859-1")
    result = read_iam(iam_dir, tmp_path / "out", kinds=("line",))
    problem = f"a word component's box is unusable: width={value!r} is not a number"
    assert _reasons(result) == {"xml/a01-000u.xml line a01-000u-00": problem}
    texts = {s.text for s in result.manifest}
    assert IAM_FORMS["a01-000u"][1][0] not in texts and IAM_FORMS["a01-000u"][1][1] in texts


def _region_only(root: Path) -> Path:
    """A page whose one region has its text at region level, no TextLine."""
    root.mkdir()
    page, drawn = draw_page(TEXTS[:2], size=(500, 200))
    page.save(root / "r.png")
    outline = points((drawn[0].box[0], drawn[0].box[1], drawn[1].box[2], drawn[1].box[3]), pad=10)
    (root / "r.XML").write_text(
        f'<PcGts xmlns="{PAGE_2013}"><Page imageFilename="r.png" imageWidth="500" '
        f'imageHeight="200"><TextRegion id="r1"><Coords points="{outline}"/><TextEquiv>'
        f"<Unicode>{TEXTS[0]}\n{TEXTS[1]}</Unicode></TextEquiv></TextRegion></Page></PcGts>"
    )
    return root


def test_a_region_with_its_text_only_is_a_paragraph(tmp_path: Path):
    """Dropped without a word before; the upper-case .XML was not even found."""
    root = _region_only(tmp_path / "src")
    result = read_pagexml(root, tmp_path / "out")
    ((kind, text),) = [(s.kind, s.text) for s in result.manifest]
    assert (kind, text) == ("paragraph", "\n".join(TEXTS[:2])) and not result.report.skipped

    lines_only = read_pagexml(root, tmp_path / "lines", kinds=("line",))
    assert not len(lines_only.manifest)
    assert "--kinds paragraph" in _reasons(lines_only)["r.XML region r1"]


def test_an_image_name_outside_the_source_is_not_followed(tmp_path: Path):
    root = _page(tmp_path / "src", [])
    (tmp_path / "far").mkdir()
    outside = tmp_path / "far" / "elsewhere.png"
    (root / "p.png").rename(outside)
    xml = root / "p.xml"
    xml.write_text(xml.read_text().replace('imageFilename="p.png"', f'imageFilename="{outside}"'))
    result = read_pagexml(root, tmp_path / "out")
    assert _reasons(result) == {"p.xml": f"image file {str(outside)!r} not found"}


def test_the_same_page_exported_twice_stays_on_one_side(pagexml_page, tmp_path: Path):
    """Two XML files of one page are two page ids, hashed apart: 'scan' and 'scan-again'
    land in different splits unless their byte-identical crops merge them."""
    root = pagexml_page.root
    (root / "scan-again.xml").write_text(pagexml_page.xml.read_text())
    result = read_pagexml(root, tmp_path / "out", val_fraction=0.5, test_fraction=0.5)
    assert {s.group for s in result.manifest} == {"scan", "scan-again"}
    assert len({s.split for s in result.manifest}) == 1
    assert result.report.notes and "scan, scan-again" in result.report.notes[0]
