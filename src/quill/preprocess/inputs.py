"""What the model reads: a line's ink map cropped to its ink, scaled to the model's height
and padded to a width multiple, or a page's fitted to the paragraph canvas
(:func:`preprocess`), and batches of them. Ink maps are computed on the image shrunk to a
working resolution (:data:`WORK_SCALE` times the line height), not at the scan's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

from quill.preprocess.images import ImageSource, read_image, reduce_to, shrink_to_height
from quill.preprocess.ink import ink_map
from quill.strict_dict import strict_from_dict

#: Line ink maps are computed on the image scaled down (never enlarged) to this multiple of
#: the model's line height, not at the scan's resolution: a line then costs about the same
#: for a 128-pixel crop and a 12-megapixel photo, the paper grid's cells are about a stroke
#: wide whatever the scan, and the map is still finer than the model's input.
WORK_SCALE = 4 / 3
#: Paragraph ink maps: the page is reduced to at least this multiple of the paragraph canvas.
PAGE_WORK_SCALE = 1.5
#: Ink that fits in a square this many pixels wide in a line's working map (at most
#: ``WORK_SCALE`` x the line height) is a dot or a speck, not writing (:func:`is_a_dot`):
#: a full stop at that size is 3-5 pixels, a letter's x-height some 20.
DOT_PIXELS = 4


@dataclass(frozen=True)
class PreprocessConfig:
    """Geometry of the model input. Saved with every run and every staged model."""

    kind: Literal["line", "paragraph"] = "line"
    #: Height of a line image the model sees, in pixels.
    height: int = 64
    #: Lines wider than this after scaling are squeezed horizontally to fit.
    max_width: int = 1536
    #: Widths are padded to a multiple of this (the encoder's horizontal downsampling).
    width_multiple: int = 8
    #: Paragraph canvas (kind="paragraph"): the page is scaled to fit and padded.
    paragraph_height: int = 576
    paragraph_width: int = 640
    #: Crop away empty margins before scaling, so a photo of one line fills the input.
    crop_to_ink: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], where: str = "PreprocessConfig"
    ) -> PreprocessConfig:
        """Fields from a config, checkpoint or ``quill-model.json`` mapping; a key that is not
        a field (a typo such as ``hieght``) is a :class:`~quill.errors.ConfigError` naming it
        and the allowed ones, never silently ignored.

        >>> PreprocessConfig.from_dict({"kind": "line", "height": 48}).height
        48
        """
        return strict_from_dict(cls, data, where)


def crop_to_ink(ink: np.ndarray, threshold: float = 0.5, margin: float = 0.08) -> np.ndarray:
    """Crop empty margins of an ink map, keeping a small border; empty maps are unchanged.

    >>> ink = np.zeros((50, 100), np.float32); ink[20:30, 40:60] = 1.0
    >>> crop_to_ink(ink).shape
    (12, 22)
    """
    top, bottom, left, right = ink_box(ink, threshold, margin)
    return ink[top:bottom, left:right]


def ink_box(
    ink: np.ndarray, threshold: float = 0.5, margin: float = 0.08
) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of what :func:`crop_to_ink` keeps; the whole map if empty."""
    strong = ink > threshold
    rows = np.flatnonzero(strong.any(axis=1))
    if rows.size == 0:
        return 0, ink.shape[0], 0, ink.shape[1]
    cols = np.flatnonzero(strong[rows[0] : rows[-1] + 1].any(axis=0))
    pad = max(1, round(margin * (rows[-1] - rows[0] + 1)))
    top, bottom = max(0, rows[0] - pad), min(ink.shape[0], rows[-1] + 1 + pad)
    left, right = max(0, cols[0] - pad), min(ink.shape[1], cols[-1] + 1 + pad)
    return int(top), int(bottom), int(left), int(right)


