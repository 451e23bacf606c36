"""Tasks in Label Studio's import format, from folders, manifests, lists and URLs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from quill.annotation.cli import register
from quill.annotation.geometry import percent_to_box
from quill.annotation.tasks import (
    TaskSourceError,
    build_tasks,
    collect_images,
    prediction_for,
    upright_size,
)
from quill.data.manifest import Manifest, Sample, file_sha256

runner = CliRunner()


def cli(*args: str):
    app = typer.Typer()
    register(app)
    return runner.invoke(app, ["annotate", *map(str, args)])


@pytest.fixture
def scans(tmp_path) -> Path:
    """scans/a.png, scans/sub dir/b c.jpg and a stray text file."""
    root = tmp_path / "scans"
    (root / "sub dir").mkdir(parents=True)
    Image.new("RGB", (300, 200), "white").save(root / "a.png")
    Image.new("RGB", (120, 400), "white").save(root / "sub dir" / "b c.jpg")
    (root / "notes.txt").write_text("not an image list")
    return root


def test_folder_to_json_tasks_with_local_files_urls(tmp_path, scans):
    out = tmp_path / "tasks.json"
    result = cli("tasks", scans, "--out", out, "--document-root", tmp_path)
    assert result.exit_code == 0, result.output
    tasks = json.loads(out.read_text())
    assert [t["data"]["ocr"] for t in tasks] == [
        "/data/local-files/?d=scans/a.png",
        "/data/local-files/?d=scans/sub%20dir/b%20c.jpg",
    ]
    assert tasks[0]["data"]["image_path"] == "scans/a.png"
    assert tasks[0]["data"]["sha256"] == file_sha256(scans / "a.png")
    assert all("predictions" not in t for t in tasks)
    assert "wrote 2 tasks (0 pre-annotated)" in result.output


def test_csv_header_names_the_variables(tmp_path, scans):
    out = tmp_path / "tasks.csv"
    result = cli("tasks", scans / "a.png", "--out", out, "--document-root", tmp_path)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["ocr", "image_path", "sha256"]
    assert rows[0]["ocr"] == "/data/local-files/?d=scans/a.png"


def test_manifest_list_and_urls(tmp_path, scans):
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    Image.new("RGB", (90, 30), "white").save(dataset / "x.png")
    sample = Sample("x.png", "hi", "train", "feedback", file_sha256(dataset / "x.png"), "req-1")
    Manifest(dataset, [sample]).save()
    listing = tmp_path / "list.txt"
    listing.write_text("# flagged by users\nscans/a.png\n\nhttps://example.org/p.jpg\n")

    refs = collect_images([str(dataset), str(listing), "https://example.org/q.png"])
    tasks, notes = build_tasks(refs, tmp_path, url_prefix="https://files.example.org/")
    assert [t["data"]["ocr"] for t in tasks] == [
        "https://files.example.org/dataset/x.png",
        "https://files.example.org/scans/a.png",
        "https://example.org/p.jpg",
        "https://example.org/q.png",
    ]
    assert tasks[0]["data"]["source"] == "feedback" and tasks[0]["data"]["group"] == "req-1"
    assert tasks[2]["data"] == {"ocr": "https://example.org/p.jpg"}
    assert notes == []


def test_bad_sources_are_named(tmp_path, scans):
    with pytest.raises(TaskSourceError, match="no such file"):
        collect_images([str(tmp_path / "nope")])
    with pytest.raises(TaskSourceError, match="not an image, a manifest"):
        collect_images([str(_write(tmp_path / "x.yaml", "a: 1"))])
    with pytest.raises(TaskSourceError, match="list.txt:2: no such image"):
        collect_images([str(_write(tmp_path / "list.txt", "scans/a.png\nscans/gone.png\n"))])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TaskSourceError, match="no images"):
        collect_images([str(empty)])
    result = cli("tasks", scans, "--out", tmp_path / "t.json", "--document-root", empty)
    assert result.exit_code == 2
    assert "outside the document root" in result.output
    result = cli("tasks", scans, "--out", tmp_path / "t.csv", "--model", tmp_path)
    assert result.exit_code == 2 and "CSV tasks cannot carry pre-annotations" in result.output
    result = cli("tasks", scans, "--out", tmp_path / "t.json", "--model", tmp_path / "nomodel")
    assert result.exit_code == 2 and "not a staged model" in result.output


def test_a_web_prefix_refuses_images_outside_the_document_root(tmp_path, scans):
    """It used to glue the absolute path to the prefix (https://host/images//tmp/...)."""
    elsewhere = tmp_path / "served"
    elsewhere.mkdir()
    out = tmp_path / "t.json"
    result = cli(
        "tasks", scans, "--out", out, "--url-prefix", "https://host/images/",
        "--document-root", elsewhere,
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert f"{scans / 'a.png'} is outside the document root {elsewhere}" in result.output
    assert "--url-prefix https://host/images/" in result.output and not out.exists()
    result = cli(
        "tasks", scans, "--out", out, "--url-prefix", "https://host/images/",
        "--document-root", tmp_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    urls = [t["data"]["ocr"] for t in json.loads(out.read_text())]
    assert urls == [
        "https://host/images/scans/a.png",
        "https://host/images/scans/sub%20dir/b%20c.jpg",
    ]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_exif_sideways_photo_reports_the_displayed_size(tmp_path):
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    Image.new("RGB", (400, 300), "white").save(path, exif=exif)
    assert upright_size(path) == (300, 400)


def test_prediction_regions_round_trip_to_the_model_boxes():
    from quill.inference.recognizer import LinePrediction, Prediction

    prediction = Prediction(
        text="Kew\nGardens",
        confidence=0.8,
        lines=[
            LinePrediction("Kew", 0.9, (10, 20, 210, 70)),
            LinePrediction("Gardens", 0.7, (12, 90, 400, 150)),
        ],
        timings={},
        model_version="smoke-123",
    )
    converted = prediction_for(prediction, "page.png", 800, 600)
    assert converted["model_version"] == "smoke-123" and converted["score"] == 0.8
    results = converted["result"]
    assert len(results) == 4
    for line, (box_result, text_result) in zip(
        prediction.lines, zip(results[::2], results[1::2], strict=True), strict=True
    ):
        assert box_result["id"] == text_result["id"]
        assert box_result["type"] == "rectanglelabels"
        assert box_result["value"]["rectanglelabels"] == ["Line"]
        assert (box_result["from_name"], text_result["from_name"]) == ("label", "transcription")
        assert text_result["type"] == "textarea" and text_result["value"]["text"] == [line.text]
        assert box_result["original_width"] == 800 and box_result["original_height"] == 600
        assert box_result["score"] == line.confidence
        box = percent_to_box(box_result["value"], 800, 600)
        left, top, right, bottom = line.box
        assert box.bounds() == pytest.approx((left, top, right, bottom))
        assert all(0 <= box_result["value"][k] <= 100 for k in ("x", "y", "width", "height"))
    assert results[0]["id"] != results[2]["id"]


def test_remote_images_are_not_pre_annotated(tmp_path):
    calls = []
    refs = collect_images(["https://example.org/a.jpg"])
    tasks, notes = build_tasks(refs, tmp_path, predictor=lambda paths: calls.append(paths) or [])
    assert tasks == [{"data": {"ocr": "https://example.org/a.jpg"}}]
    assert notes == ["https://example.org/a.jpg: remote image, not pre-annotated"]
    assert calls == []
