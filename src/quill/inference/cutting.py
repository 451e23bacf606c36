"""How an image becomes the lines the model reads: as one line, or as the lines segmentation
finds, and which of the two readings to keep when an image could be either.

A wide image is usually one line and a tall one a page, but a word can look like a page to
the line tracer (its letters taken for lines) and two lines squashed into a wide strip can
look like one. :class:`~quill.inference.recognizer.Recognizer` reads such an image both ways
(:func:`may_be_either`) and the model's own confidence decides (:func:`likelier`): garbage in
pieces against a word read whole, garbage in one line against two lines read apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from PIL import Image

from quill.preprocess import MIN_SIDE, PreprocessConfig, is_blank, preprocess

#: How a page is cut into lines (:class:`quill.models.segment.SegmentConfig` ``method``):
#: traced along the ink (the default, measured better on real pages) or found by the
#: learned line detector.
Segmenter = Literal["trace", "learned"]
SEGMENTERS: tuple[Segmenter, ...] = ("trace", "learned")
#: With kind="auto", an image at least this many times wider than tall is read as one line
#: without segmenting it first (unless that reading is doubtful: DOUBTFUL_LINE).
LINE_ASPECT = 4.0
#: With kind="auto", an image at least this many times wider than tall that segmentation
#: cut into several lines is also read whole, as one line (:func:`likelier`): on a word or a
#: short line the tracer can take letters for lines (10 of the 467 Hooker test lines, 1.1 to
#: 4 times wider than tall, were read as 2 to 9 garbled lines).
WHOLE_LINE_ASPECT = 1.0
#: The whole-image reading replaces the lines' when its confidence is at least this much
#: higher: measured on those 10 words (7 gained 0.05 to 0.22, the other 3 lost) against 20
#: pages (at most +0.033) and 16 two-line strips (-0.17 to -0.40) read both ways.
WHOLE_LINE_MARGIN = 0.04
#: ... and the other way: an image at least LINE_ASPECT wide, read as one line without
#: segmenting it, is cut into lines when the model reads it under this confidence, and those
#: lines kept when read WHOLE_LINE_MARGIN more confidently. Measured on the test splits of
#: copiste, poilus and Hooker: 943 wide lines (5th percentile 0.755; 0.8% cut, CER 16.33%
#: unchanged) and 314 pairs of one writer's lines stacked, at least 4:1 (median 0.48: CER
#: 76.4% read as one line, 33.7% so, 32.8% always cut).
DOUBTFUL_LINE = 0.7
#: ... and only while the lines' characters are at most this many times the whole
#: reading's (+2): a page's lines hold far more than its image squashed into one line can,
#: which reads a few characters, sometimes confidently.
WHOLE_LINE_TEXT_RATIO = 4
#: The page findings of an image read whole, as given, when that reading was kept over the
#: lines segmentation found (the keys of ``Segmentation.to_dict``).
AS_GIVEN: dict[str, Any] = {"rotation": 0, "skew": 0.0, "paper": None, "columns": 1}
#: The one line found in an image is read from its crop, not the whole image, when its box
#: covers less than this share of the image (:func:`small_part`).
SMALL_PART = 0.25
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Crop:
    """One line cut from an input image: where (``box``), the pixels, and whether it is a
    margin note."""

    box: Box
    image: Image.Image
    margin: bool = False


@dataclass
class Prepared:
    """One input image cut into model-ready lines, and (once read) what the model read."""

    lines: list[np.ndarray]  # each (H, W) float32, ink = 1
    boxes: list[Box]
    margins: list[bool]  # per line: a margin note
    blank: list[bool]  # per line: no ink (not run through the model)
    kind: str
    preprocess_ms: float
    page: dict[str, Any] | None
    texts: list[str] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)
    language: str | None = None  # another language's LM read the lines (quill lm language)
    #: The same image read the other way: whole as one line beside the lines segmentation
    #: found, or cut into lines beside a doubtful reading as one line (:func:`likelier`).
    other: Prepared | None = None
    #: A wide image read as one line, kept until its reading says whether to cut it.
    image: Image.Image | None = None


def whole(image: Image.Image) -> Crop:
    """The whole image as one line."""
    return Crop((0, 0, image.width, image.height), image)


def find_lines(
    image: Image.Image, kind: str, segmenter: Segmenter, crop_height: int
) -> tuple[list[Crop], dict[str, Any] | None]:
    """Each text line's crop, and what segmentation found on the page (None when it did not
    run); the whole image when it is (or looks like) one line; none when its marks are not
    writing. ``kind`` is "line" (never segment), "paragraph" (always) or "auto";
    ``segmenter`` the method that cuts a page (:data:`Segmenter`); lines are cut at
    ``crop_height``, the height preprocessing would shrink them to, not the scan's."""
    if kind == "line" or (kind == "auto" and image.width >= LINE_ASPECT * image.height):
        return [whole(image)], None
    # lazy: segmentation imports scipy (a second of a cold start), which lines never need
    from quill.models.segment import SegmentConfig, segment_lines

    segments = segment_lines(image, SegmentConfig(method=segmenter, crop_height=crop_height))
    page = segments.to_dict()
    if segments.no_text:
        return [], page
    one_small = len(segments) == 1 and small_part(segments[0].box, image)
    if kind == "auto" and len(segments) <= 1 and not one_small:
        # one line: the whole image keeps the margins the model trained with
        return [whole(image)], page
    crops = [  # a sliver cut from a page holds no character: not the user's image's fault
        Crop(segment.box, segment.image, segment.margin)
        for segment in segments
        if min(segment.image.size) >= MIN_SIDE
    ]
    return crops or [whole(image)], page


