"""`quill model quantize`: a staged model's int8 copy (static int8 convolutions calibrated on
the samples, dynamic int8 matrix products), checked against its float graph, as the onnx-int8
runtime that auto may serve with; on the real smoke model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
from typer.testing import CliRunner

from quill.cli import app
from quill.data.manifest import Manifest, Sample
from quill.inference.recognizer import Recognizer
from quill.model_files import ONNX_FILE, ONNX_INT8_FILE
from quill.runtimes.backends import load_backend, preferred
from quill.staged_model import ModelLoadError, StagedModel
from quill.staging.parity import render_line
from quill.staging.quantize import Int8Drift, QuantizeError, add_int8
from quill.staging.smoke import SMOKE_WORDS


@pytest.fixture
def model(smoke_model: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(smoke_model, tmp_path / "model"))


def test_the_int8_copy_quantises_matrix_products_and_reads_as_a_runtime(model: Path) -> None:
    before = StagedModel.load(model)
    images = [render_line(word) for word in SMOKE_WORDS]
    staged = add_int8(model, images)

    graph = onnx.load(str(model / ONNX_INT8_FILE)).graph
    ops = {node.op_type for node in graph.node}
    assert any(op.startswith("DynamicQuantize") or op == "MatMulInteger" for op in ops)
    assert "ConvInteger" not in ops  # no dynamic convolutions: they have no fast CPU kernel
    produced_by = {out: node for node in graph.node for out in node.output}
    float_weights = {w.name: tuple(w.dims) for w in graph.initializer}
    convolutions = [n for n in graph.node if n.op_type == "Conv" and "/identity" not in n.name]
    first, *others = convolutions
    assert first.input[0] == "images" and float_weights[first.input[1]][1] == 1  # stays float
    assert others and all(produced_by[c.input[1]].op_type == "DequantizeLinear" for c in others)
    assert all(produced_by[c.input[0]].op_type == "DequantizeLinear" for c in others)
    # every pool whose output is quantised hands it over through a 1x1 identity convolution
    quantised = [produced_by[n.input[0]] for n in graph.node if n.op_type == "QuantizeLinear"]
    assert "MaxPool" not in {n.op_type for n in quantised}
    identities = [n for n in quantised if n.name.endswith("/identity")]
    assert identities and produced_by[identities[0].input[0]].op_type == "MaxPool"

    reloaded = StagedModel.load(model)
    assert reloaded.version == staged.version == staged.content_version() != before.version
    assert reloaded.files_of("onnx-int8") == [model / ONNX_INT8_FILE]
    check = reloaded.parity["backends"]["onnx-int8"]
    assert check["reference"] == "onnx" and check["total"] == 2 * len(images)
    assert check["drift_cer"] <= 0.02 and check["identical"] >= 1
    assert not list(model.glob(".int8-*"))  # the scratch folder is gone

    int8 = Recognizer.from_path(model, backend="onnx-int8", threads=1)
    assert [p.text for p in int8.predict(images)] == list(SMOKE_WORDS)
    assert int8.describe()["backend"] == "onnx-int8"
    auto = Recognizer.from_path(model, backend="auto", threads=1)
    assert set(auto.backend_timings) == {"onnx", "onnx-int8", "torchscript"}
    assert auto.backend == preferred(auto.backend_timings)


def test_a_copy_beyond_the_allowed_drift_is_refused_and_nothing_changes(model: Path) -> None:
    files = sorted(p.name for p in model.iterdir())
    metadata = (model / "quill-model.json").read_text()
    with pytest.raises(Int8Drift, match="apart from model.onnx"):
        add_int8(model, max_drift=-1.0)  # every copy is at least 0 apart
    assert sorted(p.name for p in model.iterdir()) == files
    assert (model / "quill-model.json").read_text() == metadata


def test_what_cannot_be_quantised_is_named(model: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="quill model quantize"):
        load_backend("onnx-int8", StagedModel.load(model), threads=1)
    with pytest.raises(QuantizeError, match="quill-model.json"):
        add_int8(tmp_path / "nowhere")
    (tmp_path / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(QuantizeError, match="a sample to check the int8 copy on"):
        add_int8(model, [tmp_path / "cut.png"])
    assert not (model / ONNX_INT8_FILE).exists() and not list(model.glob(".int8-*"))
    (model / ONNX_FILE).unlink()
    with pytest.raises(QuantizeError, match="no ONNX graph"):
        add_int8(model)


def _dataset(root: Path, texts: dict[str, str]) -> Path:
    """A Quill dataset folder of rendered lines: text -> split."""
    root.mkdir()
    samples = []
    for number, (text, split) in enumerate(texts.items()):
        render_line(text).save(root / f"{number}.png")
        samples.append(Sample(f"{number}.png", text, split, "rendered", f"{number}"))  # type: ignore[arg-type]
    Manifest(root, samples).save()
    return root


def test_the_command_updates_the_card_and_reports_the_check(model: Path, tmp_path: Path) -> None:
    (model / "MODEL_CARD.md").write_text(
        "# Model card: smoke\n\nVersion `old`\n\n## Export parity on 8 fixed samples\n\nold\n\n"
        "## Files\n\n`model.onnx`\n\n## Notes kept\n\nby hand\n"
    )
    data = _dataset(tmp_path / "data", {w: "train" for w in SMOKE_WORDS} | {"held out": "test"})
    result = CliRunner().invoke(
        app, ["model", "quantize", str(model), "--samples", str(data), "--max-drift", "0.05"]
    )
    assert result.exit_code == 0, result.output
    assert "readings identical to onnx" in result.output and "quantised" in result.output
    card = (model / "MODEL_CARD.md").read_text()
    saved = json.loads((model / "quill-model.json").read_text())
    assert f"Version `{saved['version']}`" in card and "| onnx-int8 |" in card
    assert f"`{ONNX_INT8_FILE}`" in card and card.endswith("## Notes kept\n\nby hand\n")
    # the dataset's training lines only calibrated and checked the copy, under the given limit
    assert saved["backends"]["onnx-int8"]["calibration_samples"] == len(SMOKE_WORDS)
    assert saved["parity"]["backends"]["onnx-int8"]["total"] == 2 * len(SMOKE_WORDS)
    assert "above 5% CER it is refused" in card

    untrained = _dataset(tmp_path / "untrained", {"only a test line": "test"})
    refused = CliRunner().invoke(
        app, ["model", "quantize", str(model), "--samples", str(untrained)]
    )
    assert refused.exit_code == 2 and "has no training lines" in refused.output

    missing = CliRunner().invoke(app, ["model", "quantize", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "not a staged model" in missing.output
