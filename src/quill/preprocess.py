"""The one image-normalisation path shared by training and inference.

A model sees a float32 *ink map*: 1.0 where there is ink, 0.0 where there is paper, whatever
the photo looked like. The ink map is the colour distance of each pixel from a local
estimate of the paper (a median over a window much larger than a pen stroke), so it is the
same for dark ink on light paper, light ink on dark paper, blue or red ink, and a page with a
shadow across it. The reference system failed in production because training and serving
disagreed on polarity; here there is no polarity to disagree on.

Training (``quill.data``) and inference (``quill.inference``) both call :func:`preprocess`;
nothing else normalises images.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

#: Images larger than this are refused before they are decoded (a 20,000 x 20,000 photo
#: would need 1.6 GB as RGB floats).
MAX_PIXELS = 50_000_000
#: Images smaller than this on either side cannot hold a legible character.
MIN_SIDE = 4

ImageSource = str | Path | bytes | Image.Image | np.ndarray

# Quill enforces its own pixel limit (MAX_PIXELS) from the header, before decoding.
Image.MAX_IMAGE_PIXELS = None


class ImageError(ValueError):
    """An input cannot be turned into an image the model can read.

    ``code`` is stable and machine readable (the API returns it), the message says what to do.
    """

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


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
    def from_dict(cls, data: dict) -> PreprocessConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def load_image(source: ImageSource, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open ``source`` (path, encoded bytes, PIL image or array) upright, as RGB.

    EXIF orientation is applied (phones store portrait photos sideways). Raises
    :class:`ImageError` for anything that is not a usable image, naming the problem.
    """
    if isinstance(source, np.ndarray):
        image = _array_to_image(source)
    elif isinstance(source, Image.Image):
        image = source
    else:
        image = _open_encoded(source)
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            "image_too_large",
            f"image is {width}x{height} = {width * height:,} pixels; the limit is "
            f"{max_pixels:,}. Downscale it first.",
        )
    if min(width, height) < MIN_SIDE:
        raise ImageError(
            "image_too_small",
            f"image is {width}x{height} pixels; each side needs at least {MIN_SIDE}.",
        )
    try:
        image = ImageOps.exif_transpose(image)
        return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError("image_corrupt", f"image data is truncated or corrupt: {exc}") from exc


def _open_encoded(source: str | Path | bytes) -> Image.Image:
    """Decode a file or bytes; huge images come back undecoded so the caller can refuse them."""
    if isinstance(source, bytes):
        if not source:
            raise ImageError("image_empty", "no image data was sent (0 bytes).")
        name, handle = "image bytes", io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageError("image_not_found", f"no such image file: {path}")
        name, handle = str(path), path
    try:
        image = Image.open(handle)  # reads the header only
        width, height = image.size
        if width * height <= MAX_PIXELS:
            image.load()
        return image
    except UnidentifiedImageError as exc:
        raise ImageError("not_an_image", f"{name} is not an image format Quill can read") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError("image_corrupt", f"{name} is truncated or corrupt: {exc}") from exc


