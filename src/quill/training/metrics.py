"""Character and word error rates, case-sensitive, through torchmetrics.

torchmetrics' ``CharErrorRate`` and ``WordErrorRate`` accumulate edit distances and reference
lengths over a whole epoch (and sync them across DDP processes), so the epoch value is the
corpus-level rate (total edits / total reference characters), not a mean of per-line rates
that would over-weight short lines. Neither lower-cases: "Kew" read as "kew" is an error,
because a transcription tool that loses capitals is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from torchmetrics.text import CharErrorRate, WordErrorRate


class TextMetrics(nn.Module):
    """CER and WER of one stage (val or test), updated per batch and computed per epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.cer = CharErrorRate()
        self.wer = WordErrorRate()

    def update(self, predictions: Sequence[str], references: Sequence[str]) -> None:
        self.cer.update(list(predictions), list(references))
        self.wer.update(list(predictions), list(references))

    def compute(self) -> dict[str, float]:
        return {"cer": float(self.cer.compute()), "wer": float(self.wer.compute())}

    def reset(self) -> None:
        self.cer.reset()
        self.wer.reset()


def character_error_rate(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus CER: total character edits / total reference characters.

    >>> round(character_error_rate(["helo world"], ["hello world"]), 4)
    0.0909
    >>> round(character_error_rate(["Kew"], ["kew"]), 4)
    0.3333
    """
    return float(CharErrorRate()(list(predictions), list(references)))


def word_error_rate(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus WER: total word edits / total reference words.

    >>> word_error_rate(["the cat sat"], ["the cat sat down"])
    0.25
    """
    return float(WordErrorRate()(list(predictions), list(references)))
