"""Synthetic pages made of real line crops, with every line's true box and core band.

A learned line detector needs pages whose lines are known exactly; hand-annotated pages are
few (four Hooker pages with PAGE XML), line crops are many (four shared datasets, over 400
writers). So a page is composed: real line images of one writer pasted onto paper, the way
a letter or a will lies on the page, and each pasted line's ink box (the truth a segmenter is
scored against) and x-height band (what the detector learns to mark) recorded as it is
placed.

Two composers:

- :func:`compose_lines` + :func:`render`: plain stacked lines (random height, spacing,
  indent, a few short lines) on plain paper. The segmenter's tests and the synthetic-page
  figures in docs/models.md use it; its pages for a given seed must not change.
- :func:`compose_page_sample`: pages towards what real ones have, for training and measuring
  the learned detector: per-page line height, spacing and slope, every line tilted a little
  on its own, indents, short lines, headings, notes in a wide margin beside the text, a word
  inserted between two lines, a faint pencil note in a corner, a stamp-like ring, and paper
  with colour, texture, shading and grain; with ``scan_marks``, also what a scan shows
  besides writing (the other side's writing showing through, the scanner's dark edge, a
  fold, dust).

Writers are split the way ``quill data import folder --split-by writer`` splits them
(:func:`quill.data.manifest.assign_splits` on the writer; Hooker's one hand on the page), so
a page of ``split="test"`` holds only hands never trained on; the Hooker pages the bench
scores whole (:data:`EVALUATION_PAGES`) are in no split.
"""

from __future__ import annotations

import csv
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from quill.data.manifest import Split, assign_splits, writer_of

Box = tuple[int, int, int, int]

#: The shared real-handwriting datasets (../shared/datasets/NAME/labels.tsv).
DATASETS = ("copiste", "poilus", "mss19", "hooker-letters")
#: The Hooker pages with PAGE XML that ``quill bench accuracy --pages`` reads whole: never
#: composed into a synthetic page, so nothing trained on them.
EVALUATION_PAGES = frozenset(
    {"JDH_2_16_144_002", "JDH_2_16_145_001", "JDH_2_16_146_001", "JDH_2_16_146_004"}
)
#: Darkness above which a pixel of a pasted line is its ink (for its true box).
INK = 0.4
#: The second word of the seed of a page's scan marks (:func:`_scan_marks`).
SCAN_MARKS_STREAM = 5


def shared_datasets() -> Path:
    """``../shared/datasets`` beside the project checkout."""
    return Path(__file__).resolve().parents[4].parent / "shared" / "datasets"


@cache
def line_files(
    dataset: str,
    split: Split | None = None,
    root: Path | None = None,
    evaluation: bool = True,
) -> tuple[tuple[Path, ...], ...]:
    """The line images of one shared dataset, grouped by writer (the page id's part before
    ``__``; the page for Hooker's letters, one hand), sorted by writer; only the writers of
    ``split`` when given; empty where the dataset is absent. ``evaluation=False`` leaves out
    the lines of :data:`EVALUATION_PAGES` (the segmenter's own tests compose pages with them,
    as they always have; nothing trained or measured on composed pages sees them)."""
    folder = (root or shared_datasets()) / dataset
    labels = folder / "labels.tsv"
    if not labels.is_file():
        return ()
    writers: dict[str, list[Path]] = {}
    with labels.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if not evaluation and row["page"] in EVALUATION_PAGES:
                continue
            writer = writer_of(row["page"]) or row["page"]
            writers.setdefault(writer, []).append(folder / row["file"])
    if split is not None:
        splits = assign_splits(writers)
        writers = {name: files for name, files in writers.items() if splits[name] == split}
    return tuple(tuple(files) for _, files in sorted(writers.items()))


def ink_line(path: Path, height: int) -> np.ndarray:
    """A line crop as darkness (h, w) in [0, 1] (paper 0), scaled to ``height`` pixels."""
    image = Image.open(path).convert("L")
    width = max(1, round(image.width * height / image.height))
    grey = np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), np.float32)
    inside = grey[grey < 250]  # the polygon's own paper (outside it is painted white)
    paper = np.percentile(inside, 75) if inside.size else 255.0
    darkness = np.clip(1.0 - grey / max(paper, 1.0), 0.0, 1.0)
    return np.clip(darkness / max(float(np.percentile(darkness, 99.5)), 0.2), 0.0, 1.0)


