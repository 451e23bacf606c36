"""Prometheus metrics of the API: traffic, latency, errors by code, cache hits, confidence.

Each app gets its own ``CollectorRegistry`` so that several apps (tests, ``quill up``) can
live in one process. With several uvicorn workers every process keeps its own counters; set
``PROMETHEUS_MULTIPROC_DIR`` to have ``/metrics`` aggregate them across processes.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
KNOWN_PATHS = ("/v1/predict", "/v1/feedback", "/healthz", "/readyz", "/metrics")


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "quill_http_requests",
            "HTTP requests answered",
            ["path", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "quill_http_request_seconds",
            "Time to answer a request",
            ["path"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter("quill_errors", "Error answers by stable code", ["code"], registry=r)
        self.predictions = Counter(
            "quill_predictions", "Predictions answered", ["cached", "kind"], registry=r
        )
        self.confidence = Histogram(
            "quill_prediction_confidence",
            "Confidence of answered predictions",
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
            registry=r,
        )
        self.feedbacks = Counter("quill_feedback", "Feedback received", ["flag"], registry=r)
        self.model = Info("quill_model", "The loaded model", registry=r)
        self.started = Gauge("quill_start_time_seconds", "Process start time", registry=r)
        self.started.set_to_current_time()

    def observe(self, path: str, method: str, status: int, start: float) -> None:
        label = path if path in KNOWN_PATHS else "other"  # bounded label values
        self.requests.labels(label, method, str(status)).inc()
        self.latency.labels(label).observe(time.perf_counter() - start)

    def error(self, code: str) -> None:
        self.errors.labels(code).inc()

    def prediction(self, answer: dict[str, Any]) -> None:
        self.predictions.labels(str(answer["cached"]).lower(), answer["kind"]).inc()
        self.confidence.observe(answer["confidence"])

    def feedback(self, flag: str | None) -> None:
        self.feedbacks.labels(flag or "none").inc()

    def model_info(self, description: dict[str, Any]) -> None:
        self.model.info({k: str(v) for k, v in description.items()})

    def render(self) -> tuple[bytes, str]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
