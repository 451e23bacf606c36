"""Teach a line model one writer's hand from a handful of their lines (``quill adapt``).

A model trained on many writers reads a hand it has never seen worse than the hands it
trained on, and the person who uploads their own handwriting is always such a stranger. A
few lines of that hand, transcribed, close much of the gap: the whole network fine-tuned
for a few dozen steps on them, each step a batch of those lines under the training
augmentations (so that it learns the hand, not the pixels of five lines), at a learning rate
a tenth of training's. BatchNorm's running statistics move to the writer's lines too
(measured better on the val writers than keeping the many writers': 16.40% against 16.80%
at 30 steps, 16.47% against 16.59% at 15).

Measured with ``quill bench adapt`` (docs/training.md): the shipped default on the 41 test
writers of copiste and poilus, adapted on the first half of each writer's lines (5 to 10)
and read on the rest, 16.2% -> 14.4% CER with the default 30 steps (chosen on the val
writers), about six seconds a writer on one CPU core.

Shapes: each line's ink map (H, W_i) is cached once; a step stacks a batch (B, 1, H, W),
augments it (:class:`~quill.data.ink_augment.InkAugmenter`) and runs the network to
log-probabilities (B, T, C) for the CTC loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from quill.data.augment import AugmentConfig
from quill.data.ink_augment import InkAugmenter
from quill.preprocess import (
    ImageError,
    PreprocessConfig,
    batch_images,
    line_ink,
    pad_width,
)
from quill.training.adapt_lines import MIN_LINES, AdaptError, AdaptLine, line_names
from quill.vocab import Tokenizer


@dataclass(frozen=True)
class AdaptConfig:
    """How a model is adapted. The defaults are those ``quill bench adapt`` measured."""

    #: Optimiser steps; each is one batch of the lines, augmented afresh.
    steps: int = 30
    #: AdamW's learning rate, constant: a tenth of what trained the default.
    learning_rate: float = 3e-4
    weight_decay: float = 0.01
    #: Lines per step, drawn at random with replacement (all of them when fewer).
    batch_size: int = 8
    #: Seed of the draws and the augmentations: the same lines give the same model (with the
    #: same number of torch threads).
    seed: int = 0
    #: The training augmentations (``data.augment``'s defaults).
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise AdaptError(
                "steps and batch size must be at least 1 and the learning rate positive, "
                f"not {self.steps}, {self.batch_size}, {self.learning_rate}"
            )

    def to_dict(self) -> dict:
        """The settings a model card and a checkpoint record (the augmentations are the
        training defaults, not repeated).

        >>> AdaptConfig().to_dict()
        {'steps': 30, 'learning_rate': 0.0003, 'weight_decay': 0.01, 'batch_size': 8, 'seed': 0}
        """
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "augment"}


#: Called after each step with (steps done, steps in all, the step's loss).
StepProgress = Callable[[int, int, float], None]


def adapt_network(
    network: nn.Module,
    tokenizer: Tokenizer,
    preprocess: PreprocessConfig,
    lines: Sequence[AdaptLine],
    config: AdaptConfig | None = None,
    progress: StepProgress | None = None,
) -> list[float]:
    """Fine-tune a CTC line ``network`` in place on ``lines``; returns each step's loss.

    Every text is checked against the model's character set first: :class:`AdaptError`
    names each line with a character the model cannot write (nothing is dropped silently)
    and nothing is trained. The network is left in eval mode.
    """
    config = config or AdaptConfig()
    if getattr(network, "family", None) != "ctc":
        raise AdaptError("only line models (CTC) can be adapted; this one reads paragraphs")
    if len(lines) < MIN_LINES:
        raise AdaptError(
            f"{len(lines)} line(s) are too few to adapt on: give at least {MIN_LINES}, ten or "
            "more if you can (adapted on one or two lines, a model read its writer's other "
            "lines 6.0 and 2.5 CER points worse than before; on ten, 2.5 to 3.8 better)"
        )
    targets = _encoded(tokenizer, lines)
    inks = _ink_maps(preprocess, lines)
    augmenter = InkAugmenter(config.augment, preprocess.width_multiple, preprocess.max_width)
    generator = torch.Generator().manual_seed(config.seed)
    network.train()  # dropout on; BatchNorm's statistics follow the writer's lines
    # Dropout and the augmenter's noise draw from torch's global generator: seeded here, and
    # given back as it was, so the same lines and seed give the same model (on as many threads).
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        losses = _fine_tune(network, inks, targets, augmenter, generator, config, progress)
    network.eval()
    return losses


def _fine_tune(
    network: nn.Module,
    inks: Sequence[np.ndarray],
    targets: list[list[int]],
    augmenter: InkAugmenter,
    generator: torch.Generator,
    config: AdaptConfig,
    progress: StepProgress | None,
) -> list[float]:
    """The steps of :func:`adapt_network` on the lines' padded ink maps (H, W_i) and token
    ids; each step's loss."""
    optimiser = torch.optim.AdamW(
        network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    losses = []
    for step in range(config.steps):
        chosen = torch.randint(len(inks), (min(config.batch_size, len(inks)),), generator=generator)
        images, widths = batch_images([inks[i] for i in chosen.tolist()])  # (B, 1, H, W)
        batch, batch_widths = augmenter(
            torch.from_numpy(images), torch.from_numpy(widths), generator
        )
        log_probs = network(batch).float()  # (B, T, C)
        # network: nn.Module, whose attributes torch types as Tensor | Module.
        widths_out = network.output_lengths(batch_widths)  # type: ignore[operator]
        lengths = widths_out.clamp(max=log_probs.shape[1])
        wanted = [targets[i] for i in chosen.tolist()]
        loss = F.ctc_loss(
            log_probs.transpose(0, 1),  # (T, B, C)
            torch.tensor([token for text in wanted for token in text], dtype=torch.long),
            lengths,
            torch.tensor([len(text) for text in wanted], dtype=torch.long),
            blank=Tokenizer.blank_id,
            zero_infinity=True,  # a line too narrow for its text gives no gradient, not NaN
        )
        if not torch.isfinite(loss):
            raise _diverged(step + 1, config)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        if progress:
            progress(step + 1, config.steps, losses[-1])
    if not all(bool(torch.isfinite(p).all()) for p in network.parameters()):
        raise _diverged(config.steps, config)
    return losses


def _diverged(step: int, config: AdaptConfig) -> AdaptError:
    """The error for a fine-tune whose loss or weights stopped being numbers: a model with
    NaN weights reads every line as nothing, so none is staged."""
    return AdaptError(
        f"fine-tuning diverged at step {step} of {config.steps} (the loss or the weights are "
        f"no longer finite): lower the learning rate (it was {config.learning_rate:g}); "
        "nothing was written"
    )


def _ink_maps(preprocess: PreprocessConfig, lines: Sequence[AdaptLine]) -> list[np.ndarray]:
    """Each line's padded ink map (H, W_i), the model's input; :class:`AdaptError` naming
    every image that cannot be read (truncated, not an image, too large)."""
    inks, problems = [], []
    for name, line in zip(line_names(lines), lines, strict=True):
        try:
            inks.append(pad_width(line_ink(line.image, preprocess), preprocess.width_multiple))
        except ImageError as exc:
            problems.append(f"{name}: {exc}")
    if problems:
        raise AdaptError(f"images that cannot be read: {'; '.join(problems)}")
    return inks


def _encoded(tokenizer: Tokenizer, lines: Sequence[AdaptLine]) -> list[list[int]]:
    """Each line's token ids; :class:`AdaptError` listing every line without text (a
    transcription left empty would teach the model to read that ink as nothing) and every
    line the model cannot write."""
    names = line_names(lines)
    empty = [name for name, line in zip(names, lines, strict=True) if not line.text.strip()]
    if empty:
        raise AdaptError(
            f"lines without text (type what each says, or leave it out): {', '.join(empty)}"
        )
    problems = []
    for name, line in zip(names, lines, strict=True):
        unknown = tokenizer.unknown_characters(line.text)
        if unknown:
            problems.append(f"{name}: {''.join(unknown)!r}")
    if problems:
        raise AdaptError(
            "characters the model cannot write (fix the transcription, or leave the line "
            f"out): {'; '.join(problems)}"
        )
    return [tokenizer.encode(line.text) for line in lines]


__all__ = ["AdaptConfig", "StepProgress", "adapt_network"]
