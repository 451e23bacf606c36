"""Whole-page evaluation: line matching, page sets in the real formats, the real model on a
page composed of printed lines, and ``quill bench accuracy --pages`` end to end."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont
from typer.testing import CliRunner

from quill.bench.datasets import BenchDataError
from quill.bench.detection import Detection, box_iou, detect_score, match_lines
from quill.bench.page_sets import PageSample, PageSet, TruthLine, load_pages
from quill.bench.pages import evaluate_pages, pages_markdown
from quill.bench.systems import PageReading, QuillSystem

MODEL = Path(__file__).resolve().parents[2] / "models" / "default"
#: The lines of the composed test page, top to bottom.
PAGE_LINES = ["My dear Dyer,", "the quick brown fox jumps", "over the lazy dog at Kew."]

Box = tuple[int, int, int, int]


def compose_page(
    lines: Sequence[str], note: str = "", width: int = 1000, spacing: int = 100
) -> tuple[bytes, list[Box]]:
    """A PNG page of ``lines`` printed dark on light paper, and each line's box (padded).

    ``note`` adds a note below the lines at the right margin, as a date or a signature
    would be (its box is returned last).
    """
    font = ImageFont.load_default(size=40)
    rows = len(lines) + (1 if note else 0)
    page = Image.new("L", (width, 140 + spacing * rows), 250)
    draw = ImageDraw.Draw(page)
    boxes = []
    texts = [(text, (60, 70 + i * spacing)) for i, text in enumerate(lines)]
    if note:
        texts.append((note, (width - 260, 70 + len(lines) * spacing)))
    for text, origin in texts:
        draw.text(origin, text, font=font, fill=20)
        left, top, right, bottom = draw.textbbox(origin, text, font=font)
        boxes.append((left - 8, top - 8, right + 8, bottom + 8))
    buffer = io.BytesIO()
    page.save(buffer, "PNG")
    return buffer.getvalue(), boxes


def _points(box: Box) -> str:
    left, top, right, bottom = box
    return f"{left},{top} {right},{top} {right},{bottom} {left},{bottom}"


def write_pagexml(folder: Path, name: str, lines: Sequence[str], boxes: Sequence[Box]) -> Path:
    """A PAGE XML (2019) file for ``name``.png: the last line first in the file, in its own
    region, but second in ``ReadingOrder`` (so order comes from the file, not its layout)."""
    width, height = Image.open(folder / f"{name}.png").size
    lines_xml = [
        f'<TextLine id="l{i}"><Coords points="{_points(box)}"/>'
        f"<TextEquiv><Unicode>{text}</Unicode></TextEquiv></TextLine>"
        for i, (text, box) in enumerate(zip(lines, boxes, strict=True))
    ]
    xml = f"""<?xml version="1.0" encoding="UTF-8"?>
<PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15">
  <Page imageFilename="{name}.png" imageWidth="{width}" imageHeight="{height}">
    <ReadingOrder><OrderedGroup id="ro">
      <RegionRefIndexed index="0" regionRef="main"/>
      <RegionRefIndexed index="1" regionRef="last"/>
    </OrderedGroup></ReadingOrder>
    <TextRegion id="last">{lines_xml[-1]}</TextRegion>
    <TextRegion id="main">{"".join(lines_xml[:-1])}</TextRegion>
  </Page>
</PcGts>
"""
    path = folder / f"{name}.xml"
    path.write_text(xml, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def page_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PAGE XML page set of one composed page whose note is transcribed as empty."""
    folder = tmp_path_factory.mktemp("pages")
    image, boxes = compose_page(PAGE_LINES, note="17.i.96")
    (folder / "letter.png").write_bytes(image)
    write_pagexml(folder, "letter", [*PAGE_LINES, ""], boxes)
    return folder


@pytest.fixture(scope="module")
def quill() -> QuillSystem:
    if not (MODEL / "quill-model.json").is_file():
        pytest.skip(f"no shipped model at {MODEL}")
    return QuillSystem.load(MODEL, backend="onnx", threads=1, name="quill")


