"""Whole pages: how well each system reads a page it has to find the lines of itself.

A page set (``--pages NAME=PATH``) is page images with their text in reading order:

- PAGE XML or ALTO files (a folder searched recursively, or one file), each naming its image;
  the page's text is its transcribed lines in the file's reading order (regions, then lines,
  as the data readers order them), joined by newlines, and every line has its ground-truth
  polygon (or a band around its baseline, as the readers draw one);
- a folder with ``labels.tsv`` (``file``, ``text``, optional ``page``) whose rows are whole
  pages, ``\\n`` in the text marking a line break. These pages have text only: page CER/WER
  are measured, line detection and line CER are not.

For every system, per page set:

- **page CER/WER**: the system reads the page image (Quill: ``Recognizer.predict``, which
  segments lines; Tesseract: one block, ``--psm 6``; RapidOCR: detection + recognition);
  its lines joined by newlines are scored against the reference with the bench's scoring
  (:func:`quill.evaluation.score`: NFC, spaces collapsed, blank lines dropped; newlines
  count as characters, so a missed line break or a line read out of order costs edits);
- **line CER**: the same system reads each ground-truth line, cropped by its polygon (outside
  painted paper colour, as the data readers cut training lines), and those readings, joined
  per page in the reference order, are scored the same way. This is the page CER the system
  would get with perfect line finding and reading order, so **page CER minus line CER is the
  cost of segmentation and reading order**. The plain per-line corpus CER is in the JSON too;
- **line detection**: each line box the system reports is matched one-to-one to the
  ground-truth lines by box IoU (the bounding boxes of the polygons), greedily from the
  highest IoU, counting a match at IoU >= 0.5. Recall = matched / ground-truth lines with
  text; precision = matched / predicted lines. A prediction that matches a line transcribed
  as empty (a mark, an untranscribed margin note) is neither right nor wrong and is left out
  of precision.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from quill.bench.datasets import BenchDataError, parse_spec
from quill.bench.report import table
from quill.bench.systems import PageReading, System
from quill.data.readers.alto import parse_alto
from quill.data.readers.common import DatasetError
from quill.data.readers.folder import _read_rows
from quill.data.readers.geometry import crop_polygons
from quill.data.readers.layout import _line_height, _line_polygon, _pixel_scale
from quill.data.readers.pagexml import parse_pagexml
from quill.data.readers.xmlutil import LayoutError
from quill.evaluation import Score, normalise, score
from quill.preprocess import ImageError, load_image

#: A predicted line matches a ground-truth line at this box IoU or more.
IOU_THRESHOLD = 0.5
#: Ground-truth line crops read per call.
LINE_BATCH = 16

FloatBox = tuple[float, float, float, float]


# ------------------------------------------------------------------ detection matching


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (left, top, right, bottom) boxes.

    >>> box_iou((0, 0, 10, 10), (5, 0, 15, 10))  # half of each overlaps: 50 / 150
    0.3333333333333333
    >>> box_iou((0, 0, 10, 10), (20, 20, 30, 30)), box_iou((0, 0, 10, 10), (0, 0, 10, 10))
    (0.0, 1.0)
    """
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    overlap = width * height
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    return overlap / (area_a + area_b - overlap)


def match_lines(
    predicted: Sequence[Sequence[float]],
    truth: Sequence[Sequence[float]],
    threshold: float = IOU_THRESHOLD,
) -> list[tuple[int, int, float]]:
    """One-to-one matches ``(predicted index, truth index, iou)`` with IoU >= ``threshold``.

    Greedy from the highest IoU: each box is used at most once. (At a threshold of 0.5 or
    more a box overlaps at most one other box that much in practice, so greedy and optimal
    assignment agree.)

    >>> truth = [(0, 0, 100, 20), (0, 20, 100, 40)]
    >>> match_lines([(0, 18, 100, 40), (0, 0, 100, 22), (0, 0, 100, 40)], truth)
    [(0, 1, 0.9090909090909091), (1, 0, 0.9090909090909091)]
    """
    pairs = [
        (iou, p, t)
        for p, box in enumerate(predicted)
        for t, other in enumerate(truth)
        if (iou := box_iou(box, other)) >= threshold
    ]
    pairs.sort(key=lambda pair: (-pair[0], pair[1], pair[2]))
    used_p: set[int] = set()
    used_t: set[int] = set()
    matches = []
    for iou, p, t in pairs:
        if p not in used_p and t not in used_t:
            used_p.add(p)
            used_t.add(t)
            matches.append((p, t, iou))
    return sorted(matches)


