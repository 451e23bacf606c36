"""Projections: small numbers computed from each input image and each output text.

A model's accuracy in production is unknown (nobody labels the traffic), but the
*distribution* of cheap summaries of what goes in and what comes out is observable. The
reference system's worst bug (users sent dark ink on white paper, the model had been
trained on inverted images) showed up only as a shift in pixel intensity and as outputs of
repetitive, low-entropy gibberish: exactly :func:`mean_intensity`, :func:`polarity`,
:func:`char_entropy` and :func:`repetition` below.

A projection is a plain function of a :class:`ProjectionInput` returning a float (or
``None`` when it does not apply, e.g. an input projection when no image was kept).
Register one with :func:`projection`; ``quill monitor backfill`` computes new ones over
everything already stored.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache, cached_property
from importlib import resources
from typing import Literal

import numpy as np
from PIL import Image

from quill.preprocess import is_grey
from quill.vocab import Tokenizer

Kind = Literal["input", "output"]
#: Input projections look at a copy whose longer side is at most this many pixels, so their
#: cost is bounded and sharpness measures compare images of different resolutions.
ANALYSIS_SIDE = 1024
_PUNCTUATION = frozenset(string.punctuation + "£")
#: Words the profanity list flags that are ordinary in Quill's own data: the real letters
#: are signed by the botanist J. D. Hooker.
OFFENSIVE_ALLOWLIST = ["hooker", "hookers"]


@dataclass
class ProjectionInput:
    """Everything a projection may look at for one prediction (or one baseline sample).

    Derived arrays are computed once, on first use, and shared by all projections.
    """

    text: str
    confidence: float | None = None
    image: Image.Image | None = None
    tokenizer: Tokenizer = field(default_factory=Tokenizer)

    @cached_property
    def analysed(self) -> Image.Image | None:
        """The image the input projections read: longer side at most ANALYSIS_SIDE, in mode L
        when it is grey (a scan, or one saved in colour with three equal channels, whose L copy
        is exact), else RGB."""
        if self.image is None:
            return None
        image = self.image if self.image.mode == "L" else self.image.convert("RGB")
        if max(image.size) > ANALYSIS_SIDE:
            image = image.copy()
            image.thumbnail((ANALYSIS_SIDE, ANALYSIS_SIDE), Image.Resampling.BILINEAR)
        return image.convert("L") if image.mode == "RGB" and is_grey(image) else image

    @cached_property
    def grey_levels(self) -> np.ndarray | None:
        """(H, W) uint8 of a grey input (mode L), None for a colour one or none: a grey image's
        luminance is its level / 255 (BT.601's weights sum to 1), and its median and
        colourfulness follow from its levels, at a fraction of the float arrays' cost."""
        analysed = self.analysed
        return None if analysed is None or analysed.mode != "L" else np.asarray(analysed)

    @cached_property
    def rgb(self) -> np.ndarray | None:
        """(H, W, 3) float32 in [0, 1], longer side at most ANALYSIS_SIDE."""
        analysed = self.analysed
        if analysed is None:
            return None
        return np.asarray(analysed.convert("RGB"), dtype=np.float32) / 255.0

    @cached_property
    def gray(self) -> np.ndarray | None:
        """(H, W) float32 luminance in [0, 1] (ITU-R BT.601 weights; a grey input's levels /
        255, which the weighted sum of its three equal channels gives within 6e-8)."""
        if self.grey_levels is not None:
            return _LEVELS[self.grey_levels]
        rgb = self.rgb
        if rgb is None:
            return None
        return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)

    @cached_property
    def visible(self) -> str:
        """The text without whitespace: shares are taken over visible characters."""
        return "".join(self.text.split())


#: Each grey level's luminance, as :attr:`ProjectionInput.gray` reads a grey image.
_LEVELS = np.arange(256, dtype=np.float32) / 255.0


