"""A page's text layout, whatever XML it came from, and the crops made from it.

PAGE XML, ALTO and IAM all describe a page as regions holding lines, each line with a
transcription and a shape. Their readers parse into :class:`PageLayout` (regions and lines
already in reading order, coordinates in the file's own units) and :func:`extract_page`
turns one layout into line and paragraph samples, so geometry checks, unit scaling and
crop rules are written once.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from quill.data.manifest import Split
from quill.data.readers.common import (
    KINDS,
    DatasetError,
    DatasetWriter,
    ImportReport,
    ImportResult,
    Kind,
    normalise_text,
    progress,
)
from quill.data.readers.geometry import (
    Polygon,
    baseline_polygon,
    bounding_box,
    crop_polygons,
    outside_problem,
    scale_polygon,
)
from quill.data.readers.xmlutil import LayoutError
from quill.preprocess import ImageError, load_image
from quill.vocab import Tokenizer

#: File extensions tried when an XML names an image that is not where it says.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp")
#: A baseline band reaches this many line heights above and below the baseline.
ASCENT, DESCENT = 0.75, 0.3
#: Relative difference of horizontal and vertical scale tolerated between XML and image.
ASPECT_TOLERANCE = 0.02


@dataclass
class LayoutLine:
    """A line; ``problem`` says why its shape is unusable when the file's coordinates for it
    are not numbers (then it has no polygon)."""

    id: str
    text: str
    polygon: Polygon = field(default_factory=list)
    baseline: Polygon = field(default_factory=list)
    problem: str = ""


@dataclass
class LayoutRegion:
    """A region; ``text`` is its own transcription when the file gives one but no lines."""

    id: str
    lines: list[LayoutLine]
    polygon: Polygon = field(default_factory=list)
    text: str | None = None


@dataclass
class PageLayout:
    """One page: its image, declared size and regions, coordinates in ``units``.

    ``size`` is the page size the XML declares (same units as the coordinates) or None;
    ``units_per_inch`` is None for pixels, 254 for ALTO ``mm10``, 1200 for ``inch1200``.
    """

    xml: Path
    image: Path | None
    image_name: str
    page_id: str
    regions: list[LayoutRegion]
    size: tuple[float, float] | None = None
    units_per_inch: float | None = None
    meta: dict = field(default_factory=dict)
    #: How messages name the file (its path below the import's source folder).
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.xml.name


def find_image(name: str, xml: Path) -> Path | None:
    """The image an XML file names, looked up beside it and one folder up.

    Transkribus exports keep the XML in ``page/`` next to the images; other tools put both
    together; names are sometimes given without their real extension. A name that is
    absolute or climbs with ``..`` is looked up by its file name only: an import reads its
    source, not whatever file elsewhere an XML points at.
    """
    if not name:
        candidates = [xml.with_suffix(ext) for ext in IMAGE_EXTENSIONS]
    else:
        stem = Path(name)
        folders = [xml.parent, xml.parent.parent]
        inside = not stem.is_absolute() and ".." not in stem.parts
        candidates = [folder / stem for folder in folders if inside] + [
            folder / stem.name for folder in folders
        ]
        candidates += [folder / (stem.stem + ext) for folder in folders for ext in IMAGE_EXTENSIONS]
    return next((c for c in candidates if c.is_file()), None)


def extract_page(
    layout: PageLayout,
    writer: DatasetWriter,
    kinds: Collection[Kind],
    *,
    group: str | None = None,
    split: Split | None = None,
    meta: dict | None = None,
) -> None:
    """Crop every usable line (and region, as a paragraph) of ``layout`` into ``writer``.

    Problems are recorded in the writer's report, naming the XML file and the line: a
    missing or unreadable image or a page whose size disagrees with the XML skips the page;
    a bad label or coordinates outside the image skip the line and the paragraph holding it.
    """
    report = writer.report
    if layout.image is None:
        report.skip(layout.name, f"image file {layout.image_name!r} not found")
        return
    try:
        page = _open_page(layout.image)
    except ImageError as exc:
        report.skip(layout.name, f"image {layout.image.name}: {exc}")
        return
    scale, problem = _pixel_scale(layout, page)
    if problem:
        report.skip(layout.name, problem)
        return
    cropper = _PageCropper(
        layout=layout,
        page=page,
        scale=scale,
        line_height=_line_height(layout) * scale[1] or page.height / 40,
        writer=writer,
        kinds=kinds,
        group=group or layout.page_id,
        split=split,
        meta={**layout.meta, **(meta or {})},
    )
    for region in layout.regions:
        cropper.region(region)


@dataclass
class _PageCropper:
    """Crops the lines and regions of one opened page into a writer."""

    layout: PageLayout
    page: Image.Image
    scale: tuple[float, float]
    line_height: float
    writer: DatasetWriter
    kinds: Collection[Kind]
    group: str
    split: Split | None
    meta: dict

    def region(self, region: LayoutRegion) -> None:
        if not region.lines and region.text and normalise_text(region.text):
            self.region_text(region)
            return
        usable: list[tuple[Polygon, str]] = []
        unusable: list[str] = []
        for line in region.lines:
            outcome = self.line(line)
            if isinstance(outcome, tuple):
                usable.append(outcome)
            elif outcome == "unusable":
                unusable.append(line.id)
        if "paragraph" in self.kinds and usable:
            self.paragraph(region, usable, unusable)

    def line(self, line: LayoutLine) -> tuple[Polygon, str] | str:
        """(polygon, text) of a usable line (cropped if lines are wanted), else why not:
        "blank" for a line transcribed as empty, "unusable" for anything else."""
        where = f"{self.layout.name} line {line.id}"
        polygon = _line_polygon(line, *self.scale, self.line_height)
        problem = line.problem or (
            outside_problem(polygon, self.page.size) if polygon else "no Coords and no Baseline"
        )
        if problem:
            self.writer.report.skip(where, problem)
            return "unusable"
        text = self.writer.check(where, line.text)
        if text is None:
            # A line transcribed as empty is a mark, not text: its paragraph stays right
            # without it. Any other bad label would leave ink in the paragraph unexplained.
            return "unusable" if normalise_text(line.text) else "blank"
        if "line" in self.kinds:
            self._add(line.id, [polygon], text, "line", {"line": line.id})
        return polygon, text

    def region_text(self, region: LayoutRegion) -> None:
        """A region transcribed as a whole, without lines: a paragraph sample of its outline
        (its text's lines are the paragraph's), or a report of why not. It was dropped
        without a word."""
        where = f"{self.layout.name} region {region.id}"
        if "paragraph" not in self.kinds:
            self.writer.report.skip(
                where,
                "text given for the whole region, no TextLine: only a paragraph sample "
                "can be made of it (--kinds paragraph)",
            )
            return
        outline = scale_polygon(region.polygon, *self.scale)
        problem = outside_problem(outline, self.page.size) if outline else "region has no Coords"
        if problem:
            self.writer.report.skip(where, problem)
            return
        text = self.writer.check(where, region.text or "")
        if text is not None:
            self._add(region.id, [outline], text, "paragraph", {"region": region.id})

    def paragraph(
        self, region: LayoutRegion, usable: list[tuple[Polygon, str]], unusable: list[str]
    ) -> None:
        if unusable:
            self.writer.report.skip(
                f"{self.layout.name} region {region.id}",
                f"paragraph left out: line(s) {', '.join(unusable)} unusable",
            )
            return
        polygons = [polygon for polygon, _ in usable]
        if region.polygon:
            outline = scale_polygon(region.polygon, *self.scale)
            if outside_problem(outline, self.page.size) is None:
                polygons.append(outline)
        text = "\n".join(text for _, text in usable)
        self._add(region.id, polygons, text, "paragraph", {"region": region.id})

    def _add(self, name: str, polygons: list[Polygon], text: str, kind: Kind, meta: dict) -> None:
        self.writer.add_crop(
            f"{self.layout.page_id}_{name}",
            crop_polygons(self.page, polygons),
            text,
            group=self.group,
            kind=kind,
            meta={**self.meta, "page": self.layout.page_id, **meta},
            split=self.split,
        )


def _open_page(path: Path) -> Image.Image:
    """The page image upright; grayscale scans stay grayscale (crops a third the size)."""
    page = load_image(path)
    with Image.open(path) as header:
        grayscale = header.mode in ("1", "L", "LA", "I", "I;16")
    return page.convert("L") if grayscale else page


def _pixel_scale(layout: PageLayout, page: Image.Image) -> tuple[tuple[float, float], str | None]:
    """Pixels per coordinate unit along x and y, or a reason the XML does not fit the image."""
    width, height = page.size
    names: dict[float | None, str] = {None: "pixel", 254: "mm10", 1200: "inch1200"}
    unit = names.get(layout.units_per_inch, "units")
    if layout.size is None or min(layout.size) <= 0:
        if layout.units_per_inch is None:
            return (1.0, 1.0), None
        dpi = page.info.get("dpi")
        if not dpi:
            return (1.0, 1.0), (
                f"coordinates are in {unit} but the XML gives no page size and the image "
                "no resolution (DPI), so they cannot be converted to pixels"
            )
        return (float(dpi[0]) / layout.units_per_inch, float(dpi[1]) / layout.units_per_inch), None
    sx, sy = width / layout.size[0], height / layout.size[1]
    if abs(sx - sy) > ASPECT_TOLERANCE * max(sx, sy):
        declared = f"{layout.size[0]:.0f}x{layout.size[1]:.0f}"
        return (sx, sy), (
            f"XML declares a {declared} {unit} page but the image {layout.image_name} is "
            f"{width}x{height} pixels (another shape): the XML does not match its image"
        )
    return (sx, sy), None


def _line_height(layout: PageLayout) -> float:
    """Typical line height (coordinate units) for drawing bands around bare baselines.

    The distance between consecutive baselines when the page has them, else the median
    height of the line polygons it has, else 0 (unknown).
    """
    gaps: list[float] = []
    for region in layout.regions:
        ys = [statistics.fmean(y for _, y in ln.baseline) for ln in region.lines if ln.baseline]
        gaps += [b - a for a, b in zip(ys, ys[1:], strict=False) if b > a]
    if gaps:
        return statistics.median(gaps)
    heights = [
        bounding_box(ln.polygon)[3] - bounding_box(ln.polygon)[1]
        for region in layout.regions
        for ln in region.lines
        if len(ln.polygon) >= 3
    ]
    return statistics.median(heights) if heights else 0.0


def _line_polygon(line: LayoutLine, sx: float, sy: float, line_height: float) -> Polygon:
    """The line's outline in pixels: its polygon, else a band around its baseline."""
    if len(line.polygon) >= 3:
        return scale_polygon(line.polygon, sx, sy)
    if len(line.baseline) >= 2:
        baseline = scale_polygon(line.baseline, sx, sy)
        return baseline_polygon(baseline, ASCENT * line_height, DESCENT * line_height)
    return []


