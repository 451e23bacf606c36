"""Batch augmentation of cached ink maps: geometry, padding, reproducibility, ink kept."""

from __future__ import annotations

import math
from dataclasses import fields, replace

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from quill.data.augment import AugmentConfig
from quill.data.ink_augment import InkAugmenter

HEIGHT = 32
PROBABILITIES = [f.name for f in fields(AugmentConfig) if f.type in (float, "float")]
NOTHING = AugmentConfig(**{name: 0.0 for name in PROBABILITIES})
EVERYTHING = AugmentConfig(**{name: 1.0 for name in PROBABILITIES})


def ink_line(text: str, width: int | None = None) -> np.ndarray:
    """(HEIGHT, W) float32 ink map of ``text`` (ink = 1), as the cache holds lines."""
    font = ImageFont.load_default(size=22)
    natural = int(font.getlength(text)) + 8
    image = Image.new("L", (width or natural, HEIGHT), 0)
    ImageDraw.Draw(image).text((4, 4), text, font=font, fill=255)
    return np.asarray(image, np.float32) / 255.0


def batch(
    lines: list[np.ndarray], padded_to: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1, HEIGHT, W) zero-padded images and their (B,) true widths."""
    widths = [line.shape[1] for line in lines]
    images = torch.zeros(len(lines), 1, HEIGHT, padded_to or max(widths))
    for row, line in enumerate(lines):
        images[row, 0, :, : line.shape[1]] = torch.from_numpy(line)
    return images, torch.tensor(widths)


def seeded(augmenter: InkAugmenter, images, widths, seed: int):
    torch.manual_seed(seed)  # noise fields come from the default generator
    return augmenter(images, widths, torch.Generator().manual_seed(seed))


def assert_well_formed(images: torch.Tensor, widths: torch.Tensor, augmenter: InkAugmenter):
    assert images.shape[-2] == HEIGHT and images.shape[-1] % augmenter.width_multiple == 0
    assert images.shape[-1] == int(widths.max())
    assert bool((widths % augmenter.width_multiple == 0).all())
    assert bool((widths <= augmenter.max_width).all()) and bool((widths > 0).all())
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    for row, width in enumerate(widths.tolist()):
        assert float(images[row, :, :, width:].abs().sum()) == 0.0  # padding is exactly paper


def test_the_probabilities_are_every_float_field() -> None:
    assert {"slant", "rotate", "elastic", "noise", "blur", "recolour"} <= set(PROBABILITIES)
    assert not {"slant_range", "rotate_degrees", "noise_std"} & set(PROBABILITIES)


def test_with_every_probability_zero_it_is_the_identity() -> None:
    augmenter = InkAugmenter(NOTHING, width_multiple=8, max_width=1536)
    lines = [ink_line("Kew"), ink_line("my dear friend"), ink_line("to", width=37)]
    images, widths = batch(lines)
    torch.manual_seed(0)
    out, out_widths = augmenter(images, widths, torch.Generator().manual_seed(0))
    padded = torch.tensor([-(-w // 8) * 8 for w in widths.tolist()])
    assert torch.equal(out_widths, padded)
    assert out.shape == (3, 1, HEIGHT, int(padded.max()))
    expected = torch.zeros_like(out)
    expected[..., : images.shape[-1]] = images
    # exact up to float rounding of the sampling grid (a 4-bit level is 17/255)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)
    assert_well_formed(out, out_widths, augmenter)


def test_widths_are_multiples_never_above_max_width_and_long_lines_are_squeezed() -> None:
    augmenter = InkAugmenter(NOTHING, width_multiple=8, max_width=128)
    long_line = ink_line("the garden seeds of March and Kew plants")
    assert long_line.shape[1] > 300
    images, widths = batch([long_line, ink_line("Kew"), ink_line("Hooker")])
    out, out_widths = seeded(augmenter, images, widths, 0)
    assert_well_formed(out, out_widths, augmenter)
    assert int(out_widths[0]) == 128 and int(out_widths[1]) < 128
    squeezed = out[0, 0]
    # the whole line is there, narrower: ink at both ends, mass scaled by the squeeze
    assert float(squeezed[:, :16].sum()) > 0 and float(squeezed[:, 100:].sum()) > 0
    ratio = float(squeezed.sum()) / (float(images[0].sum()) * 128 / long_line.shape[1])
    assert 0.75 < ratio < 1.25
    augmenter = InkAugmenter(AugmentConfig(), width_multiple=8, max_width=128)
    for seed in range(4):
        assert_well_formed(*seeded(augmenter, images, widths, seed), augmenter)


@pytest.mark.parametrize("config", [AugmentConfig(), EVERYTHING], ids=["defaults", "everything"])
def test_padding_beyond_each_width_is_exactly_zero(config: AugmentConfig) -> None:
    augmenter = InkAugmenter(config, width_multiple=8, max_width=1536)
    lines = [ink_line("1892"), ink_line("African grasses sent"), ink_line("the", width=41)]
    images, widths = batch(lines, padded_to=240)  # wider than any line, as a padded batch is
    for seed in range(3):
        out, out_widths = seeded(augmenter, images, widths, seed)
        assert_well_formed(out, out_widths, augmenter)
        for row in range(len(lines)):
            assert float(out[row].sum()) > 0  # every line still has ink


def test_default_draws_differ_and_a_seed_reproduces_them() -> None:
    augmenter = InkAugmenter(AugmentConfig(), width_multiple=8, max_width=1536)
    images, widths = batch([ink_line(t) for t in ("dear", "Stapf work", "hard", "India", "to")])
    first, first_widths = seeded(augmenter, images, widths, 3)
    again, again_widths = seeded(augmenter, images, widths, 3)
    assert torch.equal(first, again) and torch.equal(first_widths, again_widths)

    def same(a, b) -> bool:
        return a[0].shape == b[0].shape and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])

    other = seeded(augmenter, images, widths, 4)
    assert not same((first, first_widths), other)
    generator = torch.Generator().manual_seed(5)
    draws = [augmenter(images, widths, generator) for _ in range(2)]
    assert not same(draws[0], draws[1])  # one generator, successive batches


def _ink_mass_ratio(config: AugmentConfig, line: np.ndarray, area_scale: float) -> float:
    augmenter = InkAugmenter(config, width_multiple=8, max_width=1536)
    images, widths = batch([line])
    out, out_widths = seeded(augmenter, images, widths, 0)
    assert_well_formed(out, out_widths, augmenter)
    return float(out.sum()) / (float(images.sum()) * area_scale)


@pytest.mark.parametrize("degrees", [-4.0, 4.0])
def test_a_rotated_line_keeps_its_ink_inside_the_output(degrees: float) -> None:
    """Rotation refits the line to the height (scaled, not cut): the ink mass scales with the
    area, by fit², and nothing is lost over the edges."""
    config = replace(NOTHING, rotate=1.0, rotate_degrees=(degrees, degrees))
    for text in ("Kew", "letters from the garden"):
        line = ink_line(text)
        angle = math.radians(abs(degrees))
        extent_y = line.shape[1] / 2 * math.sin(angle) + HEIGHT / 2 * math.cos(angle)
        fit = HEIGHT / (2 * extent_y)
        assert 0.75 < _ink_mass_ratio(config, line, fit**2) < 1.25, text
    short = ink_line("Kew")  # barely scaled: the plain mass is kept too
    assert 0.75 < _ink_mass_ratio(config, short, 1.0) < 1.25


@pytest.mark.parametrize("slant", [-0.3, 0.3])
def test_a_slanted_line_keeps_its_ink_inside_the_output(slant: float) -> None:
    config = replace(NOTHING, slant=1.0, slant_range=(slant, slant))
    for text in ("Hooker", "these come to my dear friend"):
        assert 0.75 < _ink_mass_ratio(config, ink_line(text), 1.0) < 1.25, text


@pytest.mark.parametrize("config", [AugmentConfig(), EVERYTHING], ids=["defaults", "everything"])
def test_a_batch_of_one(config: AugmentConfig) -> None:
    augmenter = InkAugmenter(config, width_multiple=8, max_width=1536)
    images, widths = batch([ink_line("seeds")])
    for seed in range(3):
        out, out_widths = seeded(augmenter, images, widths, seed)
        assert out.shape[0] == 1 and out_widths.shape == (1,)
        assert_well_formed(out, out_widths, augmenter)


@pytest.mark.parametrize("pixels", [-3.0, 2.0])
def test_a_shift_moves_the_fitted_line_up_or_down_by_its_pixels(pixels: float) -> None:
    config = replace(NOTHING, shift=1.0, shift_pixels=(pixels, pixels))
    augmenter = InkAugmenter(config, width_multiple=8, max_width=1536)
    images, widths = batch([ink_line("Hooker"), ink_line("Kew")])
    out, out_widths = seeded(augmenter, images, widths, 0)
    assert_well_formed(out, out_widths, augmenter)
    rows = torch.arange(HEIGHT, dtype=torch.float32)[:, None]
    for row in range(2):
        before = float((images[row, 0] * rows).sum() / images[row, 0].sum())
        after = float((out[row, 0] * rows).sum() / out[row, 0].sum())
        assert after - before == pytest.approx(pixels, abs=0.15)  # centre of the ink, in rows


def test_neighbours_frame_the_line_as_a_loose_crop_with_the_lines_around_it() -> None:
    """A third of the line's height added above and below (margin 0.25 of 32 rows: 8 rows
    each side), no gap: the line is shrunk to 32 / 48 of its size in the middle of the
    window, and the descenders of the line above and the ascenders of the line below come in
    at the edges."""
    config = replace(NOTHING, neighbours=1.0, neighbour_margin=(0.25, 0.25), neighbour_gap=(0, 0))
    augmenter = InkAugmenter(config, width_multiple=8, max_width=1536)
    lines = [ink_line("Hooker"), ink_line("gypsy jigs"), ink_line("Kew Hill")]
    images, widths = batch(lines)
    out, out_widths = seeded(augmenter, images, widths, 0)
    assert_well_formed(out, out_widths, augmenter)
    scale = HEIGHT / (HEIGHT + 16)
    for row, width in enumerate(widths.tolist()):
        assert int(out_widths[row]) == -(-round(width * scale) // 8) * 8
        # the line itself, area-scaled: its ink mass scales with the area
        middle = out[row, 0, 6 : HEIGHT - 6].sum()
        assert float(middle) == pytest.approx(float(images[row, 0].sum()) * scale**2, rel=0.2)
    edges = out[:, 0, :5].sum() + out[:, 0, -5:].sum()
    assert float(edges) > 0.5  # some neighbour's descenders or ascenders
    plain, _ = seeded(InkAugmenter(NOTHING, 8, 1536), images, widths, 0)
    assert float(plain[:, 0, :2].sum() + plain[:, 0, -2:].sum()) < float(edges)


def test_without_neighbours_the_random_draws_are_those_of_earlier_runs() -> None:
    """``neighbours: 0`` (the default) draws nothing, so a seeded run augments as before."""
    images, widths = batch([ink_line("Hooker"), ink_line("Kew")])
    before = seeded(InkAugmenter(AugmentConfig(), 8, 1536), images, widths, 3)
    config = replace(AugmentConfig(), neighbour_margin=(0.3, 0.4), neighbour_gap=(0.1, 0.2))
    after = seeded(InkAugmenter(config, 8, 1536), images, widths, 3)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
