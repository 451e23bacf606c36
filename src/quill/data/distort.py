"""Seeded image distortions shared by the synthetic renderer and training augmentation.

Every function is pure: it takes an image and a ``numpy.random.Generator`` and returns a new
image of the same type, so a sample is reproducible from its seed alone (the generator and
the DataLoader workers then never need to agree on global random state). Amounts are
``(low, high)`` ranges sampled uniformly; pass ``(x, x)`` for a fixed amount.

Images may be PIL images (``L`` or ``RGB``), ``uint8`` arrays or float arrays, shaped
``(H, W)`` or ``(H, W, 3)``. Results keep the input's type and dtype. Value-dependent
amounts (noise, contrast) are fractions of the full range: 255 for ``uint8``/PIL, 1.0 for
floats. Geometric warps fill uncovered pixels with the *background*, estimated as the median
of the image border, so the same call works for dark ink on white paper and for the ink map
(ink=1 on paper=0) that :func:`quill.preprocess.preprocess` returns.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
from PIL import Image
from scipy import ndimage

ImageLike = TypeVar("ImageLike", Image.Image, np.ndarray)
Range = tuple[float, float]

#: Ink colours as RGB: mostly near-black and blue, as people write, some red and green.
INK_COLOURS: tuple[tuple[int, int, int], ...] = (
    (20, 20, 25),
    (35, 35, 45),
    (15, 30, 110),
    (25, 50, 150),
    (10, 20, 70),
    (120, 20, 25),
    (20, 80, 40),
    (60, 40, 90),
)


def make_rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    """A generator from a seed (or the generator itself), the one way randomness enters here."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _uniform(rng: np.random.Generator, bounds: Range) -> float:
    low, high = bounds
    return float(low) if low == high else float(rng.uniform(low, high))


def _to_array(image: Image.Image | np.ndarray) -> tuple[np.ndarray, float]:
    """Float32 copy of the pixels and the full value range (255 or 1.0)."""
    if isinstance(image, Image.Image):
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        return np.asarray(image, dtype=np.float32), 255.0
    if image.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")
    value_range = 255.0 if np.issubdtype(image.dtype, np.integer) else 1.0
    return image.astype(np.float32), value_range


def _like(original: ImageLike, pixels: np.ndarray, value_range: float) -> ImageLike:
    """Return ``pixels`` in the type and dtype of ``original``, clipped to its range."""
    if isinstance(original, Image.Image):
        return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))
    if np.issubdtype(original.dtype, np.integer):
        return np.clip(pixels, 0, 255).round().astype(original.dtype)
    low = min(0.0, float(original.min(initial=0.0)))
    high = max(value_range, float(original.max(initial=value_range)))
    return np.clip(pixels, low, high).astype(original.dtype)


def background_value(pixels: np.ndarray) -> np.ndarray:
    """Per-channel median of the outermost pixels: the paper colour in a text image.

    >>> page = np.full((10, 10), 200.0); page[4:6, 2:8] = 10.0
    >>> float(background_value(page))
    200.0
    """
    border = np.concatenate(
        [pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]], axis=0
    ).reshape(-1, *pixels.shape[2:])
    return np.median(border, axis=0)


def ink_is_dark(pixels: np.ndarray) -> bool:
    """Whether the ink is darker than the paper (background brighter than the mean)."""
    gray = pixels.mean(axis=2) if pixels.ndim == 3 else pixels
    return float(background_value(gray)) >= float(gray.mean())


def _remap(pixels: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sample ``pixels`` at (rows, cols) bilinearly, filling outside with the background.

    ``rows``/``cols`` have the output's (H', W') shape; channels are handled one by one.
    """
    fill = background_value(pixels)
    if pixels.ndim == 2:
        return ndimage.map_coordinates(
            pixels, [rows, cols], order=1, mode="constant", cval=float(fill)
        )
    channels = [
        ndimage.map_coordinates(
            pixels[..., c], [rows, cols], order=1, mode="constant", cval=float(fill[c])
        )
        for c in range(pixels.shape[2])
    ]
    return np.stack(channels, axis=-1)


def _affine(pixels: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply the 2x2 linear map ``matrix`` (x, y order) about the centre, expanding the canvas.

    The output canvas is the bounding box of the transformed input, so nothing is cut off.
    """
    height, width = pixels.shape[:2]
    corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], dtype=np.float64)
    centre = np.array([width / 2, height / 2])
    moved = (corners - centre) @ matrix.T
    out_w = max(1, int(np.ceil(moved[:, 0].max() - moved[:, 0].min())))
    out_h = max(1, int(np.ceil(moved[:, 1].max() - moved[:, 1].min())))
    ys, xs = np.mgrid[0:out_h, 0:out_w].astype(np.float64)
    out_pts = np.stack([xs - out_w / 2, ys - out_h / 2], axis=-1)  # (H', W', 2) x, y
    src = out_pts @ np.linalg.inv(matrix).T + centre
    return _remap(pixels, src[..., 1] - 0.5, src[..., 0] - 0.5)