@dataclass(frozen=True)
class Detection:
    """Line-detection counts on one page or summed over a page set."""

    truth: int
    predicted: int
    matched: int
    #: Predictions that matched a ground-truth line transcribed as empty (not counted).
    ignored: int = 0
    #: Sum of the matched pairs' IoU (mean IoU = iou_sum / matched).
    iou_sum: float = 0.0

    @property
    def recall(self) -> float:
        return self.matched / self.truth if self.truth else 1.0

    @property
    def precision(self) -> float:
        counted = self.predicted - self.ignored
        return self.matched / counted if counted else 1.0

    def __add__(self, other: Detection) -> Detection:
        return Detection(
            self.truth + other.truth,
            self.predicted + other.predicted,
            self.matched + other.matched,
            self.ignored + other.ignored,
            self.iou_sum + other.iou_sum,
        )

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "recall": self.recall,
            "precision": self.precision,
            "mean_iou": self.iou_sum / self.matched if self.matched else 0.0,
        }


def detect_score(
    predicted: Sequence[Sequence[float]],
    truth: Sequence[Sequence[float]],
    ignore: Sequence[Sequence[float]] = (),
    threshold: float = IOU_THRESHOLD,
) -> Detection:
    """Match ``predicted`` boxes to ``truth`` boxes; unmatched ones that match an ``ignore``
    box (a line transcribed as empty) are left out of precision.

    >>> truth = [(0, 0, 100, 20), (0, 30, 100, 50)]
    >>> found = detect_score([(0, 0, 100, 22), (0, 60, 30, 80), (500, 0, 600, 20)],
    ...                      truth, ignore=[(0, 60, 30, 80)])
    >>> found.matched, found.recall, found.precision
    (1, 0.5, 0.5)
    """
    matches = match_lines(predicted, truth, threshold)
    matched = {p for p, _, _ in matches}
    rest = [box for index, box in enumerate(predicted) if index not in matched]
    ignored = len(match_lines(rest, ignore, threshold)) if ignore else 0
    return Detection(
        len(truth), len(predicted), len(matches), ignored, sum(iou for _, _, iou in matches)
    )


# ------------------------------------------------------------------ page sets


@dataclass(frozen=True)
class TruthLine:
    """One ground-truth line: its id, transcription and outline in page pixels."""

    id: str
    text: str
    polygon: list[tuple[float, float]]

    @property
    def box(self) -> FloatBox:
        xs = [x for x, _ in self.polygon]
        ys = [y for _, y in self.polygon]
        return min(xs), min(ys), max(xs), max(ys)

    @property
    def blank(self) -> bool:
        """Transcribed as empty (a mark, an untranscribed note): no text to read."""
        return not normalise(self.text)


@dataclass(frozen=True)
class PageSample:
    """One page image, its reference text and (from PAGE/ALTO) its lines in reading order."""

    image: Path
    page_id: str
    text: str
    lines: tuple[TruthLine, ...] = ()

    @property
    def has_lines(self) -> bool:
        return bool(self.lines)

    @property
    def text_lines(self) -> list[TruthLine]:
        """The lines with text, in reading order (the ones read and detected)."""
        return [line for line in self.lines if not line.blank]


@dataclass
class PageSet:
    """The pages of one ``--pages`` argument."""

    name: str
    path: Path
    format: str
    version: str
    pages: list[PageSample]
    #: Pages (or rows) left out, each with the reason.
    skipped: list[str] = field(default_factory=list)

    @property
    def has_lines(self) -> bool:
        """Every page has ground-truth lines (detection and line CER are measured)."""
        return bool(self.pages) and all(page.has_lines for page in self.pages)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "path": str(self.path),
            "format": self.format,
            "version": self.version,
            "pages": len(self.pages),
            "lines": sum(len(page.text_lines) for page in self.pages),
            "characters": sum(len(normalise(page.text)) for page in self.pages),
            "skipped": self.skipped,
        }


