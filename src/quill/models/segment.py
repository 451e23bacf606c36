"""Paragraph/page -> line images, so a line model can read a whole page.

Method (classical, no training, ~50 ms of analysis per page on one core):

1. Paper: in a photo whose page lies on a darker background (a desk), the largest bright
   region with a sharp edge is the page; the image is cut to it and ink outside its outline
   ignored (:func:`~quill.models.page_geometry.find_paper`).
2. Ink mask (:func:`quill.preprocess.ink_mask`, polarity- and colour-free) at a fixed
   analysis size, so the cost is the same for any photo.
3. Rotation: a page whose words are taller than wide and whose column profile is clearly
   more line-like than its row profile is turned a quarter; after tracing, a page whose lines
   have more ink below their core than above (Latin script has more ascenders than
   descenders) and start ragged but end aligned is turned half (:data:`HALF_TURN`).
4. Skew: the angle in ``±max_skew_degrees`` whose sheared row profile has the most energy.
   Line spacing: the first clear peak of the row profile's autocorrelation, in strips.
5. Blocks: a recursive XY cut at wide empty bands (a section gap of a line spacing, a
   gutter of 1.5 spacings) gives columns, headings and margin notes, in reading order.
6. Lines (:func:`quill.models.line_trace.trace_lines`), on the mask reduced to ~24 pixels
   per line spacing: crests of the ink density smoothed along the line (0.6 spacings) and a
   little across it (0.1), each the highest within 0.4 spacings up and down and not far
   weaker than the strongest line next to it; crest fragments joined along a line (gaps
   between words, two crests of one line at its letters' middle and a heavy baseline), never
   across a block border or with a fragment running beside it at another height (an
   insertion between lines stays a line of its own). Every ink pixel goes to the nearest
   line (each connected letter whole); loops, capitals, accents and a rising last word that
   made crests of their own rejoin their line; specks and faint marks (a stamp, much fainter
   than the page's lines) are dropped, and connected ink taller than 2.5 spacings (a stamp's
   ring, a frame) ignored; a line too faint to keep that was joined from fragments which are
   text on their own keeps those (a stamp's letters beside a small printed line no longer
   drown it).
7. Each line's box is the extent of its ink (rows with under 3% of its fullest row
   trimmed), padded by ``margin``; boxes are in the pixels of the image as given, crops are
   upright and straightened.

Reading order: block by block (top to bottom, left column before right), lines in a block
by height (an insertion between two lines comes between them), margin notes (a narrow block
beside the main text) last, marked ``margin``.

Learned lines (``method="learned"``): steps 1-4 are the same; the lines are then found by a
small network trained on composed pages (:mod:`quill.models.line_detector`, the shipped
weights :data:`DEFAULT_DETECTOR`) on the deskewed ink map, put in the same reading order
(blocks of step 5, margin notes last), cut and straightened the same way; the upside-down
test of step 3 reads the ink of the lines found.

Limits: straight lines (mild skew, not curved or diagonal writing), Latin script for the
upside-down test, a page darker than its background is not found as paper, a stamp's
letters can still join a line of the letterhead beside them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from scipy.ndimage import (
    label,
)

from quill.models.line_trace import (
    TRACE_SPACING,
    TooManyFragments,
    Trace,
    TracedLine,
    count_columns,
    mark_margins,
    text_blocks,
    trace_lines,
    upright_evidence,
    without_graphics,
)
from quill.models.page_geometry import (
    Box,
    estimate_skew,
    find_paper,
    line_spacing,
    paper_region,
    quarter_turned,
    reduce_mask,
)
from quill.preprocess import (
    ImageSource,
    ink_map,
    ink_mask,
    paper_colour,
    read_image,
    sparse_ink_mask,
)
from quill.staged_model import ModelLoadError

#: The learned line detector's weights shipped with Quill (relative to the working
#: directory, like the default model: ``models/default``, or to this source checkout).
DEFAULT_DETECTOR = Path("models/line_detector/line_detector.pt")
#: The source checkout this module lives in (``src/quill/models/segment.py``).
CHECKOUT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class SegmentConfig:
    """Knobs of :func:`segment_lines`; the defaults suit scanned letters and phone photos."""

    #: How lines are found: ``trace`` follows crests of ink density (classical, no weights);
    #: ``learned`` asks the learned line detector (docs/models.md measures both).
    method: Literal["trace", "learned"] = "trace"
    #: The learned detector's weights (``method="learned"``); None: :data:`DEFAULT_DETECTOR`.
    detector: str | None = None

    #: Ink map value above which a pixel counts as ink.
    threshold: float = 0.35
    #: Analysis resolution: the image is scaled so its longer side is at most this.
    analysis_size: int = 1200
    #: Skew search range and step, degrees.
    max_skew_degrees: float = 5.0
    skew_step_degrees: float = 0.25
    #: Smallest line spacing looked for (pixels at analysis resolution).
    min_line_height: int = 8
    #: Extra margin around each crop, as a fraction of the line spacing.
    margin: float = 0.1
    #: Crops taller than this many pixels are cut at a reduced scale (never enlarged): a
    #: line model's preprocessing shrinks them to its working height anyway
    #: (``preprocess.WORK_SCALE`` x its line height), so cutting and straightening them at
    #: the scan's resolution would be wasted. None: crops at the image's resolution.
    crop_height: int | None = None
    #: Turn a page whose lines run up or down, or that is upside down, upright first.
    find_rotation: bool = True
    #: In a photo, cut the page away from a darker background around it (a desk).
    find_paper: bool = True


@dataclass(frozen=True)
class LineSegment:
    """One text line: its box (x0, y0, x1, y1) in the original image and its crop (upright,
    straightened)."""

    box: Box
    image: Image.Image
    #: The text block the line is in (a column, a heading, a note), numbered in reading order.
    block: int = 0
    #: A note in the margin beside the main text: it comes after the main text's lines.
    margin: bool = False


class Segmentation(list):
    """The lines of a page in reading order (a list of :class:`LineSegment`: main text block
    by block, left column before right, then margin notes), and what was found on the way.

    Attributes:
        rotation: degrees (0, 90, 180, 270) the image was turned counter-clockwise to read
            it, as ``image.rotate(rotation, expand=True)`` would: 90 for a page whose lines
            run top to bottom, 180 for one upside down.
        skew: degrees the upright page was straightened by (positive: its lines rose to the
            right).
        paper: the paper's box in the image when a darker background (a desk) surrounded it
            and was cut away; None when the page fills the image.
        columns: text columns side by side (the most blocks next to each other).
        notes: what a reader of the result should know, in words (no text found, the
            rotation, the paper, columns, margin notes).
        no_text: the image has marks, but far too many scattered pieces to be lines of
            writing (noise, a texture): its text is empty, whatever a line model would make
            of the whole image. False for a blank image, which
            :func:`quill.preprocess.is_blank` already tells, and for specks: a small line
            photo with faint strokes looks like specks at the analysis size (5 of 150 poilus
            line images that are not wide enough to be read as lines directly), and read
            whole, it reads well.
    """

    def __init__(
        self,
        lines: list[LineSegment] | tuple = (),
        *,
        rotation: int = 0,
        skew: float = 0.0,
        paper: Box | None = None,
        columns: int = 0,
        notes: tuple[str, ...] = (),
        no_text: bool = False,
    ) -> None:
        super().__init__(lines)
        self.rotation = rotation
        self.skew = skew
        self.paper = paper
        self.columns = columns
        self.notes = notes
        self.no_text = no_text

    def to_dict(self) -> dict:
        """The page-level findings (not the lines), JSON-ready."""
        return {
            "rotation": self.rotation,
            "skew": round(self.skew, 2),
            "paper": list(self.paper) if self.paper else None,
            "columns": self.columns,
            "notes": list(self.notes),
        }


def _to_original(x: float, y: float, skew: float, cx: float, cy: float) -> tuple[float, float]:
    """Where a point of the deskewed image lies in the original: rotate it back by ``skew``
    degrees counter-clockwise about the centre (as PIL's ``rotate`` does, y pointing down)."""
    angle = math.radians(skew)
    dx, dy = x - cx, y - cy
    return (
        cx + dx * math.cos(angle) + dy * math.sin(angle),
        cy - dx * math.sin(angle) + dy * math.cos(angle),
    )


#: Upside-down evidence (:func:`upright_evidence`) beyond which a page is turned half (measured on
#: the same 34 pages: upright +0.24 or more, turned -0.28 or less; four lines of a printed
#: pangram, heavy in descenders and indented, -0.20).
HALF_TURN = 0.25


def segment_lines(source: ImageSource, config: SegmentConfig | None = None) -> Segmentation:
    """Split a paragraph or page image into text lines, in reading order.

    Returns a :class:`Segmentation`: a list of :class:`LineSegment` (empty for an image
    without ink, or with too little contrast to hold any:
    :data:`quill.preprocess.BLANK_CONTRAST`, with a note saying so) that also tells the
    rotation found, the paper found in a photo, the columns and notes. Boxes are in the
    pixels of the image as given; crops are upright and straightened, ordinary images (L for
    a greyscale source, else RGB): feed them to :func:`quill.preprocess.preprocess` like
    any line photo.
    """
    return _segment(read_image(source), config or SegmentConfig(), look_closer=True)


def _segment(image: Image.Image, config: SegmentConfig, look_closer: bool) -> Segmentation:
    """:func:`segment_lines` of a decoded image; ``look_closer``: where the analysis size
    finds no ink, look for writing too small a part of the image to be seen there, and
    segment the part of the image around it."""
    scale = min(1.0, config.analysis_size / max(image.size))
    small = image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
        Image.Resampling.BOX,
        reducing_gap=2.0,  # a huge photo is first reduced by an integer factor: one cheap pass
    )
    notes: list[str] = []
    found = paper_region(small) if config.find_paper else None
    paper, offset, outline = None, (0, 0), None
    if found is not None:
        paper, outline = found[0], np.asarray(found[1].crop(found[0]))
        x0, y0, x1, y1 = paper
        offset = (math.floor(x0 / scale), math.floor(y0 / scale))
        image = image.crop((*offset, math.ceil(x1 / scale), math.ceil(y1 / scale)))
        small = small.crop(paper)
        notes.append("cut the page away from the background around it")
    mask = ink_mask(small, config.threshold)  # (h, w) at analysis resolution
    if outline is not None:
        mask &= outline  # the desk in the corners of a tilted page is not ink
    paper_box = _scaled(paper, 1 / scale) if paper else None
    if not mask.any():
        closer = _around_sparse_writing(small, outline, config) if look_closer else None
        if closer is not None:
            region = _scaled(closer, 1 / scale)
            inner = _segment(image.crop(region), config, look_closer=False)
            moved = (offset[0] + region[0], offset[1] + region[1])
            return _moved(inner, moved, paper_box, [*notes, SMALL_WRITING_NOTE])
        notes.append("no text found: the image is blank or its ink too faint")
        return Segmentation(paper=paper_box, notes=tuple(notes))
    mask, speckled, scattered = _without_specks(mask)
    if speckled:
        notes.append("no text found: the marks are specks (grain, noise or paper texture)")
        return Segmentation(paper=paper_box, notes=tuple(notes))
    if scattered:
        notes.append(
            f"no text found: the ink breaks into {scattered} small pieces, too few of them the "
            "size of a letter to be writing (noise, a texture or a picture)"
        )
        return Segmentation(paper=paper_box, notes=tuple(notes), no_text=True)
    rotation = 0
    if config.find_rotation and quarter_turned(mask):
        rotation, mask = 90, np.rot90(mask)
    ink = None
    if config.method == "learned":
        ink = np.rot90(ink_map(small) * (outline if outline is not None else 1.0), rotation // 90)
    try:
        skew, spacing, trace = _find_lines(mask, ink, config)
        if config.find_rotation and trace.upright < -HALF_TURN:
            rotation, mask = rotation + 180, np.rot90(mask, 2)
            turned = None if ink is None else np.rot90(ink, 2)
            skew, spacing, trace = _find_lines(mask, turned, config)
    except TooManyFragments as exc:
        notes.append(
            f"no text found: the ink breaks into {exc.count} pieces, too many to be lines of "
            "writing (noise, a texture or a picture)"
        )
        return Segmentation(paper=paper_box, notes=tuple(notes), no_text=True)
    if rotation:
        notes.append(f"turned the page {rotation} degrees counter-clockwise to read it")
    if not trace.lines:
        notes.append("no text lines found")
    upright = image.transpose(TRANSPOSE[rotation]) if rotation else image
    fill = paper_colour(small)
    pad = config.margin * spacing
    segments = []
    for line in trace.lines:
        x0, y0, x1, y1 = (v * trace.factor for v in line.box)
        # The line's rectangle in the deskewed frame, in full-resolution pixels.
        rect = ((x0 - pad) / scale, (y0 - pad) / scale, (x1 + pad) / scale, (y1 + pad) / scale)
        box, crop = _deskewed_crop(upright, rect, skew, fill, config.crop_height)
        box = _unturned(box, rotation, image.size)
        box = _moved_box(box, offset)
        segments.append(LineSegment(box, crop, line.region - 1, line.margin))
    columns = count_columns(trace.blocks, trace.lines)
    if columns > 1:
        notes.append(f"{columns} columns, read left to right")
    margins = sum(segment.margin for segment in segments)
    if margins:
        notes.append(f"{margins} margin note line(s), read after the main text")
    return Segmentation(
        segments, rotation=rotation, skew=skew, paper=paper_box, columns=columns, notes=tuple(notes)
    )


#: How an image is turned by a rotation (degrees counter-clockwise) of :class:`Segmentation`.
TRANSPOSE = {
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


#: Connected marks of at most this many pixels at analysis resolution are specks (sensor
#: grain, dust), not writing: the dot of an i is larger.
SPECK_PIXELS = 3
#: A mask whose specks hold more than this share of its ink is grain or texture, not a page
#: of writing (Hooker's pages: under 1%; blank paper photographed with grain: over 80%).
SPECKLED = 0.5


#: A piece of ink this many pixels at analysis resolution is the size of a letter or more.
LETTER_PIXELS = 30
#: An ink mask of at least this many pieces (not specks) with less than
#: :data:`LETTERS_IN_WRITING` of their ink in pieces the size of a letter is scattered noise,
#: not writing: random colour pixels make 2,900-14,700 pieces with 3% of their ink in such
#: pieces, and a whole page is read as 35 lines of made-up text; the 44 real and composed
#: pages measured make at most 1,163 pieces with at least 66% of their ink in letters, line
#: images at most 199 pieces.
SCATTERED_PIECES = 500
#: See :data:`SCATTERED_PIECES`.
LETTERS_IN_WRITING = 0.3


def _without_specks(mask: np.ndarray) -> tuple[np.ndarray, bool, int]:
    """``mask`` without its specks; whether specks were most of it; and, when its other
    pieces are scattered noise rather than writing (:data:`SCATTERED_PIECES`), how many
    there are (else 0). Tracing a grainy blank photo's tens of thousands of specks as lines
    would take minutes and gigabytes."""
    marks, _ = label(mask, structure=np.ones((3, 3), bool))
    sizes = np.bincount(marks.ravel())
    speck = sizes <= SPECK_PIXELS
    speck[0] = False
    speck_ink = int(sizes[speck].sum())
    pieces = sizes[1:][~speck[1:]]
    letters = int(pieces[pieces >= LETTER_PIXELS].sum())
    scattered = len(pieces) >= SCATTERED_PIECES and letters < LETTERS_IN_WRITING * pieces.sum()
    speckled = speck_ink > SPECKLED * int(sizes[1:].sum())
    return mask & ~speck[marks], speckled, len(pieces) if scattered else 0


def _find_lines(
    mask: np.ndarray, ink: np.ndarray | None, config: SegmentConfig
) -> tuple[float, int, Trace]:
    """Skew, line spacing and lines of an upright page, by ``config.method``: traced on its
    ink mask, or found by the learned detector on its ink map (``ink``, the mask's size)."""
    if ink is None:
        return _trace_page(mask, config)
    return _detect_page(mask, ink, config)


def _trace_page(mask: np.ndarray, config: SegmentConfig) -> tuple[float, int, Trace]:
    """Skew, line spacing and lines of an upright ink mask."""
    skew, mask = _deskewed(mask, config)
    spacing = line_spacing(mask, min_spacing=config.min_line_height)
    return skew, spacing, trace_lines(mask, spacing)


def _deskewed(mask: np.ndarray, config: SegmentConfig) -> tuple[float, np.ndarray]:
    """The skew of an upright ink mask, and the mask straightened."""
    mask = np.ascontiguousarray(mask)
    skew = estimate_skew(mask, config.max_skew_degrees, config.skew_step_degrees)
    if skew:
        # PIL's positive angle is counter-clockwise; undo a rise to the right.
        mask = np.asarray(Image.fromarray(mask).rotate(-skew, Image.Resampling.NEAREST))
    return skew, mask


def _detect_page(
    mask: np.ndarray, ink: np.ndarray, config: SegmentConfig
) -> tuple[float, int, Trace]:
    """Skew, line spacing and lines of an upright page: skew and spacing from its ink mask as
    the tracer finds them, lines from the learned detector on its ink map (same size as the
    mask) straightened by the same angle, in the tracer's reading order."""
    # Imported here: the detector needs torch, which the traced method (and a cold start of
    # a line model on ONNX) never loads.
    from quill.models.line_detector import detect_lines, shared_detector

    skew, mask = _deskewed(mask, config)
    if skew:
        turned = Image.fromarray(np.ascontiguousarray(ink, np.float32), mode="F")
        ink = np.asarray(turned.rotate(-skew, Image.Resampling.BILINEAR))
    spacing = line_spacing(mask, min_spacing=config.min_line_height)
    detector = shared_detector(str(detector_weights(config.detector)))
    return skew, spacing, _in_reading_order(detect_lines(detector, ink), mask, spacing)


def detector_weights(detector: str | None = None) -> Path:
    """The learned line detector's weights: ``detector``, or the shipped ones
    (:data:`DEFAULT_DETECTOR` under the working directory, else under this checkout), so
    that ``quill predict --segmenter learned`` works from any folder. A
    :class:`~quill.staged_model.ModelLoadError` naming where it looked when there are none.
    """
    candidates = [Path(detector)] if detector else [DEFAULT_DETECTOR, CHECKOUT / DEFAULT_DETECTOR]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = " or ".join(str(c) for c in candidates)
    raise ModelLoadError(f"no line detector weights at {looked} (quill detector train makes them)")


def _in_reading_order(boxes: list[Box], mask: np.ndarray, spacing: int) -> Trace:
    """Line boxes found on a deskewed mask as a :class:`Trace` (factor 1: boxes in the
    mask's pixels) in the tracer's reading order: each line in the text block (step 5) it
    overlaps most, blocks in order, lines of a block by height, margin notes last."""
    factor = max(1, round(spacing / TRACE_SPACING))
    step = spacing / factor
    occupied = without_graphics(reduce_mask(mask, factor), step) > 0
    blocks = [
        (x0 * factor, y0 * factor, x1 * factor, y1 * factor)
        for x0, y0, x1, y1 in text_blocks(occupied, step)
    ] or [(0, 0, mask.shape[1], mask.shape[0])]
    lines = []
    for box in boxes:
        overlaps = [
            max(0, min(box[2], b[2]) - max(box[0], b[0]))
            * max(0, min(box[3], b[3]) - max(box[1], b[1]))
            for b in blocks
        ]
        line = TracedLine(
            np.zeros(0),
            np.zeros(0),
            region=int(np.argmax(overlaps)) + 1,
            path=np.array([(box[1] + box[3]) / 2]),
            box=box,
        )
        x0, y0, x1, y1 = box
        line.rows = np.zeros(mask.shape[0])  # its ink per row, for the upside-down test
        line.rows[y0:y1] = mask[y0:y1, x0:x1].sum(axis=1)
        lines.append(line)
    upright = upright_evidence(lines, spacing)
    mark_margins(lines, blocks)
    lines.sort(key=lambda line: (line.margin, line.region, line.centre, line.box[0]))
    return Trace(lines, blocks, 1, upright)


def _unturned(box: Box, rotation: int, size: tuple[int, int]) -> Box:
    """A box in an image turned ``rotation`` degrees counter-clockwise, in the image before
    it was turned (``size``: that image's width and height).

    >>> _unturned((0, 0, 10, 20), 90, (100, 50))  # the turned image's top left was top right
    (80, 0, 100, 10)
    """
    width, height = size
    x0, y0, x1, y1 = box
    if rotation == 90:
        return (width - y1, x0, width - y0, x1)
    if rotation == 180:
        return (width - x1, height - y1, width - x0, height - y0)
    if rotation == 270:
        return (y0, height - x1, y1, height - x0)
    return box


def turned_box(box: Box, rotation: int, size: tuple[int, int]) -> Box:
    """A box of an image (``size``: its width and height) in that image turned ``rotation``
    degrees counter-clockwise (:attr:`Segmentation.rotation`): where a line found on a page
    read sideways is on the page turned to be read. The inverse of :func:`_unturned`.

    >>> all(_unturned(turned_box((5, 10, 30, 20), r, (100, 50)), r, (100, 50)) == (5, 10, 30, 20)
    ...     for r in (0, 90, 180, 270))
    True
    """
    width, height = size
    x0, y0, x1, y1 = box
    if rotation == 90:
        return (y0, width - x1, y1, width - x0)
    if rotation == 180:
        return (width - x1, height - y1, width - x0, height - y0)
    if rotation == 270:
        return (height - y1, x0, height - y0, x1)
    return box


#: Said when the writing covers so small a part of the image that it was looked for closer.
SMALL_WRITING_NOTE = "the writing covers a small part of the image: read it from closer"
#: Around writing found closer, the part of the image segmented holds this many times the
#: writing's height above, below and beside it (room for lines the first look missed).
CLOSER_MARGIN = 2.0


def _around_sparse_writing(
    small: Image.Image, outline: np.ndarray | None, config: SegmentConfig
) -> Box | None:
    """The part of the analysis image ``small`` around writing that covers too small a part
    of it to pass the blank test (:func:`quill.preprocess.sparse_ink_mask`); None when there
    is none, or only specks."""
    mask = sparse_ink_mask(small, config.threshold)
    if outline is not None:
        mask &= outline
    mask, speckled, scattered = _without_specks(mask)
    if speckled or scattered or not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    margin = CLOSER_MARGIN * max(int(ys.max() - ys.min()) + 1, config.min_line_height)
    return (
        max(0, int(xs.min() - margin)),
        max(0, int(ys.min() - margin)),
        min(small.width, int(xs.max() + 1 + margin)),
        min(small.height, int(ys.max() + 1 + margin)),
    )


def _moved(
    inner: Segmentation, by: tuple[int, int], paper: Box | None, notes: list[str]
) -> Segmentation:
    """``inner``, the segmentation of a part of an image whose corner is at ``by`` in it,
    with its boxes in the whole image's pixels, the whole image's paper and ``notes`` first."""
    lines = [replace(line, box=_moved_box(line.box, by)) for line in inner]
    return Segmentation(
        lines,
        rotation=inner.rotation,
        skew=inner.skew,
        paper=paper,
        columns=inner.columns,
        notes=(*notes, *inner.notes),
        no_text=inner.no_text,
    )


def _moved_box(box: Box, by: tuple[int, int]) -> Box:
    """``box`` of a part of an image whose corner is at ``by``, in the whole image's pixels.

    >>> _moved_box((1, 2, 3, 4), (10, 20))
    (11, 22, 13, 24)
    """
    dx, dy = by
    return box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy


def _scaled(box: Box, factor: float) -> Box:
    return (
        math.floor(box[0] * factor),
        math.floor(box[1] * factor),
        math.ceil(box[2] * factor),
        math.ceil(box[3] * factor),
    )


def _deskewed_crop(
    image: Image.Image,
    rect: tuple[float, float, float, float],
    skew: float,
    paper: tuple[int, ...],
    crop_height: int | None = None,
) -> tuple[Box, Image.Image]:
    """Cut one line: its axis-aligned box in the original image, and the straightened crop.

    The crop is sampled from the original in one affine transform (rotation back by
    ``skew`` about the image centre, then the line's rectangle), so its cost is the line's
    own pixels, not those of the page or of a rotated box. With ``crop_height``, the box is
    first shrunk with an area filter and the line sampled from it at that height.
    """
    centre = (image.width / 2, image.height / 2)
    corners = [
        _to_original(x, y, skew, *centre) for x in (rect[0], rect[2]) for y in (rect[1], rect[3])
    ]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    box = (
        max(0, math.floor(min(xs))),
        max(0, math.floor(min(ys))),
        min(image.width, math.ceil(max(xs))),
        min(image.height, math.ceil(max(ys))),
    )
    zoom = 1.0 if crop_height is None else min(1.0, crop_height / (rect[3] - rect[1]))
    if not skew and zoom == 1.0:
        return box, image.crop(box)
    source, origin, scale = image, (0, 0), (1.0, 1.0)
    if zoom < 1.0:
        region = image.crop(box)
        size = (max(1, round(region.width * zoom)), max(1, round(region.height * zoom)))
        source = region.resize(size, Image.Resampling.BOX)
        origin, scale = box[:2], (size[0] / region.width, size[1] / region.height)
    angle = math.radians(skew)
    cos, sin = math.cos(angle), math.sin(angle)
    left, top = _to_original(rect[0], rect[1], skew, *centre)
    size = (max(1, round((rect[2] - rect[0]) * zoom)), max(1, round((rect[3] - rect[1]) * zoom)))
    # Output (x, y) is the deskewed point (rect[0] + x / zoom, rect[1] + y / zoom), i.e. the
    # original point (left, top) + (x / zoom) * (cos, -sin) + (y / zoom) * (sin, cos), in
    # the source's pixels (the original, or the shrunk box).
    sx, sy = scale
    straight = source.transform(
        size,
        Image.Transform.AFFINE,
        (
            cos / zoom * sx,
            sin / zoom * sx,
            (left - origin[0]) * sx,
            -sin / zoom * sy,
            cos / zoom * sy,
            (top - origin[1]) * sy,
        ),
        Image.Resampling.BILINEAR,
        fillcolor=paper,
    )
    return box, straight


__all__ = [
    "LineSegment",
    "SegmentConfig",
    "Segmentation",
    "find_paper",
    "estimate_skew",
    "line_spacing",
    "segment_lines",
]
