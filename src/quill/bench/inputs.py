"""Fixed inputs for the speed benchmark: real line images and paragraphs made of them.

Timing needs the same inputs for every system, in memory (so disk reads are not timed), and
of both kinds. Lines come from a benchmark dataset; paragraphs too when it has them. A line
dataset such as the Hooker letters has none, so paragraphs are composed from consecutive
lines of one page with the data layer's own stacker (:func:`quill.data.paragraphs.stack_lines`,
which redraws the lines' ink on one sheet): real handwriting in a multi-line layout, with a
reference text (the lines joined by newlines) to check accuracy on.
"""

from __future__ import annotations

import io
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from quill.bench.datasets import BenchSample
from quill.bench.systems import Kind

#: What a speed row reads: a line or a paragraph (:data:`Kind`, through ``System.read``), or a
#: whole page, whose lines the system finds itself (``ReadsPages.read_page``).
TimedKind = Kind | Literal["page"]
#: Lines per composed paragraph.
LINES_PER_PARAGRAPH = 5


@dataclass(frozen=True)
class SpeedInput:
    """One encoded image with its reference text."""

    image: bytes
    text: str
    kind: TimedKind


def compose_paragraphs(
    lines: Sequence[BenchSample], count: int, lines_per_paragraph: int = LINES_PER_PARAGRAPH
) -> list[SpeedInput]:
    """Up to ``count`` PNG paragraphs of consecutive lines that share a page (slice ``group``).

    Deterministic: paragraph ``i`` is laid out with a generator seeded by ``i``.
    """
    from quill.data.paragraphs import ParagraphConfig, stack_lines
    from quill.preprocess import load_image

    pages: dict[str, list[BenchSample]] = defaultdict(list)
    for sample in lines:
        pages[sample.slices.get("group", "")].append(sample)
    chunks = [
        page[start : start + lines_per_paragraph]
        for page in pages.values()
        for start in range(0, len(page) - lines_per_paragraph + 1, lines_per_paragraph)
    ]
    paragraphs = []
    for index, chunk in enumerate(chunks[:count]):
        image = stack_lines(
            [load_image(sample.image) for sample in chunk],
            random.Random(f"bench-paragraph:{index}"),
            ParagraphConfig(),
        )
        encoded = io.BytesIO()
        image.save(encoded, "PNG")
        text = "\n".join(sample.text for sample in chunk)
        paragraphs.append(SpeedInput(encoded.getvalue(), text, "paragraph"))
    return paragraphs


def speed_inputs(samples: Sequence[BenchSample], count: int) -> dict[Kind, list[SpeedInput]]:
    """``count`` lines and ``count`` paragraphs from ``samples`` (paragraphs composed if needed)."""
    lines = [s for s in samples if s.kind == "line"]
    paragraphs = [
        SpeedInput(s.image.read_bytes(), s.text, "paragraph")
        for s in samples
        if s.kind == "paragraph"
    ][:count]
    if not paragraphs:
        paragraphs = compose_paragraphs(lines, count)
    return {
        "line": [SpeedInput(s.image.read_bytes(), s.text, "line") for s in lines[:count]],
        "paragraph": paragraphs,
    }
