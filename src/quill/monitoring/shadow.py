"""Shadow mode: a candidate model reads live traffic beside the current one, unseen.

:class:`ShadowRunner` is the hook serving calls after the current model answered a request
(``PredictionService(..., after_prediction=ShadowRunner(candidate, logger))``): users get the
current model's answer, unchanged and without waiting for the candidate. The candidate reads
the same image on a background thread, as the request asked (``kind``); its answer, with its
disagreement with the current model (the CER of the candidate's text against the current
text), is queued to the monitoring store under the request's id. When the candidate falls
behind, requests are skipped for it (and counted) rather than queued without bound: shadow
mode must never slow or endanger serving.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from quill.evaluation import cer
from quill.monitoring.baseline import Predictor
from quill.monitoring.records import PredictionRecord, ShadowRecord

log = logging.getLogger(__name__)


class ShadowLog(Protocol):
    """Where the candidate's answers go (:class:`AsyncPredictionLogger`, or serving's gate
    in front of it)."""

    def log_shadow(self, record: ShadowRecord) -> None: ...


class ShadowRunner:
    """Run ``candidate`` on each request the current model answered; log the comparison."""

    def __init__(self, candidate: Predictor, logger: ShadowLog, *, max_pending: int = 4):
        self.candidate = candidate
        self.logger = logger
        self.max_pending = max_pending
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quill-shadow")
        self._lock = threading.Lock()
        self._pending = 0
        self._stats = {"compared": 0, "skipped_busy": 0, "failed": 0}

    @property
    def model_version(self) -> str:
        return self.candidate.model_version

    def __call__(self, record: PredictionRecord) -> None:
        """Queue the candidate's reading of ``record``'s image (the one the current model
        read, :attr:`PredictionRecord.decoded`, else its bytes); returns at once."""
        with self._lock:
            if self._pending >= self.max_pending:
                self._stats["skipped_busy"] += 1
                return
            self._pending += 1
        try:
            self._executor.submit(self._compare, record)
        except RuntimeError:  # closed: the service is shutting down
            with self._lock:
                self._pending -= 1
                self._stats["skipped_busy"] += 1

    def _compare(self, record: PredictionRecord) -> None:
        try:
            image = record.decoded if record.decoded is not None else record.image_bytes
            start = time.perf_counter()
            [shadow] = self.candidate.predict([image], kind=record.kind)
            elapsed_ms = (time.perf_counter() - start) * 1000
            timings = getattr(shadow, "timings", None) or {}
            self.logger.log_shadow(
                ShadowRecord(
                    request_id=record.request_id,
                    model_version=self.candidate.model_version,
                    current_model_version=record.model_version,
                    text=shadow.text,
                    confidence=shadow.confidence,
                    latency_ms=timings.get("total", elapsed_ms),
                    disagreement=cer(shadow.text, record.text),
                )
            )
            with self._lock:
                self._stats["compared"] += 1
        except Exception:  # the candidate failing must never reach users
            log.exception("shadow model %s failed", getattr(self.candidate, "model_version", "?"))
            with self._lock:
                self._stats["failed"] += 1
        finally:
            with self._lock:
                self._pending -= 1

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self._stats, "pending": self._pending}

    def close(self, wait: bool = True) -> None:
        """Finish (or drop, with ``wait=False``) the comparisons in flight."""
        self._executor.shutdown(wait=wait, cancel_futures=not wait)
