"""The model card's Metrics section: the model's error rates and losses, not the disk,
network and memory of the machine that trained it (issue 15)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from quill.staging.model_card import (
    METRICS_HEADING,
    model_metrics,
    render_model_card,
    with_metrics_section,
)

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(REPO.glob("models/*/quill-model.json"))


def _metrics_section(card: str) -> str:
    start = card.index(METRICS_HEADING)
    return card[start : card.index("\n## ", start + 1)]


@pytest.mark.parametrize("meta_path", SHIPPED, ids=[p.parent.name for p in SHIPPED])
def test_metrics_section_of_a_real_staged_model_lists_model_metrics_only(meta_path: Path):
    """The shipped models' metadata holds every metric of their run, system/* included."""
    meta = json.loads(meta_path.read_text())
    assert any(k.startswith("system/") for k in meta["metrics"])  # what the run recorded
    section = _metrics_section(render_model_card(meta))
    listed = re.findall(r"^\| `([^`]+)` \|", section, re.MULTILINE)
    assert {"val_cer", "test_cer", "test_wer", "val_loss"} <= set(listed)
    assert not [k for k in listed if "/" in k or k in ("lr", "epoch", "samples_per_sec")]
    for word in ("disk", "network", "memory", "cpu_utilization"):
        assert word not in section.split("|---|---|")[1].split("\n\n")[0]
    assert "other metric(s) of the training process and the machine" in section


def test_model_metrics_keeps_per_dataset_rates_and_drops_process_metrics():
    metrics = {
        "val_cer": 0.1,
        "best_val_cer_select": 0.09,
        "val_cer_hooker": 0.2,
        "test_wer": 0.3,
        "train_loss_epoch": 1.5,
        "system/disk_usage_megabytes": 1e4,
        "system/network_receive_megabytes": 3.0,
        "grad_norm/total": 2.0,
        "weight_norm/cnn": 9.0,
        "lr": 1e-4,
        "epoch": 3,
        "samples_per_sec": 40.0,
    }
    assert set(model_metrics(metrics)) == {
        "val_cer",
        "best_val_cer_select",
        "val_cer_hooker",
        "test_wer",
        "train_loss_epoch",
    }


def test_with_metrics_section_rewrites_only_that_section():
    meta = json.loads(SHIPPED[0].read_text())
    card = render_model_card(meta).replace(
        _metrics_section(render_model_card(meta)),
        f"{METRICS_HEADING}\n\n| metric | value |\n|---|---|\n| `system/disk_usage_mb` | 9 |\n",
    )
    card += "\n## Decoding\n\nkept as it is\n"
    fixed = with_metrics_section(card, meta["metrics"])
    assert "system/" not in fixed and "| `val_cer` |" in fixed
    assert fixed.endswith("## Decoding\n\nkept as it is\n")
    assert fixed.replace(_metrics_section(fixed), "") == card.replace(_metrics_section(card), "")
