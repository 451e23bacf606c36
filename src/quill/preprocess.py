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
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageChops, ImageOps, UnidentifiedImageError

from quill.strict_dict import strict_from_dict

try:  # built by `pip install` where there is a C compiler (setup.py); else NumPy, the same
    from quill import _paper
except ImportError:  # pragma: no cover - a build without a compiler
    _paper = None  # type: ignore[assignment]

#: Images larger than this are refused before they are decoded (a 20,000 x 20,000 photo
#: would need 1.6 GB as RGB floats).
MAX_PIXELS = 50_000_000
#: Neither side may be longer than this (checked from the header, before decoding).
MAX_SIDE = 30_000
#: Long side / short side above this is refused from the header: a long line of handwriting is
#: about 30:1, a 4 x 12,000,000 strip is not a picture of text but a way to stall a server.
MAX_ASPECT = 100
#: Images smaller than this on either side cannot hold a legible character.
MIN_SIDE = 4
#: Line ink maps are computed on the image scaled down (never enlarged) to this multiple of
#: the model's line height, not at the scan's resolution: a line then costs about the same
#: for a 128-pixel crop and a 12-megapixel photo, the paper grid's cells are about a stroke
#: wide whatever the scan, and the map is still finer than the model's input.
WORK_SCALE = 4 / 3
#: Paragraph ink maps: the page is reduced to at least this multiple of the paragraph canvas.
PAGE_WORK_SCALE = 1.5
#: A JPEG whose short side is at least twice this is decoded at a reduced scale (1/2, 1/4,
#: 1/8) keeping its short side at least this long: a cheap bound on decoding huge photos.
DRAFT_MIN_SIDE = 2000
#: Short side of the grid the paper colour is estimated on.
PAPER_GRID = 16
#: An image with transparent pixels, opaque pixels of both tones, and one tone opaque over
#: at least this share of its area kept part of its paper opaque: that tone is the paper's
#: (:func:`_on_backdrop`). Strokes alone cover far less of an image, even a tight crop.
OPAQUE_PAPER_AREA = 0.25
#: An image whose ink contrast (:func:`ink_contrast`) is below this holds no readable ink:
#: its ink map is all paper, so a blank or near-blank photo reads as nothing rather than as
#: confident text. Measured: the faintest of the 5,493 Hooker lines is 0.096 (99.9% are above
#: 0.17); blank paper with JPEG noise (sigma 4), a shadow or a paper texture is below 0.03.
BLANK_CONTRAST = 0.05
#: How many pixels of ink :func:`sparse_ink_mask` looks for in an image that seems blank:
#: a short word on a 12-megapixel photo has a few hundred at the segmenter's analysis size
#: (its strokes are under 0.05% of the pixels; the blank test measures at 0.5%).
SPARSE_INK_PIXELS = 40
#: How far those pixels must stand out from the paper to be ink (three times
#: :data:`BLANK_CONTRAST`): JPEG noise and paper grain stay far below.
SPARSE_INK_CONTRAST = 0.15
#: Ink that fits in a square this many pixels wide in a line's working map (at most
#: ``WORK_SCALE`` x the line height) is a dot or a speck, not writing (:func:`is_a_dot`):
#: a full stop at that size is 3-5 pixels, a letter's x-height some 20.
DOT_PIXELS = 4
#: Floor of the contrast the ink map is normalised by (fainter ink is shown fainter).
MIN_CONTRAST = 0.08

ImageSource = str | Path | bytes | Image.Image | np.ndarray

# Quill enforces its own pixel limit (MAX_PIXELS) from the header, before decoding.
Image.MAX_IMAGE_PIXELS = None

#: Modes with more than 8 bits per sample, read by their value range (see _to_8bit).
_WIDE_MODES = ("I", "F", "I;16", "I;16L", "I;16B", "I;16N")
#: Formats whose extra frames are pages of their own (a multi-page TIFF scan, an animated
#: GIF, PNG or WebP), refused rather than read as their first page alone. Not MPO: a phone's
#: JPEG carries its depth map or preview as a second frame, and the first is the photo.
PAGED_FORMATS = ("TIFF", "GIF", "PNG", "WEBP")


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


