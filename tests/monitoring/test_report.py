"""`quill monitor report`: a self-contained HTML file, checked in headless Chromium."""

from __future__ import annotations

import io
import re
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from quill.cli import app
from quill.monitoring import projections as proj
from quill.monitoring.records import PredictionRecord, ShadowRecord, utcnow
from quill.monitoring.store import MonitoringStore

REPO = Path(__file__).resolve().parents[2]
WORDS = ["Dear Sir", "I thank you", "for the seeds", "Kew Gardens", "yours truly"]
GIBBERISH = ["wlwlwlwlwl", "hwhwhwhwhw", "qhwhwlwlwl"]


@pytest.fixture
def populated(tmp_path, make_line):
    """A store with a baseline, three calm days and an incident today, with feedback."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    store = MonitoringStore(url, image_dir=tmp_path / "images")
    rows = []
    for i in range(20):
        image = Image.open(io.BytesIO(make_line(WORDS[i % 5], True, seed=1000 + i)))
        rows.append(proj.compute(proj.ProjectionInput(WORDS[i % 5], 0.9, image)))
    store.save_baseline("default", rows, dataset_version="test-set", model_version="m-1")
    now = utcnow()
    for i in range(15):  # calm days
        store.log_prediction(
            PredictionRecord(
                f"calm-{i}",
                "api",
                "m-1",
                make_line(WORDS[i % 5], True, seed=i),
                WORDS[i % 5],
                0.9,
                30.0 + i,
                timestamp=now - timedelta(days=3, hours=-i),
            )
        )
    for i in range(20):  # the incident: light-on-dark photos, gibberish out
        store.log_prediction(
            PredictionRecord(
                f"bad-{i}",
                "app",
                "m-1",
                make_line(WORDS[i % 5], False, seed=100 + i),
                GIBBERISH[i % 3],
                0.3,
                50.0 + 10 * i,
                timestamp=now - timedelta(hours=3, minutes=-i),
            )
        )
    for i in range(5):
        store.add_feedback(f"bad-{i}", "incorrect", correction=WORDS[i % 5])
    store.add_feedback("bad-5", "offensive", comment="rude?")
    store.write(
        [ShadowRecord("bad-0", "m-2", "m-1", "Dear Sir", 0.8, 40.0, 1.0, now - timedelta(hours=3))]
    )
    raw = yaml.safe_load((REPO / "configs" / "monitoring.yaml").read_text())
    raw["min_samples"] = 10
    config = tmp_path / "monitoring.yaml"
    config.write_text(yaml.safe_dump(raw))
    store.close()
    return ["--url", url, "--images", str(tmp_path / "images"), "--config", str(config)]


def test_report_is_self_contained_and_shows_the_incident(tmp_path, populated):
    out = tmp_path / "report.html"
    result = CliRunner().invoke(
        app, ["monitor", "report", "--since", "7d", "--out", str(out), *populated]
    )
    assert result.exit_code == 0, result.output
    assert "35 predictions" in result.output
    html = out.read_text()
    # Nothing fetched from anywhere: no external scripts, styles or images.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "<link" not in html and "<script src" not in html
    assert html.count('src="data:image/jpeg;base64,') >= 35 + 10  # examples + slowest
    for section in (
        "Models and runtimes",
        "Alerts",
        "Feedback over time",
        "Drift against the baseline",
        "Distributions: production vs baseline",
        "Slowest requests",
        "Shadow models",
        "Examples",
    ):
        assert f">{section}</h2>" in html
    assert "{{" not in html


@pytest.mark.browser
def test_report_in_headless_chromium_sorts_and_filters(tmp_path, populated, chromium_launch):
    sync_api = pytest.importorskip("playwright.sync_api")
    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["monitor", "report", "--out", str(out), *populated])
    assert result.exit_code == 0, result.output
    copy = tmp_path / "mailed" / "report.html"  # opened elsewhere: nothing beside it
    copy.parent.mkdir()
    shutil.copy(out, copy)

    requested: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(**chromium_launch)
        page = browser.new_page()
        page.on("request", lambda request: requested.append(request.url))
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(copy.as_uri())

        assert page.title() == "Quill monitoring report"
        alerts = page.locator("#alert-list li").all_inner_texts()
        assert any(a.startswith("[drift] polarity: ") and "client=app" in a for a in alerts), alerts
        assert any("char_entropy" in a for a in alerts) and any("flag rate" in a for a in alerts)
        assert page.locator("#drift-table tr.alert", has_text="polarity").count() == 1
        assert page.locator('.plot.alert[data-projection="polarity"] svg rect').count() > 2
        assert page.locator("#shadow-table", has_text="m-2").count() == 1
        slowest = page.locator("#slowest-table tbody tr").first.inner_text()
        assert slowest.startswith("240")  # 50 + 10 * 19 ms, the slowest request

        rows = page.locator("#examples tbody tr")
        assert rows.count() == 35
        thumbs = page.eval_on_selector_all(
            "#examples img.thumb", "els => els.map(e => e.complete && e.naturalWidth)"
        )
        assert len(thumbs) == 35 and all(w and w > 0 for w in thumbs)
        assert page.inner_text("#shown") == "35 of 35 rows shown"

        page.select_option("#flag-filter", "incorrect")
        visible = page.locator("#examples tbody tr:not([hidden])")
        assert visible.count() == 5 and page.inner_text("#shown") == "5 of 35 rows shown"
        shown = visible.all_inner_texts()  # each with its correction
        assert sorted(w for w in WORDS if any(w in row for row in shown)) == sorted(WORDS)
        page.select_option("#flag-filter", "none")
        assert visible.count() == 29
        page.select_option("#flag-filter", "")
        page.fill("#filter", "hwhwhw")
        assert visible.count() == 7 and all("hwhwhw" in t for t in visible.all_inner_texts())
        page.fill("#filter", "")

        confidence = page.locator("#examples th", has_text="confidence")
        confidence.click()
        column = _column(page, 7)
        assert column == sorted(column) and column[0] == 0.3
        confidence.click()
        assert page.locator("#examples tbody tr").first.locator("td").nth(6).inner_text() == "0.9"
        latency = page.locator("#examples th", has_text="latency ms")
        latency.click()
        latencies = _column(page, 8)
        assert latencies == sorted(latencies)  # numeric, not text order (100 < 30 as text)
        browser.close()
    assert not errors, errors
    assert all(url.startswith(("file://", "data:")) for url in requested), requested


def _column(page, number: int) -> list[float]:
    """The numbers in one column of the example table, in displayed order."""
    cells = f"#examples tbody tr td:nth-child({number})"
    return [float(t) for t in page.eval_on_selector_all(cells, "e => e.map(c => c.textContent)")]


@pytest.mark.parametrize("since", ["7d", "1h"])
def test_the_latest_window_is_the_one_check_judges_in_the_same_words(tmp_path, populated, since):
    """The report counted every slice's alert where check counted subjects (55 against 12),
    and with --since shorter than the window (the incident 3 hours ago, --since 1h) it judged
    only the --since period under the whole window's dates: "No alerts" while check alerted."""
    check = CliRunner().invoke(app, ["monitor", "check", *populated])
    assert check.exit_code == 1, check.output
    verdict, window = check.output.splitlines()[:2]
    assert verdict.startswith("ALERT: ") and "counting each slice" in verdict
    predictions = re.search(r"(\d+) predictions;", window)
    assert predictions is not None

    out = tmp_path / "report.html"
    result = CliRunner().invoke(
        app, ["monitor", "report", "--since", since, "--out", str(out), *populated]
    )
    assert result.exit_code == 0, result.output
    assert f"latest window: {verdict}" in result.output
    head = re.search(r'<p class="bad" id="verdict">(.*?)</p>', out.read_text())
    assert head is not None
    assert head[1].startswith(f"{verdict} in the latest window (")
    assert f"UTC, {predictions[1]} predictions)" in head[1]


def test_a_baseline_asked_for_by_name_must_exist(tmp_path, populated):
    """`--baseline typo` silently skipped drift and exited 0 (check exits 2 for it)."""
    out = tmp_path / "report.html"
    args = ["monitor", "report", "--baseline", "typo", "--out", str(out), *populated]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "no baseline named 'typo' in the store (stored: ['default'])" in result.output
    assert not out.exists()
