"""Page sets: page images with their text in reading order, the input of the page bench.

A page set (``--pages NAME=PATH``) is

- PAGE XML or ALTO files (a folder searched recursively, or one file), each naming its image;
  the page's text is its transcribed lines in the file's reading order (regions, then lines,
  as the data readers order them), joined by newlines, and every line has its ground-truth
  polygon (or a band around its baseline, as the readers draw one);
- a folder with ``labels.tsv`` (``file``, ``text``, optional ``page``) whose rows are whole
  pages, ``\\n`` in the text marking a line break. These pages have text only: page CER/WER
  are measured, line detection and line CER are not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from quill.bench.datasets import BenchDataError, parse_spec
from quill.bench.detection import FloatBox
from quill.data.readers.alto import parse_alto
from quill.data.readers.common import DatasetError
from quill.data.readers.folder import _read_rows, row_image
from quill.data.readers.layout import _line_height, _line_polygon, _pixel_scale
from quill.data.readers.pagexml import parse_pagexml
from quill.data.readers.xmlutil import LayoutError
from quill.evaluation import normalise
from quill.preprocess import ImageError, load_image


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
        image = row_image(labels, row)
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
