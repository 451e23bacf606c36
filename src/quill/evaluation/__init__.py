"""One way to score text recognition, used by every part of Quill that scores a model.

- :func:`edit_distance`, per-text :func:`cer`/:func:`wer`, corpus rates
  (:func:`corpus_cer`, :func:`corpus_wer`, :func:`corpus_rates`, :class:`ErrorCounts`):
  raw texts, case-sensitive (``quill.evaluation.metrics``);
- :func:`normalise`: the one normalisation applied before scoring (``.normalise``);
- :func:`score` and :func:`score_slices`: normalised corpus CER/WER, case-sensitive and
  casefolded, for a set and each of its slices (``.slices``);
- :func:`paired_interval`: how sure a difference in CER between two models is, by a paired
  bootstrap over the samples' groups (``.bootstrap``).

Users: training's validation metric (``quill.training.metrics``), ``quill bench accuracy``
(``quill.bench``), ``quill evaluate`` and its report card, monitoring's shadow disagreement
and baseline (``quill.monitoring``), the decoding tuner (``quill.inference``).

Layer: this package sits at the bottom with ``quill.vocab``. It imports numpy and the
standard library only, never another Quill layer, so every layer may import it.
"""

from __future__ import annotations

from quill.evaluation.bootstrap import paired_interval
from quill.evaluation.metrics import (
    ErrorCounts,
    cer,
    corpus_cer,
    corpus_rates,
    corpus_wer,
    edit_distance,
    wer,
)
from quill.evaluation.normalise import normalise
from quill.evaluation.slices import ALL, Item, Score, SliceScore, score, score_slices, slice_groups

__all__ = [
    "ALL",
    "ErrorCounts",
    "Item",
    "Score",
    "SliceScore",
    "cer",
    "corpus_cer",
    "corpus_rates",
    "corpus_wer",
    "edit_distance",
    "normalise",
    "paired_interval",
    "score",
    "score_slices",
    "slice_groups",
    "wer",
]