def _array_to_image(array: np.ndarray) -> Image.Image:
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ImageError(
            "bad_array", f"array of shape {array.shape} is not (H, W), (H, W, 3) or (H, W, 4)"
        )
    if array.dtype != np.uint8:
        scale = 255.0 if array.max(initial=0) <= 1.0 else 1.0
        array = np.clip(array.astype(np.float32) * scale, 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(array)


def ink_map(image: Image.Image) -> np.ndarray:
    """Ink strength in [0, 1] per pixel, shape (H, W), independent of polarity and colour.

    >>> dark_on_light = Image.new("RGB", (40, 20), "white")
    >>> dark_on_light.paste((0, 0, 0), (10, 5, 30, 8))
    >>> light_on_dark = ImageOps.invert(dark_on_light)
    >>> bool(np.allclose(ink_map(dark_on_light), ink_map(light_on_dark), atol=0.02))
    True
    """
    rgb = np.asarray(image.convert("RGB"))  # (H, W, 3) uint8
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        # A grey scan is worked on as one channel: the distance is then |pixel - paper|,
        # what its three equal channels give, at a third of the cost.
        grey = rgb[..., 0]
        background = _paper_estimate(Image.fromarray(grey))  # (H, W)
        distance = np.abs(grey.astype(np.float32) / 255.0 - background)  # (H, W)
    else:
        background = _paper_estimate(image.convert("RGB"))  # (H, W, 3)
        difference = rgb.astype(np.float32) / 255.0 - background
        distance = np.sqrt((difference**2).sum(axis=2)) / np.sqrt(3.0)  # (H, W)
    low, high = (float(v) for v in np.percentile(distance, [50, 99.5]))
    return np.clip((distance - low) / max(high - low, 0.08), 0.0, 1.0).astype(np.float32)


def _paper_estimate(image: Image.Image) -> np.ndarray:
    """The paper colour around each pixel of an L or RGB image: a median over a window ~40%
    of the short side, (H, W) or (H, W, 3) in [0, 1].

    Computed on a copy 24 pixels high, so it costs the same for a 64-pixel line and a 12-megapixel
    photo, then scaled back up. Ink is thin and sparse, so the median lands on paper.
    """
    width, height = image.size
    scale = 24.0 / min(width, height)
    small_size = (max(3, round(width * scale)), max(3, round(height * scale)))
    small = image.resize(small_size, Image.Resampling.BOX)
    radius = max(1, min(small_size) * 2 // 5 // 2)
    paper = small.filter(ImageFilter.MedianFilter(2 * radius + 1))
    paper = paper.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(paper, dtype=np.float32) / 255.0


def crop_to_ink(ink: np.ndarray, threshold: float = 0.5, margin: float = 0.08) -> np.ndarray:
    """Crop empty margins of an ink map, keeping a small border; empty maps are unchanged.

    >>> ink = np.zeros((50, 100), np.float32); ink[20:30, 40:60] = 1.0
    >>> crop_to_ink(ink).shape
    (12, 22)
    """
    rows = np.flatnonzero((ink > threshold).any(axis=1))
    cols = np.flatnonzero((ink > threshold).any(axis=0))
    if rows.size == 0:
        return ink
    pad = max(1, round(margin * (rows[-1] - rows[0] + 1)))
    top, bottom = max(0, rows[0] - pad), min(ink.shape[0], rows[-1] + 1 + pad)
    left, right = max(0, cols[0] - pad), min(ink.shape[1], cols[-1] + 1 + pad)
    return ink[top:bottom, left:right]


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
    return np.pad(image, ((0, 0), (0, -(-width // multiple) * multiple - width)))


def line_ink(source: ImageSource, config: PreprocessConfig) -> np.ndarray:
    """Image -> its ink map cropped and scaled to the line height, (height, W) unpadded.

    :func:`preprocess` of a line is this, padded; the training loader caches it once per
    dataset version, so both read identical pixels.
    """
    ink = ink_map(load_image(source))
    return scale_line(crop_to_ink(ink) if config.crop_to_ink else ink, config)


def fit_paragraph(ink: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Scale a page ink map to fit the paragraph canvas, padded with paper at right/bottom."""
    h, w = ink.shape
    scale = min(config.paragraph_height / h, config.paragraph_width / w)
    width, height = max(1, round(w * scale)), max(1, round(h * scale))
    page = _resize(ink, width, height)
    return np.pad(
        page, ((0, config.paragraph_height - height), (0, config.paragraph_width - width))
    )


def preprocess(source: ImageSource, config: PreprocessConfig | None = None) -> np.ndarray:
    """Image (any :data:`ImageSource`) -> model input of shape (H, W), float32, ink = 1.

    For ``kind="line"`` H is ``config.height`` and W varies (a multiple of
    ``width_multiple``); for ``kind="paragraph"`` the shape is the fixed paragraph canvas.
    """
    config = config or PreprocessConfig()
    if config.kind == "line":
        return pad_width(line_ink(source, config), config.width_multiple)
    ink = ink_map(load_image(source))
    return fit_paragraph(crop_to_ink(ink) if config.crop_to_ink else ink, config)


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
