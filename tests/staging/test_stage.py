"""Staging: checkpoint -> ONNX + TorchScript with parity, model card, MLflow registry."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from quill.cli import app
from quill.models import build_model
from quill.models.onnx_export import export_interface
from quill.preprocess import PreprocessConfig
from quill.runtimes.backends import TorchModuleRuntime
from quill.staging.parity import ParityError, check_parity, sample_inputs
from quill.training.checkpoint import CheckpointError, load_checkpoint, write_checkpoint
from quill.vocab import Tokenizer

TINY = {"channels": [8, 16, 16, 16], "hidden": 32, "layers": 1, "dropout": 0.0}


def tiny_checkpoint(path: Path, seed: int = 0, dataset_version: str = "ds-123") -> Path:
    torch.manual_seed(seed)
    tokenizer = Tokenizer()
    model = build_model("ctc_line", len(tokenizer), **TINY)
    return write_checkpoint(
        path, model, "ctc_line", tokenizer, PreprocessConfig(), dataset_version=dataset_version
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One real SQLite MLflow store for the module (creating one runs its migrations)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlruns') / 'mlflow.db'}"


@pytest.mark.slow
def test_stage_register_and_fetch_through_the_cli(tmp_path: Path, tracking_uri: str) -> None:
    torch.set_num_threads(1)
    checkpoint = tiny_checkpoint(tmp_path / "tiny.ckpt")
    out = tmp_path / "models" / "tiny"
    notes = tmp_path / "card-notes.md"
    notes.write_text("## Data sources and attribution\n\nTiny lines drawn by the test.\n")
    runner = CliRunner()
    command = ["stage", str(checkpoint), "--out", str(out), "--tracking-uri", tracking_uri]
    missing_notes = runner.invoke(app, [*command, "--card-notes", str(tmp_path / "none.md")])
    assert missing_notes.exit_code == 2 and "none.md" in missing_notes.output
    assert not out.exists()
    result = runner.invoke(app, [*command, "--alias", "champion", "--card-notes", str(notes)])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "quill-model.json").read_text())
    assert {"model.onnx", "model.pt", "MODEL_CARD.md"} <= {p.name for p in out.iterdir()}
    assert meta["family"] == "ctc" and meta["model_name"] == "ctc_line"
    assert meta["lineage"]["dataset_version"] == "ds-123"
    assert meta["lineage"]["checkpoint_sha256"] == digest(checkpoint)
    assert meta["parity"]["passed"] and set(meta["parity"]["backends"]) == {"onnx", "torchscript"}
    card = (out / "MODEL_CARD.md").read_text()
    for needle in ("Intended use", "Printed text", "Layouts", "Character set", "ds-123"):
        assert needle in card
    assert card.endswith("## Data sources and attribution\n\nTiny lines drawn by the test.\n")

    from mlflow.tracking import MlflowClient

    version = MlflowClient(tracking_uri, registry_uri=tracking_uri).get_model_version_by_alias(
        "tiny", "champion"
    )
    assert version.tags["dataset_version"] == "ds-123"
    assert version.tags["checkpoint_sha256"] == digest(checkpoint)
    assert version.tags["quill.model_version"] == meta["version"]

    fetched = tmp_path / "fetched"
    result = runner.invoke(
        app,
        [
            "model",
            "fetch",
            "tiny@champion",
            "--out",
            str(fetched),
            "--tracking-uri",
            tracking_uri,
        ],
    )
    assert result.exit_code == 0, result.output
    for name in ("model.onnx", "model.pt", "quill-model.json"):
        assert digest(fetched / name) == digest(out / name)
    missing = runner.invoke(
        app,
        [
            "model",
            "fetch",
            "tiny@nope",
            "--out",
            str(tmp_path / "x"),
            "--tracking-uri",
            tracking_uri,
        ],
    )
    assert missing.exit_code == 2 and "tiny@nope" in missing.output


@pytest.mark.slow
def test_stage_from_an_mlflow_run_records_its_lineage(tmp_path: Path, tracking_uri: str) -> None:
    """A run id stages the checkpoint its quill.best_checkpoint tag names, with its metrics."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from quill.inference.recognizer import Recognizer

    torch.set_num_threads(1)
    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("train", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(experiment)
    best = tiny_checkpoint(tmp_path / "ckpt" / "epoch=3.ckpt", seed=1)
    tiny_checkpoint(tmp_path / "ckpt" / "last.ckpt", seed=2)
    client.log_artifact(run.info.run_id, str(best), "checkpoints")
    client.log_artifact(run.info.run_id, str(tmp_path / "ckpt" / "last.ckpt"), "checkpoints")
    client.set_tag(run.info.run_id, "quill.best_checkpoint", "checkpoints/epoch=3.ckpt")
    client.log_metric(run.info.run_id, "test_cer", 0.125)
    client.set_tag(run.info.run_id, "quill.initialised_from", "models/previous (v-1)")
    client.set_terminated(run.info.run_id)

    out = tmp_path / "staged"
    result = CliRunner().invoke(
        app,
        [
            "stage",
            run.info.run_id[:8],  # a unique id prefix, as `quill runs list` shows it
            "--out",
            str(out),
            "--name",
            "lineage-test",
            "--tracking-uri",
            tracking_uri,
        ],
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "quill-model.json").read_text())
    assert meta["lineage"]["run_id"] == run.info.run_id
    assert meta["lineage"]["checkpoint"] == "checkpoints/epoch=3.ckpt"
    assert meta["lineage"]["checkpoint_sha256"] == digest(best)
    assert meta["metrics"]["test_cer"] == pytest.approx(0.125)
    assert meta["lineage"]["initialised_from"] == "models/previous (v-1)"
    card = (out / "MODEL_CARD.md").read_text()
    assert "test_cer" in card
    assert "`models/previous (v-1)` (fine-tuned)" in card
    versions = MlflowClient(tracking_uri, registry_uri=tracking_uri).search_model_versions(
        "name='lineage-test'"
    )
    assert [v.run_id for v in versions] == [run.info.run_id]
    mlflow.set_tracking_uri(None)

    recognizer = Recognizer.from_registry(
        "lineage-test", tracking_uri=tracking_uri, cache_dir=tmp_path / "cache"
    )
    assert recognizer.model_version == meta["version"]


