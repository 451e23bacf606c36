"""The shared preprocessing must give the same ink map whatever the photo looked like."""

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont, ImageOps

from quill.preprocess import (
    MAX_PIXELS,
    ImageError,
    PreprocessConfig,
    batch_images,
    ink_map,
    load_image,
    preprocess,
)


def _font(size: int = 36) -> ImageFont.ImageFont:
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size=size)


def draw_line(ink=(0, 0, 0), paper=(255, 255, 255), size=(420, 80)) -> Image.Image:
    image = Image.new("RGB", size, paper)
    ImageDraw.Draw(image).text((20, 15), "Stapf will write", fill=ink, font=_font())
    return image


def reference_ink() -> np.ndarray:
    return preprocess(draw_line())


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pixels on which two ink maps agree about ink vs paper."""
    assert a.shape == b.shape
    return float(((a > 0.5) == (b > 0.5)).mean())


def test_dark_on_light_gives_ink_high_and_paper_low():
    ink = reference_ink()
    assert ink.shape[0] == PreprocessConfig().height
    assert ink.shape[1] % 8 == 0
    assert ink.dtype == np.float32
    assert 0.02 < (ink > 0.5).mean() < 0.5  # strokes are a minority of pixels
    assert ink.max() == pytest.approx(1.0)


def test_light_on_dark_equals_dark_on_light():
    inverted = preprocess(draw_line(ink=(255, 255, 255), paper=(0, 0, 0)))
    assert agreement(inverted, reference_ink()) > 0.98


def test_coloured_ink_on_coloured_paper():
    blue_on_cream = preprocess(draw_line(ink=(30, 60, 200), paper=(245, 235, 200)))
    red_on_grey = preprocess(draw_line(ink=(200, 20, 20), paper=(150, 150, 150)))
    assert agreement(blue_on_cream, reference_ink()) > 0.97
    assert agreement(red_on_grey, reference_ink()) > 0.97


def test_uneven_lighting_photo():
    """A shadow gradient across the page must not turn into ink."""
    image = draw_line(ink=(40, 40, 40), paper=(255, 255, 255))
    pixels = np.asarray(image, dtype=np.float32)
    gradient = np.linspace(1.0, 0.35, pixels.shape[1])[None, :, None]  # dark on the right
    noise = np.random.default_rng(0).normal(0, 4, pixels.shape)
    photo = Image.fromarray(np.clip(pixels * gradient + noise, 0, 255).astype(np.uint8))
    assert agreement(preprocess(photo), reference_ink()) > 0.95


def test_exif_orientation_is_applied():
    upright = draw_line()
    sideways = upright.rotate(90, expand=True)  # stored rotated, EXIF says "rotate back"
    exif = Image.Exif()
    exif[0x0112] = 8  # orientation: rotate 90 CW to display
    buffer = io.BytesIO()
    sideways.save(buffer, format="JPEG", exif=exif, quality=95)
    loaded = load_image(buffer.getvalue())
    assert loaded.size == upright.size


def test_ink_map_is_polarity_free_for_grayscale():
    gray = draw_line().convert("L")
    dark_on_light, light_on_dark = ink_map(gray), ink_map(ImageOps.invert(gray))
    assert dark_on_light.shape == light_on_dark.shape == (80, 420)
    # ink found at all (a blank map agrees with anything), then the same ink both ways round:
    # the tolerance of test_light_on_dark_equals_dark_on_light
    assert 0.02 < (dark_on_light > 0.5).mean() < 0.5
    assert agreement(light_on_dark, dark_on_light) > 0.98


def test_paragraph_kind_gives_fixed_canvas():
    config = PreprocessConfig(kind="paragraph")
    page = preprocess(draw_line(size=(300, 400)), config)
    assert page.shape == (config.paragraph_height, config.paragraph_width)


def test_very_wide_line_is_squeezed_to_max_width():
    config = PreprocessConfig(max_width=256)
    line = preprocess(draw_line(size=(3000, 60)), config)
    assert line.shape == (config.height, 256)


def test_numpy_and_path_sources(tmp_path):
    image = draw_line()
    path = tmp_path / "line.png"
    image.save(path)
    from_path = preprocess(path)
    assert np.allclose(from_path, preprocess(np.asarray(image)))
    assert np.allclose(from_path, preprocess(str(path)))


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"", "image_empty"),
        (b"definitely not an image", "not_an_image"),
    ],
)
def test_bad_bytes_get_specific_errors(payload, code):
    with pytest.raises(ImageError) as info:
        load_image(payload)
    assert info.value.code == code


def test_an_empty_file_and_data_that_is_no_image_are_named_so(tmp_path):
    """An empty file was "not an image format Quill can read", and bytes that are no image
    "image bytes is not an image format..."."""
    empty = tmp_path / "scan.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match=r"scan.jpg is empty \(0 bytes\)") as info:
        load_image(empty)
    assert info.value.code == "image_empty"
    with pytest.raises(ImageError, match="^the data sent: not an image Quill can read"):
        load_image(b"definitely not an image")


def test_truncated_png_is_reported_as_corrupt():
    buffer = io.BytesIO()
    draw_line().save(buffer, format="PNG")
    with pytest.raises(ImageError) as info:
        load_image(buffer.getvalue()[:200])
    assert info.value.code == "image_corrupt"


def test_tiny_image_rejected():
    with pytest.raises(ImageError) as info:
        load_image(Image.new("RGB", (1, 1)))
    assert info.value.code == "image_too_small"


def test_huge_image_rejected_before_decoding():
    """A 20,000 x 20,000 PNG is refused from its header, without allocating its pixels."""
    image = Image.new("1", (20_000, 20_000))  # 1 bit per pixel: 50 MB in memory
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    assert MAX_PIXELS < 20_000 * 20_000
    with pytest.raises(ImageError) as info:
        load_image(buffer.getvalue())
    assert info.value.code == "image_too_large"


def test_missing_file(tmp_path):
    with pytest.raises(ImageError) as info:
        load_image(tmp_path / "nope.png")
    assert info.value.code == "image_not_found"


def test_batch_pads_with_paper():
    a, b = preprocess(draw_line(size=(200, 80))), preprocess(draw_line(size=(420, 80)))
    batch, widths = batch_images([a, b])
    assert batch.shape == (2, 1, a.shape[0], max(a.shape[1], b.shape[1]))
    assert widths.tolist() == [a.shape[1], b.shape[1]]
    assert batch[0, 0, :, a.shape[1] :].max(initial=0) == 0
