"""Fixtures that generate tiny datasets in the real formats (PAGE XML, ALTO, IAM, folder).

Pages are drawn with PIL: each word is rendered at a known place, so every fixture knows
the exact ink box of every word and line and the tests can check crops against them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import pytest
from PIL import Image, ImageDraw, ImageFont

from quill.data.manifest import Manifest, Sample, file_sha256

Box = tuple[int, int, int, int]  # left, top, right, bottom
PAPER, INK = 232, 20
PAGE_2013 = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2013-07-15"
PAGE_2019 = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
ALTO_V2 = "http://www.loc.gov/standards/alto/ns-v2#"
ALTO_V4 = "http://www.loc.gov/standards/alto/ns-v4#"


@dataclass
class DrawnLine:
    text: str
    words: list[Box]

    @property
    def box(self) -> Box:
        return union(self.words)


def union(boxes: list[Box]) -> Box:
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def font(size: int = 28) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def draw_page(
    lines: list[str],
    size: tuple[int, int] = (900, 500),
    origin: tuple[int, int] = (40, 40),
    spacing: int = 64,
    mode: str = "L",
) -> tuple[Image.Image, list[DrawnLine]]:
    """A page with ``lines`` written one under the other; returns it and each word's box."""
    paper = PAPER if mode == "L" else (240, 232, 210)
    ink = INK if mode == "L" else (30, 30, 90)
    page = Image.new(mode, size, paper)
    draw = ImageDraw.Draw(page)
    face = font()
    space = draw.textlength(" ", font=face)
    drawn = []
    for number, text in enumerate(lines):
        x, y = float(origin[0]), origin[1] + number * spacing
        words = []
        for word in text.split(" "):
            draw.text((x, y), word, font=face, fill=ink)
            words.append(tuple(int(v) for v in draw.textbbox((x, y), word, font=face)))
            x += draw.textlength(word, font=face) + space
        drawn.append(DrawnLine(text, words))  # type: ignore[arg-type]
    return page, drawn


def points(box: Box, pad: int = 6) -> str:
    left, top, right, bottom = box
    left, top, right, bottom = left - pad, top - pad, right + pad, bottom + pad
    return f"{left},{top} {right},{top} {right},{bottom} {left},{bottom}"


def baseline(box: Box) -> str:
    left, _, right, bottom = box
    return f"{left},{bottom - 6} {right},{bottom - 6}"


def page_xml(
    image_name: str,
    size: tuple[int, int],
    regions: list[dict],
    namespace: str = PAGE_2013,
    reading_order: list[str] | None = None,
) -> str:
    """A PAGE XML document. ``regions``: dicts with id, coords, custom and lines (dicts with
    id, text, coords, baseline, custom; missing keys leave the element out)."""
    order = ""
    if reading_order:
        refs = "".join(
            f'<RegionRefIndexed index="{i}" regionRef="{r}"/>' for i, r in enumerate(reading_order)
        )
        order = f'<ReadingOrder><OrderedGroup id="ro1">{refs}</OrderedGroup></ReadingOrder>'
    body = []
    for region in regions:
        lines = []
        for line in region["lines"]:
            parts = []
            if line.get("coords"):
                parts.append(f'<Coords points="{line["coords"]}"/>')
            if line.get("baseline"):
                parts.append(f'<Baseline points="{line["baseline"]}"/>')
            parts.append(f"<TextEquiv><Unicode>{escape(line['text'])}</Unicode></TextEquiv>")
            custom = f' custom="{line["custom"]}"' if line.get("custom") else ""
            lines.append(f'<TextLine id="{line["id"]}"{custom}>{"".join(parts)}</TextLine>')
        coords = f'<Coords points="{region["coords"]}"/>' if region.get("coords") else ""
        custom = f' custom="{region["custom"]}"' if region.get("custom") else ""
        body.append(
            f'<TextRegion id="{region["id"]}"{custom}>{coords}{"".join(lines)}</TextRegion>'
        )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<PcGts xmlns="{namespace}">'
        f"<Metadata><Creator>quill tests</Creator></Metadata>"
        f'<Page imageFilename="{image_name}" imageWidth="{size[0]}" imageHeight="{size[1]}">'
        f"{order}{''.join(body)}</Page></PcGts>"
    )