def load_pages(spec: str) -> PageSet:
    """Resolve one ``--pages`` argument (``PATH`` or ``NAME=PATH``) into its pages.

    PATH is a folder with ``labels.tsv`` (page images and their text), a folder of PAGE XML /
    ALTO files (searched recursively), or one such file. Pages that cannot be used (image
    missing, XML not matching its image, a line without geometry) are skipped with the
    reason; a set left with no page is an error.
    """
    name, path = parse_spec(spec)
    if not path.exists():
        raise BenchDataError(f"page set not found: {path}")
    if path.is_dir() and (path / "labels.tsv").is_file():
        pages, skipped, files = _folder_pages(path / "labels.tsv")
        source_format = "folder"
    else:
        xmls = [path] if path.is_file() else sorted(path.rglob("*.xml"))
        if not xmls:
            raise BenchDataError(
                f"{path} is not a page set: expected labels.tsv (page images and their text) "
                "or PAGE XML / ALTO files"
            )
        pages, skipped, formats = [], [], set()
        for xml in xmls:
            label = xml.relative_to(path).as_posix() if path.is_dir() else xml.name
            outcome = _layout_page(xml, label)
            if isinstance(outcome, str):
                skipped.append(f"{label}: {outcome}")
            else:
                pages.append(outcome[0])
                formats.add(outcome[1])
        source_format = "+".join(sorted(formats)) or "xml"
        files = xmls
    if not pages:
        reasons = "; ".join(skipped[:3]) or "no pages"
        raise BenchDataError(f"{name} ({path}) has no usable page ({reasons})")
    return PageSet(name, path, source_format, _version(files, pages), pages, skipped)


def _version(files: Sequence[Path], pages: Sequence[PageSample]) -> str:
    """A short hash of the ground-truth files and the page images' names and sizes."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    for page in pages:
        digest.update(f"{page.image.name}:{page.image.stat().st_size}".encode())
    return digest.hexdigest()[:12]


def _folder_pages(labels: Path) -> tuple[list[PageSample], list[str], list[Path]]:
    """Rows of a ``labels.tsv`` read as whole pages (text only, no line geometry)."""

    try:
        rows = _read_rows(labels)
    except DatasetError as exc:
        raise BenchDataError(str(exc)) from exc
    pages, skipped = [], []
    for number, row in rows:
        where = f"{labels.name}:{number}"
        if isinstance(row, str):
            skipped.append(f"{where}: {row}")
            continue
        image = Path(row["file"])
        image = image if image.is_absolute() else labels.parent / image
        if row.get("kind") == "line":
            skipped.append(f"{where}: a line, not a page (kind=line); use --data for lines")
        elif not image.is_file():
            skipped.append(f"{where}: image file not found: {image}")
        else:
            text = row["text"].replace("\\n", "\n")
            pages.append(PageSample(image, row.get("page") or image.stem, text))
    return pages, skipped, [labels]


def _layout_page(xml: Path, label: str) -> tuple[PageSample, str] | str:
    """The page of one PAGE XML or ALTO file with its format, or why it cannot be used."""

    layout, source_format, problems = None, "", []
    for candidate, parse in (("pagexml", parse_pagexml), ("alto", parse_alto)):
        try:
            layout, source_format = parse(xml), candidate
            break
        except LayoutError as exc:
            problems.append(str(exc))
    if layout is None:
        return "; ".join(dict.fromkeys(problems))
    if layout.image is None:
        return f"image file {layout.image_name!r} not found"
    try:
        # The image as the readers and Recognizer see it (EXIF orientation applied).
        image = load_image(layout.image)
    except ImageError as exc:
        return f"image {layout.image.name}: {exc}"
    scale, problem = _pixel_scale(layout, image)
    if problem:
        return problem
    height = _line_height(layout) * scale[1] or image.height / 40
    lines = []
    for region in layout.regions:
        for line in region.lines:
            polygon = _line_polygon(line, *scale, height)
            if len(polygon) < 3 and normalise(line.text):
                return f"line {line.id} has text but no Coords and no Baseline"
            if len(polygon) >= 3:
                lines.append(TruthLine(line.id, line.text, polygon))
    if not lines:
        return "no text lines"
    text = "\n".join(line.text for line in lines if not line.blank)
    return PageSample(layout.image, layout.page_id or label, text, tuple(lines)), source_format


# ------------------------------------------------------------------ reading and scoring


@dataclass
class PageReadings:
    """What one system read on one page set: each page whole, and each ground-truth line."""

    system: str
    pages: list[PageReading]
    #: Per page, the reading of each of its text lines (``PageSample.text_lines``).
    lines: list[list[str]]
    #: "page" or "page line" -> why the system failed there (scored as an empty reading).
    failures: dict[str, str] = field(default_factory=dict)
    page_seconds: float = 0.0
    line_seconds: float = 0.0


@dataclass(frozen=True)
class PageScore:
    """One system's scores on one page set (``lines``/``detection`` None without geometry)."""

    system: str
    page: Score
    lines: Score | None
    line_corpus: Score | None
    detection: Detection | None
    seconds_per_page: float
    failures: int

    @property
    def segmentation_cost(self) -> float | None:
        """Page CER minus line CER: what finding and ordering the lines costs, in CER."""
        return None if self.lines is None else self.page.cer - self.lines.cer

    def to_dict(self) -> dict:
        return {
            "system": self.system,
            "page": asdict(self.page),
            "lines": asdict(self.lines) if self.lines else None,
            "line_corpus": asdict(self.line_corpus) if self.line_corpus else None,
            "segmentation_cost": self.segmentation_cost,
            "detection": self.detection.to_dict() if self.detection else None,
            "seconds_per_page": round(self.seconds_per_page, 3),
            "failures": self.failures,
        }