# ------------------------------------------------------------------ matching


def test_box_iou_is_symmetric_and_bounded() -> None:
    a, b = (0, 0, 100, 20), (50, 10, 150, 30)
    assert box_iou(a, b) == box_iou(b, a) == pytest.approx(500 / 3500)
    assert box_iou(a, (100, 0, 200, 20)) == 0.0  # touching edges do not overlap


def test_match_lines_is_one_to_one_and_prefers_the_best_overlap() -> None:
    truth = [(0, 0, 100, 20)]
    predicted = [(0, 0, 100, 24), (0, 0, 100, 21)]  # both overlap enough; the closer wins
    assert match_lines(predicted, truth) == [(1, 0, pytest.approx(20 / 21))]
    # A box spanning two lines matches neither at IoU 0.5: a merged pair is two misses.
    two_lines = [(0, 0, 100, 20), (0, 30, 100, 50)]
    assert match_lines([(0, 0, 100, 50)], two_lines) == []
    assert match_lines([(0, 0, 100, 50)], two_lines, threshold=0.4) == [(0, 0, pytest.approx(0.4))]


def test_detect_score_counts_recall_precision_and_ignores_untranscribed_lines() -> None:
    truth = [(0, 0, 100, 20), (0, 30, 100, 50), (0, 60, 100, 80)]
    blank = [(200, 0, 260, 15)]  # a margin mark transcribed as empty
    predicted = [(0, 0, 100, 21), (0, 31, 100, 50), (200, 0, 258, 15), (0, 200, 50, 220)]
    found = detect_score(predicted, truth, blank)
    assert (found.truth, found.predicted, found.matched, found.ignored) == (3, 4, 2, 1)
    assert found.recall == pytest.approx(2 / 3) and found.precision == pytest.approx(2 / 3)
    total = found + Detection(truth=1, predicted=1, matched=1, iou_sum=1.0)
    assert (total.recall, total.precision) == (0.75, 0.75)
    assert detect_score([], []).recall == 1.0  # nothing to find, nothing found


# ------------------------------------------------------------------ page sets


def test_pagexml_page_set_has_text_in_reading_order_and_line_polygons(page_folder: Path) -> None:
    pages = load_pages(f"letters={page_folder}")
    assert (pages.name, pages.format, len(pages.pages), pages.skipped) == (
        "letters",
        "pagexml",
        1,
        [],
    )
    (page,) = pages.pages
    assert page.text == "\n".join(PAGE_LINES)  # ReadingOrder, not file order; blank left out
    assert [line.text for line in page.text_lines] == PAGE_LINES
    assert len(page.lines) == 4 and page.lines[-1].blank
    _, boxes = compose_page(PAGE_LINES)
    assert page.text_lines[0].box == tuple(float(v) for v in boxes[0])
    assert pages.describe()["lines"] == 3 and len(pages.version) == 12


def test_alto_page_set_in_mm10_is_scaled_to_pixels(tmp_path: Path) -> None:
    image, boxes = compose_page(PAGE_LINES[:2])
    (tmp_path / "p.png").write_bytes(image)
    width, height = Image.open(io.BytesIO(image)).size
    mm10 = 254 / 100  # the page is 100 dpi: one pixel is 2.54 tenths of a millimetre
    lines = "".join(
        f'<TextLine ID="t{i}" HPOS="{b[0] * mm10}" VPOS="{b[1] * mm10}" '
        f'WIDTH="{(b[2] - b[0]) * mm10}" HEIGHT="{(b[3] - b[1]) * mm10}">'
        + "<SP/>".join(f'<String CONTENT="{word}"/>' for word in text.split())
        + "</TextLine>"
        for i, (text, b) in enumerate(zip(PAGE_LINES[:2], boxes, strict=True))
    )
    (tmp_path / "p.xml").write_text(
        '<alto xmlns="http://www.loc.gov/standards/alto/ns-v4#"><Description>'
        "<MeasurementUnit>mm10</MeasurementUnit><sourceImageInformation><fileName>p.png"
        "</fileName></sourceImageInformation></Description><Layout>"
        f'<Page WIDTH="{width * mm10}" HEIGHT="{height * mm10}"><PrintSpace>'
        f'<TextBlock ID="b1">{lines}</TextBlock></PrintSpace></Page></Layout></alto>'
    )
    pages = load_pages(str(tmp_path / "p.xml"))
    (page,) = pages.pages
    assert pages.format == "alto" and page.text == "\n".join(PAGE_LINES[:2])
    assert page.text_lines[1].box == pytest.approx(boxes[1], abs=0.01)


