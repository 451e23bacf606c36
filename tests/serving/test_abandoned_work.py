"""A recognition its request gave up on (a timeout) that then fails, as an image that
exhausts memory would, over real HTTP on 127.0.0.1: the request gets its 504 in time, the
server keeps answering, and the failure reaches the log as a warning instead of vanishing."""

from __future__ import annotations

import base64
import io
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from quill.serving.runner import ApiServer
from quill.serving.service import PredictionService, build_monitoring, load_service
from quill.staging.parity import render_line

from .conftest import WrappedRecognizer, monitored_settings


class FailingLateRecognizer(WrappedRecognizer):
    """The real recognizer, made to fail with MemoryError after ``delay`` seconds once."""

    def __init__(self, inner: Any, delay: float):
        super().__init__(inner)
        self.delay, self.failed = delay, False

    def predict(self, images: list, kind: str = "auto") -> list:
        if not self.failed:
            self.failed = True
            time.sleep(self.delay)
            raise MemoryError("Unable to allocate 256. MiB")
        return self.inner.predict(images, kind=kind)


def test_a_timed_out_recognition_that_fails_is_logged_as_a_warning(
    smoke_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = monitored_settings(smoke_model, tmp_path, timeout_s=0.3)
    logger, store = build_monitoring(settings)
    real = load_service(replace(settings, monitoring_url="off")).recognizer
    service = PredictionService(FailingLateRecognizer(real, delay=1.0), settings, logger, store)
    buffer = io.BytesIO()
    render_line("Kew").save(buffer, format="PNG")
    body = {"image": base64.b64encode(buffer.getvalue()).decode("ascii")}
    with caplog.at_level(logging.WARNING), ApiServer(settings, service=service) as server:
        first = httpx.post(f"{server.url}/v1/predict", json=body, timeout=30)
        assert first.status_code == 504 and first.json()["error"]["code"] == "timeout"
        while server.state.recognitions.taken:  # the abandoned work runs on, then fails
            time.sleep(0.05)
        second = httpx.post(f"{server.url}/v1/predict", json=body, timeout=30)
        assert second.status_code == 200 and second.json()["text"]
    failures = [r for r in caplog.records if "timed out then failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].levelno == logging.WARNING
    assert "MemoryError" in failures[0].getMessage()