@dataclass
class PageSetResult:
    """Everything measured on one page set."""

    pages: PageSet
    readings: dict[str, PageReadings]
    scores: list[PageScore]
    #: One row per (page, system): chars, lines, detection counts and CERs.
    per_page: list[dict]

    def score_of(self, system: str) -> PageScore:
        return next(s for s in self.scores if s.system == system)

    def to_dict(self) -> dict:
        return {
            **self.pages.describe(),
            "iou_threshold": IOU_THRESHOLD,
            "results": [s.to_dict() for s in self.scores],
            "per_page": self.per_page,
        }


def line_crops(page: PageSample) -> list[bytes]:
    """PNG bytes of each text line of ``page``, cut by its polygon (outside: paper colour)."""

    image = load_image(page.image)
    crops = []
    for line in page.text_lines:
        buffer = io.BytesIO()
        crop_polygons(image, [line.polygon]).save(buffer, "PNG")
        crops.append(buffer.getvalue())
    return crops


def read_pages(
    system: System,
    pages: Sequence[PageSample],
    advance: Callable[[int], None] | None = None,
) -> PageReadings:
    """``system`` reads every page whole, then every ground-truth line of it.

    A failure on a page or a batch of lines is recorded and scored as an empty reading; a
    failed batch of lines is retried line by line so one bad crop costs only itself.
    """
    readings = PageReadings(system.name, [], [])
    for page in pages:
        start = time.perf_counter()
        try:
            reading = system.read_page(page.image.read_bytes())  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - one page's failure is recorded, not fatal
            readings.failures[page.page_id] = f"{type(exc).__name__}: {exc}"
            reading = PageReading()
        readings.page_seconds += time.perf_counter() - start
        readings.pages.append(reading)
        start = time.perf_counter()
        readings.lines.append(_read_lines(system, page, readings.failures))
        readings.line_seconds += time.perf_counter() - start
        if advance:
            advance(1)
    return readings


def _read_lines(system: System, page: PageSample, failures: dict[str, str]) -> list[str]:
    lines = page.text_lines
    if not lines:
        return []
    crops = line_crops(page)
    texts = [""] * len(crops)
    for offset in range(0, len(crops), LINE_BATCH):
        batch = list(range(offset, min(offset + LINE_BATCH, len(crops))))
        try:
            read = system.read([crops[i] for i in batch], "line")
            if len(read) != len(batch):
                raise RuntimeError(f"returned {len(read)} texts for {len(batch)} images")
        except Exception:  # noqa: BLE001 - retried one by one below
            read = []
            for index in batch:
                try:
                    read += system.read([crops[index]], "line")
                except Exception as exc:  # noqa: BLE001 - recorded, scored as empty
                    failures[f"{page.page_id} {lines[index].id}"] = f"{type(exc).__name__}: {exc}"
                    read.append("")
        for index, text in zip(batch, read, strict=True):
            texts[index] = text
    return texts


def score_pages(pages: PageSet, reading: PageReadings) -> tuple[PageScore, list[dict]]:
    """One system's page-set scores, and its per-page rows."""
    samples = pages.pages
    page_score = score([r.text for r in reading.pages], [p.text for p in samples])
    lines = line_corpus = detection = None
    if pages.has_lines:
        assembled = ["\n".join(texts) for texts in reading.lines]
        lines = score(assembled, [p.text for p in samples])
        line_corpus = score(
            [text for texts in reading.lines for text in texts],
            [line.text for page in samples for line in page.text_lines],
        )
    rows, detections = [], []
    for index, page in enumerate(samples):
        row = {
            "page": page.page_id,
            "system": reading.system,
            "characters": len(normalise(page.text)),
            "cer": score([reading.pages[index].text], [page.text]).cer,
            "predicted_lines": len(reading.pages[index].lines),
        }
        if page.has_lines:
            found = detect_score(
                reading.pages[index].boxes,
                [line.box for line in page.text_lines],
                [line.box for line in page.lines if line.blank],
            )
            detections.append(found)
            row["line_cer"] = score(["\n".join(reading.lines[index])], [page.text]).cer
            row["detection"] = found.to_dict()
        rows.append(row)
    if pages.has_lines:
        detection = sum(detections[1:], detections[0])
    return (
        PageScore(
            reading.system,
            page_score,
            lines,
            line_corpus,
            detection,
            reading.page_seconds / max(1, len(samples)),
            len(reading.failures),
        ),
        rows,
    )


