"""Edit distance, and character and word error rates per text and over a corpus.

Everything that scores text in Quill counts edits here: the training loop's validation
metric, ``quill bench accuracy``, ``quill evaluate`` (the promotion gate), monitoring's
shadow comparison and baseline, the decoding tuner. A corpus rate is total edits over total
reference length (characters, or whitespace-separated words), not a mean of per-text rates,
which would let short lines dominate. Nothing here lower-cases or normalises: "Kew" read as
"kew" is an error; :func:`quill.evaluation.score` applies the normalisation and adds the
case-insensitive rates.

Pure Python and numpy only, so the serving process and ``quill --help`` never load a tensor
library for an edit distance.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

#: Above this many cells (len(a) * len(b)) the distance is computed a row at a time with
#: numpy; below it, a plain loop is faster than numpy's per-call overhead.
_NUMPY_CELLS = 1024


def edit_distance(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1) between two
    strings, or two sequences of words.

    >>> edit_distance("kitten", "sitting"), edit_distance("", "abc"), edit_distance("ab", "ab")
    (3, 3, 0)
    >>> edit_distance("the cat".split(), "the hat".split())
    1
    """
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    if len(a) * len(b) > _NUMPY_CELLS:
        return _edit_distance_rows(a, b)
    previous = list(range(len(b) + 1))
    for i, item in enumerate(a, 1):
        current = [i]
        for j, other in enumerate(b, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (item != other))
            )
        previous = current
    return previous[-1]


def _edit_distance_rows(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """The same distance, one numpy row per item of ``a`` (``b`` the shorter).

    Deletions and substitutions come from the previous row; insertions chain along the row,
    ``row[j] = min over k <= j of (row[k] + j - k)``, which is a running minimum of
    ``row - j`` plus ``j``.
    """
    codes: dict[Hashable, int] = {}
    first = [codes.setdefault(item, len(codes)) for item in a]
    second = np.array([codes.setdefault(item, len(codes)) for item in b], dtype=np.int64)
    ramp = np.arange(len(b) + 1, dtype=np.int64)
    previous = ramp.copy()
    current = np.empty_like(previous)
    for i, code in enumerate(first, 1):
        current[0] = i
        np.minimum(previous[:-1] + (second != code), previous[1:] + 1, out=current[1:])
        current -= ramp
        np.minimum.accumulate(current, out=current)
        current += ramp
        previous, current = current, previous
    return int(previous[-1])


@dataclass(frozen=True)
class ErrorCounts:
    """Edits and reference lengths summed over texts: what a corpus rate is made of.

    Counts add (``a + b``), so batches, slices and processes combine exactly.
    """

    char_edits: int = 0
    chars: int = 0
    word_edits: int = 0
    words: int = 0

    @classmethod
    def of(cls, predictions: Sequence[str], references: Sequence[str]) -> ErrorCounts:
        """The counts of ``predictions`` against ``references`` (aligned, same length).

        >>> ErrorCounts.of(["helo world", "ok"], ["hello world", "ok"])
        ErrorCounts(char_edits=1, chars=13, word_edits=1, words=3)
        """
        char_edits = chars = word_edits = words = 0
        for prediction, reference in zip(predictions, references, strict=True):
            predicted_words, reference_words = prediction.split(), reference.split()
            char_edits += edit_distance(prediction, reference)
            chars += len(reference)
            word_edits += edit_distance(predicted_words, reference_words)
            words += len(reference_words)
        return cls(char_edits, chars, word_edits, words)

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(
            self.char_edits + other.char_edits,
            self.chars + other.chars,
            self.word_edits + other.word_edits,
            self.words + other.words,
        )

    @property
    def cer(self) -> float:
        """Character edits / reference characters (edits / 1 when there are none)."""
        return self.char_edits / max(self.chars, 1)

    @property
    def wer(self) -> float:
        """Word edits / reference words (edits / 1 when there are none)."""
        return self.word_edits / max(self.words, 1)


def corpus_cer(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus CER: total character edits / total reference characters.

    >>> round(corpus_cer(["helo world"], ["hello world"]), 4)
    0.0909
    >>> round(corpus_cer(["Kew"], ["kew"]), 4)
    0.3333
    """
    return ErrorCounts.of(predictions, references).cer


def corpus_wer(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus WER: total word edits / total reference words.

    >>> corpus_wer(["the cat sat"], ["the cat sat down"])
    0.25
    """
    return ErrorCounts.of(predictions, references).wer


def corpus_rates(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus CER and WER together.

    >>> rates = corpus_rates(["helo world", "ok"], ["hello world", "ok"])
    >>> round(rates["cer"], 4), round(rates["wer"], 4)
    (0.0769, 0.3333)
    """
    counts = ErrorCounts.of(predictions, references)
    return {"cer": counts.cer, "wer": counts.wer}


def cer(prediction: str, reference: str) -> float:
    """Character error rate of one text (1.0 for any output against an empty reference).

    >>> cer("helo", "hello")
    0.2
    >>> cer("", ""), cer("x", "")
    (0.0, 1.0)
    """
    if not reference:
        return float(bool(prediction))
    return edit_distance(prediction, reference) / len(reference)


def wer(prediction: str, reference: str) -> float:
    """Word error rate of one text (1.0 for any words against a reference without any).

    >>> wer("the cat sat", "the cat sat down"), wer("", " ")
    (0.25, 0.0)
    """
    words = reference.split()
    if not words:
        return float(bool(prediction.split()))
    return edit_distance(prediction.split(), words) / len(words)
