"""Closing the loop: flagged predictions -> Label Studio tasks -> annotations -> dataset, and
user corrections -> dataset, through the real commands and file formats.

``quill monitor export`` is annotation's code (quill.annotation.from_monitoring, registered
by quill.annotation.cli): annotation reads the monitoring store, monitoring never imports
annotation."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from quill.cli import app
from quill.data.manifest import Manifest
from quill.monitoring.images import OWNER_FILE
from quill.monitoring.records import PredictionRecord, utcnow
from quill.monitoring.store import MonitoringStore
from quill.preprocess import load_image

TEXTS = {"r0": "Dear Sir", "r1": "I thank you", "r2": "for the seeds", "r3": "Kew"}


@pytest.fixture
def store_args(tmp_path, make_line):
    """Predictions as serving logs them (lines with l, t, r, b boxes), some flagged."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    store = MonitoringStore(url, image_dir=tmp_path / "images")
    now = utcnow()
    for i, (rid, text) in enumerate(TEXTS.items()):
        lines = [{"text": "Dcar Sir", "confidence": 0.61, "box": [4, 6, 200, 40]}]
        store.log_prediction(
            PredictionRecord(
                rid,
                "api",
                "m-1",
                make_line(text, seed=i),
                "Dcar Sir",
                0.61,
                25.0,
                lines=lines,
                runtime="onnx-int8",
                timestamp=now - timedelta(hours=i),
            )
        )
    store.log_prediction(PredictionRecord("no-image", "lambda", "m-1", None, "x", 0.5, 1.0))
    store.log_prediction(
        PredictionRecord(
            "old",
            "api",
            "m-1",
            make_line("old"),
            "old",
            0.9,
            1.0,
            timestamp=now - timedelta(days=30),
        )
    )
    for rid in ("r0", "r1", "r2"):
        store.add_feedback(rid, "incorrect", correction=TEXTS[rid])
    store.add_feedback("r3", None, correction="Kew ∞")  # a character the model cannot learn
    store.add_feedback("no-image", "other")
    store.add_feedback("old", "incorrect", correction="old")
    store.close()
    return ["--url", url, "--images", str(tmp_path / "images")]


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_flagged_predictions_become_preannotated_tasks(tmp_path, store_args):
    out = tmp_path / "ls" / "tasks.json"
    output = _invoke(
        "monitor",
        "export",
        "--flagged",
        "--since",
        "7d",
        "--to",
        "labelstudio",
        "--out",
        str(out),
        *store_args,
    )
    assert "wrote 3 task(s)" in output and "no-image: image not retained" in output
    tasks = json.loads(out.read_text())
    assert sorted(t["data"]["request_id"] for t in tasks) == ["r0", "r1", "r2"]
    for task in tasks:
        data = task["data"]
        assert data["ocr"].startswith("/data/local-files/?d=images/")
        image = out.parent / data["ocr"].split("?d=")[1]
        assert image.is_file() and data["flag"] == "incorrect"
        assert data["correction"] == TEXTS[data["request_id"]]
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == "m-1" and prediction["score"] == 0.61
        box, text = prediction["result"]
        assert box["id"] == text["id"] and box["type"] == "rectanglelabels"
        assert text["type"] == "textarea" and text["value"]["text"] == ["Dcar Sir"]
        assert (box["original_width"], box["original_height"]) == (320, 48)
        # (4, 6, 200, 40) in pixels of a 320 x 48 image, in percent.
        assert box["value"]["x"] == pytest.approx(4 / 320 * 100)
        assert box["value"]["y"] == pytest.approx(6 / 48 * 100)
        assert box["value"]["width"] == pytest.approx(196 / 320 * 100)
        assert box["value"]["height"] == pytest.approx(34 / 48 * 100)


