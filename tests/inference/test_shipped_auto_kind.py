"""With ``kind="auto"`` (what the API, the web app and ``quill predict`` read with) the
shipped default decides between "one line" and "several lines" by how confidently it reads
each: a word whose letters the tracer takes for lines is read whole, two lines stay two, and
two lines in an image wide enough to pass for one line are cut after all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quill.inference.cutting import AS_GIVEN, DOUBTFUL_LINE, WHOLE_LINE_MARGIN
from quill.inference.recognizer import Recognizer
from quill.models.segment import segment_lines

REPO = Path(__file__).resolve().parents[2]
HOOKER_LINES = REPO.parent / "shared" / "datasets" / "hooker-letters" / "lines"
#: Hooker test words (1.7 to 3 times wider than tall) the tracer cuts into 4 to 6 "lines".
CUT_WORDS = {
    "JDH_2_16_25_005_r1l24.jpg": "Thought",
    "JDH_2_16_31_001_r2l13.jpg": "personal",
    "JDH_2_16_49_003_r1l22.jpg": "he w",
}


@pytest.fixture(scope="module")
def default() -> Recognizer:
    if not HOOKER_LINES.is_dir():
        pytest.skip(f"the shared datasets are not at {HOOKER_LINES.parent}")
    return Recognizer.from_path(REPO / "models" / "default", backend="onnx", threads=1)


@pytest.mark.parametrize("name", sorted(CUT_WORDS))
def test_a_word_the_tracer_cuts_into_letters_is_read_whole(default: Recognizer, name: str) -> None:
    image = Image.open(HOOKER_LINES / name)
    assert len(segment_lines(image)) >= 4  # the case: the tracer takes its letters for lines
    [cut] = default.predict([image], kind="paragraph")  # always the lines segmentation found
    [whole] = default.predict([image], kind="line")
    [auto] = default.predict([image], kind="auto")
    assert whole.confidence >= cut.confidence + WHOLE_LINE_MARGIN
    assert (auto.text, auto.kind, len(auto.lines)) == (whole.text, "line", 1)
    # the image as given was read: no turn or skew of the discarded segmentation is reported
    # ("Thought" is one the tracer also took for a page upside down)
    assert auto.page is not None and set(auto.page) == set(segment_lines(image).to_dict())
    assert {key: auto.page[key] for key in AS_GIVEN} == AS_GIVEN
    [note] = auto.page["notes"]
    assert note.startswith("read as one line")
    assert "\n" in cut.text and "\n" not in auto.text


def stacked(top: str, bottom: str) -> Image.Image:
    """Two lines of one Hooker letter, 20 pixels apart on their paper."""
    first = Image.open(HOOKER_LINES / top).convert("RGB")
    second = Image.open(HOOKER_LINES / bottom).convert("RGB")
    paper = tuple(int(v) for v in np.median(np.asarray(first).reshape(-1, 3), axis=0))
    size = (max(first.width, second.width), first.height + second.height + 20)
    strip = Image.new("RGB", size, paper)
    strip.paste(first, (0, 0))
    strip.paste(second, (0, first.height + 20))
    return strip


def test_two_lines_stacked_stay_two_lines(default: Recognizer) -> None:
    """3.4 times wider than tall: segmented, and read whole as one line they are garbage."""
    strip = stacked("JDH_2_16_38_004_r2l2.jpg", "JDH_2_16_38_004_r2l3.jpg")
    [auto] = default.predict([strip], kind="auto")
    [whole] = default.predict([strip], kind="line")
    assert auto.kind == "paragraph" and len(auto.lines) == 2
    assert auto.lines[0].text.endswith("Lynch drives")  # by some carelessness! Lynch drives
    assert auto.lines[1].text.startswith("me wild & is again")  # one wild & is again ...
    assert auto.confidence >= whole.confidence + WHOLE_LINE_MARGIN


def test_two_lines_wide_enough_for_one_are_cut_when_read_as_one_doubtfully(
    default: Recognizer,
) -> None:
    """4.9 times wider than tall, so first read as one line without segmenting it: that
    reading is doubtful, the two lines found read surer, and they are the answer."""
    strip = stacked("JDH_2_16_176_001_r2l21.jpg", "JDH_2_16_176_001_r2l22.jpg")
    assert strip.width >= 4 * strip.height
    [whole] = default.predict([strip], kind="line")
    [auto] = default.predict([strip], kind="auto")
    assert whole.confidence < DOUBTFUL_LINE
    assert auto.kind == "paragraph" and len(auto.lines) == 2
    assert auto.lines[0].text.startswith("went to Hereford")  # went to Hereford & Oakwood ...
    assert auto.lines[1].text.startswith("had been at home")  # had been at home all the year
    assert auto.page is not None and auto.page["notes"][-1].startswith("read as the 2 lines")


def test_a_wide_line_read_confidently_is_not_segmented(default: Recognizer) -> None:
    line = Image.open(HOOKER_LINES / "JDH_2_16_176_001_r2l22.jpg")
    [auto] = default.predict([line], kind="auto")
    assert auto.confidence >= DOUBTFUL_LINE
    assert (auto.kind, auto.page) == ("line", None)  # segmentation never ran
