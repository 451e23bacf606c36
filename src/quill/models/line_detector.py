"""A small learned line detector: a page's ink map -> the x-height band of every text line.

Why learned: the classical segmenter (:mod:`quill.models.segment`) traces crests of ink
density with thresholds measured on a few pages; what it misses are lines that do not look
like the page's other lines (a faint pencil date, a word inserted between two lines). A
network trained on many composed pages (:mod:`quill.data.synth.pages`) sees those cases by
the thousand. It marks each line's *core*, the band of its x-height, because cores of
neighbouring lines never touch even where ascenders and descenders do: a connected region of
the map is one line, with no separator channel to learn.

Shapes (``size`` 512, ``channels`` (16, 32, 64))::

    ink map (B, 1, H, W)            H, W <= 512, padded to a multiple of 8
      -> stem, stride 2            (B, 16, H/2, W/2)
      -> down, stride 2            (B, 32, H/4, W/4)
      -> down, stride 2            (B, 64, H/8, W/8)
      -> context: dilation 2, 4    (B, 64, H/8, W/8)   ~ 150 px seen around each pixel
      -> up + skip                 (B, 32, H/4, W/4)
      -> up + skip                 (B, 16, H/2, W/2)
      -> 1x1                       (B, 1, H/2, W/2)    core logits

The input is :func:`quill.preprocess.ink_map` (the segmenter's normalisation: colour and
polarity are gone before the network sees the page), area-resized so its longer side is
``size``. :func:`line_boxes` turns the core map into boxes: each connected core (pieces of
one line side by side joined) is a line, every ink pixel goes to its nearest core, and a
line's box is the extent of its ink. Reading order, crops and deskewing are the
segmenter's (``SegmentConfig(method="learned")``).
"""

from __future__ import annotations

import dataclasses
from functools import cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import distance_transform_edt, find_objects, label
from torch import nn
from torch.nn import functional as F  # noqa: N812

from quill.models.blocks import conv_bn_relu
from quill.models.config import ModelConfig

Box = tuple[int, int, int, int]

#: The network's input sides are padded to a multiple of this (three stride-2 stages).
STRIDE = 8
#: Output pixels per input pixel along each side.
OUTPUT_SCALE = 2


@dataclasses.dataclass(frozen=True)
class LineDetectorConfig(ModelConfig):
    """Architecture and post-processing of :class:`LineDetector` (defaults: ~180 k
    parameters, 0.7 MB)."""

    #: Longer side of the ink map the network reads, pixels.
    size: int = 512
    #: Channels at 1/2, 1/4 and 1/8 of the input.
    channels: tuple[int, int, int] = (16, 32, 64)
    #: Core probability above which an output pixel is part of a line's core.
    threshold: float = 0.5
    #: Cores smaller than this many output pixels are noise, not lines.
    min_core_pixels: int = 6
    #: Two cores side by side whose rows mostly overlap are one line when the gap between
    #: them is under this many core heights (a gap between words the network left open).
    join_gap: float = 2.5
    #: Ink map value above which an input pixel is ink (the segmenter's threshold).
    ink_threshold: float = 0.35
    #: Ink farther from its nearest core than this many core heights belongs to no line.
    reach: float = 2.0
    #: Rows at a box's top and bottom holding under this share of its fullest row's ink are
    #: trimmed (a stray descender from the line above).
    trim: float = 0.03


