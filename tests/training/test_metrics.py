"""CER and WER: corpus-level, case-sensitive, accumulated over batches like an epoch."""

from __future__ import annotations

import pytest

from quill.training.metrics import TextMetrics, character_error_rate, word_error_rate


def test_cer_counts_edits_over_reference_characters() -> None:
    # one deletion ("l"), one substitution (a->o) over 11 + 5 reference characters
    assert character_error_rate(["helo world", "Kow"], ["hello world", "Kaw"]) == pytest.approx(
        2 / 14
    )


def test_case_matters() -> None:
    assert character_error_rate(["kew gardens"], ["Kew Gardens"]) == pytest.approx(2 / 11)
    assert word_error_rate(["kew gardens"], ["Kew Gardens"]) == pytest.approx(1.0)


def test_perfect_and_empty_predictions() -> None:
    assert character_error_rate(["abc"], ["abc"]) == 0.0
    assert character_error_rate([""], ["abcd"]) == 1.0


def test_batches_accumulate_to_the_corpus_rate_not_the_mean_of_batches() -> None:
    metrics = TextMetrics()
    metrics.update(["a"], ["b"])  # 1 edit / 1 char
    metrics.update(["abcdefghij"], ["abcdefghij"])  # 0 edits / 10 chars
    result = metrics.compute()
    assert result["cer"] == pytest.approx(1 / 11)
    assert result["wer"] == pytest.approx(1 / 2)
    metrics.reset()
    metrics.update(["x"], ["x"])
    assert metrics.compute()["cer"] == 0.0