def alto_xml(
    image_name: str,
    page_size: tuple[float, float],
    blocks: list[dict],
    namespace: str = ALTO_V4,
    unit: str = "pixel",
    reading_order: list[str] | None = None,
) -> str:
    """An ALTO document. ``blocks``: dicts with id, box (l, t, w, h) and lines (dicts with id,
    box, words [(text, box)], polygon (optional POINTS string), hyphen (optional))."""
    order = ""
    if reading_order:
        refs = "".join(f'<ElementRef ID="ro{i}" REF="{r}"/>' for i, r in enumerate(reading_order))
        order = f"<ReadingOrder><OrderedGroup ID='og'>{refs}</OrderedGroup></ReadingOrder>"

    def pos(box: tuple[float, ...]) -> str:
        return 'HPOS="{:.1f}" VPOS="{:.1f}" WIDTH="{:.1f}" HEIGHT="{:.1f}"'.format(*box)

    body = []
    for block in blocks:
        lines = []
        for line in block["lines"]:
            words = "<SP/>".join(
                f"<String CONTENT={quoteattr(text)} {pos(box)}/>" for text, box in line["words"]
            )
            if line.get("hyphen"):
                words += f'<HYP CONTENT="{line["hyphen"]}"/>'
            shape = (
                f'<Shape><Polygon POINTS="{line["polygon"]}"/></Shape>'
                if line.get("polygon")
                else ""
            )
            lines.append(
                f'<TextLine ID="{line["id"]}" {pos(line["box"])}>{shape}{words}</TextLine>'
            )
        body.append(
            f'<TextBlock ID="{block["id"]}" {pos(block["box"])}>{"".join(lines)}</TextBlock>'
        )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<alto xmlns="{namespace}"><Description>'
        f"<MeasurementUnit>{unit}</MeasurementUnit><sourceImageInformation>"
        f"<fileName>{image_name}</fileName></sourceImageInformation></Description>{order}"
        f'<Layout><Page ID="p1" WIDTH="{page_size[0]:.1f}" HEIGHT="{page_size[1]:.1f}">'
        f"<PrintSpace>{''.join(body)}</PrintSpace></Page></Layout></alto>"
    )


def iam_form_xml(form_id: str, writer: str, size: tuple[int, int], lines: list[DrawnLine]) -> str:
    """An IAM form: machine-printed prompt, then handwritten lines with word/cmp boxes.

    Texts use ``&quot;`` like the real files (quotes inside attributes)."""
    printed = "".join(f"<machine-print-line text={quoteattr(ln.text)}/>" for ln in lines)
    written = []
    for number, line in enumerate(lines):
        words = []
        for index, (word, box) in enumerate(zip(line.text.split(" "), line.words, strict=True)):
            left, top, right, bottom = box
            cmp = f'<cmp x="{left}" y="{top}" width="{right - left}" height="{bottom - top}"/>'
            words.append(
                f'<word id="{form_id}-{number:02d}-{index:02d}" tag="NN" '
                f"text={quoteattr(word)}>{cmp}</word>"
            )
        written.append(
            f'<line id="{form_id}-{number:02d}" text={quoteattr(line.text)} '
            f'segmentation="ok">{"".join(words)}</line>'
        )
    return (
        f'<?xml version="1.0" encoding="ISO-8859-1"?>\n'
        f'<form id="{form_id}" writer-id="{writer}" width="{size[0]}" height="{size[1]}" '
        f'created="2000-01-01"><machine-printed-part>{printed}</machine-printed-part>'
        f"<handwritten-part>{''.join(written)}</handwritten-part></form>"
    )


