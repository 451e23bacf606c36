"""Line segmentation on drawn paragraphs (exact line counts and boxes) and a real page."""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from quill.models import line_trace
from quill.models.page_geometry import line_likeness, line_spacing, prominent_peaks
from quill.models.segment import SegmentConfig, segment_lines
from quill.preprocess import PreprocessConfig, ink_mask, preprocess, read_image

LINES = [
    "The quick brown fox jumps",
    "over the lazy dog; then it",
    "naps. Pack my box with five",
    "dozen liquor jugs, quickly!",
    "Sphinx of black quartz.",
]


def draw_paragraph(lines: list[str], spacing: int = 52) -> tuple[Image.Image, list[tuple]]:
    """Dark text on light paper and the pixel box of each drawn line."""
    font = ImageFont.load_default(size=30)
    image = Image.new("RGB", (720, 60 + spacing * len(lines)), (235, 230, 220))
    draw = ImageDraw.Draw(image)
    boxes = []
    for index, text in enumerate(lines):
        origin = (40 + 7 * index, 30 + spacing * index)  # ragged left margin, like handwriting
        draw.text(origin, text, font=font, fill=(30, 30, 90))
        boxes.append(draw.textbbox(origin, text, font=font))
    return image, boxes


def contains(outer: tuple, inner: tuple, slack: int = 2) -> bool:
    return (
        outer[0] <= inner[0] + slack
        and outer[1] <= inner[1] + slack
        and outer[2] >= inner[2] - slack
        and outer[3] >= inner[3] - slack
    )


def test_finds_each_drawn_line_in_reading_order():
    image, drawn = draw_paragraph(LINES)
    segments = segment_lines(image)
    assert len(segments) == len(LINES)
    for segment, box in zip(segments, drawn, strict=True):
        assert contains(segment.box, box)
        # Tight: a box may not swallow the neighbouring line.
        assert segment.box[3] - segment.box[1] < 1.6 * (box[3] - box[1])


def test_light_ink_on_dark_paper_gives_the_same_lines():
    image, _ = draw_paragraph(LINES)
    dark = segment_lines(image)
    light = segment_lines(ImageOps.invert(image))
    assert [s.box for s in light] == [s.box for s in dark]


def test_skewed_page_is_straightened():
    image, _ = draw_paragraph(LINES[:4], spacing=60)
    rotated = image.rotate(3, expand=True, fillcolor=(235, 230, 220))  # rises to the right
    segments = segment_lines(rotated)
    assert len(segments) == 4
    ys = [s.box[1] for s in segments]
    assert ys == sorted(ys)
    for segment in segments:
        # A straightened crop is about one line high; an unstraightened 3° band of a 600 px
        # line would be ~30 px taller.
        assert segment.image.height < 60


def test_crops_feed_the_shared_preprocessing():
    image, _ = draw_paragraph(LINES[:2])
    segments = segment_lines(image)
    assert len(segments) == 2
    for segment in segments:
        assert preprocess(segment.image, PreprocessConfig()).shape[0] == 64


def test_blank_page_has_no_lines():
    assert segment_lines(Image.new("RGB", (300, 200), "white")) == []


def test_near_blank_page_has_no_lines():
    """Paper grain, JPEG noise and a shadow are not text (issue 15: a blank image must not
    come back as confident text)."""
    rng = np.random.default_rng(0)
    shadow = np.linspace(1.0, 0.6, 900)[None, :, None]
    pixels = np.clip(rng.normal((232, 226, 212), 4.0, (1200, 900, 3)) * shadow, 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, "JPEG", quality=75)
    assert segment_lines(buffer.getvalue()) == []


def test_a_larger_photo_of_the_page_finds_the_same_lines():
    """The analysis runs at a fixed resolution (the 4x photo is reduced to it first)."""
    image, _ = draw_paragraph(LINES)
    large = image.resize((image.width * 4, image.height * 4), Image.Resampling.BICUBIC)
    found = segment_lines(large)
    assert len(found) == len(LINES)
    assert all(s.box[3] - s.box[1] < 4 * 1.6 * 40 for s in found)


def test_single_line():
    image, drawn = draw_paragraph(LINES[:1])
    (segment,) = segment_lines(image)
    assert contains(segment.box, drawn[0])


def test_one_word_cut_out_along_its_outline_is_one_line(hooker_dir):
    """A real one-word line, cut from its page along its polygon (white around it): its row
    profile correlates with itself only negatively past its own height, which once left
    the line-spacing estimate without a peak and crashed every reading of it as a page."""
    word = hooker_dir / "lines" / "JDH_2_16_159_001_r1l2.jpg"  # "Arundall"
    assert line_spacing(ink_mask(read_image(word), 0.35), min_spacing=8) > 0
    (segment,) = segment_lines(word)
    assert segment.image.height > 0


def test_a_page_whose_strokes_no_line_owns_is_read_not_crashed(monkeypatch):
    """A dot and a solid bar: the tracer finds a line, but no connected stroke belongs to it,
    and giving each stroke to its line once indexed an empty table (IndexError: every such
    upload, through the API, the app or quill predict, crashed)."""
    owned_strokes = []
    shares = line_trace._two_largest  # the real one, watched: the page must reach the case

    def watched(stroke_ids, counts, owners, strokes_count):
        owned_strokes.append(stroke_ids.size)
        return shares(stroke_ids, counts, owners, strokes_count)

    monkeypatch.setattr(line_trace, "_two_largest", watched)
    page = Image.new("L", (600, 400), 255)
    draw = ImageDraw.Draw(page)
    draw.rectangle((10, 10, 12, 12), fill=0)
    draw.rectangle((100, 200, 500, 230), fill=0)
    segments = segment_lines(page)
    assert 0 in owned_strokes  # a traced line owned no stroke: the case that crashed
    assert segments == []  # a dot and a rule: no line of writing


def test_a_skew_that_shears_every_pixel_off_a_flat_mask_is_skipped():
    """Found by fuzzing: a tall, narrow image (28 x 1278 px) is tested for a quarter turn by
    the line-likeness of its transpose, a mask 14 rows high; in a strip with ink only at its
    two ends, a 6-degree shear moves every pixel off the mask, and the empty profile crashed
    the segmenter (IndexError)."""
    mask = np.zeros((4, 100), bool)
    mask[3, :10] = True
    mask[0, 90:] = True
    assert line_likeness(mask, strips=1) > 0


def test_real_page_line_count_close_to_ground_truth(hooker_dir):
    page = hooker_dir / "pages" / "JDH_2_16_146_004.jpg"
    expected = len(re.findall(r"<TextLine\b", page.with_suffix(".xml").read_text("utf-8")))
    found = segment_lines(page, SegmentConfig())
    assert abs(len(found) - expected) <= 0.2 * expected, (len(found), expected)
    tops = [s.box[1] for s in found]
    assert tops == sorted(tops)


def test_prominent_peaks_are_scipys_without_importing_it():
    """The segmenter's own peak finder gives scipy.signal.find_peaks' answer (plateaus and
    steps included) on random walks; scipy.signal itself costs half a second to import."""
    from scipy.signal import find_peaks

    rng = np.random.default_rng(0)
    for trial in range(500):
        walk = np.cumsum(rng.normal(size=int(rng.integers(3, 150))))
        if trial % 3 == 0:
            walk = np.round(walk)  # flat tops and steps
        prominence = rng.uniform(0, 3)
        expected, _ = find_peaks(walk, prominence=prominence)
        assert np.array_equal(prominent_peaks(walk, prominence), expected), (trial, walk)
