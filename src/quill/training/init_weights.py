"""Start a training run from the weights of an earlier model (``model.init_from``).

Fine-tuning is how a model improves after it ships: retrain the current default on its users'
corrections, or give a finished run more epochs under a fresh learning-rate schedule. Unlike
``--resume``, only the network's weights carry over; the optimiser, schedule and epoch count
start anew from the run's own config.

The source is either a Quill training checkpoint (``.ckpt``) or a staged model directory (its
TorchScript ``model.pt`` holds the weights). It must have the run's architecture; its character
set may differ from the run's (an ASCII model warm-starts a ``model.vocabulary: latin`` run).
Then the tensors indexed by output class (a CTC model's classifier weight and bias, a seq2seq
model's classifier and token embedding) are copied row by row, matched by character, never by
index: each run class takes the source row of the same character (PAD/blank, BOS and EOS by
index), and characters the source did not have keep the run's fresh initialisation. A
vocabulary that differs only in order is mapped correctly rather than loaded as is, which
would make every output class read as the wrong character.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from quill.errors import QuillError
from quill.model_files import METADATA_FILE, TORCHSCRIPT_FILE
from quill.staged_model import ModelLoadError, StagedModel
from quill.training.checkpoint import INITIALISED_FROM_TAG as INITIALISED_FROM_TAG
from quill.training.checkpoint import CheckpointError, load_checkpoint, weights_mismatch
from quill.vocab import SPECIAL_TOKENS, Tokenizer

logger = logging.getLogger(__name__)


class InitWeightsError(QuillError, ValueError):
    """The weights to start from cannot be used for this run; the message says why."""

    code = "init_weights_invalid"


#: Fields of a model's config that change how it trains, not what it computes: they may
#: differ between a run and the model it starts from.
TRAINING_ONLY_FIELDS = frozenset({"dropout"})


@dataclasses.dataclass(frozen=True)
class SourceWeights:
    """What ``model.init_from`` names: its network weights, its character set (a tokenizer
    dict), its architecture (``model_name`` and ``model_config``) and how to name it in a
    run's lineage."""

    state: dict[str, torch.Tensor]
    tokenizer: dict[str, Any]
    model_config: dict[str, Any]
    name: str
    model_name: str


def _from_checkpoint(path: Path) -> SourceWeights:
    """The network weights, tokenizer and architecture of a Quill ``.ckpt``, read by the same
    function that stages one (weights-only unpickling, hyper-parameters checked)."""
    try:
        loaded = load_checkpoint(path)
    except CheckpointError as exc:
        raise InitWeightsError(f"cannot read {path} as a checkpoint: {exc}") from exc
    return SourceWeights(
        loaded.model.state_dict(),
        loaded.tokenizer.to_dict(),
        loaded.model_config,
        str(path),
        loaded.model_name,
    )


def _from_staged(directory: Path) -> SourceWeights:
    """The weights of a staged model's TorchScript file, its tokenizer, architecture and
    version."""
    scripted_path = directory / TORCHSCRIPT_FILE
    if not StagedModel.is_staged(directory) or not scripted_path.is_file():
        raise InitWeightsError(
            f"{directory} is not a staged model with TorchScript weights "
            f"(expected {METADATA_FILE} and {TORCHSCRIPT_FILE}, as `quill stage` writes)"
        )
    try:
        staged = StagedModel.load(directory)
    except ModelLoadError as exc:
        raise InitWeightsError(f"cannot read {directory}: {exc}") from exc
    try:
        state = torch.jit.load(str(scripted_path), map_location="cpu").state_dict()
    except RuntimeError as exc:
        raise InitWeightsError(f"cannot read {scripted_path}: {exc}") from exc
    # a CTC export wraps the network as `.model` (models.onnx_export.CTCExport); seq2seq is bare
    if staged.family == "ctc":
        state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    return SourceWeights(
        dict(state),
        staged.tokenizer.to_dict(),
        staged.model_config,
        f"{directory} ({staged.version})",
        staged.model_name,
    )


