"""How sure a difference in CER between two models is: a paired bootstrap over groups.

Two models read the same lines; the difference of their corpus CERs is one number, and the
question before shipping is whether another draw of pages would have turned it round. Lines
of one page (or one writer) are not independent draws: a hard page is hard for both models.
So the lines are resampled by their **group** (a dataset's ``group``: the Hooker page, the
copiste writer), with replacement, both models' errors together (paired), and the
difference is computed again on each resample. The 2.5th and 97.5th percentiles of those
differences are the 95% interval: an interval that holds 0 says that these samples cannot
tell the two models apart.

NumPy only, like the rest of :mod:`quill.evaluation`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Resamples drawn; the interval's ends move by about 0.05 points between seeds at this many.
ROUNDS = 2000


def paired_interval(
    edits_a: Sequence[int],
    edits_b: Sequence[int],
    chars: Sequence[int],
    groups: Sequence[str],
    rounds: int = ROUNDS,
    seed: int = 0,
) -> tuple[float, float]:
    """95% interval of CER(a) - CER(b) over the items (each: a's character edits, b's, the
    reference's characters, its group), resampling groups with replacement.

    Identical models differ by exactly 0; a model that always makes one more edit per
    reference character than the other differs by 1 whatever is drawn:

    >>> paired_interval([1, 2], [1, 2], [10, 10], ["p1", "p2"])
    (0.0, 0.0)
    >>> paired_interval([11, 12], [1, 2], [10, 10], ["p1", "p2"])
    (1.0, 1.0)
    """
    if not len(chars):
        return 0.0, 0.0
    names, unit = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    count = len(names)
    per_group = np.zeros((3, count))
    for row, values in enumerate((edits_a, edits_b, chars)):
        np.add.at(per_group[row], unit, np.asarray(values, dtype=float))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, count, size=(rounds, count))  # (rounds, groups drawn)
    weights = np.apply_along_axis(np.bincount, 1, draws, minlength=count)  # (rounds, groups)
    a, b, n = (weights @ per_group[row] for row in range(3))  # (rounds,) each
    difference = (a - b) / np.maximum(n, 1.0)
    low, high = np.percentile(difference, [2.5, 97.5])
    return float(low), float(high)
