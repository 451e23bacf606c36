"""Fixtures: a tiny staged model that really reads a few words (see quill.staging.smoke)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smoke_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trained and staged once, then reused (pytest's cache, keyed by a hash of the code
    that shapes it; the session's temp dir when the cache is disabled)."""
    import torch

    from quill.staging.smoke import cached_smoke_model

    cache = getattr(request.config, "cache", None)
    root = cache.mkdir("quill-smoke-model") if cache else tmp_path_factory.getbasetemp()
    torch.set_num_threads(1)
    return cached_smoke_model(Path(root))
