"""Shadow mode: the candidate reads live traffic unseen; users get the current answer."""

from __future__ import annotations

import io
import threading

import pytest

from quill.monitoring.async_logger import AsyncPredictionLogger
from quill.monitoring.records import PredictionRecord
from quill.monitoring.shadow import ShadowRunner
from quill.monitoring.store import MonitoringStore


@pytest.fixture
def logged(tmp_path):
    store = MonitoringStore(f"sqlite:///{tmp_path / 'm.db'}", image_dir=tmp_path / "images")
    logger = AsyncPredictionLogger(store, flush_interval=0.05)
    yield store, logger
    logger.close()
    store.close()


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.slow  # needs the staged smoke model
def test_candidate_answers_are_logged_with_their_disagreement(
    logged, smoke_model, broken_model, render_word
):
    from quill.inference.recognizer import Recognizer
    from quill.serving.service import PredictionService
    from quill.serving.settings import ServingSettings

    store, logger = logged
    current = Recognizer.from_path(smoke_model, backend="onnx", threads=1)
    candidate = Recognizer.from_path(broken_model, backend="onnx", threads=1)
    shadow = ShadowRunner(candidate, logger)
    service = PredictionService(
        current, ServingSettings(model_dir=smoke_model), logger, store, after_prediction=shadow
    )
    images = [_png(render_word("Kew", 1)), _png(render_word("quill", 2))]

    answers = [
        service.predict_bytes(image, "api", "line", request_id)
        for image, request_id in zip(images, ["r1", "r2"], strict=True)
    ]
    assert [a["text"] for a in answers] == ["Kew", "quill"]
    assert {a["model_version"] for a in answers} == {current.model_version}
    assert service.model_version == current.model_version
    assert shadow.model_version == candidate.model_version == "smoke-broken"

    shadow.close()
    assert logger.flush(timeout=30)
    records = {r.request_id: r for r in store.shadow_predictions()}
    assert set(records) == {"r1", "r2"}
    for record, answer in zip(records.values(), answers, strict=True):
        assert record.model_version == "smoke-broken"
        assert record.current_model_version == current.model_version
        assert record.text != answer["text"] and record.disagreement > 0.5
    assert shadow.stats()["compared"] == 2


class _Gate:
    """A candidate that waits until released (or fails), to observe the runner."""

    model_version = "gate"

    def __init__(self, fail: bool = False):
        self.release = threading.Event()
        self.fail = fail

    def predict(self, images, kind="auto"):
        self.release.wait(10)
        if self.fail:
            raise RuntimeError("candidate crashed")
        return [type("P", (), {"text": "x", "confidence": 0.1, "timings": {}})() for _ in images]


def _answered(request_id: str, text: str) -> PredictionRecord:
    """What the service hands the runner once the current model answered."""
    return PredictionRecord(request_id, "api", "current", b"png", text, 1.0, 1.0)


def test_a_slow_or_failing_candidate_never_holds_up_or_breaks_answers(logged, caplog):
    store, logger = logged
    slow = _Gate()
    shadow = ShadowRunner(slow, logger, max_pending=1)
    shadow(_answered("1", "a"))  # returns at once: the candidate waits on its own thread
    # The candidate is still busy: the next request is skipped for it.
    shadow(_answered("2", "b"))
    assert shadow.stats()["skipped_busy"] == 1
    slow.release.set()
    shadow.close()
    assert logger.flush(timeout=30)
    [record] = store.shadow_predictions()
    assert record.request_id == "1" and record.current_model_version == "current"

    broken = _Gate(fail=True)
    broken.release.set()
    shadow = ShadowRunner(broken, logger)
    shadow(_answered("3", "c"))
    shadow.close()
    assert shadow.stats()["failed"] == 1 and "shadow model gate failed" in caplog.text
    shadow(_answered("4", "d"))  # after close (the service shutting down): skipped
    assert shadow.stats() == {"compared": 0, "skipped_busy": 1, "failed": 1, "pending": 0}
