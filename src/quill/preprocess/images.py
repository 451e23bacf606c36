"""Reading an image the way every input is read: from a path, bytes, a PIL image or an
array, upright (EXIF orientation applied), as L (any greyscale) or RGB, after refusing from
the header alone a shape no photo of handwriting has (the :class:`ImageError` codes the API
returns). Large JPEGs are decoded at a reduced scale; transparency is laid on a backdrop
that plays the paper; 16-bit and float samples are read by their value range.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

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
#: A JPEG whose short side is at least twice this is decoded at a reduced scale (1/2, 1/4,
#: 1/8) keeping its short side at least this long: a cheap bound on decoding huge photos.
DRAFT_MIN_SIDE = 2000
#: An image with transparent pixels, opaque pixels of both tones, and one tone opaque over
#: at least this share of its area kept part of its paper opaque: that tone is the paper's
#: (:func:`_on_backdrop`). Strokes alone cover far less of an image, even a tight crop.
OPAQUE_PAPER_AREA = 0.25

#: What every reading function takes: a path, encoded bytes, a PIL image or an array.
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
        return working_mode(image)
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


def working_mode(image: Image.Image) -> Image.Image:
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