def shear(image: ImageLike, rng: np.random.Generator, slant: Range = (-0.4, 0.4)) -> ImageLike:
    """Slant the writing: x moves by ``slant`` times the height above the centre line.

    Positive slant leans letters to the right, as most right-handed cursive does.
    """
    pixels, value_range = _to_array(image)
    amount = _uniform(rng, slant)
    if amount == 0:
        return _like(image, pixels, value_range)
    matrix = np.array([[1.0, -amount], [0.0, 1.0]])
    return _like(image, _affine(pixels, matrix), value_range)


def rotate(image: ImageLike, rng: np.random.Generator, degrees: Range = (-3, 3)) -> ImageLike:
    """Rotate by a small angle (a page not quite straight), expanding the canvas."""
    pixels, value_range = _to_array(image)
    angle = np.deg2rad(_uniform(rng, degrees))
    if angle == 0:
        return _like(image, pixels, value_range)
    cos, sin = np.cos(angle), np.sin(angle)
    matrix = np.array([[cos, sin], [-sin, cos]])
    return _like(image, _affine(pixels, matrix), value_range)


def scale(image: ImageLike, rng: np.random.Generator, factor: Range = (0.8, 1.2)) -> ImageLike:
    """Resize by a random factor (same for both axes); at least 1 pixel on each side."""
    pixels, value_range = _to_array(image)
    amount = _uniform(rng, factor)
    height, width = pixels.shape[:2]
    size = (max(1, round(width * amount)), max(1, round(height * amount)))
    resized = _resize(pixels, size)
    return _like(image, resized, value_range)


def _resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize float pixels to (width, height) with PIL's bilinear filter, channel by channel."""
    if pixels.ndim == 2:
        return np.asarray(Image.fromarray(pixels, mode="F").resize(size, Image.Resampling.BILINEAR))
    return np.stack([_resize(pixels[..., c], size) for c in range(pixels.shape[2])], axis=-1)


