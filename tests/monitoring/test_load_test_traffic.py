"""Load-test traffic is labelled ``bench`` and left out of drift and alerts.

A load test alone raised 13 drift alerts when its requests were stored as client ``api``.
Here ``quill bench serve``'s load loop runs against the real API with a real store, and the
check runs on a real store holding users' traffic and a load test that looks nothing like it.
"""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from PIL import Image

from quill.bench.serve_load import run_load
from quill.monitoring import projections as proj
from quill.monitoring.alerts import run_check
from quill.monitoring.records import PredictionRecord, utcnow
from quill.monitoring.settings import MonitoringSettings
from quill.monitoring.store import MonitoringStore
from quill.serving.runner import ApiServer
from quill.serving.service import CLIENT_HEADER
from quill.serving.settings import ServingSettings
from quill.staging.parity import render_line

REPO = Path(__file__).resolve().parents[2]
WORDS = ["Dear Sir", "I thank you", "for the seeds", "Kew Gardens", "yours truly"]


def _png(text: str) -> bytes:
    buffer = io.BytesIO()
    render_line(text).save(buffer, format="PNG")
    return buffer.getvalue()


def test_bench_serve_traffic_is_stored_as_client_bench(smoke_model: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    settings = ServingSettings(
        model_dir=smoke_model,
        threads=1,
        monitoring_url=url,
        monitoring_images=tmp_path / "images",
        cache_size=0,
    )
    with ApiServer(settings) as server:
        report = run_load(server.url, _png("quill"), concurrency=1, duration_s=1.0)
        assert report.ok > 0 and report.errors == 0
        plain = httpx.post(f"{server.url}/v1/predict", files={"image": _png("ink")}, timeout=30)
        invented = httpx.post(
            f"{server.url}/v1/predict",
            files={"image": _png("Kew")},
            headers={CLIENT_HEADER: "alice@example.com"},  # not a known label: ignored
            timeout=30,
        )
        ids = {"plain": plain.json()["request_id"], "invented": invented.json()["request_id"]}
    store = MonitoringStore(url, image_dir=tmp_path / "images")
    clients = {p.request_id: p.client for p in store.predictions()}
    store.close()
    assert clients.pop(ids["plain"]) == "api" and clients.pop(ids["invented"]) == "api"
    assert len(clients) == report.ok and set(clients.values()) == {"bench"}


def _rows(make_line, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        text = WORDS[i % len(WORDS)]
        image = Image.open(io.BytesIO(make_line(text, True, seed=i)))
        rows.append(proj.compute(proj.ProjectionInput(text, 0.9, image)))
    return rows


@pytest.fixture
def settings(tmp_path: Path) -> MonitoringSettings:
    raw = yaml.safe_load((REPO / "configs" / "monitoring.yaml").read_text())
    raw["min_samples"] = 10
    path = tmp_path / "monitoring.yaml"
    path.write_text(yaml.safe_dump(raw))
    return MonitoringSettings.load(path)


def test_load_test_traffic_is_left_out_of_drift_and_alerts(
    tmp_path: Path, settings: MonitoringSettings, make_line
) -> None:
    store = MonitoringStore(f"sqlite:///{tmp_path / 'm.db'}", image_dir=tmp_path / "images")
    store.save_baseline("default", _rows(make_line, 24))
    now = utcnow()
    for i in range(15):  # users: familiar lines
        store.log_prediction(
            PredictionRecord(
                f"user-{i}",
                "api",
                "m-1",
                make_line(WORDS[i % len(WORDS)], True, seed=i),
                WORDS[i % len(WORDS)],
                0.9,
                20.0,
                timestamp=now - timedelta(hours=3, minutes=i),
            )
        )

    def load_test(client: str) -> None:
        # one sentence, light on dark, slow and repetitive: nothing like the baseline
        for i in range(40):
            store.log_prediction(
                PredictionRecord(
                    f"{client}-{i}",
                    client,
                    "m-1",
                    make_line("the quick brown fox", False, size=(900, 40), seed=100 + i),
                    "hwhwhwhwhwhwhw",
                    0.3,
                    5000.0,
                    timestamp=now - timedelta(hours=1, seconds=i),
                )
            )

    load_test("bench")
    result = run_check(store, settings, now=now)
    assert result.ok, result.summary()
    assert result.n == 15
    assert "40 load-test prediction(s) (client bench) left out" in result.summary()
    assert all(r.n <= 15 for r in result.drift)

    load_test("api")  # the same traffic from users would alert
    alarmed = run_check(store, settings, now=now)
    assert not alarmed.ok
    assert {"polarity", "repetition"} <= {a.subject for a in alarmed.alerts}
    assert "p95_ms" in {a.subject for a in alarmed.alerts}
    store.close()