def test_parity_check_rejects_an_export_that_reads_differently() -> None:
    """Two networks with different weights stand in for a broken export: texts differ."""
    torch.set_num_threads(1)
    tokenizer = Tokenizer()
    inputs = sample_inputs(PreprocessConfig())
    runners = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model("ctc_line", len(tokenizer), **TINY).eval()
        runners.append(TorchModuleRuntime(export_interface(model), "ctc"))
    same = check_parity(runners[0], {"copy": runners[0]}, inputs, tokenizer)
    assert same.passed and same.backends[0].max_confidence_diff == 0.0
    report = check_parity(runners[0], {"broken": runners[1]}, inputs, tokenizer)
    assert not report.passed
    with pytest.raises(ParityError, match="broken"):
        report.raise_for_failure()


def test_staging_a_file_that_is_not_a_checkpoint_fails_clearly(tmp_path: Path) -> None:
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.ckpt"):
        load_checkpoint(junk)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    with pytest.raises(CheckpointError, match="model_name"):
        load_checkpoint(foreign)
    result = CliRunner().invoke(
        app, ["stage", str(junk), "--out", str(tmp_path / "out"), "--no-register"]
    )
    assert result.exit_code == 2
    assert "junk.ckpt" in result.output and not (tmp_path / "out").exists()


def test_staging_never_writes_over_its_checkpoint_or_a_folder_of_other_things(
    tmp_path: Path,
) -> None:
    """The staged folder is replaced whole, so a folder that is not a staged model, or that
    holds the checkpoint being staged, is refused before any work and kept as it was."""
    run = tmp_path / "run"
    checkpoint = tiny_checkpoint(run / "checkpoints" / "last.ckpt")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("mine")
    for out, message in (
        (run, "which staging reads from"),
        (notes, "is not empty and is not a staged model"),
        (notes / "keep.txt", "is a file"),
        (notes / "keep.txt" / "model", "is a file, not a folder"),  # was a traceback
    ):
        result = CliRunner().invoke(
            app, ["stage", str(checkpoint), "--out", str(out), "--no-register"]
        )
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split())
    assert checkpoint.is_file() and (notes / "keep.txt").read_text() == "mine"


