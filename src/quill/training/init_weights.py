"""Start a training run from the weights of an earlier model (``model.init_from``).

Fine-tuning is how a model improves after it ships: retrain the current default on its users'
corrections, or give a finished run more epochs under a fresh learning-rate schedule. Unlike
``--resume``, only the network's weights carry over; the optimiser, schedule and epoch count
start anew from the run's own config.

The source is either a Quill training checkpoint (``.ckpt``) or a staged model directory (its
TorchScript ``model.pt`` holds the weights). Either must have the run's architecture and the
run's character set: a vocabulary that differs only in order has the same shapes and would
load without complaint while mapping every output class to the wrong character.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from quill.vocab import Tokenizer

#: Run tag naming the weights a run started from; staging copies it into the model's lineage.
INITIALISED_FROM_TAG = "quill.initialised_from"


class InitWeightsError(ValueError):
    """The weights to start from cannot be used for this run; the message says why."""


def _from_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """The network weights and tokenizer of a Quill ``.ckpt``, read by the same function that
    stages one (weights-only unpickling, hyper-parameters checked)."""
    from quill.staging.checkpoint import CheckpointError, load_checkpoint

    try:
        loaded = load_checkpoint(path)
    except CheckpointError as exc:
        raise InitWeightsError(f"cannot read {path} as a checkpoint: {exc}") from exc
    return loaded.model.state_dict(), loaded.tokenizer.to_dict(), str(path)


def _from_staged(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    meta_path = directory / "quill-model.json"
    scripted_path = directory / "model.pt"
    if not meta_path.is_file() or not scripted_path.is_file():
        raise InitWeightsError(
            f"{directory} is not a staged model with TorchScript weights "
            "(expected quill-model.json and model.pt, as `quill stage` writes)"
        )
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    try:
        state = torch.jit.load(str(scripted_path), map_location="cpu").state_dict()
    except RuntimeError as exc:
        raise InitWeightsError(f"cannot read {scripted_path}: {exc}") from exc
    # a CTC export wraps the network as `.model` (staging.export.CTCExport); seq2seq is bare
    if meta.get("family") == "ctc":
        state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    return dict(state), meta.get("tokenizer", {}), f"{directory} ({meta.get('version')})"


def load_initial_weights(model: nn.Module, source: str | Path, tokenizer: Tokenizer) -> str:
    """Copy the weights of ``source`` (a ``.ckpt`` or a staged model directory) into ``model``;
    returns what was loaded, for the run's lineage (a staged model's path and version).

    Raises :class:`InitWeightsError` when the source is missing, of another kind, has another
    character set, or does not fit the architecture (every tensor must match by name and shape).
    """
    path = Path(source)
    if path.is_dir():
        state, source_tokenizer, loaded = _from_staged(path)
    elif path.is_file():
        state, source_tokenizer, loaded = _from_checkpoint(path)
    else:
        raise InitWeightsError(f"model.init_from: {path} does not exist")
    if source_tokenizer != tokenizer.to_dict():
        raise InitWeightsError(
            f"{path} was trained with another character set than this run's; "
            "its output classes would map to the wrong characters"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise InitWeightsError(
            f"the weights in {path} do not fit this run's model.config ({first_line}); "
            "start from a model of the same architecture"
        ) from exc
    return loaded
