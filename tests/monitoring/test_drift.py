"""Drift distances, slices, settings and `quill monitor check` on a real store."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from quill.cli import app
from quill.monitoring import drift
from quill.monitoring import projections as proj
from quill.monitoring.alerts import run_check
from quill.monitoring.records import PredictionRecord, utcnow
from quill.monitoring.settings import MonitoringSettings, SettingsError
from quill.monitoring.store import MonitoringStore

REPO = Path(__file__).resolve().parents[2]
WORDS = ["Dear Sir", "I thank you", "for the seeds", "Kew Gardens", "yours truly", "J. D. Hooker"]


def test_distances_are_small_without_drift_at_any_sample_size():
    rng = np.random.default_rng(0)
    for n in (100, 10_000):
        same = drift.distances(rng.normal(size=n), rng.normal(size=n))
        assert same["wasserstein"] < 0.3 and same["psi"] < 0.1 and same["linf"] < 0.2, same
    small = drift.distances(rng.normal(size=100), rng.normal(1.0, size=100))
    large = drift.distances(rng.normal(size=10_000), rng.normal(1.0, size=10_000))
    # The same shift reads the same at 100 or 10,000 samples (a p-value would not).
    assert small["wasserstein"] == pytest.approx(large["wasserstein"], abs=0.25)
    assert large["wasserstein"] > 0.7 and large["psi"] > 0.25 and large["linf"] > 0.3


def test_a_flipped_share_is_caught_by_linf_and_psi():
    baseline = np.ones(200)  # every test image dark-on-light
    production = np.r_[np.ones(100), np.zeros(100)]
    found = drift.distances(baseline, production)
    assert found["linf"] == 0.5 and found["psi"] > 1


def test_shipped_config_parses_and_typos_are_errors(tmp_path):
    settings = MonitoringSettings.load(REPO / "configs" / "monitoring.yaml")
    assert settings.window == timedelta(days=1)
    assert settings.drift.thresholds("polarity")["linf"] < settings.drift.default["linf"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("drift:\n  default: {wasserstien: 0.5}\n")
    with pytest.raises(SettingsError, match="unknown metric.*wasserstien"):
        MonitoringSettings.load(bad)
    bad.write_text("windw: 1d\n")
    with pytest.raises(SettingsError, match="unknown key.*windw"):
        MonitoringSettings.load(bad)
    bad.write_text("window: soon\n")
    with pytest.raises(SettingsError, match="not a duration"):
        MonitoringSettings.load(bad)


def _rows(make_line, n: int, dark_on_light: bool) -> list[dict]:
    rows = []
    for i in range(n):
        text = WORDS[i % len(WORDS)]
        image = Image.open(io.BytesIO(make_line(text, dark_on_light, seed=i)))
        rows.append(proj.compute(proj.ProjectionInput(text, 0.9, image)))
    return rows


def _stream(store, make_line, n, dark_on_light, texts, start, client="api", offset=0):
    for i in range(n):
        store.log_prediction(
            PredictionRecord(
                f"{client}-{offset + i}",
                client,
                "m-1",
                make_line(WORDS[i % len(WORDS)], dark_on_light, seed=offset + i),
                texts[i % len(texts)],
                0.9 if dark_on_light else 0.4,
                20.0,
                timestamp=start + timedelta(minutes=i),
            )
        )


@pytest.fixture
def settings(tmp_path) -> MonitoringSettings:
    raw = yaml.safe_load((REPO / "configs" / "monitoring.yaml").read_text())
    raw["min_samples"] = 10
    path = tmp_path / "monitoring.yaml"
    path.write_text(yaml.safe_dump(raw))
    return MonitoringSettings.load(path)


@pytest.fixture
def sqlite_store(tmp_path):
    store = MonitoringStore(f"sqlite:///{tmp_path / 'm.db'}", image_dir=tmp_path / "images")
    yield store
    store.close()


def test_check_passes_on_familiar_traffic_and_alerts_on_the_incident(
    sqlite_store, settings, make_line
):
    store = sqlite_store
    store.save_baseline("default", _rows(make_line, 24, dark_on_light=True))
    now = utcnow()
    _stream(store, make_line, 18, True, WORDS, now - timedelta(hours=20))
    calm = run_check(store, settings, now=now)
    assert calm.ok, calm.summary()

    # Users start sending light-on-dark photos; the outputs become repetitive gibberish.
    _stream(
        store,
        make_line,
        30,
        False,
        ["wlwlwlwlwl", "hwhwhwhw"],
        now - timedelta(hours=2),
        client="app",
        offset=100,
    )
    incident = run_check(store, settings, now=now)
    assert not incident.ok
    overall = {a.subject for a in incident.alerts if a.slice == drift.ALL}
    assert {"polarity", "mean_intensity", "char_entropy", "repetition"} <= overall
    # The slices point at the culprit: the app's traffic, light-on-dark.
    by_slice = {a.slice for a in incident.alerts}
    assert "client=app" in by_slice and "polarity=light-on-dark" in by_slice
    assert "client=api" not in {a.slice for a in incident.alerts if a.subject == "polarity"}
    summary = incident.summary()
    assert summary.startswith("ALERT") and "polarity: " in summary and "linf" in summary

    # An older window (before the incident) is still calm.
    assert run_check(store, settings, now=now - timedelta(hours=3)).ok


def test_small_windows_never_alert(sqlite_store, settings, make_line):
    store = sqlite_store
    store.save_baseline("default", _rows(make_line, 12, dark_on_light=True))
    _stream(store, make_line, 5, False, ["wlwlwl"], utcnow() - timedelta(hours=1))
    result = run_check(store, settings)
    assert result.ok and "nothing can alert" in result.summary()


def test_feedback_and_latency_alerts(sqlite_store, settings, make_line):
    store = sqlite_store
    store.save_baseline("default", _rows(make_line, 12, dark_on_light=True))
    _stream(store, make_line, 12, True, WORDS, utcnow() - timedelta(hours=1))
    for i in range(4):
        store.add_feedback(f"api-{i}", "offensive" if i == 0 else "incorrect")
    settings.latency["p95_ms"] = 10
    kinds = {a.subject: a for a in run_check(store, settings).alerts}
    assert kinds["flag rate"].message.startswith("flag rate 33.3% > 20.0%")
    assert "offensive flag rate" in kinds and "p95_ms" in kinds


def test_check_command_exit_codes(tmp_path, settings, make_line):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    common = ["--url", url, "--images", str(tmp_path / "img"), "--config", settings.source]
    runner = CliRunner()
    no_store = runner.invoke(app, ["monitor", "check", *common])
    assert no_store.exit_code == 2 and "no monitoring store at" in no_store.output

    store = MonitoringStore(url, image_dir=tmp_path / "img")
    missing = runner.invoke(app, ["monitor", "check", *common])
    assert missing.exit_code == 2 and "no baseline named 'default'" in missing.output

    store.save_baseline("default", _rows(make_line, 12, dark_on_light=True))
    _stream(store, make_line, 12, True, WORDS, utcnow() - timedelta(hours=1))
    calm = runner.invoke(app, ["monitor", "check", *common])
    assert calm.exit_code == 0, calm.output
    assert "OK" in calm.output

    _stream(store, make_line, 24, False, ["wlwlwlwl"], utcnow() - timedelta(minutes=50), offset=500)
    alert = runner.invoke(app, ["monitor", "check", *common, "--window", "2h"])
    assert alert.exit_code == 1, alert.output
    assert "ALERT" in alert.output and "[drift] polarity:" in alert.output
    store.close()