def test_labels_tsv_page_set_reads_whole_pages_text_only(tmp_path: Path) -> None:
    image, _ = compose_page(PAGE_LINES)
    (tmp_path / "a.png").write_bytes(image)
    escaped = "\\n".join(PAGE_LINES)  # labels.tsv writes a line break as backslash-n
    (tmp_path / "labels.tsv").write_text(
        "file\tpage\ttext\tkind\n"
        f"a.png\tletter-a\t{escaped}\tparagraph\n"
        "b.png\tletter-b\tmissing image\t\n"
        "a.png\tletter-a\tone line\tline\n"
    )
    pages = load_pages(f"scans={tmp_path}")
    assert pages.format == "folder" and not pages.has_lines
    (page,) = pages.pages
    assert (page.page_id, page.text) == ("letter-a", "\n".join(PAGE_LINES))
    assert len(pages.skipped) == 2
    assert "image file not found" in pages.skipped[0] and "kind=line" in pages.skipped[1]


def test_unusable_page_sets_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(BenchDataError, match="not found"):
        load_pages(str(tmp_path / "nowhere"))
    with pytest.raises(BenchDataError, match="not a page set"):
        load_pages(str(tmp_path))
    write_xml = tmp_path / "lost.xml"
    write_xml.write_text(
        '<PcGts><Page imageFilename="lost.png" imageWidth="10" imageHeight="10"/></PcGts>'
    )
    (tmp_path / "other.xml").write_text("<html/>")
    with pytest.raises(BenchDataError, match="no usable page") as caught:
        load_pages(str(tmp_path))
    assert "'lost.png' not found" in str(caught.value)


# ------------------------------------------------------------------ scoring (stub systems)


class ScriptedSystem:
    """Reads pages as scripted (lines in a given order, some missing) and lines perfectly."""

    def __init__(self, name: str, page_lines: list[tuple[Box, str]] | None) -> None:
        self.name, self.page_lines = name, page_lines

    def describe(self) -> dict[str, str]:
        return {}

    def read_page(self, image: bytes) -> PageReading:
        if self.page_lines is None:
            raise RuntimeError("cannot read pages")
        return PageReading(list(self.page_lines))

    def read(self, images: Sequence[bytes], kind: str) -> list[str]:
        assert kind == "line" and len(images) == len(PAGE_LINES)  # one batch, in page order
        return list(PAGE_LINES)


def _page_set(tmp_path: Path) -> PageSet:
    image, boxes = compose_page(PAGE_LINES)
    (tmp_path / "p.png").write_bytes(image)
    lines = tuple(
        TruthLine(f"l{i}", text, [(b[0], b[1]), (b[2], b[1]), (b[2], b[3]), (b[0], b[3])])
        for i, (text, b) in enumerate(zip(PAGE_LINES, boxes, strict=True))
    )
    page = PageSample(tmp_path / "p.png", "p", "\n".join(PAGE_LINES), lines)
    return PageSet("set", tmp_path, "pagexml", "v", [page])


