"""Synthetic paragraphs made by stacking real line crops, as the reference system did for IAM.

Real paragraph ground truth is scarce (IAM has ~1,500 forms) while line crops are plentiful,
so a paragraph model gets many more pages to learn from when random lines of one split are
stacked into new pages: their texts joined by newlines, each line rescaled a little, indented
a little, spaced a little differently. Paragraphs are built per split from that split's lines
only, so no line of a validation or test page ever appears in a training paragraph.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from quill.data.distort import composite
from quill.data.manifest import SPLITS, Manifest, Sample
from quill.data.readers.common import (
    DatasetError,
    DatasetWriter,
    ImportReport,
    ImportResult,
    progress,
)
from quill.data.readers.geometry import paper_colour
from quill.preprocess import ImageError, ink_map, load_image

#: Ink below this strength (polygon edges, show-through from the back of the page) is dropped.
INK_FLOOR = 0.3


@dataclass(frozen=True)
class ParagraphConfig:
    """How lines are stacked. Fractions are of the paragraph's typical line height."""

    min_lines: int = 2
    max_lines: int = 8
    #: Each line is scaled by a factor in [1 - jitter, 1 + jitter] (writers vary in size).
    height_jitter: float = 0.1
    #: Vertical gap between lines.
    gap: tuple[float, float] = (0.05, 0.4)
    #: Left indent of each line.
    indent: tuple[float, float] = (0.0, 0.5)
    #: Blank margin around the page.
    margin: float = 0.3


def allocate(total: int, sizes: dict[str, int]) -> dict[str, int]:
    """Share ``total`` among splits in proportion to ``sizes`` (largest remainder).

    >>> allocate(10, {"train": 80, "val": 10, "test": 10})
    {'train': 8, 'val': 1, 'test': 1}
    >>> allocate(3, {"train": 5, "val": 0})
    {'train': 3, 'val': 0}
    """
    weight = sum(sizes.values())
    exact = {split: total * size / weight for split, size in sizes.items()}
    shares = {split: int(value) for split, value in exact.items()}
    by_remainder = sorted(exact, key=lambda s: exact[s] - shares[s], reverse=True)
    for split in by_remainder[: total - sum(shares.values())]:
        shares[split] += 1
    return shares


def stack_lines(
    images: list[Image.Image], rng: random.Random, config: ParagraphConfig
) -> Image.Image:
    """One page from line images (RGB): each line's ink laid onto one sheet of paper.

    Crops come from different scans, some with the outside of their polygon painted white;
    pasting them as they are would leave rectangle and polygon edges that the model's ink
    map reads as strokes. So each line is reduced to its ink (:func:`quill.preprocess.ink_map`,
    faint edges and show-through dropped) and the page is redrawn in the lines' median paper
    and ink colours; augmentation adds paper texture and colour back at training time.
    """
    height = float(np.median([im.height for im in images]))
    inks, paper, pen = [], [], []
    for image in images:
        scale = height * rng.uniform(1 - config.height_jitter, 1 + config.height_jitter)
        size = (max(1, round(image.width * scale / image.height)), max(1, round(scale)))
        resized = image.resize(size, Image.Resampling.BILINEAR)
        ink = np.clip((ink_map(resized) - INK_FLOOR) / (1 - INK_FLOOR), 0, 1)  # (h, w)
        inks.append(ink)
        pixels = np.asarray(resized, dtype=np.float32).reshape(-1, 3)
        paper.append(paper_colour(resized))
        if (ink > 0.6).any():
            pen.append(np.median(pixels[ink.reshape(-1) > 0.6], axis=0))
    margin = round(config.margin * height)
    indents = [round(rng.uniform(*config.indent) * height) for _ in inks]
    gaps = [round(rng.uniform(*config.gap) * height) for _ in inks[1:]] + [0]
    width = max(ink.shape[1] + ind for ink, ind in zip(inks, indents, strict=True)) + 2 * margin
    total = sum(ink.shape[0] for ink in inks) + sum(gaps) + 2 * margin
    sheet = np.zeros((total, width), dtype=np.float32)  # (H, W) ink opacity
    y = margin
    for ink, indent, gap in zip(inks, indents, gaps, strict=True):
        h, w = ink.shape
        window = sheet[y : y + h, margin + indent : margin + indent + w]
        np.maximum(window, ink, out=window)
        y += h + gap
    background = np.empty((total, width, 3), dtype=np.uint8)
    background[:] = np.median(np.array(paper), axis=0).round().astype(np.uint8)
    colour = np.median(np.array(pen), axis=0) if pen else np.array([30.0, 30.0, 30.0])
    return Image.fromarray(composite(sheet, background, tuple(int(c) for c in colour)))


def make_paragraphs(
    src: Path,
    out: Path,
    n: int,
    *,
    seed: int = 0,
    config: ParagraphConfig | None = None,
    show_progress: bool = False,
) -> ImportResult:
    """Write ``n`` stacked paragraphs from the line samples of dataset ``src`` into ``out``.

    Paragraph ``i`` of a split depends only on (seed, split, i) and the split's lines, so the
    output is the same for a seed. Lines whose image cannot be read are reported once and
    not used again.
    """
    config = config or ParagraphConfig()
    manifest = Manifest.load(src)
    pools = {split: [s for s in manifest.split(split) if s.kind == "line"] for split in SPLITS}
    if not any(pools.values()):
        raise DatasetError(f"{src} has no line samples to stack into paragraphs")
    source = Counter(s.source for pool in pools.values() for s in pool).most_common(1)[0][0]
    report = ImportReport(f"paragraphs:{src}")
    writer = DatasetWriter(out, f"{source}-paragraphs", report)
    jobs = [
        (split, i)
        for split, count in allocate(n, {k: len(v) for k, v in pools.items()}).items()
        for i in range(count)
    ]
    broken: set[str] = set()
    for split, i in progress(jobs, "paragraphs", len(jobs), show_progress):
        rng = random.Random(f"{seed}:{split}:{i}")
        picked = _pick_readable(pools[split], manifest, rng, config, report, broken)
        if not picked:
            continue
        writer.add_crop(
            f"paragraph-{split}-{i:06d}",
            stack_lines([image for _, image in picked], rng, config),
            "\n".join(sample.text for sample, _ in picked),
            group=f"{split}-paragraph-{i}",
            kind="paragraph",
            meta={"lines": [sample.image for sample, _ in picked], "from": manifest.version},
            split=split,
        )
    return writer.finish()


def _pick_readable(
    pool: list[Sample],
    manifest: Manifest,
    rng: random.Random,
    config: ParagraphConfig,
    report: ImportReport,
    broken: set[str],
) -> list[tuple[Sample, Image.Image]]:
    """Random distinct lines of ``pool`` with their images.

    A line whose image cannot be read is reported once, added to ``broken`` and never
    drawn again.
    """
    count = min(rng.randint(config.min_lines, config.max_lines), len(pool))
    picked: list[tuple[Sample, Image.Image]] = []
    tried: set[int] = set()
    while len(picked) < count and len(tried) < len(pool):
        index = rng.randrange(len(pool))
        sample = pool[index]
        if index in tried or sample.image in broken:
            tried.add(index)
            continue
        tried.add(index)
        try:
            picked.append((sample, load_image(manifest.path_of(sample))))
        except ImageError as exc:
            report.skip(sample.image, str(exc))
            broken.add(sample.image)
    return picked
