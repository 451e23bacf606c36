"""With ``kind="auto"`` (what the API, the web app and ``quill predict`` read with) the
shipped default decides between "one line" and "several lines" by how confidently it reads
each: a word whose letters the tracer takes for lines is read whole, two lines stay two."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quill.inference.recognizer import WHOLE_LINE_MARGIN, Recognizer
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
    assert auto.page is not None and auto.page["notes"][-1].startswith("read as one line")
    assert "\n" in cut.text and "\n" not in auto.text


def test_two_lines_stacked_stay_two_lines(default: Recognizer) -> None:
    """Two lines of one Hooker letter one above the other (3.4 times wider than tall): read
    whole as one line they are garbage, read as the two lines found they are the two lines."""
    top = Image.open(HOOKER_LINES / "JDH_2_16_38_004_r2l2.jpg").convert("RGB")
    bottom = Image.open(HOOKER_LINES / "JDH_2_16_38_004_r2l3.jpg").convert("RGB")
    paper = tuple(int(v) for v in np.median(np.asarray(top).reshape(-1, 3), axis=0))
    strip = Image.new("RGB", (max(top.width, bottom.width), top.height + bottom.height + 20), paper)
    strip.paste(top, (0, 0))
    strip.paste(bottom, (0, top.height + 20))
    [auto] = default.predict([strip], kind="auto")
    [whole] = default.predict([strip], kind="line")
    assert auto.kind == "paragraph" and len(auto.lines) == 2
    assert auto.lines[0].text.endswith("Lynch drives")  # by some carelessness! Lynch drives
    assert auto.lines[1].text.startswith("me wild & is again")  # one wild & is again ...
    assert auto.confidence >= whole.confidence + WHOLE_LINE_MARGIN