def ink_box(darkness: np.ndarray, x: int, y: int) -> Box | None:
    """The true box of a pasted line: its crop (the annotator's polygon box) trimmed to ink;
    None for a crop with almost none."""
    ink = darkness > INK
    if ink.sum() < 20:
        return None
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    return (x + int(cols[0]), y + int(rows[0]), x + int(cols[-1]) + 1, y + int(rows[-1]) + 1)


def compose_lines(
    seed: int, dataset: str | None = None, lines: int | None = None, height: int | None = None
) -> tuple[np.ndarray, list[Box]]:
    """Darkness (H, W) in [0, 1] of 6-12 real line images of one writer (the next writer's
    when one has too few) stacked top to bottom with a random line height, spacing (0.75-1.3
    line heights), left indent and sometimes a short line (the start of a line: a closing
    line or a heading); and each line's true box. Writers of every split."""
    rng = np.random.default_rng(seed)
    dataset = dataset or DATASETS[seed % len(DATASETS)]
    writers = line_files(dataset)
    count = lines or int(rng.integers(6, 13))
    files: list[Path] = []
    for writer in rng.permutation(len(writers)):
        if len(files) >= count:
            break
        files += list(writers[writer])[: count - len(files)]
    height = height or int(rng.integers(48, 110))
    picked = [ink_line(path, int(height * rng.uniform(0.95, 1.05))) for path in files]
    for index in rng.choice(count, int(rng.integers(0, 3)), replace=False):
        line = picked[index]  # a short line: its first 15-40%
        picked[index] = line[:, : max(height, int(line.shape[1] * rng.uniform(0.15, 0.4)))]
    width = max(line.shape[1] for line in picked)
    margin = int(rng.integers(30, 160))
    page_width = int(width * rng.uniform(1.05, 1.3)) + 2 * margin
    spacing = rng.uniform(0.75, 1.3)
    ys, y = [], margin
    for _ in picked:
        ys.append(y)
        y += int(height * spacing * rng.uniform(0.92, 1.08))
    darkness = np.zeros((y + height + margin, page_width), np.float32)
    boxes = []
    for line, top in zip(picked, ys, strict=True):
        left = min(margin + int(rng.uniform(0, 0.12) * width), page_width - line.shape[1])
        region = darkness[top : top + line.shape[0], left : left + line.shape[1]]
        np.maximum(region, line[: region.shape[0], : region.shape[1]], out=region)
        box = ink_box(line, left, top)
        if box is not None:
            boxes.append(box)
    return darkness, boxes


