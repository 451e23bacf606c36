"""Distillation from a model read at several heights (``distill.teacher``).

The shipped line model reads each line three times, shifted 2 pixels up and down, and
averages the three readings (``quill.inference.shifts``): unseen hands read ~0.8 CER points
better, at three network passes a line. A model that gave that average in one pass would be
as good at a third of the cost. So a run may learn from a frozen teacher (usually the model it
starts from) as well as from the labels: at each training step the teacher reads the batch at
its shifts, its per-frame probabilities are averaged, and the student's loss is

    (1 - weight) * CTC(labels) + weight * KL(teacher's average || student), per frame

with the per-frame divergence summed over a line's frames and divided by its number of
characters, as CTC's own mean is, so the two terms have the same scale. Frames line up because
teacher and student read lines of one height and give a frame every as many pixels (a
vertical shift keeps the W / 4 frames); otherwise they may differ, so a large model can teach
a fast one.

Shapes: images (B, 1, H, W) -> shifted (S * B, 1, H, W); log-probabilities (B, T, C).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from quill.models import build_model
from quill.training.init_weights import InitWeightsError, load_weights, read_weights
from quill.vocab import Tokenizer


def shifted(images: torch.Tensor, shifts: Sequence[int]) -> torch.Tensor:
    """Each image moved down by each shift (up for a negative one), paper (0 in an ink map)
    filling what is uncovered: (B, 1, H, W) -> (S * B, 1, H, W), shift by shift, as
    ``quill.inference.shifts.shifted`` moves a batch at inference.

    >>> column = torch.arange(4.0).reshape(1, 1, 4, 1)
    >>> shifted(column, [0, 1, -1])[:, 0, :, 0].tolist()
    [[0.0, 1.0, 2.0, 3.0], [0.0, 0.0, 1.0, 2.0], [1.0, 2.0, 3.0, 0.0]]
    """
    height = images.shape[2]
    copies = []
    for shift in shifts:
        if shift >= 0:
            copies.append(F.pad(images[:, :, : height - shift], (0, 0, shift, 0)))
        else:
            copies.append(F.pad(images[:, :, -shift:], (0, 0, 0, -shift)))
    return torch.cat(copies)


class ShiftTeacher:
    """A frozen CTC network whose reading of a batch is the mean probability of its readings
    at ``shifts``. Deliberately not an ``nn.Module`` attribute of the student's module: its
    weights are not the run's, so they stay out of the checkpoint and the optimiser."""

    def __init__(self, network: nn.Module, shifts: Sequence[int], source: str = "") -> None:
        if not shifts:
            raise ValueError("distill.shifts must name at least one shift")
        self.network = network.eval().requires_grad_(False)
        self.shifts = [int(shift) for shift in shifts]
        #: what the weights came from, for the run's lineage (a staged model's version)
        self.source = source

    @torch.no_grad()
    def log_probs(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) -> the log of the mean probability over the shifts, (B, T, C) fp32."""
        weight = next(self.network.parameters())
        if weight.device != images.device:
            self.network.to(images.device)
        readings = self.network(shifted(images, self.shifts)).float()  # (S * B, T, C)
        count = len(self.shifts)
        readings = readings.reshape(count, len(images), *readings.shape[1:])  # (S, B, T, C)
        return torch.logsumexp(readings, dim=0) - math.log(count)


def frame_divergence(
    student: torch.Tensor,
    teacher: torch.Tensor,
    frames: torch.Tensor,
    characters: torch.Tensor,
) -> torch.Tensor:
    """KL(teacher || student) of each line's first ``frames`` frames, summed per line,
    divided by its ``characters`` (at least 1) and averaged over the batch: CTC's mean.

    student, teacher: log-probabilities (B, T, C); frames, characters: (B,).

    >>> same = torch.log_softmax(torch.randn(2, 5, 4), -1)
    >>> float(frame_divergence(same, same, torch.tensor([5, 3]), torch.tensor([2, 0])))
    0.0
    """
    per_frame = (teacher.exp() * (teacher - student)).sum(-1)  # (B, T)
    valid = torch.arange(per_frame.shape[1], device=per_frame.device)[None] < frames[:, None]
    per_line = (per_frame * valid).sum(1) / characters.clamp(min=1)
    return per_line.mean()


def load_teacher(
    path: Path, tokenizer: Tokenizer, student: nn.Module, shifts: Sequence[int]
) -> ShiftTeacher:
    """The teacher ``distill.teacher`` names (a ``.ckpt`` or a staged model directory), built
    as its own architecture and read at ``shifts``.

    It may be another network than ``student`` (a large model teaching a fast one), but the
    divergence compares their frames class by class, so it must write exactly the run's
    characters, read lines of the student's height and give one frame for as many pixels of
    width; :class:`InitWeightsError` says which it does not.
    """
    weights = read_weights(path)
    characters = Tokenizer.from_dict(weights.tokenizer).characters
    if characters != tokenizer.characters:
        raise InitWeightsError(
            f"{path} has another character set than this run's "
            f"model.vocabulary ({len(characters)} characters against "
            f"{len(tokenizer.characters)}); a teacher must write exactly the run's characters"
        )
    network = build_model(weights.model_name, len(tokenizer), **weights.model_config)
    if getattr(network, "family", None) != "ctc":
        raise InitWeightsError(f"{path} is not a CTC line model: it has no frames to teach")
    theirs, ours = frame_geometry(network), frame_geometry(student)
    if theirs != ours:
        raise InitWeightsError(
            f"{path} reads lines {theirs[0]} pixels high with a frame every {theirs[1]} "
            f"pixels of width, this run's model {ours[0]} and {ours[1]}: their frames "
            "would not line up"
        )
    load_weights(network, weights, tokenizer, path)
    return ShiftTeacher(network, shifts, weights.name)


def frame_geometry(network: nn.Module) -> tuple[int | None, int | None]:
    """A CTC line network's input height and how many pixels of width make one frame."""
    height = getattr(getattr(network, "config", None), "height", None)
    stride = getattr(network, "stride", None)
    return height, None if stride is None else int(stride)
