"""Whole pages: how well each system reads a page it has to find the lines of itself.

A page set (``--pages NAME=PATH``, read by :mod:`quill.bench.page_sets`) is page images
with their text in reading order, and with PAGE XML or ALTO each line's outline.

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
  ground-truth lines by box IoU (the bounding boxes of the polygons), recall and precision
  as :mod:`quill.bench.detection` scores them.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from quill.bench.detection import IOU_THRESHOLD, Detection, detect_score
from quill.bench.page_sets import PageSample, PageSet
from quill.bench.report import table, write_jsonl
from quill.bench.systems import PageReading, System
from quill.data.readers.geometry import crop_polygons
from quill.evaluation import Score, normalise, score
from quill.preprocess import load_image

#: Ground-truth line crops read per call.
LINE_BATCH = 16


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
    return write_jsonl(
        path,
        (
            {
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
            for result in results
            for index, page in enumerate(result.pages.pages)
        ),
    )