def test_segmentation_cost_is_page_cer_minus_line_cer(tmp_path: Path) -> None:
    pages = _page_set(tmp_path)
    boxes = [line.box for line in pages.pages[0].lines]
    missed_first = ScriptedSystem("missed", [(boxes[1], PAGE_LINES[1]), (boxes[2], PAGE_LINES[2])])
    broken = ScriptedSystem("broken", None)
    result = evaluate_pages(pages, [missed_first, broken])
    missed = result.score_of("missed")
    assert missed.lines.cer == 0.0  # every ground-truth line read right
    lost = len(PAGE_LINES[0]) + 1  # the first line and its newline
    assert missed.page.cer == pytest.approx(lost / len(pages.pages[0].text))
    assert missed.segmentation_cost == pytest.approx(missed.page.cer)
    assert (missed.detection.matched, missed.detection.recall, missed.detection.precision) == (
        2,
        pytest.approx(2 / 3),
        1.0,
    )
    failed = result.score_of("broken")
    assert failed.page.cer == 1.0 and failed.failures == 1  # recorded, scored as empty
    assert result.readings["broken"].failures["p"].startswith("RuntimeError")
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["results"][0]["detection"]["truth"] == 3
    assert payload["per_page"][0]["line_cer"] == 0.0
    markdown = "\n".join(pages_markdown([result]))
    assert "| missed |" in markdown and "2 of 3 (2 boxes)" in markdown


# ------------------------------------------------------------------ the real model


def test_quill_reads_a_composed_page_and_finds_every_line(
    quill: QuillSystem, page_folder: Path
) -> None:
    pages = load_pages(str(page_folder))
    result = evaluate_pages(pages, [quill])
    scored = result.score_of("quill")
    assert scored.failures == 0
    # Three printed lines and a note the ground truth leaves untranscribed: the note is found
    # too, but a line transcribed as empty never counts against precision.
    found = scored.detection
    assert (found.truth, found.predicted, found.matched, found.ignored) == (3, 4, 3, 1)
    assert found.recall == 1.0 and found.precision == 1.0
    assert scored.lines.cer < 0.1 and scored.page.cer < 0.2, result.readings["quill"].pages
    assert scored.segmentation_cost == pytest.approx(scored.page.cer - scored.lines.cer)


