"""Shadow mode: the candidate reads live traffic unseen; users get the current answer."""

from __future__ import annotations

import threading

import pytest

from quill.monitoring.async_logger import AsyncPredictionLogger
from quill.monitoring.shadow import ShadowRecognizer
from quill.monitoring.store import MonitoringStore


@pytest.fixture
def logged(tmp_path):
    store = MonitoringStore(f"sqlite:///{tmp_path / 'm.db'}", image_dir=tmp_path / "images")
    logger = AsyncPredictionLogger(store, flush_interval=0.05)
    yield store, logger
    logger.close()
    store.close()


@pytest.mark.slow  # needs the staged smoke model
def test_candidate_answers_are_logged_with_their_disagreement(
    logged, smoke_model, broken_model, render_word
):
    from quill.inference.recognizer import Recognizer

    store, logger = logged
    current = Recognizer.from_path(smoke_model, backend="onnx", threads=1)
    candidate = Recognizer.from_path(broken_model, backend="onnx", threads=1)
    shadow = ShadowRecognizer(current, candidate, logger)
    images = [render_word("Kew", 1), render_word("quill", 2)]

    answers = shadow.predict(images, kind="line", request_ids=["r1", "r2"])
    assert [a.text for a in answers] == ["Kew", "quill"]
    assert {a.model_version for a in answers} == {current.model_version}
    assert shadow.model_version == current.model_version
    assert shadow.describe()["model_version"] == current.model_version  # a drop-in

    shadow.close()
    assert logger.flush(timeout=30)
    records = {r.request_id: r for r in store.shadow_predictions()}
    assert set(records) == {"r1", "r2"}
    for record, answer in zip(records.values(), answers, strict=True):
        assert record.model_version == "smoke-broken"
        assert record.current_model_version == current.model_version
        assert record.text != answer.text and record.disagreement > 0.5
    assert shadow.stats()["compared"] == 2


class _Gate:
    """A candidate that waits until released (or fails), to observe the wrapper."""

    model_version = "gate"

    def __init__(self, fail: bool = False):
        self.release = threading.Event()
        self.fail = fail

    def predict(self, images, kind="auto"):
        self.release.wait(10)
        if self.fail:
            raise RuntimeError("candidate crashed")
        return [type("P", (), {"text": "x", "confidence": 0.1, "timings": {}})() for _ in images]


class _Echo:
    model_version = "current"

    def predict(self, images, kind="auto"):
        return [type("P", (), {"text": str(i), "confidence": 1.0})() for i in images]


def test_a_slow_or_failing_candidate_never_holds_up_or_breaks_answers(logged, caplog):
    store, logger = logged
    slow = _Gate()
    shadow = ShadowRecognizer(_Echo(), slow, logger, max_pending=1)
    assert [a.text for a in shadow.predict(["a"], request_ids=["1"])] == ["a"]
    # The candidate is still busy: the next request is answered and skipped for it.
    assert [a.text for a in shadow.predict(["b"], request_ids=["2"])] == ["b"]
    assert shadow.stats()["skipped_busy"] == 1
    slow.release.set()
    shadow.close()
    assert logger.flush(timeout=30)
    assert [r.request_id for r in store.shadow_predictions()] == ["1"]

    broken = _Gate(fail=True)
    broken.release.set()
    shadow = ShadowRecognizer(_Echo(), broken, logger)
    assert [a.text for a in shadow.predict(["c"], request_ids=["3"])] == ["c"]
    shadow.close()
    assert shadow.stats()["failed"] == 1 and "shadow model gate failed" in caplog.text
    with pytest.raises(ValueError, match="1 request ids for 2 images"):
        shadow.predict(["d", "e"], request_ids=["4"])
