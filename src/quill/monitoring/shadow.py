"""Shadow mode: a candidate model reads live traffic beside the current one, unseen.

:class:`ShadowRecognizer` is a drop-in for a ``Recognizer``: ``predict`` returns the current
model's answers, unchanged and without waiting for the candidate. The candidate runs the same
inputs on a background thread; each of its answers, with its disagreement with the current
model (the CER of the candidate's text against the current text), is queued to the
monitoring store. When the candidate falls behind, requests are skipped for it (and counted)
rather than queued without bound: shadow mode must never slow or endanger serving.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from quill.evaluation import cer
from quill.monitoring.async_logger import AsyncPredictionLogger
from quill.monitoring.baseline import Predictor
from quill.monitoring.records import ShadowRecord

log = logging.getLogger(__name__)


class ShadowRecognizer:
    """Answer with ``current``; run ``candidate`` on the side and log the comparison."""

    def __init__(
        self,
        current: Predictor,
        candidate: Predictor,
        logger: AsyncPredictionLogger,
        *,
        max_pending: int = 4,
    ):
        self.current = current
        self.candidate = candidate
        self.logger = logger
        self.max_pending = max_pending
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quill-shadow")
        self._lock = threading.Lock()
        self._pending = 0
        self._stats = {"compared": 0, "skipped_busy": 0, "failed": 0}

    @property
    def model_version(self) -> str:
        return self.current.model_version

    def __getattr__(self, name: str) -> Any:
        # Everything else (describe(), tokenizer, backend...) is the current model's.
        if name == "current":  # not yet set (during construction or unpickling)
            raise AttributeError(name)
        return getattr(self.current, name)

    def predict(
        self,
        images: Sequence[Any],
        kind: str = "auto",
        *,
        request_ids: Sequence[str] | None = None,
    ) -> list[Any]:
        """The current model's predictions; the candidate's are logged later.

        ``request_ids`` (one per image) link the shadow answers to the logged predictions;
        serving should always pass them.
        """
        answers = self.current.predict(images, kind=kind)
        ids = list(request_ids) if request_ids is not None else [uuid.uuid4().hex for _ in images]
        if len(ids) != len(images):
            raise ValueError(f"{len(ids)} request ids for {len(images)} images")
        with self._lock:
            if self._pending >= self.max_pending:
                self._stats["skipped_busy"] += len(images)
                return answers
            self._pending += 1
        self._executor.submit(self._compare, list(images), kind, [a.text for a in answers], ids)
        return answers

    def _compare(
        self, images: list[Any], kind: str, current_texts: list[str], ids: list[str]
    ) -> None:
        try:
            start = time.perf_counter()
            shadows = self.candidate.predict(images, kind=kind)
            per_image_ms = (time.perf_counter() - start) * 1000 / max(len(images), 1)
            for request_id, text, shadow in zip(ids, current_texts, shadows, strict=True):
                timings = getattr(shadow, "timings", None) or {}
                self.logger.log_shadow(
                    ShadowRecord(
                        request_id=request_id,
                        model_version=self.candidate.model_version,
                        current_model_version=self.current.model_version,
                        text=shadow.text,
                        confidence=shadow.confidence,
                        latency_ms=timings.get("total", per_image_ms),
                        disagreement=cer(shadow.text, text),
                    )
                )
            with self._lock:
                self._stats["compared"] += len(images)
        except Exception:  # the candidate failing must never reach users
            log.exception("shadow model %s failed", getattr(self.candidate, "model_version", "?"))
            with self._lock:
                self._stats["failed"] += len(images)
        finally:
            with self._lock:
                self._pending -= 1

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self._stats, "pending": self._pending}

    def close(self, wait: bool = True) -> None:
        """Finish (or drop, with ``wait=False``) the comparisons in flight."""
        self._executor.shutdown(wait=wait, cancel_futures=not wait)
