"""Charts of ``quill runs report`` and of a sweep, as a person sees them (issue 15).

* The report's CSS rule ``img{max-height:64px}``, meant for the prediction table's line
  images, also shrank the loss and error-rate charts to 64 px: unreadable.
* Each sweep plot page inlined its own copy of plotly.js (4.8 MB each).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient
from PIL import Image, ImageDraw

from quill.training import runs, tracking
from quill.training.sweep import PLOTS_PAGE, write_plots
from quill.training.tracking_store import ensure_experiment, prepare_store

#: The banner at the top of plotly.js, once per inlined copy of the library.
PLOTLY_BANNER = "* plotly.js v"


def tracked_run(tracking_uri: str) -> str:
    """A run with the metric histories and prediction table a training run records."""
    prepare_store(tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment = ensure_experiment(client, "report", tracking_uri)
    run_id = client.create_run(experiment, run_name="charts").info.run_id
    for epoch in range(4):
        step = 10 * (epoch + 1)
        for key, value in (
            ("epoch", epoch),
            ("train_loss", 3.0 / (epoch + 1)),
            ("train_loss_epoch", 3.0 / (epoch + 1)),
            ("val_loss", 3.2 / (epoch + 1)),
            ("val_cer", 0.9 / (epoch + 1)),
            ("val_wer", 1.0 / (epoch + 1)),
        ):
            client.log_metric(run_id, key, value, step=step)
    line = Image.new("RGB", (600, 48), "white")
    ImageDraw.Draw(line).text((8, 16), "a line of handwriting", fill="black")
    tracking.MLflowTracker(client, run_id).log_table(
        {"image": [line], "ground_truth": ["a line"], "prediction": ["a lime"]},
        "predictions/epoch_003.json",
    )
    client.set_terminated(run_id)
    return run_id


@pytest.mark.browser
def test_run_report_charts_are_shown_full_size(
    tracking_uri: str, tmp_path: Path, chromium_launch: dict
) -> None:
    from playwright.sync_api import sync_playwright

    client = MlflowClient(tracking_uri)
    run = client.get_run(tracked_run(tracking_uri))
    page_path = runs.write_report(client, [run], tmp_path / "report.html")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(**chromium_launch)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(page_path.as_uri())
        charts = page.eval_on_selector_all(
            "img.chart",
            "imgs => imgs.map(i => [i.getBoundingClientRect().width,"
            " i.getBoundingClientRect().height, i.naturalWidth, i.naturalHeight])",
        )
        cells = page.eval_on_selector_all(
            "td img", "imgs => imgs.map(i => i.getBoundingClientRect().height)"
        )
        browser.close()
    assert len(charts) == 3
    for width, height, natural_width, natural_height in charts:
        assert height > 300 and width > 600  # readable, not squeezed to 64 px
        assert abs(width / height - natural_width / natural_height) < 0.02  # not distorted
    assert cells and all(0 < height <= 64 for height in cells)  # table images stay small


@pytest.mark.browser
def test_sweep_plots_share_one_copy_of_plotly(tmp_path: Path, chromium_launch: dict) -> None:
    import optuna
    from playwright.sync_api import sync_playwright

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="plots", sampler=optuna.samplers.TPESampler(seed=1))
    study.optimize(
        lambda t: (
            (t.suggest_float("lr", 1e-4, 1e-2, log=True) - 3e-3) ** 2
            + t.suggest_int("hidden", 32, 128) / 1e4
        ),
        n_trials=6,
    )
    (page_path,) = write_plots(study, tmp_path)
    assert page_path.name == PLOTS_PAGE and list(tmp_path.iterdir()) == [page_path]
    text = page_path.read_text()
    assert text.count(PLOTLY_BANNER) == 1
    assert page_path.stat().st_size < 6_000_000  # one library (4.8 MB) for three figures
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(**chromium_launch)
        page = browser.new_page()
        page.goto(page_path.as_uri())
        page.wait_for_function(
            "document.querySelectorAll('.js-plotly-plot .main-svg').length >= 3", timeout=30_000
        )
        drawn = page.eval_on_selector_all(".js-plotly-plot", "divs => divs.map(d => d.id)")
        browser.close()
    assert drawn == ["param_importances", "parallel_coordinate", "optimization_history"]