def evaluate_pages(
    pages: PageSet,
    systems: Sequence[System],
    advance: Callable[[str, int], None] | None = None,
) -> PageSetResult:
    """Every system reads every page of ``pages`` (whole, and line by line); all scored.

    ``advance(system_name, n)`` is called as pages are done (for a progress bar).
    """
    readings: dict[str, PageReadings] = {}
    scores, per_page = [], []
    for system in systems:
        step = (lambda n, name=system.name: advance(name, n)) if advance else None
        readings[system.name] = read_pages(system, pages.pages, step)
        scored, rows = score_pages(pages, readings[system.name])
        scores.append(scored)
        per_page += rows
    return PageSetResult(pages, readings, scores, per_page)


# ------------------------------------------------------------------ reports


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _points(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:+.1f}"


HEADER = [
    "system",
    "page CER",
    "page WER",
    "line CER",
    "page − line",
    "line recall",
    "line precision",
    "lines found / true",
    "s / page",
]


def summary_rows(result: PageSetResult) -> list[list[str]]:
    """One row per system: the cells of :data:`HEADER`."""
    rows = []
    for scored in result.scores:
        found = scored.detection
        rows.append(
            [
                scored.system,
                _percent(scored.page.cer),
                _percent(scored.page.wer),
                _percent(scored.lines.cer if scored.lines else None),
                _points(scored.segmentation_cost),
                _percent(found.recall if found else None),
                _percent(found.precision if found else None),
                f"{found.matched} of {found.truth} ({found.predicted} boxes)" if found else "—",
                f"{scored.seconds_per_page:.2f}",
            ]
        )
    return rows


def pages_markdown(results: Sequence[PageSetResult]) -> list[str]:
    """The Markdown section of the page sets: a summary table each, then per-page CER."""

    lines = [
        "## Whole pages",
        "",
        "Each system reads the page image (finding its lines itself) and each ground-truth "
        "line cropped by its polygon. *page CER*: the page's lines joined by newlines against "
        "the reference; *line CER*: the ground-truth lines' readings joined the same way (perfect "
        "line finding and order); *page − line*: what segmentation and reading order cost, in "
        f"CER points. Detection: one-to-one box matches at IoU ≥ {IOU_THRESHOLD}; precision "
        "leaves out boxes on lines transcribed as empty.",
    ]
    for result in results:
        info = result.pages.describe()
        lines += [
            "",
            f"### {info['name']}",
            "",
            f"`{info['path']}` ({info['format']}), {info['pages']} pages, {info['lines']} "
            f"lines, {info['characters']} characters, version `{info['version']}`.",
        ]
        if info["skipped"]:
            lines.append(f"Left out: {'; '.join(info['skipped'])}.")
        lines += ["", *table(HEADER, summary_rows(result))]
        systems = [s.system for s in result.scores]
        cells: dict[str, dict[str, str]] = {}
        for row in result.per_page:
            cell = _percent(row["cer"])
            if "line_cer" in row:
                found = row["detection"]
                cell += f" / {_percent(row['line_cer'])} ({found['matched']}/{found['truth']})"
            cells.setdefault(row["page"], {})[row["system"]] = cell
        lines += [
            "",
            "Per page: page CER / line CER (lines matched / true lines).",
            "",
            *table(
                ["page", *systems],
                [[page, *(cell.get(s, "—") for s in systems)] for page, cell in cells.items()],
            ),
        ]
    return lines


def write_page_predictions(path: Path, results: Sequence[PageSetResult]) -> Path:
    """One JSON line per page: the reference, and every system's lines (box, text) and its
    readings of the ground-truth lines (error analysis: which line was missed or misread)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for result in results:
            for index, page in enumerate(result.pages.pages):
                record = {
                    "pages": result.pages.name,
                    "page": page.page_id,
                    "image": str(page.image),
                    "reference": page.text,
                    "truth_lines": [
                        {"id": line.id, "text": line.text, "box": [round(v) for v in line.box]}
                        for line in page.lines
                    ],
                    "systems": {
                        name: {
                            "text": reading.pages[index].text,
                            "lines": [
                                {"box": list(box), "text": text}
                                for box, text in reading.pages[index].lines
                            ],
                            "truth_line_readings": reading.lines[index],
                        }
                        for name, reading in result.readings.items()
                    },
                }
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path