def load_initial_weights(model: nn.Module, source: str | Path, tokenizer: Tokenizer) -> str:
    """Copy the weights of ``source`` (a ``.ckpt`` or a staged model directory) into ``model``;
    returns what was loaded, for the run's lineage (a staged model's path and version; when the
    character sets differ, how many characters came from the source and how many are new).

    Raises :class:`InitWeightsError` when the source is missing, of another kind, shares no
    character with the run, or does not fit the architecture: its config must be the run's
    (:func:`architecture_differences`) and every tensor must match by name and shape, except
    the output-class rows, which are matched by character.
    """
    path = Path(source)
    if not path.exists():
        raise InitWeightsError(f"model.init_from: {path} does not exist")
    return load_weights(model, read_weights(path), tokenizer, path)


def load_weights(model: nn.Module, weights: SourceWeights, tokenizer: Tokenizer, path: Path) -> str:
    """:func:`load_initial_weights` of weights already read from ``path`` (a caller that
    looked at them first need not read a large file twice)."""
    state, loaded = weights.state, weights.name
    differences = architecture_differences(weights.model_config, model)
    if differences:
        raise InitWeightsError(
            f"{path} is another architecture than this run's model.config "
            f"({'; '.join(differences)}); give the run the config of the model it starts from"
        )
    try:
        source_vocabulary = Tokenizer.from_dict(weights.tokenizer)
    except (KeyError, TypeError, ValueError) as exc:
        raise InitWeightsError(f"{path} records no usable character set ({exc})") from exc
    if source_vocabulary.characters == tokenizer.characters:
        _load_exactly(model, state, path)
        return loaded
    rows = class_rows(source_vocabulary, tokenizer)
    shared = sum(1 for row in rows[len(SPECIAL_TOKENS) :] if row is not None)
    if shared == 0:
        raise InitWeightsError(
            f"{path} shares no character with this run's vocabulary; "
            "its output classes cannot start any of this run's"
        )
    _load_mapped(model, state, path, rows, len(source_vocabulary), len(tokenizer))
    total = len(tokenizer.characters)
    counts = f"{shared} of {total} characters from the source; {total - shared} new"
    dropped = sorted(set(source_vocabulary.characters) - set(tokenizer.characters))
    if dropped:
        counts += f"; {len(dropped)} of the source's characters this run cannot write"
    summary = f"{loaded} ({counts})"
    if dropped:
        logger.warning(
            "%s reads %d characters this run's vocabulary lacks (%s): the run will not write "
            "them, and training lines holding them are skipped",
            path,
            len(dropped),
            "".join(dropped),
        )
    logger.info("initialised from %s", summary)
    return summary


def architecture_differences(source_config: dict[str, Any], model: nn.Module) -> list[str]:
    """How the architecture a source was built with differs from ``model``'s, field by field
    (``"width_pool_blocks: 2 in the source, 3 here"``); none for a model without a config
    dataclass. Some fields change no tensor's shape (a CTC model's width pooling, a
    Transformer's heads), so loading the weights would succeed and silently train another
    network than the one the source was; :data:`TRAINING_ONLY_FIELDS` may differ.

    >>> from quill.models.ctc_line import CTCLineConfig, CTCLineModel
    >>> run = CTCLineModel(5, CTCLineConfig(height=32, width_pool_blocks=3, dropout=0.1))
    >>> source = dataclasses.asdict(CTCLineConfig(height=32, width_pool_blocks=2))
    >>> architecture_differences(source, run)
    ['width_pool_blocks: 2 in the source, 3 here']
    """
    config = getattr(model, "config", None)
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        return []
    return config_differences(source_config, dataclasses.asdict(config))


