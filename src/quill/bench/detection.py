"""Line detection scored against ground truth: a system's line boxes matched one-to-one to
the true lines by box IoU, greedily from the highest, a match counting at IoU >= 0.5.

Recall = matched / ground-truth lines with text; precision = matched / predicted lines. A
prediction that matches a line transcribed as empty (a mark, an untranscribed margin note)
is neither right nor wrong and is left out of precision. Used by the page bench
(:mod:`quill.bench.pages`) and by the segmenter's and line detector's tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

#: A predicted line matches a ground-truth line at this box IoU or more.
IOU_THRESHOLD = 0.5

FloatBox = tuple[float, float, float, float]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (left, top, right, bottom) boxes.

    >>> box_iou((0, 0, 10, 10), (5, 0, 15, 10))  # half of each overlaps: 50 / 150
    0.3333333333333333
    >>> box_iou((0, 0, 10, 10), (20, 20, 30, 30)), box_iou((0, 0, 10, 10), (0, 0, 10, 10))
    (0.0, 1.0)
    """
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    overlap = width * height
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    return overlap / (area_a + area_b - overlap)


def match_lines(
    predicted: Sequence[Sequence[float]],
    truth: Sequence[Sequence[float]],
    threshold: float = IOU_THRESHOLD,
) -> list[tuple[int, int, float]]:
    """One-to-one matches ``(predicted index, truth index, iou)`` with IoU >= ``threshold``.

    Greedy from the highest IoU: each box is used at most once. (At a threshold of 0.5 or
    more a box overlaps at most one other box that much in practice, so greedy and optimal
    assignment agree.)

    >>> truth = [(0, 0, 100, 20), (0, 20, 100, 40)]
    >>> match_lines([(0, 18, 100, 40), (0, 0, 100, 22), (0, 0, 100, 40)], truth)
    [(0, 1, 0.9090909090909091), (1, 0, 0.9090909090909091)]
    """
    pairs = [
        (iou, p, t)
        for p, box in enumerate(predicted)
        for t, other in enumerate(truth)
        if (iou := box_iou(box, other)) >= threshold
    ]
    pairs.sort(key=lambda pair: (-pair[0], pair[1], pair[2]))
    used_p: set[int] = set()
    used_t: set[int] = set()
    matches = []
    for iou, p, t in pairs:
        if p not in used_p and t not in used_t:
            used_p.add(p)
            used_t.add(t)
            matches.append((p, t, iou))
    return sorted(matches)


@dataclass(frozen=True)
class Detection:
    """Line-detection counts on one page or summed over a page set."""

    truth: int
    predicted: int
    matched: int
    #: Predictions that matched a ground-truth line transcribed as empty (not counted).
    ignored: int = 0
    #: Sum of the matched pairs' IoU (mean IoU = iou_sum / matched).
    iou_sum: float = 0.0

    @property
    def recall(self) -> float:
        return self.matched / self.truth if self.truth else 1.0

    @property
    def precision(self) -> float:
        counted = self.predicted - self.ignored
        return self.matched / counted if counted else 1.0

    def __add__(self, other: Detection) -> Detection:
        return Detection(
            self.truth + other.truth,
            self.predicted + other.predicted,
            self.matched + other.matched,
            self.ignored + other.ignored,
            self.iou_sum + other.iou_sum,
        )

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "recall": self.recall,
            "precision": self.precision,
            "mean_iou": self.iou_sum / self.matched if self.matched else 0.0,
        }


def detect_score(
    predicted: Sequence[Sequence[float]],
    truth: Sequence[Sequence[float]],
    ignore: Sequence[Sequence[float]] = (),
    threshold: float = IOU_THRESHOLD,
) -> Detection:
    """Match ``predicted`` boxes to ``truth`` boxes; unmatched ones that match an ``ignore``
    box (a line transcribed as empty) are left out of precision.

    >>> truth = [(0, 0, 100, 20), (0, 30, 100, 50)]
    >>> found = detect_score([(0, 0, 100, 22), (0, 60, 30, 80), (500, 0, 600, 20)],
    ...                      truth, ignore=[(0, 60, 30, 80)])
    >>> found.matched, found.recall, found.precision
    (1, 0.5, 0.5)
    """
    matches = match_lines(predicted, truth, threshold)
    matched = {p for p, _, _ in matches}
    rest = [box for index, box in enumerate(predicted) if index not in matched]
    ignored = len(match_lines(rest, ignore, threshold)) if ignore else 0
    return Detection(
        len(truth), len(predicted), len(matches), ignored, sum(iou for _, _, iou in matches)
    )
