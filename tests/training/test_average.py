"""`quill model average`: the weighted mean of fine-tunes of one model, written as a training
checkpoint that staging and `--init-from` take; on the real smoke model and its checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from quill.cli import app
from quill.model_files import METADATA_FILE
from quill.staging.parity import render_line
from quill.staging.smoke import SMOKE_WORDS
from quill.staging.stage import CheckpointSource, stage_checkpoint
from quill.training.average import AVERAGED_FROM_KEY, AveragingError, average_weights
from quill.training.checkpoint import WEIGHT_PREFIX, load_checkpoint


@pytest.fixture
def checkpoint(smoke_model: Path) -> Path:
    """The checkpoint the smoke model was staged from."""
    return smoke_model.parent / "smoke.ckpt"


def _shifted(checkpoint: Path, target: Path, by: float) -> Path:
    """A copy of ``checkpoint`` with every float network weight moved by ``by``."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    saved["state_dict"] = {
        key: value + by if key.startswith(WEIGHT_PREFIX) and value.is_floating_point() else value
        for key, value in saved["state_dict"].items()
    }
    torch.save(saved, target)
    return target


def test_the_average_is_the_weighted_mean_and_stages(
    smoke_model: Path, checkpoint: Path, tmp_path: Path
) -> None:
    moved = _shifted(checkpoint, tmp_path / "moved.ckpt", 1.0)
    averaged = average_weights([checkpoint, moved], tmp_path / "soup.ckpt", [3.0, 1.0])
    assert [share for _, share in averaged.sources] == [0.75, 0.25]

    original = load_checkpoint(checkpoint).model.state_dict()
    soup = load_checkpoint(averaged.path).model.state_dict()
    for name, tensor in original.items():
        expected = tensor + 0.25 if tensor.is_floating_point() else tensor
        assert torch.allclose(soup[name], expected, atol=1e-6), name
    saved = torch.load(averaged.path, map_location="cpu", weights_only=True)
    assert "optimizer_states" not in saved
    assert [entry["weight"] for entry in saved[AVERAGED_FROM_KEY]] == [0.75, 0.25]

    # a staged model is a source too (its TorchScript weights); the same weights average
    # to themselves, and the result stages and reads as the model did
    same = average_weights([smoke_model, checkpoint], tmp_path / "same.ckpt")
    assert "(smoke-" in same.sources[0][0]
    staged = stage_checkpoint(
        CheckpointSource(same.path),
        tmp_path / "staged",
        "soup",
        samples=[render_line(word) for word in SMOKE_WORDS],
    )
    assert staged.parity["backends"]["onnx"]["passed"]


def test_what_cannot_be_averaged_is_named(
    smoke_model: Path, checkpoint: Path, tmp_path: Path
) -> None:
    with pytest.raises(AveragingError, match="at least two"):
        average_weights([checkpoint], tmp_path / "out.ckpt")
    with pytest.raises(AveragingError, match="one weight per model"):
        average_weights([checkpoint, checkpoint], tmp_path / "out.ckpt", [1.0])
    for weights in ([1.0, 0.0], [float("nan"), 1.0], [float("inf"), 1.0], [-1.0, 2.0]):
        with pytest.raises(AveragingError, match="weights must be positive finite numbers"):
            average_weights([checkpoint, checkpoint], tmp_path / "out.ckpt", weights)
    other = Path(shutil.copytree(smoke_model, tmp_path / "other"))
    with pytest.raises(AveragingError, match=r"at least one training checkpoint \(\.ckpt\)"):
        average_weights([smoke_model, other], tmp_path / "out.ckpt")
    with pytest.raises(AveragingError, match=r"not found: .*nowhere\.ckpt"):
        average_weights([checkpoint, tmp_path / "nowhere.ckpt"], tmp_path / "out.ckpt")
    # a mistyped checkpoint beside a staged model: said to be missing, not that no .ckpt
    # was given
    with pytest.raises(AveragingError, match=r"not found: .*best\.ckpt"):
        average_weights([smoke_model, tmp_path / "best.ckpt"], tmp_path / "out.ckpt")
    before = checkpoint.read_bytes()
    copy = Path(shutil.copy(checkpoint, tmp_path / "copy.ckpt"))
    with pytest.raises(AveragingError, match="is one of the models to average"):
        average_weights([checkpoint, copy], checkpoint)  # was: the run's checkpoint replaced
    assert checkpoint.read_bytes() == before
    with pytest.raises(AveragingError, match=r"given more than once; .*--weight"):
        average_weights([checkpoint, copy, tmp_path / "." / "copy.ckpt"], tmp_path / "out.ckpt")

    # width pooling changes no tensor: the same weights read at another frame rate
    pooled = Path(shutil.copytree(smoke_model, tmp_path / "pooled"))
    meta = json.loads((pooled / METADATA_FILE).read_text(encoding="utf-8"))
    meta["model_config"]["width_pool_blocks"] = meta["model_config"].get("width_pool_blocks", 2) + 1
    (pooled / METADATA_FILE).write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(AveragingError, match="another architecture .*width_pool_blocks"):
        average_weights([checkpoint, pooled], tmp_path / "out.ckpt")

    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    name = next(k for k, v in saved["state_dict"].items() if v.ndim == 2)
    saved["state_dict"][name] = torch.zeros(3, 3)
    torch.save(saved, tmp_path / "narrow.ckpt")
    with pytest.raises(AveragingError):
        average_weights([checkpoint, tmp_path / "narrow.ckpt"], tmp_path / "out.ckpt")
    assert not (tmp_path / "out.ckpt").exists()


def test_the_command_writes_the_checkpoint_and_names_its_shares(
    checkpoint: Path, tmp_path: Path
) -> None:
    moved = _shifted(checkpoint, tmp_path / "moved.ckpt", 0.5)
    out = tmp_path / "soups" / "soup.ckpt"
    result = CliRunner().invoke(
        app, ["model", "average", str(checkpoint), str(moved), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "0.500 x" in result.output and "averaged" in result.output and out.is_file()

    refused = CliRunner().invoke(app, ["model", "average", str(checkpoint), "--out", str(out)])
    assert refused.exit_code == 2 and "at least two" in refused.output


@pytest.mark.parametrize("weight", ["nan", "inf"])
def test_the_command_refuses_a_weight_that_is_not_a_positive_number(
    checkpoint: Path, tmp_path: Path, weight: str
) -> None:
    out = tmp_path / "soup.ckpt"
    args = ["model", "average", str(checkpoint), str(checkpoint), "-o", str(out)]
    result = CliRunner().invoke(app, [*args, "--weight", weight, "--weight", "1"])
    assert result.exit_code == 2, result.output
    assert "error: weights must be positive finite numbers" in result.output
    assert not out.exists()


def test_an_output_that_cannot_be_written_is_refused_before_averaging(
    checkpoint: Path, tmp_path: Path
) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder\n")
    for out, message in [
        (a_file / "soup.ckpt", f"{a_file} is a file, not a folder"),
        (tmp_path, f"{tmp_path}: is a folder; give a file name"),
        # permission bits let root write anywhere: /proc takes no file all the same
        (Path("/proc/nowhere/soup.ckpt"), "cannot write in /proc"),
    ]:
        result = CliRunner().invoke(
            app, ["model", "average", str(checkpoint), str(checkpoint), "-o", str(out)]
        )
        assert result.exit_code == 2, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert message in result.output and not out.is_file()
