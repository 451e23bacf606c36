"""Fixed inputs for the speed benchmark: real line images and paragraphs made of them.

Timing needs the same inputs for every system, in memory (so disk reads are not timed), and
of both kinds. Lines come from a benchmark dataset; paragraphs too when it has them. A line
dataset such as the Hooker letters has none, so paragraphs are composed by stacking
consecutive lines of one page onto white paper: real handwriting, a real multi-line layout,
and a reference text (the lines joined by newlines) to check accuracy on.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from quill.bench.datasets import BenchSample
from quill.bench.systems import Kind

#: Blank space between stacked lines and around the block, as a fraction of line height.
LINE_GAP = 0.25
MARGIN = 0.5


@dataclass(frozen=True)
class SpeedInput:
    """One encoded image with its reference text."""

    image: bytes
    text: str
    kind: Kind


def stack_lines(images: Sequence[bytes], background: int = 255) -> bytes:
    """One PNG paragraph image: ``images`` stacked top to bottom, left-aligned.

    >>> def line(w, h):
    ...     out = io.BytesIO(); Image.new("L", (w, h), 0).save(out, "PNG"); return out.getvalue()
    >>> Image.open(io.BytesIO(stack_lines([line(100, 20), line(60, 20)]))).size
    (120, 65)
    """
    lines = [Image.open(io.BytesIO(data)).convert("L") for data in images]
    height = sorted(line.height for line in lines)[len(lines) // 2]  # median line height
    gap, margin = round(LINE_GAP * height), round(MARGIN * height)
    width = max(line.width for line in lines) + 2 * margin
    total = sum(line.height for line in lines) + gap * (len(lines) - 1) + 2 * margin
    page = Image.new("L", (width, total), background)
    top = margin
    for line in lines:
        page.paste(line, (margin, top))
        top += line.height + gap
    out = io.BytesIO()
    page.save(out, "PNG")
    return out.getvalue()


def compose_paragraphs(
    lines: Sequence[BenchSample], count: int, lines_per_paragraph: int = 5
) -> list[SpeedInput]:
    """Up to ``count`` paragraphs of consecutive lines that share a page (slice ``group``)."""
    pages: dict[str, list[BenchSample]] = defaultdict(list)
    for sample in lines:
        pages[sample.slices.get("group", "")].append(sample)
    paragraphs = []
    for page in pages.values():
        for start in range(0, len(page) - lines_per_paragraph + 1, lines_per_paragraph):
            chunk = page[start : start + lines_per_paragraph]
            image = stack_lines([sample.image.read_bytes() for sample in chunk])
            text = "\n".join(sample.text for sample in chunk)
            paragraphs.append(SpeedInput(image, text, "paragraph"))
            if len(paragraphs) == count:
                return paragraphs
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
