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
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from quill.cores import usable_cores
from quill.data.manifest import SPLITS, Manifest, Sample, Split
from quill.data.processes import worker_context
from quill.data.readers.common import (
    DatasetError,
    DatasetWriter,
    ImportReport,
    ImportResult,
    progress,
)
from quill.preprocess import ImageError, ink_map, load_image, paper_colour

#: Ink below this strength (polygon edges, show-through from the back of the page) is dropped.
INK_FLOOR = 0.3
#: Paper and pen whose RGB channels differ by at most this much are drawn as grey.
GREY_SPREAD = 8

K = TypeVar("K")


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


def allocate(total: int, sizes: dict[K, int]) -> dict[K, int]:
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
    and ink colours (grey if they are grey); augmentation adds paper texture and colour back
    at training time.
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
        paper.append(paper_colour(resized, size=None))
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
    paper_rgb = np.median(np.array(paper), axis=0)
    pen_rgb = np.median(np.array(pen), axis=0) if pen else np.array([30.0, 30.0, 30.0])
    return _draw(sheet, paper_rgb, pen_rgb)


def _draw(ink: np.ndarray, paper: np.ndarray, pen: np.ndarray) -> Image.Image:
    """Paper of one colour with ``ink`` (H, W) opacity in ``pen`` colour.

    Grey paper and pen give a one-channel image (a third of the work and the disk). The
    paper is uniform, so this blends per channel instead of against a full background
    array as :func:`quill.data.distort.composite` does for textured paper.
    """
    if np.ptp(paper) <= GREY_SPREAD and np.ptp(pen) <= GREY_SPREAD:
        paper, pen = paper.mean(keepdims=True), pen.mean(keepdims=True)
    channels = [
        (p + (q - p) * ink).round().clip(0, 255).astype(np.uint8)
        for p, q in zip(paper.tolist(), pen.tolist(), strict=True)
    ]
    if len(channels) == 1:
        return Image.fromarray(channels[0])
    return Image.fromarray(np.stack(channels, axis=-1))


def make_paragraphs(
    src: Path,
    out: Path,
    n: int,
    *,
    seed: int = 0,
    config: ParagraphConfig | None = None,
    workers: int | None = None,
    show_progress: bool = False,
) -> ImportResult:
    """Write ``n`` stacked paragraphs from the line samples of dataset ``src`` into ``out``.

    Paragraph ``i`` of a split depends only on (seed, split, i) and the split's lines, so the
    output is the same for a seed whatever the number of ``workers`` (processes; default:
    one per core). Lines whose image cannot be read are reported once and never used.
    """
    manifest = Manifest.load(src)
    pools = {split: [s for s in manifest.split(split) if s.kind == "line"] for split in SPLITS}
    if not any(pools.values()):
        raise DatasetError(f"{src} has no line samples to stack into paragraphs")
    config = config or ParagraphConfig()
    shares = allocate(n, {k: len(v) for k, v in pools.items()})
    for split, count in shares.items():
        if count:
            _check_enough_lines(manifest, split, pools[split], config.min_lines)
    source = Counter(s.source for pool in pools.values() for s in pool).most_common(1)[0][0]
    report = ImportReport(f"paragraphs:{src}")
    writer = DatasetWriter(out, f"{source}-paragraphs", report)
    jobs = [(split, i) for split, count in shares.items() for i in range(count)]
    builder = _Builder(manifest, pools, seed, config)
    lines_version = manifest.version
    workers = min(workers or usable_cores(), len(jobs))
    reported: set[str] = set()
    for paragraph in progress(
        _render_all(builder, jobs, workers), "paragraphs", len(jobs), show_progress
    ):
        for image, reason in paragraph.failures:
            if image not in reported:
                reported.add(image)
                report.skip(image, reason)
        if paragraph.image is None:
            continue
        split, i = paragraph.job
        writer.add_crop(
            f"paragraph-{split}-{i:06d}",
            paragraph.image,
            "\n".join(sample.text for sample in paragraph.lines),
            group=f"{split}-paragraph-{i}",
            kind="paragraph",
            meta={"lines": [s.image for s in paragraph.lines], "from": lines_version},
            split=split,
        )
    return writer.finish()