def _conv(inputs: int, outputs: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """:func:`~quill.models.blocks.conv_bn_relu` as one module (its weights' names, 0 and 1,
    are those of the shipped detector)."""
    return nn.Sequential(*conv_bn_relu(inputs, outputs, stride, dilation))


class LineDetector(nn.Module):
    """Ink map (B, 1, H, W), H and W multiples of 8 -> core logits (B, 1, H/2, W/2)."""

    def __init__(self, config: LineDetectorConfig | None = None):
        super().__init__()
        self.config = config = config or LineDetectorConfig()
        c1, c2, c3 = config.channels
        self.stem = nn.Sequential(_conv(1, c1, stride=2), _conv(c1, c1))
        self.down1 = nn.Sequential(_conv(c1, c2, stride=2), _conv(c2, c2))
        self.down2 = nn.Sequential(_conv(c2, c3, stride=2), _conv(c3, c3))
        self.context = nn.Sequential(_conv(c3, c3, dilation=2), _conv(c3, c3, dilation=4))
        self.up1 = _conv(c3 + c2, c2)
        self.up2 = _conv(c2 + c1, c1)
        self.head = nn.Conv2d(c1, 1, 1)

    def forward(self, ink: torch.Tensor) -> torch.Tensor:
        half = self.stem(ink)  # (B, c1, H/2, W/2)
        quarter = self.down1(half)  # (B, c2, H/4, W/4)
        eighth = self.context(self.down2(quarter))  # (B, c3, H/8, W/8)
        up = F.interpolate(eighth, scale_factor=2.0, mode="nearest")
        quarter = self.up1(torch.cat([up, quarter], dim=1))  # (B, c2, H/4, W/4)
        up = F.interpolate(quarter, scale_factor=2.0, mode="nearest")
        return self.head(self.up2(torch.cat([up, half], dim=1)))  # (B, 1, H/2, W/2)


def resize_ink(ink: np.ndarray, size: int) -> np.ndarray:
    """An ink map (H, W) resized so its longer side is ``size``: the network reads every page
    at one scale (a page smaller than that is enlarged)."""
    scale = size / max(ink.shape)
    shape = (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale)))
    image = Image.fromarray(ink.astype(np.float32), mode="F")
    return np.asarray(image.resize(shape, Image.Resampling.BOX), np.float32)


def padded(ink: np.ndarray) -> np.ndarray:
    """``ink`` (H, W) padded with zeros (no ink) at the bottom and right to multiples of
    :data:`STRIDE`."""
    height, width = ink.shape
    return np.pad(ink, ((0, -height % STRIDE), (0, -width % STRIDE)))


#: Intra-op threads the detector runs on. One: its ~40 ms are not worth a second core, and
#: torch's idle threads spinning beside the line model's ONNX Runtime threads doubled the
#: time of a whole page read on 2 cores (0.35 -> 0.65-0.84 s measured).
THREADS = 1


