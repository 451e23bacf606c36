"""Draw text as a hand would: glyph by glyph, then through a pen, a page and a camera.

Rendering happens in three stages, each seeded by the sample's generator:

1. :func:`draw_line` places each glyph of a font with its own small rotation, scale and
   offset along a baseline that drifts, giving an *ink map* (float32, 1 = ink, 0 = paper).
2. The writer: :func:`writer_distortions` slants, waves, warps and thickens the ink map.
3. The page and the camera: :func:`to_photo` lays the ink in a colour onto paper, then
   adds perspective, blur, noise, lighting and sometimes inverts the polarity.

Stages 1-2 work on one grey channel, which is three times cheaper than warping colour.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from quill.data import distort
from quill.data.synth.fonts import LoadedFont


@dataclass(frozen=True)
class Writer:
    """The habits of one (imaginary) writer, drawn once per sample and kept for all its lines.

    Sizes are in pixels of the rendered image; ``x_height`` is the height of a lowercase x.
    """

    font: LoadedFont
    x_height: float
    slant: float
    glyph_rotation: float  # standard deviation, degrees
    glyph_scale: float  # standard deviation, fraction of size
    glyph_offset: float  # standard deviation, fraction of x-height
    letter_spacing: float  # extra space after each glyph, fraction of x-height
    word_spacing: float  # factor on the font's space width

    @property
    def size(self) -> int:
        """Font size in pixels that gives this writer's x-height in this font."""
        return max(6, round(self.x_height / self.font.x_height))

    @classmethod
    def sample(cls, font: LoadedFont, rng: np.random.Generator, x_height: tuple[float, float]):
        """A random writer; printed fonts get steadier hands than handwriting fonts."""
        printed = font.spec.style == "printed"
        steadiness = 0.25 if printed else 1.0
        slant = rng.uniform(-0.05, 0.1) if printed else rng.uniform(-0.2, 0.4)
        return cls(
            font=font,
            x_height=rng.uniform(*x_height),
            slant=float(slant) if rng.random() < 0.7 else 0.0,
            glyph_rotation=rng.uniform(0.5, 3.0) * steadiness,
            glyph_scale=rng.uniform(0.01, 0.06) * steadiness,
            glyph_offset=rng.uniform(0.01, 0.06) * steadiness,
            letter_spacing=rng.uniform(-0.05, 0.08),
            word_spacing=rng.uniform(0.8, 1.5),
        )


@lru_cache(maxsize=512)
def _font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size)


@lru_cache(maxsize=32768)
def _glyph(path: Path, size: int, char: str) -> tuple[np.ndarray, int, int]:
    """A glyph's coverage (uint8, tight box with a 2 px border) and its box's offset from
    the pen position on the baseline."""
    font = _font(path, size)
    left, top, right, bottom = font.getbbox(char, anchor="ls")
    pad = 2
    patch = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(patch).text((pad - left, pad - top), char, font=font, fill=255, anchor="ls")
    return np.asarray(patch), left - pad, top - pad


def _paste(canvas: np.ndarray, patch: np.ndarray, x: int, y: int) -> None:
    """Max-composite ``patch`` (uint8 coverage) into ``canvas`` at top-left (x, y), clipped."""
    h, w = patch.shape
    top, left = max(y, 0), max(x, 0)
    bottom, right = min(y + h, canvas.shape[0]), min(x + w, canvas.shape[1])
    if bottom <= top or right <= left:
        return
    piece = patch[top - y : bottom - y, left - x : right - x].astype(np.float32) / 255.0
    np.maximum(canvas[top:bottom, left:right], piece, out=canvas[top:bottom, left:right])


