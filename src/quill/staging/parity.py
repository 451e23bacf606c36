"""Check that every export reads the same text as the eager network it came from.

An export that silently diverges (a frozen dimension, an operator with other semantics) would
ship a different model than the one that was evaluated. Staging therefore decodes a fixed
sample set with eager PyTorch and with each exported file, once as a padded batch of unequal
widths (dynamic batch and width) and once per image (batch of 1), and refuses to stage
unless the decoded texts are identical.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from quill.models.decoding import ctc_greedy_decode
from quill.preprocess import ImageSource, PreprocessConfig, batch_images, preprocess
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

#: Runs (images (B,1,H,W) float32, widths (B,) int64) -> log_probs (B,T,C), lengths (B,).
Runner = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


class ParityError(RuntimeError):
    """An export decodes differently from eager PyTorch; the message lists the differences."""


def render_line(text: str, size: int = 40) -> Image.Image:
    """Dark text on a light, slightly uneven page: a deterministic stand-in for a scan."""
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = font.getbbox(text)
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
    max_abs_log_prob_diff: float
    median_ms: float
    mismatches: list[dict[str, str]] = field(default_factory=list)

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


def _decode(
    runner: Runner, inputs: list[np.ndarray], tokenizer: Tokenizer
) -> tuple[list[str], np.ndarray]:
    """Texts of the inputs run as one batch and then one by one, and the batch's log-probs."""
    batch, widths = batch_images(inputs)  # (B, 1, H, Wmax), (B,)
    log_probs, lengths = runner(batch, widths)
    texts = [tokenizer.decode(ids) for ids, _ in ctc_greedy_decode(log_probs, lengths)]
    for single in inputs:
        one, one_width = batch_images([single])  # (1, 1, H, W)
        lp, ln = runner(one, one_width)
        texts.append(tokenizer.decode(ctc_greedy_decode(lp, ln)[0][0]))
    return texts, log_probs


def _median_ms(runner: Runner, inputs: list[np.ndarray], repeats: int = 3) -> float:
    batch, widths = batch_images(inputs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner(batch, widths)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def onnx_runner(path: Path, threads: int | None = None) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(images: np.ndarray, widths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        log_probs, lengths = session.run(None, {"images": images, "widths": widths})
        return log_probs, lengths

    return run


def torch_runner(module) -> Runner:  # noqa: ANN001 - an nn.Module or a ScriptModule
    import torch

    def run(images: np.ndarray, widths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            log_probs, lengths = module(torch.from_numpy(images), torch.from_numpy(widths))
        return log_probs.numpy(), lengths.numpy()

    return run


def check_parity(
    eager: Runner, exports: dict[str, Runner], inputs: list[np.ndarray], tokenizer: Tokenizer
) -> ParityReport:
    """Compare each export with ``eager`` on ``inputs`` (decoded text and log-probabilities)."""
    reference, reference_lp = _decode(eager, inputs, tokenizer)
    results = []
    for name, runner in exports.items():
        texts, log_probs = _decode(runner, inputs, tokenizer)
        mismatches = [
            {"eager": want, "export": got}
            for want, got in zip(reference, texts, strict=True)
            if want != got
        ]
        results.append(
            BackendParity(
                backend=name,
                identical=len(reference) - len(mismatches),
                total=len(reference),
                max_abs_log_prob_diff=float(np.abs(log_probs - reference_lp).max()),
                median_ms=_median_ms(runner, inputs),
                mismatches=mismatches,
            )
        )
    return ParityReport(len(inputs), _median_ms(eager, inputs), results)