def _homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3x3 projective map taking the four points ``src`` onto ``dst`` (both (4, 2))."""
    rows = []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    coeffs = np.linalg.solve(np.array(rows, dtype=np.float64), dst.reshape(-1))
    return np.append(coeffs, 1.0).reshape(3, 3)


def perspective(
    image: ImageLike, rng: np.random.Generator, strength: Range = (0.0, 0.06)
) -> ImageLike:
    """A photo taken at an angle: each corner moves inwards by up to ``strength`` of the size.

    The canvas keeps its size; uncovered pixels become background.
    """
    pixels, value_range = _to_array(image)
    amount = _uniform(rng, strength)
    if amount <= 0:
        return _like(image, pixels, value_range)
    height, width = pixels.shape[:2]
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
    inward = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=np.float64)
    offsets = rng.uniform(0, amount, size=(4, 2)) * np.array([width, height]) * inward
    # Map output corners back to the input: the photographed page is the moved quadrilateral.
    back = _homography(corners + offsets, corners)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    points = np.stack([xs + 0.5, ys + 0.5, np.ones_like(xs)], axis=-1) @ back.T  # (H, W, 3)
    src_x = points[..., 0] / points[..., 2]
    src_y = points[..., 1] / points[..., 2]
    return _like(image, _remap(pixels, src_y - 0.5, src_x - 0.5), value_range)


def displacement_field(
    shape: tuple[int, int], rng: np.random.Generator, alpha: float, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random displacement ``(dy, dx)``, each float32 of ``shape``.

    ``alpha`` is the standard deviation in pixels, ``sigma`` the smoothing length. The field
    is drawn at 1/4 resolution and upsampled: faster, and smooth by construction.
    """
    height, width = shape
    coarse = (max(2, height // 4 + 1), max(2, width // 4 + 1))
    fields = []
    for _ in range(2):
        field = ndimage.gaussian_filter(rng.standard_normal(coarse), sigma / 4, mode="reflect")
        field *= alpha / (field.std() + 1e-8)
        fields.append(_resize(field.astype(np.float32), (width, height)))
    return fields[0], fields[1]


def remap(image: ImageLike, rows: np.ndarray, cols: np.ndarray) -> ImageLike:
    """Resample ``image`` at the given source coordinates (bilinear, background fill).

    Lets a caller compose several warps into one coordinate map and pay for one resample.
    """
    pixels, value_range = _to_array(image)
    return _like(image, _remap(pixels, rows, cols), value_range)


def elastic(
    image: ImageLike,
    rng: np.random.Generator,
    alpha: Range = (0.0, 2.5),
    sigma: float = 6.0,
) -> ImageLike:
    """Smooth random displacement (Simard et al. 2003): hand tremor and uneven strokes.

    ``alpha`` is the displacement's standard deviation in pixels, ``sigma`` the smoothing
    length (larger = broader, gentler waves); see :func:`displacement_field`.
    """
    pixels, value_range = _to_array(image)
    amount = _uniform(rng, alpha)
    if amount <= 0:
        return _like(image, pixels, value_range)
    height, width = pixels.shape[:2]
    dy, dx = displacement_field((height, width), rng, amount, sigma)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return _like(image, _remap(pixels, ys + dy, xs + dx), value_range)


def baseline_wave(
    image: ImageLike,
    rng: np.random.Generator,
    amplitude: Range = (0.0, 0.04),
    wavelength: Range = (3.0, 12.0),
) -> ImageLike:
    """Bend the line vertically along a sine: a baseline that wanders up and down.

    ``amplitude`` is a fraction of the height and ``wavelength`` a multiple of it: waves
    several line heights long look like a drifting hand, shorter ones like a wobbly font.
    """
    pixels, value_range = _to_array(image)
    height, width = pixels.shape[:2]
    amp = _uniform(rng, amplitude) * height
    if amp <= 0:
        return _like(image, pixels, value_range)
    period = _uniform(rng, wavelength) * height
    phase = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    offset = amp * np.sin(2 * np.pi * xs / period + phase)
    return _like(image, _remap(pixels, ys + offset, xs), value_range)


def blur(image: ImageLike, rng: np.random.Generator, sigma: Range = (0.0, 1.2)) -> ImageLike:
    """Gaussian blur (out of focus, low resolution scan), ``sigma`` in pixels."""
    pixels, value_range = _to_array(image)
    amount = _uniform(rng, sigma)
    if amount <= 0:
        return _like(image, pixels, value_range)
    spatial = (amount, amount, 0) if pixels.ndim == 3 else amount
    return _like(image, ndimage.gaussian_filter(pixels, spatial), value_range)


def gaussian_noise(
    image: ImageLike, rng: np.random.Generator, std: Range = (0.0, 0.06)
) -> ImageLike:
    """Add sensor noise, ``std`` a fraction of the value range; grey noise on colour images."""
    pixels, value_range = _to_array(image)
    amount = _uniform(rng, std) * value_range
    if amount <= 0:
        return _like(image, pixels, value_range)
    noise = rng.standard_normal(pixels.shape[:2], dtype=np.float32) * np.float32(amount)
    if pixels.ndim == 3:
        noise = noise[..., None]
    return _like(image, pixels + noise, value_range)


def stroke_width(
    image: ImageLike, rng: np.random.Generator, radius: Range = (-1.0, 1.0)
) -> ImageLike:
    """Thicken (radius > 0) or thin (radius < 0) the strokes by grey morphology.

    The ink polarity is detected from the border, so "thicker" means more ink either way.
    The radius is rounded to whole pixels; 0 leaves the image unchanged.
    """
    pixels, value_range = _to_array(image)
    steps = round(_uniform(rng, radius))
    if steps == 0:
        return _like(image, pixels, value_range)
    size = 2 * abs(steps) + 1
    footprint = np.zeros((size, size), dtype=bool)
    yy, xx = np.ogrid[-abs(steps) : abs(steps) + 1, -abs(steps) : abs(steps) + 1]
    footprint[yy**2 + xx**2 <= steps**2 + 0.5] = True
    if pixels.ndim == 3:
        footprint = footprint[..., None]
    grow_ink = (steps > 0) == ink_is_dark(pixels)
    op = ndimage.grey_erosion if grow_ink else ndimage.grey_dilation
    return _like(image, op(pixels, footprint=footprint), value_range)


def brightness_contrast(
    image: ImageLike,
    rng: np.random.Generator,
    brightness: Range = (-0.15, 0.15),
    contrast: Range = (0.6, 1.2),
) -> ImageLike:
    """Scale contrast about the mean, then shift brightness (a fraction of the range)."""
    pixels, value_range = _to_array(image)
    gain = _uniform(rng, contrast)
    shift = _uniform(rng, brightness) * value_range
    mean = pixels.mean()
    return _like(image, (pixels - mean) * gain + mean + shift, value_range)


def invert(image: ImageLike) -> ImageLike:
    """Swap polarity: light ink on dark paper (a blackboard, a screenshot in dark mode)."""
    pixels, value_range = _to_array(image)
    return _like(image, value_range - pixels, value_range)


def random_ink_colour(rng: np.random.Generator, jitter: int = 20) -> tuple[int, int, int]:
    """One of :data:`INK_COLOURS`, each channel moved by up to ``jitter``."""
    base = np.array(INK_COLOURS[int(rng.integers(len(INK_COLOURS)))], dtype=np.int64)
    shifted = base + rng.integers(-jitter, jitter + 1, size=3)
    return tuple(int(v) for v in np.clip(shifted, 0, 255))  # type: ignore[return-value]


def paper_texture(
    height: int,
    width: int,
    rng: np.random.Generator,
    ruled: float = 0.25,
    shadow: float = 0.3,
) -> np.ndarray:
    """A procedural paper background, ``(height, width, 3)`` uint8.

    A tint (white, cream, grey, yellowed), low-frequency blotches (uneven light, stains),
    fine grain, with probability ``ruled`` faint ruled lines like a notebook, and with
    probability ``shadow`` a darkening ramp across the sheet like a phone photo's shadow.
    """
    tints = ((250, 250, 248), (245, 238, 220), (235, 235, 235), (240, 230, 200), (225, 225, 230))
    tint = np.array(tints[int(rng.integers(len(tints)))], dtype=np.float32)
    tint += rng.uniform(-12, 6, size=3).astype(np.float32)
    coarse = rng.standard_normal((max(2, height // 16), max(2, width // 16)))
    blotch = _resize(ndimage.gaussian_filter(coarse, 1.5).astype(np.float32), (width, height))
    blotch = blotch / (blotch.std() + 1e-8) * rng.uniform(2, 12)
    grain = rng.standard_normal((height, width), dtype=np.float32) * np.float32(rng.uniform(1, 5))
    paper = tint[None, None, :] + (blotch + grain)[..., None]
    if rng.random() < ruled:
        spacing = rng.uniform(0.6, 1.0) * height if height < 200 else rng.uniform(40, 70)
        offset = rng.uniform(0, spacing)
        line_colour = np.array([150, 180, 220], dtype=np.float32) + rng.uniform(-20, 20, 3)
        rows = np.arange(offset, height, spacing).astype(int)
        strength = rng.uniform(0.25, 0.6)
        for row in rows:
            paper[row] = paper[row] * (1 - strength) + line_colour * strength
    if rng.random() < shadow:
        angle = rng.uniform(0, 2 * np.pi)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        ramp = xs / max(width, 1) * np.cos(angle) + ys / max(height, 1) * np.sin(angle)
        ramp = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
        paper *= (1.0 - rng.uniform(0.15, 0.5) * ramp)[..., None]
    return np.clip(paper, 0, 255).astype(np.uint8)


def composite(ink: np.ndarray, background: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """Lay ink of ``colour`` onto ``background`` (H, W, 3) using ``ink`` (H, W) as opacity.

    ``ink`` is an ink map in [0, 1] (1 = full ink), as the renderer draws it. Returns uint8 RGB.
    """
    if ink.shape != background.shape[:2]:
        raise ValueError(f"ink {ink.shape} and background {background.shape[:2]} differ in size")
    alpha = np.clip(ink, 0.0, 1.0)[..., None].astype(np.float32)
    pen = np.array(colour, dtype=np.float32)[None, None, :]
    mixed = background.astype(np.float32) * (1 - alpha) + pen * alpha
    return np.clip(mixed, 0, 255).round().astype(np.uint8)
