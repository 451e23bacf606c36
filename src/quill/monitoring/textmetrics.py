"""Character and word error rates, without a tensor library.

Monitoring compares texts (a shadow model against the current one, a candidate against the
labels) inside the serving process and in ``quill evaluate``, where loading torchmetrics
for an edit distance would cost more than the comparison.
"""

from __future__ import annotations

from collections.abc import Sequence


def edit_distance(a: Sequence[object], b: Sequence[object]) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1).

    >>> edit_distance("kitten", "sitting")
    3
    >>> edit_distance("the cat".split(), "the hat".split())
    1
    """
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, item in enumerate(a, 1):
        current = [i]
        for j, other in enumerate(b, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (item != other))
            )
        previous = current
    return previous[-1]


def cer(prediction: str, reference: str) -> float:
    """Character error rate of one text (1.0 for any output against an empty reference).

    >>> cer("helo", "hello")
    0.2
    >>> cer("", "")
    0.0
    """
    if not reference:
        return float(bool(prediction))
    return edit_distance(prediction, reference) / len(reference)


def corpus_rates(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """CER and WER over a set: total edits over total reference length (not a mean of
    per-line rates, which lets short lines dominate).

    >>> corpus_rates(["helo world", "ok"], ["hello world", "ok"])
    {'cer': 0.0769..., 'wer': 0.3333...}
    """
    chars = words = char_total = word_total = 0
    for prediction, reference in zip(predictions, references, strict=True):
        chars += edit_distance(prediction, reference)
        words += edit_distance(prediction.split(), reference.split())
        char_total += len(reference)
        word_total += len(reference.split())
    return {"cer": chars / max(char_total, 1), "wer": words / max(word_total, 1)}