def check_size(width: int, height: int, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse a shape no handwriting photo has, before any pixel is decoded.

    >>> check_size(900, 128)
    >>> for shape in [(4, 12_000_000), (20_000, 100), (3, 300)]:
    ...     try:
    ...         check_size(*shape)
    ...     except ImageError as error:
    ...         print(error.code)
    image_too_large
    image_bad_aspect
    image_too_small
    """
    if width * height > max_pixels:
        raise ImageError(
            "image_too_large",
            f"image is {width}x{height} = {width * height:,} pixels; the limit is "
            f"{max_pixels:,}. Downscale it first.",
        )
    if max(width, height) > MAX_SIDE:
        raise ImageError(
            "image_too_large",
            f"image is {width:,}x{height:,} pixels; each side may be at most {MAX_SIDE:,} "
            "pixels. Crop or downscale it first.",
        )
    if min(width, height) < MIN_SIDE:
        raise ImageError(
            "image_too_small",
            f"image is {width}x{height} pixels; each side needs at least {MIN_SIDE}.",
        )
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageError(
            "image_bad_aspect",
            f"image is {width:,}x{height:,} pixels, its long side "
            f"{max(width, height) / min(width, height):,.0f} times its short side; Quill reads "
            f"images up to {MAX_ASPECT}:1 (a long line of handwriting is about 30:1). Crop it "
            "to the text first.",
        )


def load_image(source: ImageSource, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open ``source`` (path, encoded bytes, PIL image or array) upright, as RGB.

    EXIF orientation is applied (phones store portrait photos sideways); 16-bit and float
    greyscale is read by its value range. Raises :class:`ImageError` for anything that is not
    a usable image, naming the problem; absurd shapes are refused from the header, before
    decoding.
    """
    image = read_image(source, max_pixels)
    return image if image.mode == "RGB" else image.convert("RGB")


def read_image(
    source: ImageSource, max_pixels: int = MAX_PIXELS, min_side: int = DRAFT_MIN_SIDE
) -> Image.Image:
    """:func:`load_image`, but greyscale stays one channel: mode L or RGB, what
    :func:`ink_map` works on (a third of the memory and work for a grey scan). A PIL input
    that is already upright L or RGB is returned as it is, not copied. A JPEG is decoded at
    a reduced scale (1/2 to 1/8) that keeps its short side at least ``min_side``."""
    if isinstance(source, np.ndarray):
        image = _array_to_image(source)
    elif isinstance(source, Image.Image):
        image = source
    else:
        image = _open_encoded(source, max_pixels, min_side)
    check_size(*image.size, max_pixels=max_pixels)
    try:
        # upright first: converting a 16-bit or transparent image makes a new one without
        # the source's EXIF, and its orientation was lost (read sideways, without a word)
        if image.getexif().get(0x0112, 1) != 1:
            image = ImageOps.exif_transpose(image)
        return _working_mode(image)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError("image_corrupt", f"image data is truncated or corrupt: {exc}") from exc


def _open_encoded(source: str | Path | bytes, max_pixels: int, min_side: int) -> Image.Image:
    """Decode a file or bytes, after checking the shape its header declares."""
    if isinstance(source, bytes):
        if not source:
            raise ImageError("image_empty", "no image data was sent (0 bytes).")
        handle: io.BytesIO | Path = io.BytesIO(source)
        name = "the data sent"
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageError("image_not_found", _not_a_file(path))
        if path.stat().st_size == 0:
            raise ImageError("image_empty", f"{path} is empty (0 bytes)")
        name, handle = str(path), path
    try:
        image = Image.open(handle)  # reads the header only
        check_size(*image.size, max_pixels=max_pixels)
        pages = getattr(image, "n_frames", 1)
        if pages > 1 and image.format in PAGED_FORMATS:
            raise ImageError(
                "image_many_pages",
                f"{name} holds {pages} pages or frames ({image.format}): Quill reads one page "
                "an image; save each page as an image of its own, or send them as a batch",
            )
        if image.format == "JPEG" and min(image.size) >= 2 * min_side:
            image.draft(None, (min_side, min_side))
        if (
            isinstance(handle, Path)
            and image.format == "TIFF"
            and image.getexif().get(0x0112, 1) != 1
        ):
            # Pillow's TIFF loader turns an oriented TIFF read from a file in place and keeps
            # the old size: the pixels came out as streaks. Read from memory, it is right.
            image = Image.open(io.BytesIO(handle.read_bytes()))
        image.load()
        return image
    except UnidentifiedImageError as exc:
        raise ImageError(
            "not_an_image",
            f"{name}: not an image Quill can read (it reads PNG, JPEG, TIFF, WebP, BMP, GIF and "
            "the other raster formats Pillow opens; not PDF or HEIC: save the page as PNG or "
            "JPEG)",
        ) from exc
    except PermissionError as exc:
        raise ImageError("image_unreadable", f"{name} cannot be read: permission denied") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError("image_corrupt", f"{name} is truncated or corrupt: {exc}") from exc


def _not_a_file(path: Path) -> str:
    """Why ``path``, which is not a regular file, cannot be read as an image."""
    if path.is_dir():
        return f"{path} is a folder, not an image file"
    if path.exists():
        return f"{path} is not a regular file (a device, a pipe or a socket)"
    return f"no such image file: {path}"


def _working_mode(image: Image.Image) -> Image.Image:
    """The image as L (any greyscale) or RGB (anything else), unchanged if already so; one
    with transparency laid on a backdrop first (:func:`_on_backdrop`)."""
    if image.mode in ("L", "RGB"):
        return image
    if image.mode in _WIDE_MODES:
        return _to_8bit(np.asarray(image))
    if image.mode == "La":  # premultiplied alpha, which Pillow converts only to LA
        image = image.convert("LA")
    grey = image.mode in ("1", "LA", "La")
    if "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info:
        return _on_backdrop(image, "L" if grey else "RGB")
    return image.convert("L" if grey else "RGB")


def _on_backdrop(image: Image.Image, mode: str) -> Image.Image:
    """An image with transparency laid on an opaque backdrop that plays its paper, as
    ``mode``.

    Two kinds of file have transparent pixels. A tablet or signature app exports ink alone,
    as opaque strokes on a transparent page whose hidden colour is often black (dropping the
    alpha channel left a black image, read as blank): the backdrop is the tone the strokes
    are not, judged by their mean brightness. A "remove the background" tool leaves part of
    the paper opaque around the ink: one tone of the opaque pixels then covers a large part
    of the image, and is the paper's (laid on black, the cut-out paper was read as ink).
    The tones are measured on a small copy, so a large image costs little; an image that is
    opaque throughout is only converted.
    """
    rgba = image.convert("RGBA")
    if rgba.getchannel("A").getextrema()[0] == 255:
        return rgba.convert(mode)
    small = rgba.copy()
    small.thumbnail((256, 256))
    pixels = np.asarray(small, np.float32)
    opacity = pixels[..., 3] / 255.0
    brightness = pixels[..., :3].mean(axis=2)
    light_area = float(((brightness > 127.5) * opacity).mean())  # shares of the whole image
    dark_area = float(((brightness <= 127.5) * opacity).mean())
    if max(light_area, dark_area) >= OPAQUE_PAPER_AREA and min(light_area, dark_area) > 0:
        paper_is_light = light_area > dark_area  # paper kept opaque: the backdrop is its tone
    else:  # strokes alone: the backdrop is the other tone
        paper_is_light = float((brightness * opacity).sum() / max(opacity.sum(), 1e-6)) <= 127.5
    backdrop = (255, 255, 255, 255) if paper_is_light else (0, 0, 0, 255)
    return Image.alpha_composite(Image.new("RGBA", rgba.size, backdrop), rgba).convert(mode)


def _to_8bit(values: np.ndarray) -> Image.Image:
    """Samples of any depth (uint16, int32, float, bool) as an 8-bit L (H, W) or RGB
    (H, W, 3|4) image, by their value range.

    The range is [0, 1] for floats and booleans up to 1, otherwise the smallest of 8, 9, ...
    32 bits that holds the largest value: a 12-bit scan in a 16-bit file keeps its contrast,
    and a blank 16-bit page stays blank instead of having its noise stretched into ink.

    >>> _to_8bit(np.array([[0, 257 * 128, 65535]], np.uint16)).getpixel((1, 0))
    128
    >>> _to_8bit(np.array([[0, 16 * 200, 4095]], np.uint16)).getpixel((1, 0))  # 12 bits
    199
    >>> _to_8bit(np.array([[0.0, 0.5, 1.0]], np.float32)).getpixel((2, 0))
    255
    """
    unit = values.dtype.kind in "fb"
    values = np.nan_to_num(values.astype(np.float32))
    if values.ndim == 3:
        values = values[..., :3]
    low = float(values.min(initial=0.0))
    if low < 0:
        values = values - low
    high = float(values.max(initial=0.0))
    full = 1.0 if unit and high <= 1.0 else float(2 ** max(8, math.ceil(math.log2(high + 1))) - 1)
    return Image.fromarray(np.clip(values * (255.0 / full) + 0.5, 0, 255).astype(np.uint8))


def _array_to_image(array: np.ndarray) -> Image.Image:
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ImageError(
            "bad_array", f"array of shape {array.shape} is not (H, W), (H, W, 3) or (H, W, 4)"
        )
    check_size(array.shape[1], array.shape[0])
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(array) if array.dtype == np.uint8 else _to_8bit(array)


def reduce_to(image: Image.Image, width: int, height: int) -> tuple[Image.Image, int]:
    """``image`` reduced by the largest integer factor that keeps it at least ``width`` x
    ``height`` (each pixel the mean of a factor x factor block), and that factor.

    One cheap pass over the source whatever its size; the result is between once and twice
    the requested size, never enlarged.

    >>> small, factor = reduce_to(Image.new("L", (900, 128)), 1, 60)
    >>> small.size, factor
    ((450, 64), 2)
    """
    factor = max(1, min(image.width // max(1, width), image.height // max(1, height)))
    return (image.reduce(factor) if factor > 1 else image), factor


def shrink_to_height(image: Image.Image, height: int) -> tuple[Image.Image, float]:
    """``image`` scaled down to ``height`` pixels (keeping its aspect) with an area filter, and
    the scale; unchanged (scale 1) if it is not taller. An exact integer factor is a cheap
    ``reduce``; a large factor reduces first, so the cost is about one pass over the source.

    >>> small, scale = shrink_to_height(Image.new("L", (900, 128)), 64)
    >>> small.size, scale
    ((450, 64), 0.5)
    """
    if image.height <= height:
        return image, 1.0
    scale = height / image.height
    if image.height % height == 0:
        return image.reduce(image.height // height), scale
    width = max(1, round(image.width * scale))
    return image.resize((width, height), Image.Resampling.BOX, reducing_gap=2.0), scale


def ink_map(image: Image.Image) -> np.ndarray:
    """Ink strength in [0, 1] per pixel, shape (H, W), independent of polarity and colour.

    >>> dark_on_light = Image.new("RGB", (40, 20), "white")
    >>> dark_on_light.paste((0, 0, 0), (10, 5, 30, 8))
    >>> light_on_dark = ImageOps.invert(dark_on_light)
    >>> bool(np.allclose(ink_map(dark_on_light), ink_map(light_on_dark), atol=0.02))
    True
    """
    return _ink(image)[0]


def ink_mask(image: Image.Image, threshold: float = 0.5) -> np.ndarray:
    """``ink_map(image) > threshold`` (H, W) bool, without building the float map: what line
    segmentation needs from a whole page.

    >>> page = Image.new("RGB", (60, 40), (230, 220, 200))
    >>> page.paste((40, 30, 90), (5, 10, 50, 14))
    >>> bool((ink_mask(page, 0.35) == (ink_map(page) > 0.35)).all())
    True
    """
    distance = _PaperDistance.of(image)
    if distance.contrast < BLANK_CONTRAST:
        return np.zeros(distance.values.shape, bool)
    if distance.squared:
        limit = (distance.low + threshold * distance.span) * _COLOUR_UNIT
        return distance.values > limit * limit
    return (distance.table() > threshold)[distance.values]


def sparse_ink_mask(image: Image.Image, threshold: float = 0.5) -> np.ndarray:
    """The ink (H, W) bool of writing that covers too little of ``image`` for
    :func:`ink_mask` to see it (a word on a large, otherwise empty photo: under 0.5% of the
    pixels, below the 99.5th percentile its contrast is measured at): the contrast is taken
    at the :data:`SPARSE_INK_PIXELS`-th most distant pixel instead, and the mask is all
    False unless that stands out from the paper by :data:`SPARSE_INK_CONTRAST`. For an
    image :func:`ink_mask` found blank: elsewhere the two agree less, and this costs a
    histogram more.

    >>> page = Image.new("L", (400, 400), 200)
    >>> page.paste(40, (10, 10, 30, 14))  # 80 pixels of ink: 0.05% of the page
    >>> int(ink_mask(page).sum()), int(sparse_ink_mask(page).sum())
    (0, 80)
    """
    distance = _PaperDistance.of(image)
    upper = max(99.5, 100.0 * (1.0 - SPARSE_INK_PIXELS / distance.values.size))
    if distance.squared:
        counts, value, unit = np.bincount(distance.values.ravel()), math.sqrt, _COLOUR_UNIT
    else:
        counts, value, unit = np.array(Image.fromarray(distance.values).histogram()), float, 255.0
    low, high = (v / unit for v in _percentiles(counts, value, upper))
    if high - low < SPARSE_INK_CONTRAST:
        return np.zeros(distance.values.shape, bool)
    limit = (low + threshold * (high - low)) * unit
    return distance.values > (limit * limit if distance.squared else limit)


def ink_contrast(image: Image.Image) -> float:
    """How far the ink stands out from the paper, in [0, 1] of colour distance: the 99.5th
    percentile of the distance from the local paper colour minus its median. Text is
    0.1-0.8; blank paper (noise, texture, shadows) below :data:`BLANK_CONTRAST`.

    >>> round(ink_contrast(Image.new("L", (60, 30), 200)), 3)
    0.0
    """
    return _PaperDistance.of(image).contrast


_COLOUR_UNIT = 255.0 * math.sqrt(3.0)  # the largest Euclidean distance between two colours


@dataclass(frozen=True)
class _PaperDistance:
    """Each pixel's distance from the local paper colour, and its 50th and 99.5th percentiles
    (``low``, ``high``, in [0, 1]): for greyscale ``values`` is |pixel - paper| (H, W) uint8,
    for colour the squared Euclidean distance (H, W) int32 (``squared``). Percentiles come
    from a histogram of these integers, so they are exact and cost one pass."""

    values: np.ndarray
    squared: bool
    low: float
    high: float

    @classmethod
    def of(cls, image: Image.Image) -> _PaperDistance:
        image = _working_mode(image)
        if image.mode == "RGB" and _is_grey(image):
            # A grey scan stored as RGB is worked on as one channel: the distance is then
            # |pixel - paper|, what its three equal channels give, at a third of the cost.
            image = image.getchannel(0)
        paper = _paper_estimate(image)
        if image.mode == "L":
            distance = ImageChops.difference(image, paper)
            # PIL counts the 256 levels in C, several times faster than np.bincount
            low, high = _percentiles(np.array(distance.histogram()))
            return cls(np.asarray(distance), False, low / 255.0, high / 255.0)
        squared, low, high = _colour_distance(np.asarray(image), np.asarray(paper))
        return cls(squared, True, low / _COLOUR_UNIT, high / _COLOUR_UNIT)

    @property
    def contrast(self) -> float:
        return max(0.0, self.high - self.low)

    @property
    def span(self) -> float:
        """What the distance is normalised by: the contrast, at least MIN_CONTRAST."""
        return max(self.contrast, MIN_CONTRAST)

    def table(self) -> np.ndarray:
        """Ink value (256,) float32 of each greyscale distance."""
        levels = np.arange(256, dtype=np.float32) / 255.0
        return np.clip((levels - self.low) / self.span, 0.0, 1.0).astype(np.float32)

    def ink(self) -> np.ndarray:
        """The ink map (H, W) float32 in [0, 1]; all paper below BLANK_CONTRAST."""
        if self.contrast < BLANK_CONTRAST:  # no ink worth the name, not stretched noise
            return np.zeros(self.values.shape, np.float32)
        if not self.squared:
            return np.take(self.table(), self.values)  # a faster gather than table[values]
        ink = np.sqrt(self.values, dtype=np.float32)
        ink *= np.float32(1.0 / (_COLOUR_UNIT * self.span))
        ink -= np.float32(self.low / self.span)
        return np.clip(ink, 0.0, 1.0, out=ink)


def _ink(image: Image.Image) -> tuple[np.ndarray, float]:
    """The ink map of an image and its contrast (:func:`ink_contrast`)."""
    distance = _PaperDistance.of(image)
    return distance.ink(), distance.contrast


def _colour_distance(image: np.ndarray, paper: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The squared distance (H, W) int32 of each pixel of an (H, W, 3) uint8 image from its
    paper colour, and the 50th and 99.5th percentiles of the distance. Compiled where ``pip
    install`` built ``quill._paper`` (a page's ink mask ~2x faster), NumPy otherwise: the
    same values."""
    if COMPILED_PAPER:
        squares, low, high = _paper.colour_distance(image, paper)
        return np.frombuffer(squares, np.int32).reshape(image.shape[:2]), low, high
    return _numpy_colour_distance(image, paper)


def _numpy_colour_distance(image: np.ndarray, paper: np.ndarray) -> tuple[np.ndarray, float, float]:
    """:func:`_colour_distance` in NumPy (the compiled one is tested against it)."""
    difference = np.abs(image.astype(np.int16) - paper)
    wide = difference.astype(np.uint16)  # squares of 0..255 fit; their sum needs 32 bits
    squared = (wide[..., 0] * wide[..., 0]).astype(np.int32)
    squared += wide[..., 1] * wide[..., 1]
    squared += wide[..., 2] * wide[..., 2]
    low, high = _percentiles(np.bincount(squared.ravel()), math.sqrt)
    return squared, low, high


def _percentiles(
    counts: np.ndarray, value: Callable[[float], float] = float, upper: float = 99.5
) -> tuple[float, float]:
    """The 50th and ``upper`` percentiles of integers given by their histogram (``value``
    maps an integer to what is interpolated, as :func:`numpy.percentile` does between the
    two order statistics around each percentile).

    >>> _percentiles(np.bincount([0, 0, 1, 5, 9]))
    (1.0, 8.92)
    """
    cumulative = np.cumsum(counts)
    total = int(cumulative[-1])
    result = []
    for q in (50.0, upper):
        position = q / 100.0 * (total - 1)
        below = int(math.floor(position))
        lower = value(int(np.searchsorted(cumulative, below + 1)))
        upper = value(int(np.searchsorted(cumulative, min(below + 2, total))))
        result.append(lower + (upper - lower) * (position - below))
    return result[0], result[1]


def _is_grey(image: Image.Image) -> bool:
    """Whether an RGB image has three equal channels (a sample is checked first)."""
    rgb = np.asarray(image)
    sample = rgb[::7, ::7]
    if not ((sample[..., 0] == sample[..., 1]).all() and (sample[..., 1] == sample[..., 2]).all()):
        return False
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def _paper_estimate(image: Image.Image) -> Image.Image:
    """The paper colour around each pixel of an L or RGB image, as an image of its size and
    mode: a median over a window ~40% of the short side.

    Computed on a copy ``PAPER_GRID`` pixels on its short side, so it costs the same for a
    64-pixel line and a 12-megapixel photo, then scaled back up. Ink is thin and sparse, so
    the median lands on paper.
    """
    width, height = image.size
    scale = PAPER_GRID / min(width, height)
    grid = image.resize(
        (max(3, round(width * scale)), max(3, round(height * scale))), Image.Resampling.BOX
    )
    size = 2 * max(1, min(grid.size) * 2 // 5 // 2) + 1  # the window, ~40% of the short side
    if grid.mode == "L":
        paper = np.clip(_local_median(grid, size) + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(paper, "L").resize((width, height), Image.Resampling.BILINEAR)
    # Colour: the paper's brightness is the local median of the luminance, its hue the
    # image's median colour (a shadow dims all three channels alike). A third of the cost of
    # a median per channel, which on a photo's noisy colour is most of a line's budget.
    luminance = grid.convert("L")
    pixels = np.asarray(grid, np.float32).reshape(-1, 3)
    hue = np.median(pixels, axis=0) / max(1.0, float(np.median(np.asarray(luminance))))
    paper = _local_median(luminance, size)[..., None] * hue.astype(np.float32)  # (h, w, 3)
    paper = np.clip(paper + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(paper, "RGB").resize((width, height), Image.Resampling.BILINEAR)


def _local_median(grid: Image.Image, size: int) -> np.ndarray:
    """The median of each ``size`` x ``size`` window of an L image (edges repeated), (h, w)
    float32: exact at every other cell along the long side, the mean of its two neighbours
    in between (the paper changes slowly along a line; this halves the cost).

    >>> cells = Image.fromarray(np.array([[0, 9, 0, 9, 0], [9, 0, 9, 0, 9]], np.uint8))
    >>> _local_median(cells, 3).tolist()
    [[0.0, 4.5, 9.0, 4.5, 0.0], [9.0, 4.5, 0.0, 4.5, 9.0]]
    """
    cells = np.asarray(grid)
    transposed = cells.shape[0] > cells.shape[1]
    if transposed:
        cells = cells.T
    height, width = cells.shape
    exact = _window_medians(cells, size).astype(np.float32)  # (h, ceil(w / 2))
    median = np.empty((height, width), np.float32)
    median[:, ::2] = exact
    between = median[:, 1::2]
    inner = exact.shape[1] - 1
    between[:, :inner] = (exact[:, :-1] + exact[:, 1:]) / 2
    if between.shape[1] > inner:  # an even width ends on an in-between cell
        between[:, -1] = exact[:, -1]
    return median.T if transposed else median


#: The compiled paper functions' version this module speaks (a stale build is not used).
COMPILED_PAPER_VERSION = 2
#: Whether the window medians and colour distances run compiled (:func:`_window_medians`,
#: :func:`_colour_distance`).
COMPILED_PAPER = _paper is not None and _paper.ABI_VERSION == COMPILED_PAPER_VERSION


def _window_medians(cells: np.ndarray, size: int) -> np.ndarray:
    """The median of the ``size`` x ``size`` window (edges repeated) centred on every other
    cell of each row of an (h, w) uint8 grid: (h, ceil(w / 2)) uint8. Compiled where
    ``pip install`` built ``quill._paper`` (a line's preprocessing is ~25% faster), NumPy
    otherwise: the same values."""
    height, width = cells.shape
    if COMPILED_PAPER:
        medians = _paper.window_medians(np.ascontiguousarray(cells, dtype=np.uint8), size)
        return np.frombuffer(medians, np.uint8).reshape(height, (width + 1) // 2)
    return _numpy_window_medians(cells, size)


def _numpy_window_medians(cells: np.ndarray, size: int) -> np.ndarray:
    """:func:`_window_medians` in NumPy (the compiled one is tested against it)."""
    height, width = cells.shape
    radius, middle = size // 2, size * size // 2
    rows = np.clip(np.arange(-radius, height + radius), 0, height - 1)
    cols = np.clip(np.arange(-radius, width + radius), 0, width - 1)
    windows = sliding_window_view(cells[rows[:, None], cols], (size, size))[:, ::2]
    windows = windows.reshape(height, -1, size * size)  # (h, ceil(w / 2), size**2)
    return np.partition(windows, middle, axis=-1)[..., middle]


def paper_colour(
    image: Image.Image, size: int | None = 64, mode: str | None = None
) -> tuple[int, ...]:
    """The paper's colour, one value per band: the median, since ink covers a small share of
    a page or a line. It fills what cropping, masking or deskewing uncovers, so that the ink
    map reads it as paper. ``size``: measured on the image reduced to size x size pixels (a
    whole page costs under a millisecond); None: on every pixel (exact, for crops whose
    pixels are part of a dataset's version). ``mode``: the colour in that mode (e.g. RGB
    for a greyscale page drawn in colour), converted after the reduction.

    >>> page = Image.new("L", (20, 10), 230); page.paste(0, (5, 4, 15, 6))
    >>> paper_colour(page, size=None), paper_colour(page.convert("RGB"))
    ((230,), (230, 230, 230))
    """
    if size is not None:
        image = image.resize((size, size), Image.Resampling.BOX)
    if mode is not None and image.mode != mode:
        image = image.convert(mode)
    pixels = np.asarray(image).reshape(-1, len(image.getbands()))
    return tuple(int(v) for v in np.median(pixels, axis=0))


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