def test_staging_into_the_current_folder_is_refused(
    smoke_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`quill stage CKPT --out .` run inside a staged model built its work folder inside the
    model (the parent of "." is "."), then removed the model and its own work with it: the
    folder was left empty and a traceback printed."""
    checkpoint = tiny_checkpoint(tmp_path / "tiny.ckpt")
    model = tmp_path / "model"
    shutil.copytree(smoke_model, model)
    before = sorted(p.name for p in model.iterdir())
    monkeypatch.chdir(model)
    for out in (".", str(model), ".."):
        result = CliRunner().invoke(app, ["stage", str(checkpoint), "--out", out, "--no-register"])
        assert result.exit_code == 2, result.output
        assert "is the current folder or holds it" in " ".join(result.output.split())
    assert sorted(p.name for p in model.iterdir()) == before


def test_checkpoint_round_trip_rebuilds_identical_outputs(tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "tiny.ckpt")
    torch.manual_seed(0)
    original = build_model("ctc_line", len(Tokenizer()), **TINY).eval()
    loaded = load_checkpoint(checkpoint)
    images = torch.from_numpy(np.random.default_rng(0).random((2, 1, 64, 96), dtype=np.float32))
    with torch.inference_mode():
        assert torch.equal(original(images), loaded.model(images))
    assert loaded.dataset_version == "ds-123" and loaded.family == "ctc"


SEQ2SEQ = {
    "line_cnn_transformer": (
        {"channels": [8, 16, 16, 16], "dim": 32, "heads": 2, "decoder_layers": 1, "ff_dim": 64},
        PreprocessConfig(),
    ),
    "resnet_transformer": (
        {
            "resnet_blocks": [1, 1],
            "resnet_widths": [8, 16],
            "dim": 32,
            "heads": 2,
            "decoder_layers": 1,
            "ff_dim": 64,
        },
        PreprocessConfig(kind="paragraph", paragraph_height=96, paragraph_width=128),
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", SEQ2SEQ)
def test_a_seq2seq_model_stages_as_encoder_and_decoder_step_graphs(
    name: str, tmp_path: Path
) -> None:
    """ONNX encoder + cached step graphs, scripted generate, parity; all runtimes agree."""
    from quill.inference.recognizer import Recognizer
    from quill.staging.parity import render_line

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tokenizer = Tokenizer()
    config, preprocess = SEQ2SEQ[name]
    model = build_model(name, len(tokenizer), dropout=0.0, max_output_length=12, **config)
    checkpoint = write_checkpoint(tmp_path / "s2s.ckpt", model, name, tokenizer, preprocess)
    # Staged through the CLI in a fresh process, as users run it.
    out = tmp_path / "s2s"
    subprocess.run(
        [
            str(Path(sys.executable).parent / "quill"),
            "stage",
            str(checkpoint),
            "--out",
            str(out),
            "--name",
            "s2s",
            "--no-register",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    meta = json.loads((out / "quill-model.json").read_text())
    assert meta["family"] == "seq2seq" and meta["max_output_length"] == 12
    assert {"encoder.onnx", "decoder_step.onnx"} <= set(meta["backends"]["onnx"]["files"])
    assert meta["parity"]["passed"]
    images = [render_line("hello"), render_line("Kew, 1887")]
    predictions = {
        backend: Recognizer.from_path(out, backend, threads=1).predict(images)
        for backend in ("onnx", "torchscript", "eager")
    }
    texts = {backend: [p.text for p in found] for backend, found in predictions.items()}
    assert texts["onnx"] == texts["torchscript"] == texts["eager"]
    expected_kind = "paragraph" if preprocess.kind == "paragraph" else "line"
    assert {p.kind for p in predictions["onnx"]} == {expected_kind}
