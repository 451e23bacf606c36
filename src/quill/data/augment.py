"""Training-time augmentation of real and synthetic images, before preprocessing.

The reference system's deployed model failed on what users actually sent: inverted
polarity, coloured ink, busy paper, photos. Augmentation shows a training image in those
guises, composing the distortions of :mod:`quill.data.distort` on the PIL image *before*
:func:`quill.preprocess.preprocess`, so the model learns on exactly what inference sees
after the same normalisation. Validation and test data are never augmented.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from quill.data import distort
from quill.preprocess import PreprocessConfig, ink_map
from quill.strict_dict import strict_from_dict

Range = tuple[float, float]
#: Images are shrunk to at most this multiple of the model input before distortion.
BOUND = 1.5


@dataclass(frozen=True)
class AugmentConfig:
    """Probability of each distortion per sample, and its strength range.

    Defaults are moderate: most samples get two or three changes, few are left untouched.
    """

    slant: float = 0.5
    slant_range: Range = (-0.3, 0.3)
    rotate: float = 0.3
    rotate_degrees: Range = (-2.0, 2.0)
    elastic: float = 0.3
    elastic_alpha: Range = (0.5, 2.0)
    baseline_wave: float = 0.2
    stroke_width: float = 0.2
    perspective: float = 0.1
    #: Redraw the ink in a random pen colour on procedural paper (texture, stains, rules).
    recolour: float = 0.3
    #: Light ink on dark paper.
    invert: float = 0.2
    contrast: float = 0.3
    #: Lower the resolution (a distant photo, a low-dpi scan) by this factor range.
    downscale: float = 0.3
    downscale_range: Range = (0.35, 0.8)
    blur: float = 0.3
    blur_sigma: Range = (0.3, 1.2)
    noise: float = 0.3
    noise_std: Range = (0.01, 0.05)
    #: Move the line up or down by this many pixels of the model's input after it is fitted
    #: to the height (cached ink maps only): a hand's letters sit anywhere in the window, and
    #: the network, which never saw them moved, read them better averaged over shifts
    #: (:mod:`quill.inference.shifts`). Off by default: 0 draws nothing, so the other
    #: distortions' random draws stay those of earlier runs.
    shift: float = 0.0
    shift_pixels: Range = (-3.0, 3.0)
    #: Frame the line as a loose crop or a segmenter frames it (cached ink maps only): the
    #: lines above and below it (two other lines of the batch) are stacked around it,
    #: ``neighbour_gap`` line heights away, and the window cut ``neighbour_margin`` line
    #: heights above and below it, so their descenders and ascenders come in at the edges
    #: and the line is shrunk within the model's height. A network trained on tight crops
    #: alone read a line cut with a third of its height added above and below at 40% CER
    #: instead of 5% (docs/models.md). Off by default, as ``shift``.
    neighbours: float = 0.0
    neighbour_margin: Range = (0.1, 0.45)
    neighbour_gap: Range = (0.0, 0.3)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "AugmentConfig") -> AugmentConfig:
        """Fields from a YAML or JSON mapping (ranges as lists); a key that is not a field
        is a :class:`~quill.errors.ConfigError` naming it and the allowed ones.

        >>> AugmentConfig.from_dict({"invert": 0.5, "blur_sigma": [0.1, 0.2]}).blur_sigma
        (0.1, 0.2)
        """
        return strict_from_dict(cls, data, where)


class Augmenter:
    """Applies a random subset of distortions to a PIL image, reproducibly from a generator.

    The distortions cost per pixel and channel, so images much larger than the model input
    are first shrunk to 1.5 times its size (preprocessing would discard that detail anyway),
    and grey images are warped as one channel, not three.
    """

    def __init__(
        self, config: AugmentConfig | None = None, preprocess: PreprocessConfig | None = None
    ):
        self.config = config or AugmentConfig()
        preprocess = preprocess or PreprocessConfig()
        if preprocess.kind == "paragraph":
            size = (preprocess.paragraph_width, preprocess.paragraph_height)
        else:
            size = (preprocess.max_width, preprocess.height)
        self.max_size = (round(size[0] * BOUND), round(size[1] * BOUND))

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        """A distorted RGB copy of ``image``."""
        c = self.config
        image = _bound(image, self.max_size)
        image = image.convert("L") if _is_grey(image) else image.convert("RGB")
        geometric = (
            (c.slant, lambda im: distort.shear(im, rng, c.slant_range)),
            (c.rotate, lambda im: distort.rotate(im, rng, c.rotate_degrees)),
            (c.elastic, lambda im: distort.elastic(im, rng, c.elastic_alpha)),
            (c.baseline_wave, lambda im: distort.baseline_wave(im, rng)),
            (c.stroke_width, lambda im: distort.stroke_width(im, rng, _stroke_radius(im))),
            (c.perspective, lambda im: distort.perspective(im, rng)),
        )
        appearance = (
            (c.recolour, lambda im: _recolour(im, rng)),
            (c.invert, distort.invert),
            (c.contrast, lambda im: distort.brightness_contrast(im, rng)),
            (c.downscale, lambda im: distort.scale(im, rng, c.downscale_range)),
            (c.blur, lambda im: distort.blur(im, rng, c.blur_sigma)),
            (c.noise, lambda im: distort.gaussian_noise(im, rng, c.noise_std)),
        )
        for probability, apply in geometric:
            if probability > 0 and rng.random() < probability:
                image = apply(image)
        image = image.convert("RGB")
        for probability, apply in appearance:
            if probability > 0 and rng.random() < probability:
                image = apply(image)
        return image


def _is_grey(image: Image.Image) -> bool:
    """Whether an image has no colour (checked on a thumbnail; scans saved as RGB count)."""
    if image.mode in ("1", "L", "LA", "I", "I;16", "F"):
        return True
    small = np.asarray(image.convert("RGB").resize((32, 8)), dtype=np.int16)  # (8, 32, 3)
    return int(np.abs(small - small.mean(axis=2, keepdims=True)).max()) <= 3


def _bound(image: Image.Image, max_size: tuple[int, int]) -> Image.Image:
    """Shrink ``image`` (keeping its aspect) to fit ``max_size`` (w, h); never enlarge."""
    factor = min(max_size[0] / image.width, max_size[1] / image.height)
    if factor >= 1:
        return image
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.BILINEAR)


def _stroke_radius(image: Image.Image) -> Range:
    """Thicken or thin by one pixel only on images tall enough to keep thin strokes."""
    return (-1.0, 1.0) if image.height >= 48 else (0.0, 1.0)


def _recolour(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The same strokes in another pen on other paper: ink map composited onto a texture."""
    ink = ink_map(image)  # (H, W) in [0, 1]
    paper = distort.paper_texture(image.height, image.width, rng)  # (H, W, 3) uint8
    return Image.fromarray(distort.composite(ink, paper, distort.random_ink_colour(rng)))