def test_export_is_found_by_the_real_quill_command_which_loads_only_what_it_needs() -> None:
    """`quill monitor export` through the console entry point (which imports only the
    modules of the command asked for), and monitoring's modules never import annotation."""
    code = "import sys; from quill.cli import main; sys.argv = ['quill', *sys.argv[1:]]; main()"
    done = subprocess.run(
        [sys.executable, "-c", code, "monitor", "export", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Label Studio tasks" in done.stdout and "--flagged" in done.stdout
    # No import of annotation anywhere in monitoring, at module level or inside a function.
    root = Path(__file__).resolve().parents[2] / "src" / "quill" / "monitoring"
    upward = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            upward += [f"{path.name}: {n}" for n in names if n.startswith("quill.annotation")]
    assert upward == []


def _annotate(tasks: list[dict]) -> list[dict]:
    """What Label Studio exports after an annotator accepted each pre-annotated region and
    typed the right text into it (the task's correction)."""
    exported = []
    for number, task in enumerate(tasks, 1):
        results = json.loads(json.dumps(task["predictions"][0]["result"]))
        for result in results:
            result.pop("score", None)
            if result["type"] == "textarea":
                result["value"]["text"] = [task["data"]["correction"]]
        annotation = {
            "id": number,
            "result": results,
            "was_cancelled": False,
            "ground_truth": False,
            "updated_at": "2026-11-28T10:00:00Z",
        }
        exported.append({"id": number, **task, "annotations": [annotation]})
    return exported


def test_exported_tasks_round_trip_into_a_dataset_version(tmp_path, store_args):
    out = tmp_path / "ls" / "tasks.json"
    _invoke("monitor", "export", "--flagged", "--out", str(out), *store_args)
    export = tmp_path / "ls" / "export.json"
    export.write_text(json.dumps(_annotate(json.loads(out.read_text()))))
    annotated = tmp_path / "annotated"
    _invoke(
        "annotate", "import", str(export), "--out", str(annotated), "--images-root", str(out.parent)
    )
    manifest = Manifest.load(annotated)
    lines = [s for s in manifest if s.kind == "line"]
    assert sorted(s.text for s in lines) == sorted(TEXTS[r] for r in ("r0", "r1", "r2"))
    assert {s.source for s in manifest} == {"labelstudio"} and len(manifest.version) == 12

    # Corrections become labelled examples directly; the annotated set is merged in.
    feedback = tmp_path / "feedback"
    output = _invoke(
        "monitor",
        "feedback-dataset",
        "--out",
        str(feedback),
        "--since",
        "7d",
        "--merge",
        str(annotated),
        *store_args,
    )
    merged = Manifest.load(feedback)
    own = [s for s in merged if s.source == "feedback"]
    assert sorted(s.text for s in own) == sorted(TEXTS[r] for r in ("r0", "r1", "r2"))
    assert len(merged) == len(own) + len(manifest)
    assert "'∞'" in output and "request r3" in output  # skipped, with the reason
    report = json.loads((feedback / "import-report.json").read_text())
    assert [s["where"] for s in report["skipped"]] == ["request r3"]
    assert f"version {merged.version}" in output
    for sample in own:
        assert sample.meta["model_text"] == "Dcar Sir" and sample.meta["flag"] == "incorrect"
        assert sample.meta["model_version"] == "m-1" and sample.meta["runtime"] == "onnx-int8"
        assert (merged.root / sample.image).is_file()
    # A page both corrected and annotated is in one group and one split: the annotation's
    # group (labelstudio:TASK) and the photo's (its hash) were split apart.
    for rid in ("r0", "r1", "r2"):
        photo = next(s for s in own if s.meta["request_id"] == rid).meta["image_sha256"]
        same = [
            s
            for s in merged
            if photo in (s.meta.get("image_sha256"), Path(s.meta.get("page", "")).stem)
        ]
        assert {s.source for s in same} == {"feedback", "labelstudio"}, rid
        assert len({(s.group, s.split) for s in same}) == 1, rid
    assert len(report["notes"]) == 3
    # The image is the one the user sent (pixel for pixel).
    r0 = next(s for s in own if s.meta["request_id"] == "r0")
    sent = MonitoringStore(store_args[1], image_dir=store_args[3]).get_prediction("r0")
    original = MonitoringStore(store_args[1], image_dir=store_args[3]).image_bytes(sent)
    assert np.array_equal(
        np.asarray(load_image(merged.path_of(r0))), np.asarray(load_image(original))
    )


def test_delete_and_purge_commands(tmp_path, store_args):
    output = _invoke("monitor", "delete", "--request-id", "r0", *store_args)
    assert "deleted r0" in output
    missing = CliRunner().invoke(app, ["monitor", "delete", "--request-id", "nope", *store_args])
    assert missing.exit_code == 2 and "no such request" in missing.output
    output = _invoke(
        "monitor", "purge", "--older-than", "7", "--images-older-than", "2", *store_args
    )
    assert "1 prediction(s)" in output
    store = MonitoringStore(store_args[1], image_dir=store_args[3])
    left = {p.request_id: p for p in store.predictions()}
    assert set(left) == {"r1", "r2", "r3", "no-image"}
    # r3 was logged 3 hours ago: younger than 2 days, its image stays.
    assert left["r3"].image_sha256 is not None
    status = _invoke("monitor", "status", *store_args)
    assert re.search(r"predictions\s+4\n", status) and "baselines: none" in status


def test_purge_older_than_zero_deletes_everything_not_the_configured_180_days(store_args):
    """`--older-than 0` is "older than now", not "unset" (it used to fall back to the
    config's 180 days and delete nothing here); a flag for an unknown request goes too."""
    url, images = store_args[1], store_args[3]
    MonitoringStore(url, image_dir=images).add_feedback("never-stored", "other", comment="?")
    output = _invoke("monitor", "purge", "--older-than", "0", *store_args)
    assert "data older than 0 d" in output
    store = MonitoringStore(url, image_dir=images)
    assert store.counts() == {
        "predictions": 0,
        "feedback": 0,
        "shadow_predictions": 0,
        "baselines": 0,
    }
    # no image is left; the folder still says whose it is
    left = [p.name for p in Path(images).rglob("*") if p.is_file()]
    assert left == [OWNER_FILE]
    negative = CliRunner().invoke(app, ["monitor", "purge", "--older-than", "-1", *store_args])
    assert negative.exit_code == 2


def test_a_second_store_cannot_share_the_first_ones_image_folder(store_args, tmp_path):
    """Two SQLite files in one folder both put their images in images/ beside them: a purge
    of an empty second store deleted all 93 of the first one's photos as strays."""
    images = Path(store_args[3])
    photos = sorted(p for p in images.rglob("*.png"))
    assert photos and (images / OWNER_FILE).read_text().strip() == f"sqlite:///{tmp_path / 'm.db'}"
    other = ["--url", f"sqlite:///{tmp_path / 'other.db'}", "--images", str(images)]
    # a folder of its own works, and is marked as that store's on its first write
    own = tmp_path / "other-images"
    MonitoringStore(other[1], image_dir=own).log_prediction(
        PredictionRecord("x", "api", "m-1", photos[0].read_bytes(), "x", 0.5, 1.0)
    )
    assert (own / OWNER_FILE).read_text().strip() == f"sqlite:///{tmp_path / 'other.db'}"
    for command in (["purge", "--older-than", "0"], ["delete", "--request-id", "x"], ["backfill"]):
        refused = CliRunner().invoke(app, ["monitor", *command, *other])
        assert refused.exit_code == 2, refused.output
        assert "holds the images of another monitoring store" in refused.output
    assert sorted(p for p in images.rglob("*.png")) == photos
    assert MonitoringStore(other[1], image_dir=own).counts()["predictions"] == 1
