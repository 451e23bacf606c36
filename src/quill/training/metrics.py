"""Character and word error rates as torchmetrics metrics, counted by :mod:`quill.evaluation`.

The edit distance is :func:`quill.evaluation.edit_distance`, the one every Quill score uses,
so the validation CER, ``quill bench accuracy`` and ``quill evaluate`` cannot disagree on how
edits are counted. torchmetrics' ``Metric`` supplies what a training loop needs on top:
edits and reference lengths accumulate over a whole epoch and are summed across DDP
processes, so the epoch value is the corpus-level rate (total edits / total reference
characters), not a mean of per-line rates that would over-weight short lines. Neither
lower-cases nor normalises: "Kew" read as "kew" is an error, because a transcription tool
that loses capitals is wrong (training labels are normalised when the dataset is read).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchmetrics import Metric

from quill.evaluation import edit_distance


class _EditRate(Metric):
    """Total edits / total reference length over every update (at least one, as
    :class:`quill.evaluation.ErrorCounts` divides), in characters or words."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    #: Whether the texts are compared as sequences of whitespace-separated words.
    words = False

    edits: torch.Tensor
    total: torch.Tensor

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("edits", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predictions: Sequence[str], references: Sequence[str]) -> None:
        edits = total = 0
        for prediction, reference in zip(predictions, references, strict=True):
            if self.words:
                predicted, expected = prediction.split(), reference.split()
                edits += edit_distance(predicted, expected)
                total += len(expected)
            else:
                edits += edit_distance(prediction, reference)
                total += len(reference)
        self.edits += edits
        self.total += total

    def compute(self) -> torch.Tensor:
        return self.edits.float() / self.total.clamp(min=1)


class CharErrorRate(_EditRate):
    """Corpus CER of an epoch: character edits / reference characters."""


class WordErrorRate(_EditRate):
    """Corpus WER of an epoch: word edits / reference words."""

    words = True


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