def draw_line(text: str, writer: Writer, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Ink map ``(H, W)`` float32 of one line of text, and the y of its baseline.

    The canvas is generous (glyph jitter and rotation may poke out of the font's box); the
    caller crops to the ink.
    """
    font = _font(writer.font.path, writer.size)
    ascent, descent = font.getmetrics()
    pad = writer.size
    width = int(font.getlength(text) * 1.3 + 2 * pad + len(text) * writer.x_height * 0.3)
    canvas = np.zeros((ascent + descent + 2 * pad, width), dtype=np.float32)
    baseline = pad + ascent
    x, drift, previous = float(pad), 0.0, ""
    for char in text:
        # Advance with the font's kerning for this pair, then the writer's own spacing.
        advance = font.getlength(previous + char) - font.getlength(previous)
        previous = char
        if char == " ":
            x += advance * writer.word_spacing
            continue
        drift = 0.9 * drift + rng.normal(0, writer.glyph_offset * writer.x_height * 0.5)
        size = max(6, round(writer.size * (1 + rng.normal(0, writer.glyph_scale))))
        patch, dx, dy = _glyph(writer.font.path, size, char)
        angle = rng.normal(0, writer.glyph_rotation)
        if abs(angle) > 0.3:
            rotated = np.asarray(
                Image.fromarray(patch).rotate(angle, resample=Image.BILINEAR, expand=True)
            )
            dx -= (rotated.shape[1] - patch.shape[1]) // 2
            dy -= (rotated.shape[0] - patch.shape[0]) // 2
            patch = rotated
        jitter = rng.normal(0, writer.glyph_offset * writer.x_height)
        _paste(canvas, patch, round(x + dx), round(baseline + dy + drift + jitter))
        x += advance + writer.letter_spacing * writer.x_height
    return canvas, baseline


def crop_to_ink(
    ink: np.ndarray, rng: np.random.Generator, margin: tuple[float, float], unit: float
) -> np.ndarray:
    """Cut ``ink`` to its inked box plus a random margin (in multiples of ``unit`` px)."""
    rows = np.flatnonzero(ink.max(axis=1) > 0.05)
    cols = np.flatnonzero(ink.max(axis=0) > 0.05)
    if rows.size == 0:
        return ink
    m = [round(rng.uniform(*margin) * unit) for _ in range(4)]
    top, bottom = rows[0], rows[-1] + 1
    left, right = cols[0], cols[-1] + 1
    cropped = ink[top:bottom, left:right]
    return np.pad(cropped, ((m[0], m[1]), (m[2], m[3])))


def draw_paragraph(lines: list[str], writer: Writer, rng: np.random.Generator) -> np.ndarray:
    """Ink map of several lines, one under the other, with a wandering left margin."""
    gap = writer.x_height * rng.uniform(2.6, 3.6)
    drawn = [draw_line(line, writer, rng) for line in lines]
    width = max(canvas.shape[1] for canvas, _ in drawn) + round(2 * writer.x_height)
    above = max(baseline for _, baseline in drawn)
    below = max(canvas.shape[0] - baseline for canvas, baseline in drawn)
    height = round(above + below + gap * (len(lines) - 1)) + 2
    page = np.zeros((height, width), dtype=np.float32)
    for number, (canvas, baseline) in enumerate(drawn):
        indent = round(rng.uniform(0, 1.2) * writer.x_height)
        y = round(above + number * gap + rng.normal(0, 0.1 * writer.x_height)) - baseline
        h, w = canvas.shape
        y = min(max(y, 0), height - h)
        np.maximum(
            page[y : y + h, indent : indent + w], canvas, out=page[y : y + h, indent : indent + w]
        )
    return page


def writer_distortions(ink: np.ndarray, writer: Writer, rng: np.random.Generator) -> np.ndarray:
    """Pen and hand: stroke weight, slant, a wandering baseline, tremor, a tilted page."""
    handwriting = writer.font.spec.style == "handwriting"
    # Continuous pen width: blend the ink towards its 1 px dilation.
    thicker = distort.stroke_width(ink, rng, radius=(1, 1))
    weight = rng.uniform(0.0, 1.0) if rng.random() < 0.6 else 0.0
    ink = ink * (1 - weight) + thicker * weight
    ink = distort.shear(ink, rng, slant=(writer.slant, writer.slant))
    if handwriting:
        ink = distort.baseline_wave(ink, rng, amplitude=(0.0, 0.025))
        ink = distort.elastic(ink, rng, alpha=(0.0, 1.2), sigma=writer.x_height * 0.4)
    ink = distort.rotate(ink, rng, degrees=(-1.5, 1.5))
    # Pen pressure: some ink is never fully opaque.
    return np.clip(ink * rng.uniform(0.75, 1.0), 0.0, 1.0)


def to_photo(ink: np.ndarray, rng: np.random.Generator) -> tuple[Image.Image, bool]:
    """Put the ink on paper and photograph it. Returns the RGB image and whether the
    polarity was inverted (light ink on a dark surface)."""
    height, width = ink.shape
    if rng.random() < 0.1:
        ink = distort.perspective(ink, rng, strength=(0.0, 0.05))
    ink = distort.blur(ink, rng, sigma=(0.0, 0.8))
    if rng.random() < 0.75:
        paper = distort.paper_texture(height, width, rng)
    else:
        tone = (
            rng.uniform(170, 255, size=3)
            if rng.random() < 0.3
            else np.full(3, rng.uniform(215, 255))
        )
        paper = np.broadcast_to(tone.astype(np.uint8), (height, width, 3)).copy()
    rgb = distort.composite(ink, paper, distort.random_ink_colour(rng))
    inverted = bool(rng.random() < 0.12)
    if inverted:
        rgb = distort.invert(rgb)
    rgb = distort.gaussian_noise(rgb, rng, std=(0.0, 0.04))
    rgb = distort.brightness_contrast(rgb, rng, brightness=(-0.08, 0.08), contrast=(0.75, 1.1))
    return Image.fromarray(rgb), inverted