def _resize(ink: np.ndarray, width: int, height: int) -> np.ndarray:
    resized = Image.fromarray(ink, mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def scale_line(ink: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Scale a line ink map to ``config.height`` keeping its aspect, squeezed to max_width.

    Returns (height, W) unpadded: what the training loader's ink cache stores.
    """
    h, w = ink.shape
    width = max(1, min(config.max_width, round(w * config.height / h)))
    return _resize(ink, width, config.height)


def pad_width(image: np.ndarray, multiple: int) -> np.ndarray:
    """Right-pad an (H, W) image with paper to a width that is a multiple of ``multiple``.

    >>> pad_width(np.ones((2, 5), np.float32), 4).shape
    (2, 8)
    """
    width = image.shape[1]
    padded = np.zeros((image.shape[0], -(-width // multiple) * multiple), image.dtype)
    padded[:, :width] = image
    return padded


def working_height(config: PreprocessConfig) -> int:
    """Height a line image is shrunk to before its ink map (``WORK_SCALE`` x the line height):
    a caller cutting lines from a page need not cut them any taller.

    >>> working_height(PreprocessConfig(height=48))
    64
    """
    return round(WORK_SCALE * config.height)


def line_ink(source: ImageSource, config: PreprocessConfig) -> np.ndarray:
    """Image -> its ink map cropped and scaled to the line height, (height, W) unpadded.

    :func:`preprocess` of a line is this, padded; the training loader caches it once per
    dataset version, so both read identical pixels. The ink map is computed on the image
    scaled down to ``WORK_SCALE`` times the line height, not at the scan's resolution; when
    the ink fills only a small part of a large image, the ink's region is computed again
    from the source pixels.
    """
    image = read_image(source)
    work = working_height(config)
    reduced, scale = shrink_to_height(image, work)
    ink = ink_map(reduced)
    if is_a_dot(ink):
        ink = np.zeros_like(ink)
    if not config.crop_to_ink:
        return scale_line(ink, config)
    top, bottom, left, right = ink_box(ink)
    if scale < 1.0 and bottom - top < config.height:
        # A line photographed with wide margins: its ink is worked again from the source
        # pixels at ``work`` pixels for the ink's height, with a margin of paper around it
        # as high as the ink (the paper estimate needs paper in its window).
        context = bottom - top
        region = image.crop(
            (
                max(0, math.floor((left - context) / scale)),
                max(0, math.floor((top - context) / scale)),
                min(image.width, math.ceil((right + context) / scale)),
                min(image.height, math.ceil((bottom + context) / scale)),
            )
        )
        fine = min(1.0, work * scale / (bottom - top))
        region, _ = shrink_to_height(region, max(1, round(region.height * fine)))
        return scale_line(crop_to_ink(ink_map(region)), config)
    return scale_line(ink[top:bottom, left:right], config)


def is_a_dot(ink: np.ndarray, threshold: float = 0.5) -> bool:
    """Whether the ink of a line's map fits in a :data:`DOT_PIXELS`-square box: a dot, a
    speck or a full stop, not writing. Enlarged to the line height, a dot would be read as a
    letter or two ("an", from a 4 x 4 image with one dark pixel); it reads as blank instead.

    >>> ink = np.zeros((64, 300), np.float32); ink[30:32, 100:102] = 1.0
    >>> is_a_dot(ink), is_a_dot(np.zeros((64, 300), np.float32))
    (True, False)
    """
    strong = ink > threshold
    rows, columns = np.flatnonzero(strong.any(axis=1)), np.flatnonzero(strong.any(axis=0))
    if rows.size == 0:
        return False
    return bool(rows[-1] - rows[0] < DOT_PIXELS and columns[-1] - columns[0] < DOT_PIXELS)


def fit_paragraph(ink: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Scale a page ink map to fit the paragraph canvas, padded with paper at right/bottom."""
    h, w = ink.shape
    scale = min(config.paragraph_height / h, config.paragraph_width / w)
    width, height = max(1, round(w * scale)), max(1, round(h * scale))
    page = _resize(ink, width, height)
    return np.pad(
        page, ((0, config.paragraph_height - height), (0, config.paragraph_width - width))
    )


def page_ink(source: ImageSource, config: PreprocessConfig) -> np.ndarray:
    """A page's ink map, the page reduced to between ``PAGE_WORK_SCALE`` and twice that times
    the paragraph canvas (never enlarged)."""
    image = read_image(source)
    canvas = (config.paragraph_width, config.paragraph_height)
    return ink_map(reduce_to(image, *(math.ceil(PAGE_WORK_SCALE * side) for side in canvas))[0])


def preprocess(source: ImageSource, config: PreprocessConfig | None = None) -> np.ndarray:
    """Image (any :data:`ImageSource`) -> model input of shape (H, W), float32, ink = 1.

    For ``kind="line"`` H is ``config.height`` and W varies (a multiple of
    ``width_multiple``); for ``kind="paragraph"`` the shape is the fixed paragraph canvas.
    A blank or near-blank image (:data:`BLANK_CONTRAST`) gives an input of paper only
    (:func:`is_blank` says so).
    """
    config = config or PreprocessConfig()
    if config.kind == "line":
        return pad_width(line_ink(source, config), config.width_multiple)
    ink = page_ink(source, config)
    return fit_paragraph(crop_to_ink(ink) if config.crop_to_ink else ink, config)


def is_blank(model_input: np.ndarray) -> bool:
    """Whether a preprocessed input holds no ink at all (a blank or near-blank image): its
    text is empty, whatever a model would guess from paper.

    >>> is_blank(preprocess(Image.new("RGB", (300, 60), (240, 236, 228))))
    True
    """
    return not bool((model_input > 0.5).any())


def batch_images(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Stack preprocessed images of equal height into (B, 1, H, W_max), padded with paper.

    Returns the batch and the true widths (B,), which CTC models use for output lengths.

    >>> batch, widths = batch_images([np.ones((4, 8), np.float32), np.ones((4, 16), np.float32)])
    >>> batch.shape, widths.tolist()
    ((2, 1, 4, 16), [8, 16])
    """
    height = images[0].shape[0]
    widths = np.array([im.shape[1] for im in images], dtype=np.int64)
    batch = np.zeros((len(images), 1, height, int(widths.max())), dtype=np.float32)
    for i, im in enumerate(images):
        batch[i, 0, :, : im.shape[1]] = im
    return batch, widths