def config_differences(given: dict[str, Any], own: dict[str, Any]) -> list[str]:
    """The fields two architectures (model config dicts) both set differently, but for
    :data:`TRAINING_ONLY_FIELDS`, as ``"field: given in the source, own here"``.

    >>> config_differences({"heads": 4, "channels": [8, 16]}, {"heads": 8, "channels": (8, 16)})
    ['heads: 4 in the source, 8 here']
    """
    differences = []
    for field, value in own.items():
        if field in TRAINING_ONLY_FIELDS or field not in given:
            continue
        if _plain(given[field]) != _plain(value):
            differences.append(f"{field}: {given[field]} in the source, {value} here")
    return differences


def _plain(value: Any) -> Any:
    """A config value as JSON keeps it (a tuple read back from a file is a list)."""
    return list(value) if isinstance(value, tuple) else value


def class_rows(source: Tokenizer, run: Tokenizer) -> list[int | None]:
    """For each of ``run``'s output classes, the ``source`` class of the same character
    (special tokens by index), or None for a character the source does not have.

    >>> class_rows(Tokenizer(characters="ab"), Tokenizer(characters="bcé"))
    [0, 1, 2, 4, None, None]
    """
    special = list(range(len(SPECIAL_TOKENS)))
    known = set(source.characters)
    return special + [source.encode(c)[0] if c in known else None for c in run.characters]


def read_weights(source: Path) -> SourceWeights:
    """The network weights of ``source`` (a ``.ckpt`` or a staged model directory), its
    tokenizer as a dict, its architecture and how to name it in a lineage;
    :class:`InitWeightsError` if it is neither."""
    if source.is_dir():
        return _from_staged(source)
    if source.is_file():
        return _from_checkpoint(source)
    raise InitWeightsError(f"{source} does not exist")


def _class_tensor_names(model: nn.Module, num_classes: int) -> set[str]:
    """Names of the tensors indexed by output class: the weight and bias of every Linear
    layer with ``num_classes`` outputs and the weight of every Embedding of that many rows."""
    names = set()
    for prefix, module in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        if isinstance(module, nn.Linear) and module.out_features == num_classes:
            names.add(f"{dot}weight")
            if module.bias is not None:
                names.add(f"{dot}bias")
        elif isinstance(module, nn.Embedding) and module.num_embeddings == num_classes:
            names.add(f"{dot}weight")
    return names


def _load_exactly(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InitWeightsError(
            f"the weights in {path} do not fit this run's model.config ({weights_mismatch(exc)}); "
            "start from a model of the same architecture"
        ) from exc


def _load_mapped(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    path: Path,
    rows: list[int | None],
    source_classes: int,
    run_classes: int,
) -> None:
    """Load ``state`` with the output-class tensors copied row by row through ``rows``; the
    run's rows for characters the source lacks keep their current (fresh) values."""
    own = model.state_dict()
    class_tensors = _class_tensor_names(model, run_classes)
    if not class_tensors:  # never load class rows by index under another character set
        raise InitWeightsError(f"this run's model has no output layer of {run_classes} classes")
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise InitWeightsError(
            f"the weights in {path} do not fit this run's model.config (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); start from a model of the same architecture"
        )
    targets = torch.tensor([i for i, row in enumerate(rows) if row is not None])
    sources = torch.tensor([row for row in rows if row is not None])
    mapped = {}
    for name, current in own.items():
        given = state[name]
        is_class = (
            name in class_tensors
            and given.shape[:1] == (source_classes,)
            and given.shape[1:] == current.shape[1:]
        )
        if is_class:
            tensor = current.clone()
            tensor[targets] = given[sources].to(tensor.dtype)
            mapped[name] = tensor
        elif given.shape != current.shape:
            raise InitWeightsError(
                f"the weights in {path} do not fit this run's model.config ({name}: "
                f"{tuple(given.shape)} in the source, {tuple(current.shape)} here); "
                "start from a model of the same architecture"
            )
        else:
            mapped[name] = given
    model.load_state_dict(mapped, strict=True)
