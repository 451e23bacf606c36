"""Average the weights of models fine-tuned from one another: a "model soup" (``quill model
average``).

Two fine-tunes of the same model sit in one basin of the loss, and the mean of their weights
often reads new data better than either (Wortsman et al., 2022, "Model soups"): for an unseen
hand, that is the point. It costs no training, which on a 2-core CPU is most of what a
session has. The shipped default averaged half and half with its shift-augmented fine-tune
read the 1,488 val lines at 20.76% CER against 20.91% and 20.67%, and the test lines of
Hooker 0.1 point better and of unseen writers the same (docs/training.md).

Each source is a Quill training checkpoint (``.ckpt``) or a staged model directory (its
TorchScript weights), read as ``model.init_from`` reads them. They must share the
architecture and the character set. The result is a training checkpoint, written from the
first ``.ckpt`` given (its hyper-parameters, so ``quill stage`` and ``--init-from`` take it),
with the averaged weights, without optimiser state, and with where its weights came from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from quill.errors import QuillError, output_problem
from quill.training.checkpoint import WEIGHT_PREFIX
from quill.training.init_weights import InitWeightsError, config_differences, read_weights

#: The checkpoint entry that records the sources and their weights.
AVERAGED_FROM_KEY = "quill_averaged_from"
#: What a training checkpoint holds that belongs to one run's optimisation, not its weights.
RUN_STATE_KEYS = ("optimizer_states", "lr_schedulers", "loops", "callbacks")


class AveragingError(QuillError, ValueError):
    """The sources cannot be averaged; the message says why."""

    code = "average_invalid"


@dataclass(frozen=True)
class Averaged:
    """What was written: the checkpoint, and each source with its share of the weights."""

    path: Path
    sources: list[tuple[str, float]]


def average_weights(
    sources: Sequence[Path], out: Path, weights: Sequence[float] | None = None
) -> Averaged:
    """Write to ``out`` a checkpoint whose network is the weighted mean of ``sources``'
    (uniform unless ``weights``, one positive number per source, normalised to sum to 1).

    Raises :class:`AveragingError` for fewer than two sources, weights that do not fit, an
    ``out`` that cannot be written, no ``.ckpt`` among the sources, or sources of different
    architectures or character sets.
    """
    if len(sources) < 2:
        raise AveragingError("give at least two models to average")
    shares = _shares(weights, len(sources))
    problem = output_problem(out, folder=False)
    if problem:  # before the sources are read, not after
        raise AveragingError(f"cannot write {out}: {problem}")
    if any(out.resolve() == source.resolve() for source in sources):
        raise AveragingError(
            f"--out {out} is one of the models to average: it would be overwritten; "
            "write the average to a new file"
        )
    resolved = [path.resolve() for path in sources]
    repeated = [str(path) for path in sources if resolved.count(path.resolve()) > 1]
    if repeated:  # a mistyped run: averaging a model with itself changes nothing
        raise AveragingError(
            f"{', '.join(dict.fromkeys(repeated))} given more than once; to give a model a "
            "larger share, give it a larger weight (--weight)"
        )
    missing = [str(path) for path in sources if not path.exists()]
    if missing:  # it said "give at least one training checkpoint" of a .ckpt mistyped
        raise AveragingError(f"not found: {', '.join(missing)}")
    template_path = next((path for path in sources if path.is_file()), None)
    if template_path is None:
        raise AveragingError(
            "give at least one training checkpoint (.ckpt) among the sources: the averaged "
            "checkpoint keeps its hyper-parameters"
        )
    read = []
    for path in sources:
        try:
            read.append(read_weights(path))
        except InitWeightsError as exc:
            raise AveragingError(str(exc)) from exc
    reference = read[list(sources).index(template_path)]
    for source, path in zip(read, sources, strict=True):
        if source.tokenizer != reference.tokenizer:
            raise AveragingError(f"{path} reads another character set than {template_path}")
        differences = config_differences(source.model_config, reference.model_config)
        if differences:
            raise AveragingError(
                f"{path} is another architecture than {template_path} ({'; '.join(differences)})"
            )
        _check_same_tensors(reference.state, source.state, source.name)
    template: dict[str, Any] = torch.load(template_path, map_location="cpu", weights_only=True)
    averaged = {}
    for key, tensor in template["state_dict"].items():
        name = key.removeprefix(WEIGHT_PREFIX)
        if key.startswith(WEIGHT_PREFIX) and tensor.is_floating_point():
            tensor = sum(
                share * source.state[name] for share, source in zip(shares, read, strict=True)
            )
        averaged[key] = tensor  # counters (BatchNorm's batches seen) stay the template's
    checkpoint = {k: v for k, v in template.items() if k not in RUN_STATE_KEYS}
    checkpoint["state_dict"] = averaged
    described_sources = [(source.name, share) for source, share in zip(read, shares, strict=True)]
    checkpoint[AVERAGED_FROM_KEY] = [
        {"source": source, "weight": share} for source, share in described_sources
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, out)
    return Averaged(out, described_sources)


def _shares(weights: Sequence[float] | None, count: int) -> list[float]:
    """``weights`` normalised to sum to 1 (uniform if None).

    >>> _shares(None, 4), _shares([1, 3], 2), _shares([1e308, 1e308], 2)
    ([0.25, 0.25, 0.25, 0.25], [0.25, 0.75], [0.5, 0.5])
    """
    if weights is None:
        return [1.0 / count] * count
    if len(weights) != count:
        raise AveragingError(f"give one weight per model ({count}), not {list(weights)}")
    # NaN fails every comparison and inf normalises the others to 0: both would write NaNs.
    if not all(math.isfinite(w) and w > 0 for w in weights):
        raise AveragingError(f"weights must be positive finite numbers, not {list(weights)}")
    largest = max(weights)  # scaled first: 1e308 + 1e308 overflows to inf (shares of 0)
    total = sum(w / largest for w in weights)
    return [w / largest / total for w in weights]


def _check_same_tensors(
    reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor], described: str
) -> None:
    """Every tensor of the ``reference`` network in ``other``, of the same shape. Tensors
    only ``other`` has are not averaged: a TorchScript file also keeps buffers a checkpoint
    rebuilds from the config (a positional table)."""
    missing = sorted(set(reference) - set(other))
    if missing:
        raise AveragingError(f"{described} has another architecture (no tensor {missing[:3]})")
    for name, tensor in reference.items():
        if other[name].shape != tensor.shape:
            raise AveragingError(
                f"{described} has another architecture ({name}: {tuple(other[name].shape)} "
                f"against {tuple(tensor.shape)})"
            )