def render(darkness: np.ndarray, seed: int) -> Image.Image:
    """Paper-coloured canvas (a random paper and ink colour, light falling off across the
    page, grain) with ``darkness`` as ink."""
    rng = np.random.default_rng(seed + 10_000)
    paper = rng.uniform((205, 195, 170), (245, 240, 228))
    ink = rng.uniform((10, 10, 20), (90, 70, 110))
    width = darkness.shape[1]
    shade = 1.0 - rng.uniform(0, 0.12) * np.linspace(0, 1, width)[None, :, None]
    pixels = paper * shade + (ink - paper) * darkness[..., None]
    pixels += rng.normal(0, 3.0, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def compose_page(
    seed: int, dataset: str | None = None, lines: int | None = None
) -> tuple[Image.Image, list[Box]]:
    """A synthetic page (:func:`compose_lines` rendered) and its lines' true boxes."""
    darkness, boxes = compose_lines(seed, dataset, lines)
    return render(darkness, seed), boxes


# ------------------------------------------------------------------ pages like real ones


@dataclass(frozen=True)
class PageSample:
    """A composed page: the photo, each text line's true box and text (reading order: main
    text top to bottom, then margin notes, then a corner note) and the line cores.

    ``texts[i]`` is None where line ``i`` was cut short (its text is then unknown).
    ``cores`` (H, W) bool marks each line's x-height band across its whole length, word
    gaps included, tilted with the line: what the learned detector is trained to find.
    Bands of neighbouring lines never touch, even where ascenders and descenders do.
    """

    image: Image.Image
    boxes: list[Box]
    texts: list[str | None]
    cores: np.ndarray
    #: The first ``main_lines`` lines are the main text; the rest are notes beside it.
    main_lines: int


@dataclass
class _Canvas:
    """Darkness, cores and true lines of a page being composed."""

    darkness: np.ndarray  # (H, W) float32 in [0, 1]
    cores: np.ndarray  # (H, W) bool
    boxes: list[Box] = field(default_factory=list)
    texts: list[str | None] = field(default_factory=list)

    def paste(
        self,
        line: np.ndarray,
        text: str | None,
        at: tuple[int, int],
        degrees: float,
        strength: float = 1.0,
    ) -> bool:
        """Paste a line's darkness with its top left at ``at`` (x, y), tilted ``degrees``
        (counter-clockwise), at ``strength`` (a faint pencil: 0.3), recording its true box,
        text and core band; False when it fell off the page or holds no ink."""
        core = _core_band(line)
        if degrees:
            line = _rotated(line, degrees, Image.Resampling.BILINEAR)
            core = _rotated(core.astype(np.float32), degrees, Image.Resampling.BILINEAR) > 0.5
        left, top = at
        height, width = self.darkness.shape
        rows = max(0, min(line.shape[0], height - top))
        cols = max(0, min(line.shape[1], width - left))
        if rows == 0 or cols == 0 or top < 0 or left < 0:
            return False
        line, core = line[:rows, :cols], core[:rows, :cols]
        box = ink_box(line, left, top)
        if box is None or not core.any():
            return False
        region = self.darkness[top : top + rows, left : left + cols]
        np.maximum(region, line * strength, out=region)
        self.cores[top : top + rows, left : left + cols] |= core
        self.boxes.append(box)
        self.texts.append(text)
        return True


def _core_band(line: np.ndarray) -> np.ndarray:
    """The x-height band of a line crop (h, w) -> (h, w) bool: from its first to its last
    inked column, the quarter of its height that holds the most ink (a crop's height is
    about four x-heights: ascenders above, descenders below). Rows inked across most of a
    long line are a ruled line of the paper (the copiste lines have them), not writing, and
    are left out of the count. Bands of lines set 0.8 line heights apart stay apart."""
    ink = line > INK
    core = np.zeros(line.shape, bool)
    cols = np.flatnonzero(ink.any(axis=0))
    if cols.size == 0:
        return core
    profile = ink.sum(axis=1).astype(np.float32)
    span = cols[-1] - cols[0] + 1
    if span >= 3 * line.shape[0]:  # a word or two may be inked across; a long line is not
        profile[profile > 0.6 * span] = 0.0  # a ruled line
    band = max(1, line.shape[0] // 4)
    window = np.convolve(profile, np.ones(band, np.float32), mode="valid")
    top = int(window.argmax())
    core[top : top + band, cols[0] : cols[-1] + 1] = True
    return core


def _rotated(array: np.ndarray, degrees: float, resample: Image.Resampling) -> np.ndarray:
    """``array`` (h, w) float turned ``degrees`` counter-clockwise, the canvas grown to fit."""
    image = Image.fromarray(array.astype(np.float32), mode="F")
    return np.asarray(image.rotate(degrees, resample, expand=True), np.float32)


@cache
def _texts(root: Path | None) -> dict[Path, str]:
    """Every shared line file's transcription."""
    texts = {}
    for dataset in DATASETS:
        folder = (root or shared_datasets()) / dataset
        if (folder / "labels.tsv").is_file():
            with (folder / "labels.tsv").open(encoding="utf-8") as handle:
                for row in csv.DictReader(handle, delimiter="\t"):
                    texts[folder / row["file"]] = row["text"]
    return texts


def _pick_lines(
    rng: np.random.Generator,
    split: Split | None,
    count: int,
    root: Path | None,
    datasets: tuple[str, ...],
) -> list[Path]:
    """``count`` line files of one writer of a random one of ``datasets`` (more writers of
    the same dataset when one has too few), in their order on the writer's pages."""
    available = [name for name in datasets if line_files(name, split, root, False)]
    if not available:
        raise FileNotFoundError(f"no shared line crops for split {split!r}")
    writers = line_files(str(rng.choice(available)), split, root, False)
    files: list[Path] = []
    for writer in rng.permutation(len(writers)):
        need = count - len(files)
        start = int(rng.integers(0, max(1, len(writers[writer]) - need + 1)))
        files += list(writers[writer])[start : start + need]
        if len(files) >= count:
            break
    return files


Line = tuple[np.ndarray, str | None]


def _cut(line: Line, width: int) -> Line:
    """A line's first ``width`` pixels; its text is unknown once that cuts it short."""
    darkness, text = line
    return darkness[:, :width], text if width >= darkness.shape[1] else None


def _fitting(spare: list[Line], width: float) -> Line | None:
    """The last spare line at most ``width`` pixels wide, taken out of ``spare``; None when
    no spare line is that short."""
    for index in range(len(spare) - 1, -1, -1):
        if spare[index][0].shape[1] <= width:
            return spare.pop(index)
    return None


def compose_page_sample(
    seed: int,
    split: Split | None = "train",
    root: Path | None = None,
    whole: bool = False,
    datasets: tuple[str, ...] = DATASETS,
    scan_marks: bool = False,
) -> PageSample:
    """A page like a real letter or will, of writers of ``split`` (None: every writer).

    Per page: 4-22 lines of one hand at a height of 36-110 pixels, spacing 0.8-1.6 line
    heights, the page tilted up to 2.5 degrees and each line another 0.8 on its own, a left
    indent per line and a few short lines. Sometimes (each drawn per page) a heading above
    the text, notes in a wide left or right margin, a word inserted between two lines, a
    faint pencil note in a top corner (a true line: the bench's Hooker pages have one), a
    stamp-like ring (not a line), and paper with texture, shading and grain.

    ``whole``: no line is cut short, so every line's text is known (a page set whose text
    is read and scored); headings, notes, insertions and corner notes are then naturally
    short lines of the writer, left out where the writer has none short enough.
    ``datasets``: the shared datasets whose writers may write the page. ``scan_marks``: add
    :func:`_scan_marks`, drawn from a generator of their own: a seed's page is otherwise the
    same, paper and grain included.
    """
    rng = np.random.default_rng(seed)
    count = int(rng.integers(4, 23))
    files = _pick_lines(rng, split, count + 8, root, datasets)  # spares for notes and insertions
    texts = _texts(root)
    height = int(rng.integers(36, 111))
    spacing = float(rng.uniform(0.8, 1.6))
    tilt = float(rng.uniform(-2.5, 2.5)) if rng.random() < 0.6 else 0.0
    picked: list[Line] = [
        (ink_line(path, int(height * rng.uniform(0.93, 1.07))), texts[path])
        for path in files[:count]
    ]
    spare: list[Line] = [
        (ink_line(path, int(height * rng.uniform(0.6, 0.85))), texts[path])
        for path in files[count:]
    ]
    for index in rng.choice(count, int(rng.integers(0, 1 + count // 4)), replace=False):
        width = max(height, int(picked[index][0].shape[1] * rng.uniform(0.15, 0.5)))
        if not whole:
            picked[index] = _cut(picked[index], width)
    text_width = max(line.shape[1] for line, _ in picked)
    note_side = str(rng.choice(["left", "right"])) if rng.random() < 0.25 else None
    note_width = int(text_width * rng.uniform(0.18, 0.3)) if note_side else 0
    margin = int(rng.integers(30, 200))
    gutter = int(height * rng.uniform(1.5, 3.0)) if note_side else 0
    left_text = margin + (note_width + gutter if note_side == "left" else 0)
    heading = rng.random() < 0.2 and (not whole or picked[0][0].shape[1] <= 0.5 * text_width)
    top = margin + (int(height * rng.uniform(1.4, 2.2)) if heading else 0)
    ys = [top]
    for _ in picked[1:]:
        ys.append(ys[-1] + int(height * spacing * rng.uniform(0.92, 1.08)))
    page_height = ys[-1] + 2 * height + margin
    page_width = left_text + int(text_width * rng.uniform(1.02, 1.2)) + margin
    page_width += note_width + gutter if note_side == "right" else 0
    canvas = _Canvas(
        np.zeros((page_height, page_width), np.float32), np.zeros((page_height, page_width), bool)
    )
    if heading:
        width = max(height, int(picked[0][0].shape[1] * rng.uniform(0.15, 0.3)))
        title = picked[0] if whole else _cut(picked[0], width)
        left = left_text + max(0, (text_width - title[0].shape[1]) // 2)
        canvas.paste(*title, (left, margin), tilt)
    for (line, text), y in zip(picked[heading:], ys[heading:], strict=True):
        indent = int(rng.uniform(0, 0.12) * text_width) if rng.random() < 0.4 else 0
        canvas.paste(line, text, (left_text + indent, y), tilt + rng.uniform(-0.8, 0.8))
    if spare and spacing >= 1.2 and rng.random() < 0.3 and len(ys) > 2:
        index = int(rng.integers(heading, len(ys) - 1))
        if whole:
            word = _fitting(spare, 0.25 * text_width)
        else:
            word = spare.pop()
            fraction = rng.uniform(0.08, 0.2)
            word = _cut(word, max(word[0].shape[0], int(word[0].shape[1] * fraction)))
        between = (ys[index] + ys[index + 1] + height) // 2  # halfway between their cores
        x = left_text + int(rng.uniform(0.1, 0.7) * text_width)
        if word is not None:
            canvas.paste(*word, (x, between - word[0].shape[0] // 2), tilt)
    order = sorted(range(len(canvas.boxes)), key=lambda i: canvas.boxes[i][1] + canvas.boxes[i][3])
    main_lines = len(order)
    if note_side and spare:
        x = margin if note_side == "left" else page_width - margin - note_width
        y = ys[int(rng.integers(0, len(ys)))]
        for _ in range(int(rng.integers(1, 5))):
            note = _fitting(spare, note_width) if whole else _cut(spare.pop(), note_width)
            if note is None or y + height >= page_height:
                break
            if canvas.paste(*note, (x, y), tilt + rng.uniform(-1.5, 1.5)):
                order.append(len(canvas.boxes) - 1)
            y += int(note[0].shape[0] * rng.uniform(1.0, 1.4))
            if not spare:
                break
    if spare and rng.random() < 0.2 and margin > 1.2 * spare[-1][0].shape[0]:
        if whole:
            pencil = _fitting(spare, 0.25 * text_width)
        else:
            pencil = spare.pop()  # in the top margin, above the first line
            fraction = rng.uniform(0.08, 0.2)
            pencil = _cut(pencil, max(pencil[0].shape[0], int(pencil[0].shape[1] * fraction)))
        corner = rng.random() < 0.7
        if pencil is not None:
            x = page_width - margin // 2 - pencil[0].shape[1] if corner else margin // 2
            y = (margin - pencil[0].shape[0]) // 2
            strength = float(rng.uniform(0.25, 0.45))
            if canvas.paste(*pencil, (max(0, x), max(0, y)), 0.0, strength):
                order.append(len(canvas.boxes) - 1)
    if rng.random() < 0.2:
        _stamp(canvas.darkness, rng, height)
    if scan_marks:  # from their own generator: the paper below stays the plain page's
        _scan_marks(canvas.darkness, np.random.default_rng([seed, SCAN_MARKS_STREAM]))
    return PageSample(
        _paper(canvas.darkness, rng),
        [canvas.boxes[i] for i in order],
        [canvas.texts[i] for i in order],
        canvas.cores,
        main_lines,
    )


def _stamp(darkness: np.ndarray, rng: np.random.Generator, height: int) -> None:
    """A round stamp's ring (radius 0.8-2 line heights, 2-3 lines of it ringed) somewhere on
    the page, at 40-90% strength: ink that is no line."""
    radius = height * rng.uniform(0.8, 2.0)
    thick = max(2.0, radius * rng.uniform(0.04, 0.1))
    cy = rng.uniform(radius, max(radius + 1, darkness.shape[0] - radius))
    cx = rng.uniform(radius, max(radius + 1, darkness.shape[1] - radius))
    y0, y1 = int(max(0, cy - radius - thick)), int(min(darkness.shape[0], cy + radius + thick))
    x0, x1 = int(max(0, cx - radius - thick)), int(min(darkness.shape[1], cx + radius + thick))
    yy, xx = np.mgrid[y0:y1, x0:x1]
    distance = np.hypot(yy - cy, xx - cx)
    ring = np.zeros(distance.shape, np.float32)
    for r in (radius, radius * rng.uniform(0.7, 0.85)):
        ring = np.maximum(ring, np.clip(1.0 - np.abs(distance - r) / thick, 0.0, 1.0))
    region = darkness[y0:y1, x0:x1]
    np.maximum(region, ring * float(rng.uniform(0.4, 0.9)), out=region)


def _scan_marks(darkness: np.ndarray, rng: np.random.Generator) -> None:
    """What a scanned page shows besides its writing, none of it a line (each drawn per
    page): the other side's writing showing through (this page's own ink mirrored, moved and
    blurred, at 5-20% strength), the scanner's dark edge along one or two sides, a fold
    across the page, and specks of dust. The bench's real Hooker pages have all four, and
    the detector trained without them boxed the edge, show-through and specks as lines
    (docs/models.md)."""
    height, width = darkness.shape
    if rng.random() < 0.5:
        shift = (
            int(rng.integers(-height // 4, height // 4 + 1)),
            int(rng.integers(-width // 8, width // 8 + 1)),
        )
        ghost = gaussian_filter(
            np.roll(darkness[:, ::-1], shift, axis=(0, 1)), rng.uniform(0.8, 2.0)
        )
        np.maximum(darkness, ghost * np.float32(rng.uniform(0.05, 0.2)), out=darkness)
    if rng.random() < 0.5:
        views = [darkness, darkness[::-1], darkness.T, darkness.T[::-1]]  # top, bottom, left, right
        for side in rng.choice(4, int(rng.integers(1, 3)), replace=False):
            edge = views[side]
            depth = max(2.0, min(height, width) * rng.uniform(0.005, 0.03))
            # a ragged edge: its depth wanders along the side, slowly
            wander = np.interp(
                np.arange(edge.shape[1]),
                np.linspace(0, edge.shape[1], 9),
                rng.uniform(0.5, 1.5, 9),
            )
            rows = np.arange(int(math.ceil(1.5 * depth)))[:, None]
            band = np.clip(1.0 - rows / (depth * wander[None, :]), 0.0, 1.0)
            region = edge[: rows.shape[0]]
            np.maximum(region, (band * rng.uniform(0.5, 1.0)).astype(np.float32), out=region)
    if rng.random() < 0.3:
        angle = rng.uniform(0, math.pi)
        columns, rows = np.arange(width)[None, :], np.arange(height)[:, None]  # -> (H, W)
        distance = np.abs(
            (columns - width / 2) * math.sin(angle)
            - (rows - rng.uniform(0, height)) * math.cos(angle)
        )
        fold = np.clip(1.0 - distance / rng.uniform(1.0, 3.0), 0.0, 1.0) * rng.uniform(0.1, 0.3)
        np.maximum(darkness, fold.astype(np.float32), out=darkness)
    for _ in range(int(rng.integers(0, 120)) if rng.random() < 0.6 else 0):
        side = int(rng.integers(1, 5))
        y, x = (
            int(rng.integers(0, max(1, height - side))),
            int(rng.integers(0, max(1, width - side))),
        )
        region = darkness[y : y + side, x : x + side]
        np.maximum(region, np.float32(rng.uniform(0.3, 0.9)), out=region)


def _paper(darkness: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """``darkness`` as ink on paper: a paper colour (white to yellowed), an ink colour (black,
    brown or blue), a soft texture of blotches, light falling off across the page in a
    random direction, and grain."""
    height, width = darkness.shape
    paper = rng.uniform((200, 188, 160), (250, 246, 238))
    ink = rng.uniform((10, 10, 20), (90, 70, 110))
    if rng.random() < 0.25:
        ink = rng.uniform((20, 30, 90), (60, 70, 160))  # blue ink
    coarse = rng.normal(0, 1, (max(2, height // 64), max(2, width // 64))).astype(np.float32)
    texture = np.asarray(
        Image.fromarray(coarse, mode="F").resize((width, height), Image.Resampling.BICUBIC)
    )
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (
        np.cos(angle) * np.linspace(0, 1, width)[None, :]
        + np.sin(angle) * np.linspace(0, 1, height)[:, None]
    )
    shade = 1.0 - rng.uniform(0, 0.2) * (ramp - ramp.min()) / max(np.ptp(ramp), 1e-6)
    shade = shade + rng.uniform(0, 0.03) * texture
    pixels = (paper * shade[..., None] + (ink - paper) * darkness[..., None]).astype(np.float32)
    pixels += rng.standard_normal(pixels.shape, np.float32) * rng.uniform(1.0, 6.0)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


#: PAGE XML namespace of the files :func:`write_page_set` writes (the 2013 schema, as
#: Transkribus exports it).
PAGE_NAMESPACE = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2013-07-15"


def write_page_set(
    out: Path,
    count: int,
    split: Split | None = "test",
    start: int = 0,
    root: Path | None = None,
    datasets: tuple[str, ...] = DATASETS,
) -> list[Path]:
    """``count`` composed pages (seeds ``start``...) of ``split``'s writers, whole lines only
    (every text known), as JPEG + PAGE XML in ``out``: a page set ``quill bench accuracy
    --pages NAME=OUT`` reads (page CER, line detection, line CER). Each line's polygon is its
    true box; main text and notes are two regions, in reading order. The PAGE XML files
    written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for seed in range(start, start + count):
        page = compose_page_sample(seed, split, root, whole=True, datasets=datasets)
        name = f"synth_{split or 'all'}_{seed:05d}"
        page.image.save(out / f"{name}.jpg", quality=92)
        written.append(_write_pagexml(out / f"{name}.xml", f"{name}.jpg", page))
    return written


def _write_pagexml(path: Path, image_name: str, page: PageSample) -> Path:
    """One page's PAGE XML: a region per block (main text, then the notes after it)."""
    ET.register_namespace("", PAGE_NAMESPACE)
    root = ET.Element(f"{{{PAGE_NAMESPACE}}}PcGts")
    width, height = page.image.size
    element = ET.SubElement(
        root,
        f"{{{PAGE_NAMESPACE}}}Page",
        imageFilename=image_name,
        imageWidth=str(width),
        imageHeight=str(height),
    )
    region = None
    for number, (box, text) in enumerate(zip(page.boxes, page.texts, strict=True), start=1):
        if region is None or number - 1 == page.main_lines:
            region = ET.SubElement(element, f"{{{PAGE_NAMESPACE}}}TextRegion", id=f"r{number}")
            ET.SubElement(
                region, f"{{{PAGE_NAMESPACE}}}Coords", points=_points((0, 0, width, height))
            )
        line = ET.SubElement(region, f"{{{PAGE_NAMESPACE}}}TextLine", id=f"l{number}")
        ET.SubElement(line, f"{{{PAGE_NAMESPACE}}}Coords", points=_points(box))
        equiv = ET.SubElement(line, f"{{{PAGE_NAMESPACE}}}TextEquiv")
        ET.SubElement(equiv, f"{{{PAGE_NAMESPACE}}}Unicode").text = text or ""
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path


def _points(box: Box) -> str:
    """A box as a PAGE XML polygon: ``x0,y0 x1,y0 x1,y1 x0,y1``.

    >>> _points((1, 2, 30, 40))
    '1,2 30,2 30,40 1,40'
    """
    x0, y0, x1, y1 = box
    return f"{x0},{y0} {x1},{y0} {x1},{y1} {x0},{y1}"
