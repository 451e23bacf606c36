"""Check that every export reads the same text as the eager network it came from.

An export that silently diverges (a frozen dimension, an operator with other semantics) would
ship a different model than the one that was evaluated. Staging therefore decodes a fixed
sample set with eager PyTorch and with each exported runtime exactly as inference will run
it (``quill.runtimes.backends``), once as a padded batch of unequal widths (dynamic batch
and width) and once per image (batch of 1), and refuses to stage unless the decoded texts
are identical.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from quill.errors import QuillError
from quill.evaluation.metrics import corpus_cer
from quill.models.decoding import Decoded
from quill.preprocess import ImageSource, PreprocessConfig, batch_images, preprocess
from quill.runtimes.backends import median_decode_ms
from quill.vocab import Tokenizer

#: The fixed sentences rendered when no sample images are given: mixed case, digits,
#: punctuation and widths from one word to a long line.
SAMPLE_TEXTS = (
    "Dear Sir,",
    "the quick brown fox jumps over the lazy dog",
    "Kew, 14 March 1887.",
    "I am yours very truly",
    "Stapf will complicate my work",
    "£3 10s. - paid?",
    "a",
    "African grasses -- These come to hard blows",
)


class Runtime(Protocol):
    """What parity runs: ``quill.runtimes.backends`` runtimes and in-memory modules."""

    def decode(self, images: np.ndarray, widths: np.ndarray) -> list[Decoded]: ...


class ParityError(QuillError, RuntimeError):
    """An export decodes differently from eager PyTorch; the message lists the differences."""

    code = "export_parity_failed"


def render_line(text: str, size: int = 40) -> Image.Image:
    """Dark text on a light, slightly uneven page: a deterministic stand-in for a scan."""
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = (int(v) for v in font.getbbox(text))
    image = Image.new("RGB", (right - left + 2 * size, bottom - top + size), (246, 242, 232))
    ImageDraw.Draw(image).text((size - left, size // 2 - top), text, fill=(30, 30, 60), font=font)
    return image


def sample_inputs(
    config: PreprocessConfig, sources: Sequence[ImageSource] = ()
) -> list[np.ndarray]:
    """Preprocessed (H, W) inputs: ``sources`` if given, else the rendered sample sentences."""
    images = list(sources) or [render_line(text) for text in SAMPLE_TEXTS]
    return [preprocess(image, config) for image in images]


@dataclass
class BackendParity:
    """How one export compared with eager on the sample set."""

    backend: str
    identical: int
    total: int
    max_confidence_diff: float
    median_ms: float
    mismatches: list[dict[str, str]] = field(default_factory=list)
    #: CER of its texts with the reference's as reference: 0 for an exact export, the
    #: measure of an int8 copy (``quill.staging.quantize``).
    drift_cer: float = 0.0

    @property
    def passed(self) -> bool:
        return self.identical == self.total


@dataclass
class ParityReport:
    samples: int
    eager_median_ms: float
    backends: list[BackendParity]

    @property
    def passed(self) -> bool:
        return all(b.passed for b in self.backends)

    def to_dict(self) -> dict:
        return {
            "samples": self.samples,
            "passed": self.passed,
            "eager_median_ms": round(self.eager_median_ms, 3),
            "backends": {
                b.backend: {**asdict(b), "passed": b.passed, "median_ms": round(b.median_ms, 3)}
                for b in self.backends
            },
        }

    def raise_for_failure(self) -> None:
        failed = [b for b in self.backends if not b.passed]
        if failed:
            lines = [
                f"{b.backend}: {b.identical}/{b.total} identical; first differences: "
                + "; ".join(f"{m['eager']!r} vs {m['export']!r}" for m in b.mismatches[:3])
                for b in failed
            ]
            raise ParityError("export differs from eager PyTorch: " + " | ".join(lines))


def _decode(runtime: Runtime, inputs: list[np.ndarray]) -> list[Decoded]:
    """The inputs decoded as one padded batch, then one by one (2 x len(inputs) results)."""
    batch, widths = batch_images(inputs)  # (B, 1, H, Wmax), (B,)
    results = runtime.decode(batch, widths)
    for single in inputs:
        results += runtime.decode(*batch_images([single]))  # (1, 1, H, W)
    return results


def check_parity(
    eager: Runtime, exports: Mapping[str, Runtime], inputs: list[np.ndarray], tokenizer: Tokenizer
) -> ParityReport:
    """Compare each export with ``eager`` (or another reference runtime) on ``inputs``:
    decoded text and confidence."""
    reference = _decode(eager, inputs)
    want = [tokenizer.decode(ids) for ids, _ in reference]
    results = []
    for name, runtime in exports.items():
        decoded = _decode(runtime, inputs)
        got = [tokenizer.decode(ids) for ids, _ in decoded]
        mismatches = [{"eager": w, "export": g} for w, g in zip(want, got, strict=True) if w != g]
        results.append(
            BackendParity(
                backend=name,
                identical=len(want) - len(mismatches),
                total=len(want),
                max_confidence_diff=max(
                    abs(a[1] - b[1]) for a, b in zip(reference, decoded, strict=True)
                ),
                median_ms=median_decode_ms(runtime, *batch_images(inputs)),
                mismatches=mismatches,
                drift_cer=round(corpus_cer(got, want), 5),
            )
        )
    return ParityReport(len(inputs), median_decode_ms(eager, *batch_images(inputs)), results)