def line_dataset(root: Path, texts: dict[str, list[str]], source: str) -> Manifest:
    """A dataset folder of drawn line images: ``texts`` maps split -> labels."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    samples = []
    for split, labels in texts.items():
        for number, text in enumerate(labels):
            image, _ = draw_page([text], size=(40 + 16 * len(text), 60), origin=(10, 10))
            name = f"images/{source}-{split}-{number}.png"
            image.save(root / name)
            samples.append(
                Sample(name, text, split, source, file_sha256(root / name), f"{split}{number}")
            )
    manifest = Manifest(root, samples)
    manifest.save()
    return manifest


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture
def make_line_dataset(tmp_path: Path) -> Callable[..., Manifest]:
    """Factory: ``make_line_dataset(name, {split: [texts]}, source=name)`` -> Manifest."""

    def make(name: str, texts: dict[str, list[str]], source: str | None = None) -> Manifest:
        return line_dataset(tmp_path / name, texts, source or name)

    return make


@dataclass
class PageFixture:
    """A generated page: where its files are and what was drawn on it."""

    root: Path
    xml: Path
    image: Path
    lines: list[DrawnLine]


@pytest.fixture
def pagexml_page(tmp_path: Path) -> PageFixture:
    """One PAGE 2013 page: two regions listed against their reading order, lines ordered by
    ``custom`` attributes against document order, and one line with only a Baseline."""
    texts = ["First region, line one.", "First region, line two!", "Second region: alone"]
    page, drawn = draw_page(texts, size=(800, 260))
    root = tmp_path / "page"
    root.mkdir()
    page.save(root / "scan.png")
    first = {
        "id": "rA",
        "coords": points(union([drawn[0].box, drawn[1].box]), pad=10),
        "lines": [
            {
                "id": "l2",
                "text": texts[1],
                "baseline": baseline(drawn[1].box),
                "custom": "readingOrder {index:1;}",
            },
            {
                "id": "l1",
                "text": texts[0],
                "coords": points(drawn[0].box),
                "custom": "readingOrder {index:0;}",
            },
        ],
    }
    second = {
        "id": "rB",
        "coords": points(drawn[2].box, pad=10),
        "lines": [{"id": "l3", "text": texts[2], "coords": points(drawn[2].box)}],
    }
    xml = root / "scan.xml"
    xml.write_text(page_xml("scan.png", page.size, [second, first], reading_order=["rA", "rB"]))
    return PageFixture(root, xml, root / "scan.png", drawn)


@pytest.fixture
def alto_pages(tmp_path: Path) -> Path:
    """Two ALTO files of one drawn page, blocks listed against their ReadingOrder, SP and HYP:
    v2 in pixels, v4 in mm10 (image saved at 300 dpi) with a Shape/Polygon on one line."""
    root = tmp_path / "alto"
    root.mkdir()
    words = [["Ink", "on", "paper"], ["alters", "every"], ["Two", "blocks", "here"]]
    page, drawn = draw_page(["Ink on paper", "alters every-", "Two blocks here"], size=(700, 260))

    def line(number: int, box_of: Callable[[Box], tuple[float, ...]], **extra) -> dict:
        return {
            "id": f"L{number}",
            "box": box_of(drawn[number].box),
            "words": [
                (w, box_of(b)) for w, b in zip(words[number], drawn[number].words, strict=True)
            ],
            **({"hyphen": "-"} if number == 1 else {}),
            **extra,
        }

    def px(box: Box) -> tuple[float, ...]:
        return (box[0] - 4, box[1] - 4, box[2] - box[0] + 8, box[3] - box[1] + 8)

    mm10 = 254 / 300

    def to_mm10(box: Box) -> tuple[float, ...]:
        return tuple(v * mm10 for v in px(box))

    def blocks(box_of: Callable[[Box], tuple[float, ...]], **extra) -> list[dict]:
        return [
            {
                "id": "B2",
                "box": box_of(drawn[2].box),
                "lines": [line(2, box_of, **extra)],
            },
            {
                "id": "B1",
                "box": box_of(union([d.box for d in drawn[:2]])),
                "lines": [line(0, box_of), line(1, box_of)],
            },
        ]

    page.save(root / "v2.png")
    (root / "v2.xml").write_text(
        alto_xml("v2.png", page.size, blocks(px), namespace=ALTO_V2, reading_order=["B1", "B2"])
    )
    page.save(root / "v4.png", dpi=(300, 300))
    polygon = " ".join(f"{x * mm10:.1f},{y * mm10:.1f}" for x, y in _corners(drawn[2].box, 3))
    (root / "v4.xml").write_text(
        alto_xml(
            "v4.png",
            (page.width * mm10, page.height * mm10),
            blocks(to_mm10, polygon=polygon),
            unit="mm10",
            reading_order=["B1", "B2"],
        )
    )
    return root


def _corners(box: Box, pad: int) -> list[tuple[int, int]]:
    left, top, right, bottom = box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad
    return [(left, top), (right, top), (right, bottom), (left, bottom)]


IAM_FORMS = {
    # form id: (writer, lines)
    "a01-000u": ("000", ['He said "no" & left.', "Then the rain came down"]),
    "a01-007": ("001", ["A second writer", "wrote these two lines"]),
    "b02-010": ("002", ["Third hand, at half size", "downsampled like the mirror"]),
}


@pytest.fixture
def iam_dir(tmp_path: Path) -> Path:
    """An IAM-layout folder: forms/*.png (one a half-size JPEG), xml/*.xml, no task lists."""
    root = tmp_path / "iam"
    (root / "forms").mkdir(parents=True)
    (root / "xml").mkdir()
    for form_id, (writer, texts) in IAM_FORMS.items():
        page, drawn = draw_page(texts, size=(800, 300), origin=(40, 120))
        if form_id.startswith("b"):
            half = page.resize((page.width // 2, page.height // 2), Image.Resampling.LANCZOS)
            half.save(root / "forms" / f"{form_id}.jpg", quality=95)
        else:
            page.save(root / "forms" / f"{form_id}.png")
        (root / "xml" / f"{form_id}.xml").write_text(
            iam_form_xml(form_id, writer, page.size, drawn), encoding="iso-8859-1"
        )
    return root


@pytest.fixture
def iam_task_lists(iam_dir: Path) -> Path:
    """The IAM folder with task split lists naming lines, as the official zip does."""
    task = iam_dir / "task"
    task.mkdir()
    (task / "trainset.txt").write_text("a01-000u-00\na01-000u-01\n")
    (task / "validationset1.txt").write_text("a01-007-00\na01-007-01\n")
    (task / "validationset2.txt").write_text("")
    (task / "testset.txt").write_text("b02-010-00\n")
    return iam_dir


@pytest.fixture
def folder_dataset(tmp_path: Path) -> Path:
    """A plain folder: images in two pages, labels.tsv with a page column."""
    root = tmp_path / "folder"
    (root / "lines").mkdir(parents=True)
    rows = ["file\tpage\ttext"]
    for page in ("p1", "p2"):
        for number in range(3):
            text = f"{page} line {number}"
            image, _ = draw_page([text], size=(260, 60), origin=(10, 10))
            image.save(root / "lines" / f"{page}_{number}.png")
            rows.append(f"lines/{page}_{number}.png\t{page}\t{text}")
    (root / "labels.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root
