"""Inputs that used to stall, blank out or fool the preprocessing (issues 15 and 16): absurd
shapes refused from the header, 16-bit and float greyscale read by their range, near-blank
images read as paper, and the cost of a line bounded by a working resolution."""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from quill.inference.sources import open_image
from quill.preprocess import (
    BLANK_CONTRAST,
    MAX_ASPECT,
    MAX_SIDE,
    ImageError,
    PreprocessConfig,
    ink_contrast,
    ink_map,
    ink_mask,
    is_blank,
    load_image,
    preprocess,
    read_image,
)

LINE = PreprocessConfig(height=48)


def draw_line(size=(420, 80), ink=(30, 30, 30), paper=(245, 240, 228), scale=1) -> Image.Image:
    try:
        font = ImageFont.truetype("DejaVuSans.ttf", 36 * scale)
    except OSError:
        font = ImageFont.load_default(size=36 * scale)
    image = Image.new("RGB", (size[0] * scale, size[1] * scale), paper)
    ImageDraw.Draw(image).text((20 * scale, 15 * scale), "Stapf will write", fill=ink, font=font)
    return image


def similarity(a: np.ndarray, b: np.ndarray, shift: int = 3) -> float:
    """Correlation of two model inputs of one line, ``b`` scaled to ``a``'s width, at the best
    horizontal offset within ``shift`` (crops made at different resolutions differ by a few
    pixels of margin)."""
    b = np.asarray(Image.fromarray(b).resize((a.shape[1], a.shape[0]), Image.Resampling.BILINEAR))
    inner = a[:, shift:-shift].ravel()
    return max(
        float(np.corrcoef(inner, b[:, shift + s : a.shape[1] - shift + s].ravel())[0, 1])
        for s in range(-shift, shift + 1)
    )


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pixels on which two maps agree about ink (> 0.5) vs paper."""
    width = min(a.shape[1], b.shape[1])
    assert abs(a.shape[1] - b.shape[1]) <= max(8, 0.05 * width), (a.shape, b.shape)
    return float(((a[:, :width] > 0.5) == (b[:, :width] > 0.5)).mean())


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def blank_png(width: int, height: int) -> bytes:
    """A real, complete 8-bit greyscale PNG of white pixels: every row is encoded (filter
    byte + pixels) and zlib-compressed, so a decoder that is allowed to start would have to
    inflate all of it. A 4 x 12,000,000 one is about 58 KB."""
    compressor = zlib.compressobj(9)
    row = b"\x00" + b"\xff" * width
    rows_per_chunk = max(1, 4_000_000 // len(row))
    parts, left = [], height
    while left:
        count = min(rows_per_chunk, left)
        parts.append(compressor.compress(row * count))
        left -= count
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", b"".join(parts))
        + _chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("shape", [(4, 12_000_000), (12_000_000, 4)])
def test_absurd_strip_png_is_refused_from_its_header_at_once(shape):
    """Issue 15: this 58 KB PNG stalled the server for minutes in the ink map's median."""
    payload = blank_png(*shape)
    assert len(payload) < 100_000
    for read in (load_image, open_image, lambda data: preprocess(data, LINE)):
        start = time.perf_counter()
        with pytest.raises(ImageError) as info:
            read(payload)
        elapsed = time.perf_counter() - start
        assert info.value.code in ("image_too_large", "image_bad_aspect")
        assert f"{MAX_SIDE:,}" in str(info.value)
        assert elapsed < 0.5, f"refusing took {elapsed:.2f} s: it was decoded"


def test_elongated_image_within_the_side_limit_is_refused_for_its_aspect():
    payload = blank_png(MAX_ASPECT * 60 + 600, 60)
    with pytest.raises(ImageError) as info:
        load_image(payload)
    assert info.value.code == "image_bad_aspect"
    assert f"{MAX_ASPECT}:1" in str(info.value)
    with pytest.raises(ImageError) as info:  # arrays and PIL images are held to the same shape
        load_image(np.zeros((10, MAX_ASPECT * 10 + 10), np.uint8))
    assert info.value.code == "image_bad_aspect"


def test_a_long_line_is_still_allowed():
    assert preprocess(draw_line(size=(3000, 60)), LINE).shape[0] == LINE.height


