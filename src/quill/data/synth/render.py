"""Draw text as a hand would: glyph by glyph, then through a pen, a page and a camera.

Rendering happens in three stages, each seeded by the sample's generator:

1. :func:`draw_line` places each glyph of a font with the writer's slant and its own small
   rotation, scale and offset along a baseline that drifts, giving an *ink map* (float32,
   1 = ink, 0 = paper).
2. The hand: :func:`writer_distortions` thickens, waves, trembles and tilts the ink map.
3. The page and the camera: :func:`to_photo` lays the ink in a colour onto paper, then
   adds perspective, blur, noise, lighting and sometimes inverts the polarity.

Stages 1-2 work on one grey channel, which is three times cheaper than warping colour.
"""

from __future__ import annotations

import math
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
        """Font size in pixels that gives this writer's x-height in this font.

        Rounded to even sizes: half as many (font, size) pairs means twice the hits in the
        glyph caches, and one pixel of font size is invisible next to the jitter.
        """
        return max(6, 2 * round(self.x_height / self.font.x_height / 2))

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
def _glyph(path: Path, size: int, char: str) -> tuple[Image.Image, int, int]:
    """A glyph's coverage (``L`` image, tight box with a 2 px border) and its box's offset
    from the pen position on the baseline."""
    font = _font(path, size)
    # FreeType boxes are whole pixels (typed float for the basic fonts' sake).
    left, top, right, bottom = (int(v) for v in font.getbbox(char, anchor="ls"))
    pad = 2
    patch = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(patch).text((pad - left, pad - top), char, font=font, fill=255, anchor="ls")
    return patch, left - pad, top - pad


@lru_cache(maxsize=65536)
def _advance(path: Path, size: int, char: str) -> float:
    """How far the pen moves after ``char``. Pair kerning is left out: measuring pairs
    costs more than the rest of the line, and the writer's own spacing jitter is larger."""
    return _font(path, size).getlength(char)


def _transform_glyph(
    patch: Image.Image, dx: int, dy: int, matrix: tuple[float, float, float, float]
) -> tuple[Image.Image, int, int]:
    """Apply the 2x2 ``matrix`` (row-major m00, m01, m10, m11) to a glyph about the pen
    position on the baseline.

    ``(dx, dy)`` is the patch's top-left relative to the pen; the result comes with its own.
    One bilinear resample per glyph does rotation, slant and scale together. Plain floats:
    numpy's overhead on 2x2 matrices would cost more than the resample.
    """
    m00, m01, m10, m11 = matrix
    w, h = patch.size
    xs = [m00 * x + m01 * y for x, y in ((dx, dy), (dx + w, dy), (dx, dy + h), (dx + w, dy + h))]
    ys = [m10 * x + m11 * y for x, y in ((dx, dy), (dx + w, dy), (dx, dy + h), (dx + w, dy + h))]
    left, top = math.floor(min(xs)), math.floor(min(ys))
    right, bottom = math.ceil(max(xs)), math.ceil(max(ys))
    det = m00 * m11 - m01 * m10
    # PIL maps each output pixel (u, v) to the input (a u + b v + c, d u + e v + f).
    a, b, d, e = m11 / det, -m01 / det, -m10 / det, m00 / det
    c = a * left + b * top - dx
    f = d * left + e * top - dy
    size = (right - left, bottom - top)
    out = patch.transform(
        size, Image.Transform.AFFINE, (a, b, c, d, e, f), resample=Image.Resampling.BILINEAR
    )
    return out, left, top


def draw_line(text: str, writer: Writer, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Ink map ``(H, W)`` float32 of one line of text, and the y of its baseline.

    Each glyph gets its own rotation, scale and offset, and the writer's slant; the
    baseline drifts as a damped random walk. The canvas is generous (jitter and slant may
    poke out of the font's box); the caller crops to the ink. Glyphs are composited in
    Pillow (in C): overlapping strokes add up to full ink, never beyond.
    """
    path, size = writer.font.path, writer.size
    font = _font(path, size)
    ascent, descent = font.getmetrics()
    pad = size
    slant_room = abs(writer.slant) * (ascent + descent)
    width = int(font.getlength(text) * 1.25 + 2 * pad + slant_room + len(text) * 2)
    canvas = Image.new("L", (width, ascent + descent + 2 * pad), 0)
    baseline = pad + ascent
    x = float(pad + max(0.0, writer.slant) * descent + max(0.0, -writer.slant) * ascent)
    drift, slant = 0.0, writer.slant
    # One draw per glyph from the generator, in a fixed order: (drift, angle, scale, jitter).
    noise = rng.standard_normal((len(text), 4)).tolist()
    for i, char in enumerate(text):
        advance = _advance(path, size, char)
        if char == " ":
            x += advance * writer.word_spacing
            continue
        step, turn, grow, jump = noise[i]
        drift = 0.9 * drift + step * writer.glyph_offset * writer.x_height * 0.5
        angle = math.radians(turn * writer.glyph_rotation)
        scale = 1 + grow * writer.glyph_scale
        cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
        # [[1, -slant], [0, 1]] @ [[cos, sin], [-sin, cos]]: rotate, then slant.
        matrix = (cos + slant * sin, sin - slant * cos, -sin, cos)
        patch, dx, dy = _transform_glyph(*_glyph(path, size, char), matrix)
        jitter = jump * writer.glyph_offset * writer.x_height
        left, top = round(x + dx), round(baseline + dy + drift + jitter)
        canvas.paste(255, (left, top, left + patch.width, top + patch.height), mask=patch)
        x += advance * scale + writer.letter_spacing * writer.x_height
    return np.asarray(canvas, dtype=np.float32) / 255.0, baseline


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
    """Pen and hand: stroke weight, a wandering baseline, tremor and a tilted page.

    The slant is applied glyph by glyph in :func:`draw_line`, where it is nearly free; the
    baseline wave, tremor and tilt are composed into a single resampling of the image.
    """
    # Continuous pen width: blend the ink towards its 1 px dilation.
    if rng.random() < 0.6:
        weight = rng.uniform(0.0, 1.0)
        ink = ink * (1 - weight) + distort.stroke_width(ink, rng, radius=(1, 1)) * weight
    tilt = np.deg2rad(rng.uniform(-1.5, 1.5)) if rng.random() < 0.5 else 0.0
    # Room for the tilt at the far ends of a long line.
    room = int(np.ceil(abs(np.tan(tilt)) * ink.shape[1] / 2)) + 1
    ink = np.pad(ink, ((room, room), (0, 0)))
    height, width = ink.shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    rows = ys + (xs - width / 2) * np.float32(np.tan(tilt))
    cols = xs.copy()
    if writer.font.spec.style == "handwriting":
        amplitude = rng.uniform(0.0, 0.025) * height
        period = rng.uniform(3.0, 12.0) * writer.x_height * 3
        rows += amplitude * np.sin(2 * np.pi * xs / period + rng.uniform(0, 2 * np.pi))
        dy, dx = distort.displacement_field(
            (height, width), rng, alpha=rng.uniform(0.0, 1.2), sigma=writer.x_height * 0.4
        )
        rows += dy
        cols += dx
    ink = distort.remap(ink, rows, cols)
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
    if rng.random() < 0.5:
        rgb = distort.gaussian_noise(rgb, rng, std=(0.0, 0.04))
    rgb = distort.brightness_contrast(rgb, rng, brightness=(-0.08, 0.08), contrast=(0.75, 1.1))
    return Image.fromarray(rgb), inverted