def _is_xml(path: Path) -> bool:
    return path.suffix.lower() == ".xml" and path.is_file()


def read_layout_files(
    src: Path,
    out: Path,
    parse: Callable[[Path], PageLayout],
    source: str,
    *,
    kinds: Collection[Kind] = KINDS,
    tokenizer: Tokenizer | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    show_progress: bool = False,
) -> ImportResult:
    """Import a folder of layout XML files (searched recursively) or a single file.

    ``parse`` reads one file (raising :class:`LayoutError` for files of another format, which
    are reported and skipped). Splits are by page: a page's lines and paragraphs stay
    together. Page ids are paths below ``src``, so equal file names in two folders differ.
    """
    src = Path(src)
    if not src.exists():
        raise DatasetError(f"{source} source not found: {src}")
    # any case: exports from Windows tools end in .XML
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if _is_xml(p))
    if not files:
        raise DatasetError(f"no .xml files under {src}")
    report = ImportReport(f"{source}:{src}")
    writer = DatasetWriter(out, source, report, tokenizer)
    for path in progress(files, f"{source} pages", len(files), show_progress):
        label = path.relative_to(src).as_posix() if src.is_dir() else path.name
        try:
            layout = parse(path)
        except LayoutError as exc:
            report.skip(label, str(exc))
            continue
        layout.label = label
        if src.is_dir():
            layout.page_id = label.removesuffix(path.suffix).replace("/", "__")
        extract_page(layout, writer, kinds)
    return writer.finish(val_fraction=val_fraction, test_fraction=test_fraction)