def _median_luminance(levels: np.ndarray) -> float:
    """``np.median`` of the luminance of grey ``levels`` (uint8), from their histogram: the
    middle level, or the mean of the two middle ones, as NumPy takes them.

    >>> levels = np.array([[0, 255, 128, 128]], dtype=np.uint8)
    >>> _median_luminance(levels) == float(np.median(_LEVELS[levels]))
    True
    """
    cumulative = np.cumsum(np.bincount(levels.ravel(), minlength=256))
    count = int(cumulative[-1])
    middle = np.searchsorted(cumulative, [(count - 1) // 2 + 1, count // 2 + 1])
    return float(np.mean(_LEVELS[middle]))


ProjectionFn = Callable[[ProjectionInput], float | None]


@dataclass(frozen=True)
class Projection:
    """A registered projection: its name is the column it fills in the store."""

    name: str
    kind: Kind
    fn: ProjectionFn
    description: str

    def __call__(self, data: ProjectionInput) -> float | None:
        value = self.fn(data)
        return None if value is None else float(value)


REGISTRY: dict[str, Projection] = {}


def projection(name: str, kind: Kind) -> Callable[[ProjectionFn], ProjectionFn]:
    """Decorator registering ``fn`` as projection ``name`` (its docstring describes it)."""

    def register(fn: ProjectionFn) -> ProjectionFn:
        if name in REGISTRY:
            raise ValueError(f"projection {name!r} is already registered")
        description = (fn.__doc__ or name).strip().splitlines()[0]
        REGISTRY[name] = Projection(name, kind, fn, description)
        return fn

    return register


def get_projections(names: Iterable[str] | None = None) -> list[Projection]:
    """Registered projections (all, or those named; unknown names are an error)."""
    if names is None:
        return list(REGISTRY.values())
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise KeyError(f"unknown projection(s) {unknown}; known: {sorted(REGISTRY)}")
    return [REGISTRY[n] for n in names]


def compute(data: ProjectionInput, names: Iterable[str] | None = None) -> dict[str, float | None]:
    """Every (or the named) projection of one prediction."""
    return {p.name: p(data) for p in get_projections(names)}


# ---- output projections -------------------------------------------------------------------


def shannon_entropy(text: str) -> float:
    """Entropy in bits of the character distribution of ``text`` (0 for empty text).

    >>> shannon_entropy("aaaa")
    0.0
    >>> shannon_entropy("abab")
    1.0
    """
    if not text:
        return 0.0
    counts = np.array(list(Counter(text).values()), dtype=np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum() + 0.0)


def repetition_score(text: str, n: int = 3) -> float:
    """Share of character n-grams that repeat an earlier one (0: none, near 1: a loop).

    >>> repetition_score("abcdef")
    0.0
    >>> round(repetition_score("the the the the"), 2)
    0.69
    """
    grams = [text[i : i + n] for i in range(len(text) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


@projection("length", "output")
def length(data: ProjectionInput) -> float:
    """Number of characters in the output."""
    return len(data.text)


@projection("char_entropy", "output")
def char_entropy(data: ProjectionInput) -> float:
    """Entropy (bits) of the output's characters; gibberish loops score low."""
    return shannon_entropy(data.text)


@projection("repetition", "output")
def repetition(data: ProjectionInput) -> float:
    """Share of repeated character trigrams in the output."""
    return repetition_score(data.text)


@projection("oov_rate", "output")
def oov_rate(data: ProjectionInput) -> float | None:
    """Share of characters outside the model's vocabulary (corrections, imported labels)."""
    if not data.text:
        return None
    known = set(data.tokenizer.characters)
    return sum(c not in known for c in data.text) / len(data.text)


@projection("confidence", "output")
def confidence(data: ProjectionInput) -> float | None:
    """The model's confidence in its output."""
    return data.confidence


@projection("digit_share", "output")
def digit_share(data: ProjectionInput) -> float | None:
    """Share of visible characters that are digits."""
    if not data.visible:
        return None
    return sum(c.isdigit() for c in data.visible) / len(data.visible)


@projection("punct_share", "output")
def punct_share(data: ProjectionInput) -> float | None:
    """Share of visible characters that are punctuation."""
    if not data.visible:
        return None
    return sum(c in _PUNCTUATION for c in data.visible) / len(data.visible)


@projection("offensive", "output")
def offensive(data: ProjectionInput) -> float | None:
    """Share of words on better-profanity's offline word list."""
    words = _words(data.text)
    if not words:
        return None
    listed, longest = _wordlist()
    hits = [False] * len(words)
    for n in range(1, longest + 1):
        for start in range(len(words) - n + 1):
            if " ".join(words[start : start + n]) in listed:
                hits[start : start + n] = [True] * n
    return sum(hits) / len(words)


#: Digits and symbols written for letters ("sh1t", "@ss"), as better-profanity reads them.
_LEET = str.maketrans({"@": "a", "4": "a", "1": "i", "0": "o", "3": "e", "$": "s", "5": "s"})


def _words(text: str) -> list[str]:
    """Lower-case words with look-alike characters mapped to letters.

    >>> _words("You're a SH1T, J. D. Hooker!")
    ["you're", 'a', 'shit', 'j', 'd', 'hooker']
    """
    return [w.strip("'") for w in re.findall(r"[\w@$']+", text.lower().translate(_LEET))]


@cache
def _wordlist() -> tuple[frozenset[str], int]:
    """better-profanity's shipped list (minus :data:`OFFENSIVE_ALLOWLIST`) and its longest
    phrase in words. Matched by set lookup: the library's own ``censor()`` compares every
    word with every variant of every entry and took ~60 ms per line here."""
    text = resources.files("better_profanity").joinpath("profanity_wordlist.txt").read_text()
    entries = {line.strip().lower() for line in text.splitlines() if line.strip()}
    entries -= set(OFFENSIVE_ALLOWLIST)
    return frozenset(entries), max(len(e.split()) for e in entries)


# ---- input projections --------------------------------------------------------------------


@projection("width", "input")
def width(data: ProjectionInput) -> float | None:
    """Width of the input image in pixels."""
    return None if data.image is None else data.image.width


@projection("height", "input")
def height(data: ProjectionInput) -> float | None:
    """Height of the input image in pixels."""
    return None if data.image is None else data.image.height


@projection("aspect", "input")
def aspect(data: ProjectionInput) -> float | None:
    """Width over height: lines are wide, paragraphs and photos are not."""
    return None if data.image is None else data.image.width / data.image.height


@projection("mean_intensity", "input")
def mean_intensity(data: ProjectionInput) -> float | None:
    """Mean luminance in [0, 1]: high for dark ink on white paper."""
    return None if data.gray is None else float(data.gray.mean())


@projection("contrast", "input")
def contrast(data: ProjectionInput) -> float | None:
    """Standard deviation of luminance (RMS contrast)."""
    return None if data.gray is None else float(data.gray.std())


@projection("polarity", "input")
def polarity(data: ProjectionInput) -> float | None:
    """1 for dark-on-light (the paper, most pixels, is brighter than mid-grey), else 0."""
    if data.grey_levels is not None:
        return float(_median_luminance(data.grey_levels) >= 0.5)
    return None if data.gray is None else float(np.median(data.gray) >= 0.5)


@projection("colourfulness", "input")
def colourfulness(data: ProjectionInput) -> float | None:
    """Hasler & Süsstrunk (2003) colourfulness on [0, 1] RGB: 0 for grey, ~0.4 vivid."""
    if data.grey_levels is not None:
        return 0.0  # equal channels: both opponent colours are 0 at every pixel
    rgb = data.rgb
    if rgb is None:
        return None
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    return float(math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean()))


@projection("blur", "input")
def blur(data: ProjectionInput) -> float | None:
    """Variance of the Laplacian of luminance: low means blurred or empty."""
    gray = data.gray
    if gray is None or min(gray.shape) < 3:
        return None
    # 4-neighbour Laplacian over the interior, (H-2, W-2)
    lap = gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4 * gray[1:-1, 1:-1]
    return float(lap.var())
