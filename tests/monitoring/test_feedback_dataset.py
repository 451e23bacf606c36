"""``quill monitor feedback-dataset``: one sample per image, labelled by its latest
correction, when the same photo was sent and corrected more than once."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from typer.testing import CliRunner

from quill.cli import app
from quill.data.manifest import Manifest
from quill.monitoring.records import PredictionRecord, utcnow
from quill.monitoring.store import MonitoringStore


def feedback_dataset(tmp_path: Path, url: str) -> tuple[Manifest, dict]:
    out = tmp_path / "feedback"
    args = ["monitor", "feedback-dataset", "--out", str(out), "--url", url]
    result = CliRunner().invoke(app, [*args, "--images", str(tmp_path / "images")])
    assert result.exit_code == 0, result.output
    return Manifest.load(out), json.loads((out / "import-report.json").read_text())


def test_one_photo_corrected_twice_is_one_sample_with_the_latest_correction(tmp_path, make_line):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    store = MonitoringStore(url, image_dir=tmp_path / "images")
    photo, other = make_line("Correct text", seed=1), make_line("Other line", seed=2)
    now = utcnow()
    # The same photo sent as a, b and c; another photo as d.
    for rid, image, hours in (("a", photo, 4), ("b", photo, 3), ("c", photo, 2), ("d", other, 1)):
        when = now - timedelta(hours=hours)
        store.log_prediction(
            PredictionRecord(rid, "api", "m-1", image, "Corect txt", 0.5, 10.0, timestamp=when)
        )
    store.add_feedback("a", "incorrect", correction="Correct text one")
    store.add_feedback("c", "incorrect", correction="first reading")
    store.add_feedback("b", "incorrect", correction="again correction")  # typed last
    store.add_feedback("d", "incorrect", correction="Other line")
    store.close()

    manifest, report = feedback_dataset(tmp_path, url)
    texts = {s.meta["request_id"]: s.text for s in manifest}
    # b was sent before c, but its correction was typed last: the user's last word.
    assert texts == {"b": "again correction", "d": "Other line"}
    assert len({s.sha256 for s in manifest}) == 2
    skipped = {s["where"]: s["reason"] for s in report["skipped"]}
    assert skipped == {
        "request a": "image corrected again later, in b",
        "request c": "image corrected again later, in b",
    }


def test_typed_corrections_are_normalised_as_scoring_normalises_them(tmp_path, make_line):
    """A tab was reported as a character outside the vocabulary and the sample dropped; an
    accent typed as two code points (e + U+0301) likewise."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    store = MonitoringStore(url, image_dir=tmp_path / "images")
    corrections = {"tab": "Dear\tSir,  yours", "accent": "cafe\u0301 noir"}
    for seed, (rid, correction) in enumerate(corrections.items()):
        image = make_line(correction, seed=seed)
        store.log_prediction(PredictionRecord(rid, "api", "m-1", image, "x", 0.5, 10.0))
        store.add_feedback(rid, "incorrect", correction=correction)
    store.close()
    out = tmp_path / "feedback"
    args = ["monitor", "feedback-dataset", "--out", str(out), "--url", url]  # latin: the default
    result = CliRunner().invoke(app, [*args, "--images", str(tmp_path / "images")])
    assert result.exit_code == 0, result.output
    texts = {s.meta["request_id"]: s.text for s in Manifest.load(out)}
    assert texts == {"tab": "Dear Sir, yours", "accent": "caf\u00e9 noir"}
