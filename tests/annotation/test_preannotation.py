"""Pre-annotations from a real staged model: its lines become editable regions, and an
annotator who accepts them (fixing the text) produces a dataset."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from quill.annotation.cli import register
from quill.annotation.geometry import percent_to_box
from quill.annotation.importer import ImportOptions, import_export
from quill.data.manifest import Manifest

SIZE = (520, 420)
PAGE = [("hello", 80, 60, 0.0), ("quill", 80, 180, 0.0), ("Kew ink", 80, 300, 0.0)]


def overlap(a: tuple, b: tuple) -> float:
    """Intersection over union of two (left, top, right, bottom) boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


@pytest.mark.slow  # stages the smoke model (~1 min on a busy machine) unless already staged
def test_model_lines_become_regions_and_accepted_regions_a_dataset(tmp_path, ls, smoke_model):
    pages = tmp_path / "pages"
    pages.mkdir()
    image, drawn = ls.draw_page(PAGE, SIZE)
    image.save(pages / "smoke.png")
    app = typer.Typer()
    register(app)
    out = tmp_path / "tasks.json"
    args = ["annotate", "tasks", str(pages), "-o", str(out), "--document-root", str(tmp_path)]
    result = CliRunner().invoke(app, [*args, "--model", str(smoke_model), "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "wrote 1 tasks (1 pre-annotated)" in result.output

    (task,) = json.loads(out.read_text())
    (prediction,) = task["predictions"]
    meta = json.loads((smoke_model / "quill-model.json").read_text())
    assert prediction["model_version"] == meta["version"]
    assert 0.0 <= prediction["score"] <= 1.0
    results = prediction["result"]
    boxes = [r for r in results if r["type"] == "rectanglelabels"]
    texts = {r["id"]: r for r in results if r["type"] == "textarea"}
    assert len(boxes) == len(texts) == len(PAGE), "one region per written line"
    for box_result, line in zip(boxes, drawn, strict=True):
        assert box_result["id"] in texts
        assert (box_result["original_width"], box_result["original_height"]) == SIZE
        predicted = percent_to_box(box_result["value"], *SIZE).bounds()
        assert overlap(predicted, line.box.bounds()) > 0.5, (predicted, line.box.bounds())

    # The annotator keeps the model's boxes and types the true text into each.
    top_down = sorted(texts.values(), key=lambda r: r["value"]["y"])
    for result_item, line in zip(top_down, drawn, strict=True):
        result_item["value"]["text"] = [line.text]
        result_item["origin"] = "prediction-changed"
    accepted = ls.annotation(1, results)
    exported = [ls.task(1, task["data"], [accepted], [prediction])]
    export = ls.write_export(tmp_path / "export.json", exported)
    imported = import_export(export, tmp_path / "dataset", ImportOptions(images_root=tmp_path))
    manifest = Manifest.load(tmp_path / "dataset")
    assert imported.manifest.version == manifest.version
    assert [s.text for s in manifest if s.kind == "line"] == [text for text, *_ in PAGE]
    assert [s.text for s in manifest if s.kind == "paragraph"] == ["hello\nquill\nKew ink"]
