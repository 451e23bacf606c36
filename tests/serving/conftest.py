"""What the serving tests share: settings with a real SQLite monitoring store, a real API
server on 127.0.0.1 and an HTTP client for it, one of each per test module.

A module that needs other limits sets ``SERVING_OVERRIDES`` (ServingSettings fields) at its
top; a test that needs a server of its own calls :func:`monitored_settings`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from quill.inference.recognizer import Recognizer
from quill.monitoring.store import MonitoringStore
from quill.serving.runner import ApiServer
from quill.serving.settings import ServingSettings


def monitored_settings(model_dir: Path, root: Path, **overrides: Any) -> ServingSettings:
    """The model on one thread, monitored into a fresh SQLite store under ``root``."""
    return ServingSettings(
        model_dir=model_dir,
        threads=1,
        monitoring_url=f"sqlite:///{root / 'monitoring.db'}",
        monitoring_images=root / "images",
        **overrides,
    )


class WrappedRecognizer:
    """The real recognizer behind a wrapper that changes how ``predict`` behaves (slow,
    failing): the service reads the rest (version, runtime, description) through it."""

    def __init__(self, inner: Any):
        self.inner = inner

    #: The real batch reading (one call, each image alone after a failure), over this
    #: wrapper's ``predict``.
    predict_each = Recognizer.predict_each

    @property
    def model_version(self) -> str:
        return self.inner.model_version

    @property
    def backend(self) -> str:
        return self.inner.backend

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()


def stored(settings: ServingSettings) -> MonitoringStore:
    """The monitoring store a server with ``settings`` writes to."""
    return MonitoringStore(settings.monitoring_url, settings.monitoring_images)


@pytest.fixture(scope="module")
def settings(
    smoke_model: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> ServingSettings:
    overrides = getattr(request.module, "SERVING_OVERRIDES", {})
    return monitored_settings(smoke_model, tmp_path_factory.mktemp("monitoring"), **overrides)


@pytest.fixture(scope="module")
def server(settings: ServingSettings) -> Iterator[ApiServer]:
    with ApiServer(settings) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as http:
        yield http