@torch.inference_mode()
def core_probabilities(net: LineDetector, ink: np.ndarray) -> np.ndarray:
    """Core probability (h, w) at :data:`OUTPUT_SCALE` of ``ink`` (H, W), the network's
    input at its own size (:func:`resize_ink`), on :data:`THREADS` threads (the process's
    setting is restored)."""
    net.eval()
    batch = torch.from_numpy(padded(ink))[None, None]  # (1, 1, H', W')
    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        probabilities = torch.sigmoid(net(batch))[0, 0].numpy()
    finally:
        torch.set_num_threads(previous)
    height, width = -(-ink.shape[0] // OUTPUT_SCALE), -(-ink.shape[1] // OUTPUT_SCALE)
    return probabilities[:height, :width]


def detect_lines(net: LineDetector, ink: np.ndarray) -> list[Box]:
    """Line boxes (x0, y0, x1, y1) in the pixels of ``ink`` (H, W) (any size): the network
    reads it at its own size and the boxes are scaled back. Unordered."""
    config = net.config
    small = resize_ink(ink, config.size)
    boxes = line_boxes(core_probabilities(net, small), small, config)
    sy, sx = ink.shape[0] / small.shape[0], ink.shape[1] / small.shape[1]
    return [
        (
            int(x0 * sx),
            int(y0 * sy),
            min(ink.shape[1], int(np.ceil(x1 * sx))),
            min(ink.shape[0], int(np.ceil(y1 * sy))),
        )
        for x0, y0, x1, y1 in boxes
    ]


def line_boxes(probabilities: np.ndarray, ink: np.ndarray, config: LineDetectorConfig) -> list[Box]:
    """Boxes in the pixels of ``ink`` (H, W) of the lines whose cores ``probabilities`` (h,
    w), at 1/:data:`OUTPUT_SCALE` of ``ink``, marks.

    >>> probabilities = np.zeros((20, 30), np.float32)
    >>> probabilities[4:6, 3:12] = probabilities[4:6, 14:25] = 0.9  # one line, a word gap
    >>> probabilities[13:15, 3:20] = 0.9  # the next line
    >>> ink = np.kron(probabilities, np.ones((2, 2), np.float32))
    >>> line_boxes(probabilities, ink, LineDetectorConfig())
    [(6, 8, 50, 12), (6, 26, 40, 30)]
    """
    cores, count = label(probabilities > config.threshold, structure=np.ones((3, 3), bool))
    if count == 0:
        return []
    sizes = np.bincount(cores.ravel(), minlength=count + 1)
    spans = find_objects(cores)
    kept = [n for n in range(1, count + 1) if sizes[n] >= config.min_core_pixels]
    lookup = np.zeros(count + 1, np.int64)
    for line, group in enumerate(_joined([spans[n - 1] for n in kept], config.join_gap), 1):
        lookup[[kept[i] for i in group]] = line
    cores = lookup[cores]
    if not cores.any():
        return []
    full = np.kron(cores, np.ones((OUTPUT_SCALE, OUTPUT_SCALE), np.int64))
    full = full[: ink.shape[0], : ink.shape[1]]  # (H, W) line number of each core pixel
    lines = int(full.max())
    heights = np.zeros(lines + 1)
    for number, span in enumerate(find_objects(full), start=1):
        if span is not None:
            heights[number] = span[0].stop - span[0].start
    distance, (rows, columns) = distance_transform_edt(full == 0, return_indices=True)
    owner = full[rows, columns]
    ink_owner = np.where(
        (ink > config.ink_threshold) & (distance <= config.reach * heights[owner]), owner, 0
    )
    owner = np.maximum(full, ink_owner)  # a core's own pixels count even without ink
    row_ink = np.zeros((lines + 1, ink.shape[0]), np.int64)
    ys, xs = np.nonzero(owner)
    np.add.at(row_ink, (owner[ys, xs], ys), 1)
    boxes = []
    for number, span in enumerate(find_objects(owner), start=1):
        if span is None:
            continue
        counts = row_ink[number]
        filled = np.flatnonzero(counts >= config.trim * counts.max())
        boxes.append((span[1].start, int(filled[0]), span[1].stop, int(filled[-1]) + 1))
    return boxes


def _joined(spans: list[tuple[slice, slice]], gap: float) -> list[list[int]]:
    """Groups of core spans that are one line: side by side, rows overlapping by over half
    the shorter one's height, fewer than ``gap`` core heights apart."""
    parent = list(range(len(spans)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, (rows_a, cols_a) in enumerate(spans):
        for j in range(i + 1, len(spans)):
            rows_b, cols_b = spans[j]
            overlap = min(rows_a.stop, rows_b.stop) - max(rows_a.start, rows_b.start)
            shorter = min(rows_a.stop - rows_a.start, rows_b.stop - rows_b.start)
            between = max(cols_a.start, cols_b.start) - min(cols_a.stop, cols_b.stop)
            mean = (rows_a.stop - rows_a.start + rows_b.stop - rows_b.start) / 2
            if overlap > 0.5 * shorter and between < gap * mean:
                parent[find(j)] = find(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(spans)):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def save_detector(net: LineDetector, path: Path) -> Path:
    """Write the weights and config to one file (``torch.load(weights_only=True)`` reads it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": net.config.to_dict(), "state_dict": net.state_dict()}, path)
    return path


@cache
def shared_detector(path: str) -> LineDetector:
    """:func:`load_detector`, once per process and path: every page segmented reuses it."""
    return load_detector(Path(path))


def load_detector(path: Path) -> LineDetector:
    """A detector saved by :func:`save_detector`, in eval mode."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    net = LineDetector(LineDetectorConfig.from_dict(saved["config"]))
    net.load_state_dict(saved["state_dict"])
    return net.eval()
