"""Scoring readings against references, for a whole set and for each slice of it.

An :class:`Item` is one reference, what a system read, and the slices the item counts in
(``{"source": "iam", "polarity": "light-on-dark"}``). :func:`score_slices` turns a list of
items into rows: one for the whole set (:data:`ALL`), then one per ``(key, value)`` slice,
each a :class:`Score` over its members. Both the benchmark (``quill bench accuracy``) and the
report card (``quill evaluate``) score this way, so their figures are comparable.

Every score is corpus-level (total edits over total reference characters or words of the
slice) over :func:`~quill.evaluation.normalise.normalise`\\ d texts, case-sensitive and
casefolded: the case-insensitive column shows how much of the error is capitals alone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from quill.evaluation.metrics import ErrorCounts
from quill.evaluation.normalise import normalise

#: Slice key of the row covering the whole set.
ALL = "all"


@dataclass(frozen=True)
class Score:
    """Error rates of one system on one set or slice (of normalised texts)."""

    n: int
    chars: int
    words: int
    cer: float
    cer_nocase: float
    wer: float
    wer_nocase: float
    failures: int


def score(predictions: Sequence[str], references: Sequence[str], failures: int = 0) -> Score:
    """Corpus CER/WER of normalised texts, case-sensitive and casefolded.

    ``failures`` is how many of the predictions stand for a reading that failed (scored as
    read, usually empty); it is carried into the score for the report.

    >>> s = score(["Dear sir"], ["Dear Sir"])
    >>> s.cer, s.cer_nocase, s.wer, s.wer_nocase
    (0.125, 0.0, 0.5, 0.0)
    """
    predicted = [normalise(text) for text in predictions]
    expected = [normalise(text) for text in references]
    counts = ErrorCounts.of(predicted, expected)
    folded = ErrorCounts.of(
        [text.casefold() for text in predicted], [text.casefold() for text in expected]
    )
    return Score(
        n=len(expected),
        chars=counts.chars,
        words=counts.words,
        cer=counts.cer,
        cer_nocase=folded.cer,
        wer=counts.wer,
        wer_nocase=folded.wer,
        failures=failures,
    )


@dataclass(frozen=True)
class Item:
    """One reference text, what a system read for it, and the slices it counts in."""

    reference: str
    hypothesis: str
    slices: Mapping[str, str] = field(default_factory=dict)
    #: The system failed on this item (``hypothesis`` then holds what is scored, say "").
    failed: bool = False


@dataclass(frozen=True)
class SliceScore:
    """One row: a slice (``(ALL, "")`` for the whole set), its members and their score."""

    key: str
    value: str
    #: Indices of the slice's items in the scored list.
    members: tuple[int, ...]
    score: Score

    @property
    def name(self) -> str:
        """``all`` or ``key=value``, as the report card names slices."""
        return ALL if (self.key, self.value) == (ALL, "") else f"{self.key}={self.value}"


def slice_groups(
    slices: Sequence[Mapping[str, str]],
    keys: Sequence[str] | None = None,
    *,
    repeat_whole: bool = False,
) -> dict[tuple[str, str], list[int]]:
    """``(key, value)`` -> indices of the items in that slice, ``(ALL, "")`` first holding
    every item, then the slices sorted by key and value.

    ``keys`` limits the slices to those keys (default: every key an item has). A slice that
    holds every item (one source, one kind) repeats the whole-set row and is left out,
    unless ``repeat_whole``.

    >>> slice_groups([{"group": "a", "kind": "line"}, {"group": "b", "kind": "line"}])
    {('all', ''): [0, 1], ('group', 'a'): [0], ('group', 'b'): [1]}
    >>> list(slice_groups([{"kind": "line"}], repeat_whole=True))
    [('all', ''), ('kind', 'line')]
    """
    members: dict[tuple[str, str], list[int]] = {(ALL, ""): list(range(len(slices)))}
    grouped: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, values in enumerate(slices):
        for key in values if keys is None else keys:
            if key in values:
                grouped[key, values[key]].append(index)
    for group in sorted(grouped):
        if repeat_whole or len(grouped[group]) < len(slices):
            members[group] = grouped[group]
    return members


def score_slices(
    items: Sequence[Item],
    keys: Sequence[str] | None = None,
    *,
    repeat_whole: bool = False,
) -> list[SliceScore]:
    """The whole set's score, then every slice's (see :func:`slice_groups` for which).

    >>> items = [Item("abcd", "abcd", {"group": "a"}), Item("ef", "", {"group": "a"}, True),
    ...          Item("ghij", "ghiX", {"group": "b"})]
    >>> [(row.name, round(row.score.cer, 3), row.score.failures) for row in score_slices(items)]
    [('all', 0.3, 1), ('group=a', 0.333, 1), ('group=b', 0.25, 0)]
    """
    groups = slice_groups([item.slices for item in items], keys, repeat_whole=repeat_whole)
    rows = []
    for (key, value), indices in groups.items():
        chosen = [items[i] for i in indices]
        rows.append(
            SliceScore(
                key,
                value,
                tuple(indices),
                score(
                    [item.hypothesis for item in chosen],
                    [item.reference for item in chosen],
                    sum(item.failed for item in chosen),
                ),
            )
        )
    return rows
