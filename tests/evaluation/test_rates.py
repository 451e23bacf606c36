"""Edit distance and CER/WER on known strings, and against a by-hand distance on random ones."""

from __future__ import annotations

import random

import pytest

from quill.evaluation import (
    ErrorCounts,
    cer,
    corpus_cer,
    corpus_rates,
    corpus_wer,
    edit_distance,
    metrics,
    wer,
)


def _by_hand(a, b) -> int:  # noqa: ANN001 - strings or word lists
    """Levenshtein distance over the full table (the check must not reuse the code it checks)."""
    table = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = min(
                table[i - 1][j] + 1,
                table[i][j - 1] + 1,
                table[i - 1][j - 1] + (a[i - 1] != b[j - 1]),
            )
    return table[-1][-1]


@pytest.mark.parametrize("cells", [0, 10**12], ids=["numpy-rows", "plain-loop"])
def test_edit_distance_agrees_with_the_full_table_on_random_texts(monkeypatch, cells) -> None:
    monkeypatch.setattr(metrics, "_NUMPY_CELLS", cells)
    rng = random.Random(14)
    for _ in range(300):
        a = "".join(rng.choice("ab c\néé∞") for _ in range(rng.randint(0, 40)))
        b = "".join(rng.choice("ab c\néé∞") for _ in range(rng.randint(0, 40)))
        assert edit_distance(a, b) == _by_hand(a, b), (a, b)
        assert edit_distance(a.split(), b.split()) == _by_hand(a.split(), b.split())


def test_long_texts_take_the_row_path_and_agree() -> None:
    rng = random.Random(7)
    a = "".join(rng.choice("abcdefgh \n") for _ in range(600))
    b = a[:100] + "XYZ" + a[130:400] + a[420:]
    assert len(a) * len(b) > metrics._NUMPY_CELLS
    assert edit_distance(a, b) == _by_hand(a, b)
    assert edit_distance(a, "") == 600 and edit_distance("", b) == len(b)


def test_cer_counts_edits_over_reference_characters() -> None:
    # one deletion ("l"), one substitution (a->o) over 11 + 5 reference characters
    assert corpus_cer(["helo world", "Kow"], ["hello world", "Kaw"]) == pytest.approx(2 / 14)


def test_case_matters() -> None:
    assert corpus_cer(["kew gardens"], ["Kew Gardens"]) == pytest.approx(2 / 11)
    assert corpus_wer(["kew gardens"], ["Kew Gardens"]) == pytest.approx(1.0)


def test_perfect_and_empty_predictions() -> None:
    assert corpus_cer(["abc"], ["abc"]) == 0.0
    assert corpus_cer([""], ["abcd"]) == 1.0


def test_corpus_rates_are_total_edits_over_total_length_not_a_mean() -> None:
    # 1 edit / 1 char and 0 edits / 10 chars: 1/11, not the mean 0.5.
    assert corpus_cer(["a", "abcdefghij"], ["b", "abcdefghij"]) == pytest.approx(1 / 11)
    counts = ErrorCounts.of(["a"], ["b"]) + ErrorCounts.of(["abcdefghij"], ["abcdefghij"])
    assert (counts.char_edits, counts.chars, counts.word_edits, counts.words) == (1, 11, 1, 2)
    assert counts.cer == pytest.approx(1 / 11) and counts.wer == pytest.approx(1 / 2)
    assert corpus_rates(["helo world", "ok"], ["hello world", "ok"]) == pytest.approx(
        {"cer": 1 / 13, "wer": 1 / 3}
    )


def test_no_reference_text_gives_a_number_not_nan() -> None:
    assert ErrorCounts().cer == 0.0 and ErrorCounts().wer == 0.0
    assert corpus_cer(["ab"], [""]) == 2.0  # edits over at least one
    assert cer("ab", "") == 1.0 and cer("", "") == 0.0  # one text: anything read is wrong
    assert wer("a b", "") == 1.0 and wer("", "") == 0.0


def test_per_text_rates() -> None:
    assert cer("helo", "hello") == pytest.approx(0.2)
    assert wer("the cat sat", "the cat sat down") == pytest.approx(0.25)
    with pytest.raises(ValueError):
        ErrorCounts.of(["one"], ["one", "two"])