def prepare(
    crops: list[Crop], page: dict[str, Any] | None, kind: str, config: PreprocessConfig
) -> Prepared:
    """The model-ready lines of ``crops`` (:func:`quill.preprocess.preprocess`), as one
    image's :class:`Prepared`: a "paragraph" when there are several or ``kind`` says so."""
    lines = [preprocess(crop.image, config) for crop in crops]
    many = len(crops) > 1 or kind == "paragraph" or config.kind == "paragraph"
    return Prepared(
        lines,
        [crop.box for crop in crops],
        [crop.margin for crop in crops],
        [is_blank(line) for line in lines],
        "paragraph" if many else "line",
        0.0,
        page,
    )


def may_be_either(image: Image.Image, crops: list[Crop], page: dict[str, Any] | None) -> bool:
    """Whether an image ``kind="auto"`` read one way might be the other: several lines found
    in an image at least :data:`WHOLE_LINE_ASPECT` wide (a word whose letters were taken for
    lines?), or one image wide enough to be read as a line without segmenting it (``page``
    None: two lines?)."""
    if not crops:
        return False
    if len(crops) > 1:
        return image.width >= WHOLE_LINE_ASPECT * image.height
    return page is None


def doubtful(item: Prepared) -> bool:
    """Whether a wide image read as one line (:attr:`Prepared.image`) was read under
    :data:`DOUBTFUL_LINE` confidence, so is worth cutting into lines after all."""
    return item.image is not None and not item.blank[0] and item.confidences[0] < DOUBTFUL_LINE


def likelier(item: Prepared) -> Prepared:
    """``item``, or the same image read the other way (:attr:`Prepared.other`: whole as one
    line, or cut into lines) when the model reads that with clearly more confidence
    (:data:`WHOLE_LINE_MARGIN`); one line is kept over lines only while the lines hold no
    more text than one line of that image could (:data:`WHOLE_LINE_TEXT_RATIO`).

    Which of "one line" and "several lines" an image is, is decided by the model that reads
    it: a word whose letters the tracer took for lines reads as garbage in pieces and as the
    word whole, two lines read as one are garbage. The page notes say when the other reading
    was kept."""
    other = item.other
    if other is None or all(other.blank):  # the ink too sparse to see squashed into a line
        return item
    one, lines = (other, item) if len(item.lines) > 1 else (item, other)
    pieces, read_whole = ("".join(r.texts).replace(" ", "") for r in (lines, one))
    if one is other and len(pieces) > WHOLE_LINE_TEXT_RATIO * (len(read_whole) + 2):
        return item
    confidence = combined_confidence(item.confidences, item.texts)
    if combined_confidence(other.confidences, other.texts) < confidence + WHOLE_LINE_MARGIN:
        return item
    if one is other:
        # the image as given was read: what segmentation found (a turn, a skew, margin
        # notes) no longer describes the answer
        page = {
            **AS_GIVEN,
            "notes": [
                f"read as one line: the model reads it so more confidently than as the "
                f"{len(lines.lines)} lines segmentation found"
            ],
        }
    else:
        page = dict(lines.page or {})
        page["notes"] = [
            *page.get("notes", []),
            f"read as the {len(lines.lines)} lines segmentation found: the model reads "
            "them more confidently than the image as one line",
        ]
    return replace(other, page=page, preprocess_ms=item.preprocess_ms)


def combined_confidence(confidences: Sequence[float], texts: Sequence[str]) -> float:
    """Geometric mean of line confidences weighted by line length (+1 so empty lines count).

    >>> round(combined_confidence([0.9, 0.5], ["abcdefgh", ""]), 3)  # (0.9**9 * 0.5) ** 0.1
    0.849
    >>> combined_confidence([], [])
    1.0
    """
    weights = [len(t) + 1 for t in texts]
    if not weights:
        return 1.0
    total = sum(w * math.log(max(c, 1e-12)) for w, c in zip(weights, confidences, strict=True))
    return math.exp(total / sum(weights))


def small_part(box: Box, image: Image.Image) -> bool:
    """Whether a line's box covers a small part of the image (a short note on a page, a line
    on a desk): read whole, the image would shrink its line to a few pixels at the height the
    model reads."""
    x0, y0, x1, y1 = box
    return (x1 - x0) * (y1 - y0) < SMALL_PART * image.width * image.height
