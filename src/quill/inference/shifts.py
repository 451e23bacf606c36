"""Reading a line at several heights: the network run on the line shifted a few pixels up
and down, its per-frame probabilities averaged (test-time augmentation).

A CTC line model's reading of a stroke depends a little on where the stroke sits in the
48-pixel window, and an unseen hand puts its letters where no training hand did. Shifting the
image vertically moves the letters without changing their shapes or the number of frames
(W / 4), so the outputs of the shifted copies line up frame by frame and can be averaged
before decoding; shifting sideways would not (a shift of half a frame blurs every character's
spike; measured worse). On the test lines of the default model (beam + LM, decoded with the
same settings), shifts of 0, -2 and +2 pixels read the unseen writers 0.7 points better and
Hooker's letters 0.8 better, at three network passes a line (docs/models.md).

Shapes: images (B, 1, H, W) -> (S * B, 1, H, W) for S shifts; the network's log-probabilities
(S * B, T, C) -> (B, T, C).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

#: No shift: one network pass, what a model without ``shifts`` in its decoding reads.
ONE_PASS = (0,)

Forward = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def shifted(images: np.ndarray, shifts: Sequence[int]) -> np.ndarray:
    """Each image moved down by each shift (up for a negative one), paper filling what is
    uncovered: (B, 1, H, W) -> (S * B, 1, H, W), shift by shift.

    >>> column = np.arange(4, dtype=np.float32).reshape(1, 1, 4, 1)
    >>> shifted(column, [0, 1, -1])[:, 0, :, 0].tolist()
    [[0.0, 1.0, 2.0, 3.0], [0.0, 0.0, 1.0, 2.0], [1.0, 2.0, 3.0, 0.0]]
    """
    batch = len(images)
    out = np.zeros((len(shifts) * batch, *images.shape[1:]), images.dtype)
    for i, shift in enumerate(shifts):
        target = out[i * batch : (i + 1) * batch]
        if shift >= 0:
            target[:, :, shift:] = images[:, :, : images.shape[2] - shift]
        else:
            target[:, :, :shift] = images[:, :, -shift:]
    return out


def averaged(log_probs: np.ndarray, count: int) -> np.ndarray:
    """The mean probability of ``count`` stacked readings, as log-probabilities:
    (count * B, T, C) -> (B, T, C), float32.

    >>> lp = np.log(np.array([[[0.2, 0.8]], [[0.6, 0.4]]], np.float32))
    >>> np.exp(averaged(lp, 2)).astype(float).round(3).tolist()
    [[[0.4, 0.6]]]
    """
    batch = len(log_probs) // count
    readings = log_probs.reshape(count, batch, *log_probs.shape[1:])
    # the log of the mean of exp, computed from the largest term so no frame underflows
    top = readings.max(axis=0)
    mean = np.exp(readings - top).mean(axis=0)
    return (top + np.log(mean)).astype(np.float32)


def forward_shifted(
    forward: Forward, images: np.ndarray, widths: np.ndarray, shifts: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """``forward`` (the network: images (B,1,H,W), widths (B,) -> log-probs (B,T,C),
    lengths (B,)) over every shift of the batch in one call, averaged; one plain call for
    :data:`ONE_PASS`."""
    if tuple(shifts) == ONE_PASS:
        return forward(images, widths)
    log_probs, lengths = forward(shifted(images, shifts), np.tile(widths, len(shifts)))
    return averaged(log_probs, len(shifts)), lengths[: len(images)]