def test_predict_json_gives_each_line_a_box_on_the_page(tmp_path: Path) -> None:
    """``quill predict --json``: every line of a page comes with its box, (left, top, right,
    bottom) in the input's pixels, on the line it read."""
    from quill.cli import app

    if not (MODEL / "quill-model.json").is_file():
        pytest.skip(f"no shipped model at {MODEL}")
    image, boxes = compose_page(PAGE_LINES)
    (tmp_path / "page.png").write_bytes(image)
    args = ["predict", str(tmp_path / "page.png"), "--json", "--model", str(MODEL)]
    result = CliRunner().invoke(app, [*args, "--backend", "onnx", "--threads", "1"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["kind"] == "paragraph" and len(record["lines"]) == 3
    for line, box, text in zip(record["lines"], boxes, PAGE_LINES, strict=True):
        assert set(line) == {"text", "confidence", "box", "margin"} and line["margin"] is False
        assert box_iou(line["box"], box) >= 0.5, (line, box)
        assert line["text"].split()[0] == text.split()[0]
    assert record["text"] == "\n".join(line["text"] for line in record["lines"])


def test_bench_accuracy_with_pages_only_writes_the_page_tables(
    page_folder: Path, tmp_path: Path
) -> None:
    from quill.cli import app

    if not (MODEL / "quill-model.json").is_file():
        pytest.skip(f"no shipped model at {MODEL}")
    args = ["bench", "accuracy", "--model", str(MODEL), "--backend", "onnx"]
    args += ["--pages", f"letters={page_folder}", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "accuracy.json").read_text())
    (page_set,) = payload["page_sets"]
    assert (page_set["name"], page_set["pages"], page_set["lines"]) == ("letters", 1, 3)
    (quill_row,) = page_set["results"]
    assert quill_row["system"] == "quill" and quill_row["detection"]["recall"] == 1.0
    assert payload["datasets"] == []
    markdown = (tmp_path / "accuracy.md").read_text()
    assert "## Whole pages" in markdown and "## Summary" not in markdown
    record = json.loads((tmp_path / "accuracy-page-predictions.jsonl").read_text())
    assert record["reference"] == "\n".join(PAGE_LINES)
    assert len(record["systems"]["quill"]["truth_line_readings"]) == 3


def test_bench_accuracy_reads_pages_with_each_segmenter_asked_for(
    page_folder: Path, tmp_path: Path
) -> None:
    """``--segmenter trace --segmenter learned``: two more rows, quill-trace (the default's
    segmenter, so the same lines as quill) and quill-learned (the shipped detector)."""
    from quill.cli import app
    from quill.models.segment import DEFAULT_DETECTOR

    root = Path(__file__).resolve().parents[2]
    if not (MODEL / "quill-model.json").is_file() or not (root / DEFAULT_DETECTOR).is_file():
        pytest.skip(f"no shipped model at {MODEL} or detector at {DEFAULT_DETECTOR}")
    args = ["bench", "accuracy", "--model", str(MODEL), "--backend", "onnx", "--out", str(tmp_path)]
    args += ["--pages", f"letters={page_folder}", "--segmenter", "trace", "--segmenter", "learned"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (page_set,) = json.loads((tmp_path / "accuracy.json").read_text())["page_sets"]
    rows = {row["system"]: row for row in page_set["results"]}
    assert set(rows) == {"quill", "quill-trace", "quill-learned"}
    assert rows["quill-trace"]["detection"] == rows["quill"]["detection"]
    assert rows["quill-learned"]["detection"]["truth"] == 3
    wrong = CliRunner().invoke(app, [*args, "--segmenter", "projection"])
    assert wrong.exit_code == 2 and "one of trace, learned" in wrong.output


def test_bench_accuracy_reads_line_datasets_and_page_sets_in_one_run(
    tiny_model: Path, printed_dataset: Path, page_folder: Path, tmp_path: Path
) -> None:
    from quill.cli import app

    args = ["bench", "accuracy", "--model", str(tiny_model), "--backend", "onnx"]
    args += ["--data", f"printed={printed_dataset}", "--pages", f"letters={page_folder}"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "accuracy.json").read_text())
    assert [d["name"] for d in payload["datasets"]] == ["printed"]
    assert [p["name"] for p in payload["page_sets"]] == ["letters"]
    markdown = (tmp_path / "accuracy.md").read_text()
    assert markdown.index("## Summary") < markdown.index("## Whole pages")


def test_bench_accuracy_page_arguments_fail_clearly(tmp_path: Path) -> None:
    from quill.cli import app

    nothing = CliRunner().invoke(app, ["bench", "accuracy", "--peer", "tesseract"])
    assert nothing.exit_code == 2 and "nothing to read" in nothing.output
    missing = ["bench", "accuracy", "--peer", "tesseract", "--pages", str(tmp_path / "none")]
    result = CliRunner().invoke(app, missing)
    assert result.exit_code == 2 and "page set not found" in result.output


def test_pages_without_line_geometry_get_page_scores_only(tmp_path: Path) -> None:
    image, boxes = compose_page(PAGE_LINES)
    (tmp_path / "p.png").write_bytes(image)
    page = PageSample(tmp_path / "p.png", "p", "\n".join(PAGE_LINES))  # from a labels.tsv
    pages = PageSet("scans", tmp_path, "folder", "v", [page])
    reader = ScriptedSystem("reader", list(zip(boxes, PAGE_LINES, strict=True)))
    result = evaluate_pages(pages, [reader])
    scored = result.score_of("reader")
    assert scored.page.cer == 0.0
    assert scored.lines is None and scored.detection is None and scored.segmentation_cost is None
    row = next(r for r in pages_markdown([result]) if r.startswith("| reader |"))
    assert row.split(" | ")[3:8] == ["—", "—", "—", "—", "—"]