def test_a_large_jpeg_is_decoded_at_a_reduced_scale():
    photo = draw_line(size=(1000, 1000), scale=5)  # 5000 x 5000
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=80)
    image = read_image(buffer.getvalue())
    assert 2000 <= min(image.size) < 5000


def test_line_cost_does_not_grow_with_the_photo_resolution():
    """The ink map is computed at a working resolution: a 5x photo of a line costs little
    more than the line itself, and reads the same."""
    large = draw_line(scale=5)
    small = large.resize((large.width // 5, large.height // 5), Image.Resampling.LANCZOS)
    assert similarity(preprocess(small, LINE), preprocess(large, LINE)) > 0.95

    def cost(image: Image.Image) -> float:
        return min(_timed(lambda: preprocess(image, LINE)) for _ in range(5))

    assert cost(large) < 8 * cost(small) + 0.005  # 25x the pixels


def _timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def test_a_small_line_in_a_wide_margin_is_read_from_the_source_pixels():
    """When the ink is a small part of a big photo, its region is worked at full detail: the
    line reads as it does from a loose crop of the same photo (0.90; worked at the photo's
    working resolution only, 6 pixels of ink scaled up to 48, it would be 0.41)."""
    photo = Image.new("RGB", (2400, 1600), (245, 240, 228))
    photo.paste(draw_line(scale=2), (600, 700))  # 840 x 160 of text in 2400 x 1600
    loose_crop = photo.crop((450, 550, 1590, 1010))
    assert similarity(preprocess(photo, LINE), preprocess(loose_crop, LINE)) > 0.85


def _sixteen_bit(grey: np.ndarray, kind: str) -> bytes:
    """``grey`` (H, W) uint8 as a real 16-bit file: PNG (I;16) or big-endian TIFF (I;16B)."""
    buffer = io.BytesIO()
    if kind == "png":
        Image.fromarray(grey.astype(np.uint16) * 257).save(buffer, format="PNG")
    elif kind == "tiff-be":
        Image.fromarray((grey.astype(np.uint16) * 257).astype(">u2")).save(buffer, format="TIFF")
    elif kind == "tiff-12bit":  # a 12-bit scanner's values in a 16-bit file
        Image.fromarray(grey.astype(np.uint16) * 16).save(buffer, format="TIFF")
    elif kind == "tiff-float":
        Image.fromarray(grey.astype(np.float32) / 255.0).save(buffer, format="TIFF")
    elif kind == "tiff-int32":
        Image.fromarray(grey.astype(np.int32) * 257).save(buffer, format="TIFF")
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["png", "tiff-be", "tiff-12bit", "tiff-float", "tiff-int32"])
def test_sixteen_bit_and_float_greyscale_read_like_eight_bit(kind):
    """Issue 15: 16-bit greyscale read as blank ("by s", confidence 0.78)."""
    grey = np.asarray(draw_line().convert("L"))
    payload = _sixteen_bit(grey, kind)
    wide = Image.open(io.BytesIO(payload))
    assert wide.mode in ("I;16", "I;16B", "I", "F"), wide.mode  # really more than 8 bits
    image = read_image(payload)
    assert image.mode == "L"
    assert np.abs(np.asarray(image, np.int16) - grey).max() <= 2
    eight_bit = Image.fromarray(grey)
    assert np.abs(ink_map(image) - ink_map(eight_bit)).mean() < 0.01
    assert agreement(preprocess(payload, LINE), preprocess(eight_bit, LINE)) > 0.99
    assert not is_blank(preprocess(payload, LINE))


def test_sixteen_bit_arrays_read_by_their_range():
    grey = np.asarray(draw_line().convert("L"))
    reference = preprocess(grey, LINE)
    assert agreement(preprocess(grey.astype(np.uint16) * 257, LINE), reference) > 0.99
    assert agreement(preprocess(grey.astype(np.float64) / 255.0, LINE), reference) > 0.99


def _noisy_paper(size=(600, 90), sigma=4.0, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = rng.normal((232, 226, 212), sigma, (size[1], size[0], 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=75)
    return Image.open(io.BytesIO(buffer.getvalue()))


@pytest.mark.parametrize(
    "blank",
    [
        Image.new("RGB", (600, 90), "white"),
        Image.new("L", (300, 60), 200),
        _noisy_paper(),
        Image.fromarray(np.full((90, 600), 30_000, np.uint16)),  # a blank 16-bit scan
        Image.fromarray(  # a shadow across blank paper
            (np.linspace(250, 120, 600)[None, :] * np.ones((90, 1))).astype(np.uint8)
        ),
    ],
    ids=["white", "grey", "noisy-jpeg", "16-bit", "shadow"],
)
def test_blank_and_near_blank_images_are_all_paper(blank):
    assert ink_contrast(load_image(blank)) < BLANK_CONTRAST
    model_input = preprocess(blank, LINE)
    assert is_blank(model_input)
    assert model_input.max() == 0.0


def test_text_is_far_above_the_blank_contrast():
    faint = draw_line(ink=(205, 200, 190), paper=(235, 230, 220))  # pale pencil
    assert ink_contrast(load_image(faint)) > 2 * BLANK_CONTRAST
    assert not is_blank(preprocess(faint, LINE))


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_ink_mask_is_the_thresholded_ink_map(mode):
    image = draw_line(ink=(40, 60, 160)).convert(mode)
    for threshold in (0.35, 0.5):
        assert (ink_mask(image, threshold) == (ink_map(image) > threshold)).mean() > 0.9999


def _ink_as_alpha(colour: int, mode: str) -> Image.Image:
    """A line as a tablet exports it: every pixel ``colour``, the ink in the alpha channel."""
    ink = 255 - np.asarray(draw_line(paper=(255, 255, 255), ink=(0, 0, 0)).convert("L"))
    if mode == "LA":
        return Image.fromarray(np.dstack([np.full_like(ink, colour), ink]), "LA")
    return Image.fromarray(np.dstack([np.full_like(ink, colour)] * 3 + [ink]), "RGBA")


@pytest.mark.parametrize(
    ("colour", "mode"),
    [(0, "RGBA"), (0, "LA"), (255, "RGBA"), (40, "RGBA"), (0, "La"), (0, "RGBa")],
    ids=["black-on-clear", "grey-alpha", "white-on-clear", "dark-grey-on-clear", "La", "RGBa"],
)
def test_ink_in_the_alpha_channel_is_read_as_ink(colour, mode):
    """The audit's image: strokes on a transparent page read as blank, because the colour
    under every pixel was black and the alpha channel was dropped. Premultiplied alpha (La,
    RGBa, as PIL images in memory) too: La was refused as corrupt."""
    reference = preprocess(draw_line(paper=(255, 255, 255), ink=(0, 0, 0)), LINE)
    clear = _ink_as_alpha(colour, mode.upper())
    clear = clear if mode.isupper() else clear.convert(mode)
    assert read_image(clear).mode == ("L" if mode in ("LA", "La") else "RGB")
    for source in (clear, _png(clear)) if mode.isupper() else (clear,):  # no file holds La
        model_input = preprocess(source, LINE)
        assert not is_blank(model_input)
        assert agreement(model_input, reference) > 0.98


def test_an_opaque_image_with_an_alpha_channel_reads_as_without_it():
    photo = draw_line()
    opaque = photo.convert("RGBA")
    assert np.array_equal(np.asarray(read_image(opaque)), np.asarray(photo))


@pytest.mark.parametrize("format_", ["TIFF", "GIF", "PNG"])
def test_an_image_of_several_pages_is_refused_not_read_as_its_first(format_):
    """A three-page TIFF scan (or an animated GIF or PNG) was read as its first page, and the
    other two were dropped without a word."""
    pages = [draw_line(), draw_line(ink=(90, 20, 20)), draw_line(ink=(20, 20, 90))]
    buffer = io.BytesIO()
    pages[0].save(buffer, format_, save_all=True, append_images=pages[1:])
    with pytest.raises(ImageError, match=rf"holds 3 pages or frames \({format_}\)") as caught:
        read_image(buffer.getvalue())
    assert caught.value.code == "image_many_pages"
    single = io.BytesIO()
    pages[0].save(single, format_)
    assert not is_blank(preprocess(single.getvalue(), LINE))


def test_a_path_that_is_no_file_says_what_it_is(tmp_path):
    cases = {
        tmp_path: "is a folder, not an image file",
        tmp_path / "missing.png": "no such image file",
        Path("/dev/null"): "is not a regular file",
    }
    for path, message in cases.items():
        with pytest.raises(ImageError, match=message) as caught:
            read_image(path)
        assert caught.value.code == "image_not_found"


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_pil_inputs_are_not_copied_when_nothing_changes():
    for image in (draw_line(), draw_line().convert("L")):
        assert read_image(image) is image
    assert read_image(Image.new("P", (40, 20))).mode == "RGB"
    assert read_image(Image.new("LA", (40, 20))).mode == "L"


def _saved(image: Image.Image, format_: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format_, **options)
    return buffer.getvalue()


def _turned_with_exif(image: Image.Image, orientation: int) -> tuple[Image.Image, bytes]:
    """``image`` stored as a phone stores it (turned), and EXIF that says how to turn it back."""
    turn = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    return image.transpose(turn), exif.tobytes()


@pytest.mark.parametrize("orientation", [3, 6])
@pytest.mark.parametrize("kind", ["16-bit", "transparent", "palette-transparent"])
def test_exif_orientation_survives_the_conversion_of_deep_and_transparent_images(
    kind, orientation, tmp_path
):
    """A 16-bit or transparent photo lost its EXIF when converted to 8 bits or laid on a
    backdrop, before its orientation was read: it was read upside down or sideways."""
    upright = draw_line(paper=(255, 255, 255)).convert("L")
    reference = preprocess(upright, LINE)
    grey = np.asarray(upright)
    if kind == "16-bit":
        image = Image.fromarray(grey.astype(np.uint16) * 257)
    elif kind == "transparent":
        image = Image.fromarray(np.dstack([np.zeros_like(grey)] * 3 + [255 - grey]), "RGBA")
    else:
        image = upright.convert("P")
    turned, exif = _turned_with_exif(image, orientation)
    options = {"transparency": 255} if kind == "palette-transparent" else {}
    encoded = _saved(turned, "PNG", exif=exif, **options)
    (tmp_path / "photo.png").write_bytes(encoded)
    for source in (encoded, tmp_path / "photo.png"):
        assert read_image(source).size == upright.size
        assert agreement(preprocess(source, LINE), reference) > 0.98


@pytest.mark.parametrize("mode", ["I;16", "L"])
def test_an_oriented_tiff_reads_the_same_from_a_file_as_from_bytes(mode, tmp_path):
    """Pillow turns an oriented TIFF read from a file in place and keeps the old size: a
    16-bit scan came out as streaks, read as 117 lines of made-up text."""
    upright = draw_line(paper=(255, 255, 255)).convert("L")
    grey = np.asarray(upright)
    image = Image.fromarray(grey.astype(np.uint16) * 257) if mode == "I;16" else upright
    turned, exif = _turned_with_exif(image, 6)
    path = tmp_path / "scan.tif"
    turned.save(path, exif=exif)
    from_file, from_bytes = preprocess(path, LINE), preprocess(path.read_bytes(), LINE)
    assert np.array_equal(from_file, from_bytes)
    assert agreement(from_file, preprocess(upright, LINE)) > 0.98


def test_paper_left_partly_opaque_by_a_background_remover_stays_paper():
    """A "remove the background" export: half the paper transparent (black under it), the
    rest opaque white around dark ink. The opaque pixels, mostly paper, are light, and the
    backdrop was chosen black: the cut-out half of the paper was read as ink."""
    line = draw_line(paper=(255, 255, 255), ink=(0, 0, 0))
    reference = preprocess(line, LINE)
    rgba = np.dstack([np.asarray(line), np.full(line.size[::-1], 255, np.uint8)])
    grey = np.asarray(line.convert("L"))
    cut = (grey > 200) & (np.arange(grey.shape[1])[None, :] % 40 < 22)  # 55% of the paper
    rgba[cut] = (0, 0, 0, 0)
    cut_out = Image.fromarray(rgba, "RGBA")
    assert agreement(preprocess(cut_out, LINE), reference) > 0.98
    assert agreement(preprocess(_png(cut_out), LINE), reference) > 0.98
