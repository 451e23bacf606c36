"""CER and WER of a training stage: corpus-level, case-sensitive, accumulated over batches
like an epoch. (The rates themselves are tested in tests/evaluation/test_rates.py.)"""

from __future__ import annotations

import pytest

from quill.evaluation import corpus_cer, corpus_wer
from quill.training.metrics import CharErrorRate, TextMetrics, WordErrorRate


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


def test_the_epoch_metrics_count_edits_as_the_evaluation_package_does() -> None:
    predictions = ["helo world", "Kow", "kew gardens", ""]
    references = ["hello world", "Kaw", "Kew Gardens", "abcd"]
    cer, wer = CharErrorRate(), WordErrorRate()
    for prediction, reference in zip(predictions, references, strict=True):
        cer.update([prediction], [reference])
        wer.update([prediction], [reference])
    assert float(cer.compute()) == pytest.approx(corpus_cer(predictions, references))
    assert float(wer.compute()) == pytest.approx(corpus_wer(predictions, references))
