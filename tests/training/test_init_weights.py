"""`model.init_from`: fine-tuning starts from a staged model's or a checkpoint's weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from quill.models import build_model
from quill.training.init_weights import InitWeightsError, load_initial_weights
from quill.vocab import Tokenizer

from .conftest import REPO_ROOT

SHIPPED = REPO_ROOT / "models" / "default"


def shipped_architecture(**changes: object) -> torch.nn.Module:
    meta = json.loads((SHIPPED / "quill-model.json").read_text(encoding="utf-8"))
    return build_model(meta["model_name"], len(Tokenizer()), **{**meta["model_config"], **changes})


def test_a_staged_model_gives_its_exported_weights() -> None:
    model = shipped_architecture()
    loaded = load_initial_weights(model, SHIPPED, Tokenizer())
    version = json.loads((SHIPPED / "quill-model.json").read_text(encoding="utf-8"))["version"]
    assert loaded == f"{SHIPPED} ({version})"
    exported = torch.jit.load(str(SHIPPED / "model.pt")).state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, exported[f"model.{name}"]), name


def test_another_architecture_is_refused_with_the_reason() -> None:
    with pytest.raises(InitWeightsError, match="do not fit this run's model.config"):
        load_initial_weights(shipped_architecture(hidden=128), SHIPPED, Tokenizer())


def test_another_character_set_is_refused(tmp_path: Path) -> None:
    staged = tmp_path / "staged"
    shutil.copytree(SHIPPED, staged, ignore=shutil.ignore_patterns("*.onnx", "lm.json"))
    meta = json.loads((staged / "quill-model.json").read_text(encoding="utf-8"))
    characters = meta["tokenizer"]["characters"]
    meta["tokenizer"]["characters"] = characters[1::-1] + characters[2:]  # same size, reordered
    (staged / "quill-model.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(InitWeightsError, match="another character set"):
        load_initial_weights(shipped_architecture(), staged, Tokenizer())


def test_missing_or_foreign_sources_are_clear_errors(tmp_path: Path) -> None:
    model = shipped_architecture()
    with pytest.raises(InitWeightsError, match="does not exist"):
        load_initial_weights(model, tmp_path / "nowhere.ckpt", Tokenizer())
    with pytest.raises(InitWeightsError, match="not a staged model"):
        load_initial_weights(model, tmp_path, Tokenizer())
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(b"PK\x03\x04 not a whole file")
    with pytest.raises(InitWeightsError, match="cannot read"):
        load_initial_weights(model, truncated, Tokenizer())
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": model.state_dict()}, foreign)
    with pytest.raises(InitWeightsError, match="not a Quill training checkpoint"):
        load_initial_weights(model, foreign, Tokenizer())
