"""Serving's monitoring store follows the versioned monitoring config, not only its own env."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from quill.monitoring.database import RETAIN_ENV
from quill.monitoring.records import PredictionRecord
from quill.serving.service import build_monitoring
from quill.serving.settings import ServingSettings


def test_retain_images_false_in_the_config_keeps_no_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "monitoring.yaml"
    config.write_text("version: test\nstore:\n  retain_images: false\n", encoding="utf-8")
    monkeypatch.setenv("QUILL_MONITORING_CONFIG", str(config))
    monkeypatch.delenv(RETAIN_ENV, raising=False)
    settings = ServingSettings(
        monitoring_url=f"sqlite:///{tmp_path / 'm.db'}", monitoring_images=tmp_path / "images"
    )
    logger, store = build_monitoring(settings)
    assert logger is not None and store is not None
    png = io.BytesIO()
    Image.new("RGB", (64, 16), "white").save(png, format="PNG")
    logger.log(PredictionRecord("r1", "api", "m-1", png.getvalue(), "ink", 0.9, 12.0))
    logger.close()
    record = store.get_prediction("r1")
    assert record is not None and record.text == "ink"
    assert store.retain_images is False and store.image_bytes(record) is None
