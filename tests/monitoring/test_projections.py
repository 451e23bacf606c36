"""Projections on real encoded images and texts."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from quill.monitoring import projections as proj


def _input(image_bytes: bytes, text: str = "Dear Sir", confidence: float = 0.9):
    return proj.ProjectionInput(text, confidence, Image.open(io.BytesIO(image_bytes)))


def test_input_projections_tell_polarity_and_intensity(make_line):
    dark_on_light = proj.compute(_input(make_line(dark_on_light=True)))
    light_on_dark = proj.compute(_input(make_line(dark_on_light=False)))
    assert dark_on_light["polarity"] == 1.0 and light_on_dark["polarity"] == 0.0
    assert dark_on_light["mean_intensity"] > 0.8 > 0.2 > light_on_dark["mean_intensity"]
    assert dark_on_light["width"] == 320 and dark_on_light["aspect"] == pytest.approx(320 / 48)
    # Grey images have (almost) no colour.
    assert dark_on_light["colourfulness"] < 0.01


def test_blur_and_colourfulness_respond_to_the_image(make_line):
    sharp = Image.open(io.BytesIO(make_line()))
    blurred = sharp.filter(ImageFilter.GaussianBlur(3))
    tinted = Image.fromarray((np.asarray(sharp) * [1.0, 0.5, 0.2]).astype(np.uint8))
    value = {
        name: proj.compute(proj.ProjectionInput("x", image=image), ["blur", "colourfulness"])
        for name, image in [("sharp", sharp), ("blurred", blurred), ("tinted", tinted)]
    }
    assert value["sharp"]["blur"] > 5 * value["blurred"]["blur"]
    assert value["tinted"]["colourfulness"] > 0.1 > value["sharp"]["colourfulness"]


def test_large_images_are_analysed_at_a_bounded_size():
    big = Image.new("RGB", (6000, 2000), (250, 250, 250))
    data = proj.ProjectionInput("x", image=big)
    assert max(data.gray.shape) == proj.ANALYSIS_SIDE
    assert proj.compute(data, ["width", "height"]) == {"width": 6000.0, "height": 2000.0}


def test_output_projections():
    gibberish = proj.compute(proj.ProjectionInput("qhwhwlwlwlwlhlwhlwlw", 0.4))
    sentence = proj.compute(proj.ProjectionInput("Stapf will complicate my work", 0.9))
    assert gibberish["char_entropy"] < sentence["char_entropy"]
    assert gibberish["repetition"] > 0.3 > 0.05 > sentence["repetition"]
    assert proj.compute(proj.ProjectionInput("Sent 12 May 1860."), ["digit_share"]) == {
        "digit_share": pytest.approx(6 / 14)
    }
    assert proj.compute(proj.ProjectionInput("a, b; c!"), ["punct_share"])["punct_share"] == 0.5
    assert proj.compute(proj.ProjectionInput("naïve"), ["oov_rate"])["oov_rate"] == 0.2
    # Empty output: shares are undefined rather than zero.
    empty = proj.compute(proj.ProjectionInput(""))
    assert empty["length"] == 0 and empty["digit_share"] is None and empty["width"] is None


def test_offensive_score_uses_the_shipped_word_list():
    assert proj.compute(proj.ProjectionInput("you are a shit"), ["offensive"]) == {
        "offensive": 0.25
    }
    assert proj.compute(proj.ProjectionInput("Dear Sir, I thank you"), ["offensive"]) == {
        "offensive": 0.0
    }
    # The real letters' signature is on the list; Quill allows it.
    assert proj.compute(proj.ProjectionInput("J. D. Hooker"), ["offensive"])["offensive"] == 0


def test_registry_refuses_duplicates_and_unknown_names():
    with pytest.raises(ValueError, match="already registered"):
        proj.projection("length", "output")(lambda data: 0.0)
    with pytest.raises(KeyError, match="unknown projection"):
        proj.get_projections(["length", "nope"])


def _as_colour_reads(image: Image.Image) -> dict[str, float | None]:
    """The input projections of ``image`` as the colour path computes them (three channels,
    BT.601's weighted sum, NumPy's median): what a grey image was read as before it had a path
    of its own."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    lap = gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4 * gray[1:-1, 1:-1]
    return {
        "mean_intensity": float(gray.mean()),
        "contrast": float(gray.std()),
        "polarity": float(np.median(gray) >= 0.5),
        "blur": float(lap.var()),
    }


@pytest.mark.parametrize("seed", range(6))
def test_a_grey_image_projects_as_its_colour_copy_would(seed):
    """A scan in mode L, or saved in colour with equal channels, is read from its levels (no
    float RGB copy, the median from a histogram, colourfulness 0): the values the colour
    path gives, to float32 rounding, and the polarity exactly, at odd and even pixel counts
    and around mid-grey."""
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(3, 60)), int(rng.integers(3, 400)))
    centre = [20, 127, 128, 200, 240, 127][seed]
    levels = np.clip(rng.normal(centre, 2 + 30 * (seed % 2), shape), 0, 255).astype(np.uint8)
    grey = Image.fromarray(levels)
    values = proj.compute(proj.ProjectionInput("x", image=grey), list(_as_colour_reads(grey)))
    expected = _as_colour_reads(grey)
    assert values["polarity"] == expected["polarity"]
    for name in ("mean_intensity", "contrast", "blur"):
        assert values[name] == pytest.approx(expected[name], rel=1e-5, abs=1e-9), name
    assert proj.compute(proj.ProjectionInput("x", image=grey), ["colourfulness"]) == {
        "colourfulness": 0.0
    }
    # saved in colour, three equal channels: read exactly as the grey image
    inputs = [p.name for p in proj.get_projections() if p.kind == "input"]
    as_rgb = proj.compute(proj.ProjectionInput("x", image=grey.convert("RGB")), inputs)
    assert as_rgb == proj.compute(proj.ProjectionInput("x", image=grey), inputs)