def _check_enough_lines(manifest: Manifest, split: Split, pool: list[Sample], least: int) -> None:
    """Refuse, before anything is written, a split whose lines cannot fill a paragraph.

    Without this, paragraphs of such a split came out shorter than ``least`` lines (one
    line, even) with no word said. Only the files' presence is checked here (cheap); an
    image that is there but cannot be decoded is caught when the lines are drawn.
    """
    present = sum(1 for sample in pool if manifest.path_of(sample).is_file())
    if present < least:
        raise DatasetError(
            f"the {split} split has {present} line(s) with an image file (of {len(pool)}), "
            f"fewer than the {least} a paragraph needs (--min-lines)"
        )


@dataclass
class _Paragraph:
    job: tuple[Split, int]
    lines: list[Sample]
    image: Image.Image | None
    #: (line image, reason) for lines that could not be read.
    failures: list[tuple[str, str]]


class _Builder:
    """Renders paragraph ``(split, i)``; one per process, so it is built to be pickled once."""

    def __init__(
        self,
        manifest: Manifest,
        pools: dict[Split, list[Sample]],
        seed: int,
        config: ParagraphConfig,
    ):
        self.manifest, self.pools, self.seed, self.config = manifest, pools, seed, config
        self.broken: set[str] = set()

    def __call__(self, job: tuple[Split, int]) -> _Paragraph:
        split, i = job
        rng = random.Random(f"{self.seed}:{split}:{i}")
        picked, failures = self._pick(self.pools[split], rng)
        if len(picked) < self.config.min_lines:  # every line was tried: too few decode
            raise DatasetError(
                f"the {split} split has {len(picked)} readable line(s) (of "
                f"{len(self.pools[split])}), fewer than the {self.config.min_lines} a "
                "paragraph needs (--min-lines)"
            )
        image = stack_lines([im for _, im in picked], rng, self.config) if picked else None
        return _Paragraph(job, [sample for sample, _ in picked], image, failures)

    def _pick(
        self, pool: list[Sample], rng: random.Random
    ) -> tuple[list[tuple[Sample, Image.Image]], list[tuple[str, str]]]:
        """Random distinct readable lines of ``pool`` with their images, and the failures.

        An unreadable line is remembered and never drawn again; the random draws are the
        same whether or not a process already knew it was unreadable.
        """
        count = min(rng.randint(self.config.min_lines, self.config.max_lines), len(pool))
        picked: list[tuple[Sample, Image.Image]] = []
        failures: list[tuple[str, str]] = []
        tried: set[int] = set()
        while len(picked) < count and len(tried) < len(pool):
            index = rng.randrange(len(pool))
            sample = pool[index]
            known = index in tried or sample.image in self.broken
            tried.add(index)
            if known:
                continue
            try:
                picked.append((sample, load_image(self.manifest.path_of(sample))))
            except ImageError as exc:
                failures.append((sample.image, str(exc)))
                self.broken.add(sample.image)
        return picked, failures


def _render_all(
    builder: _Builder, jobs: list[tuple[Split, int]], workers: int
) -> Iterator[_Paragraph]:
    """Paragraphs in job order, rendered here or by ``workers`` processes."""
    if workers <= 1:
        yield from map(builder, jobs)
        return
    with ProcessPoolExecutor(
        workers, mp_context=worker_context(), initializer=_set_builder, initargs=(builder,)
    ) as pool:
        yield from pool.map(_build, jobs, chunksize=4)


_BUILDER: _Builder | None = None


def _set_builder(builder: _Builder) -> None:
    """Process-pool initializer: each worker receives the builder (and manifest) once."""
    global _BUILDER
    _BUILDER = builder


def _build(job: tuple[Split, int]) -> _Paragraph:
    assert _BUILDER is not None, "worker started without _set_builder"
    return _BUILDER(job)
