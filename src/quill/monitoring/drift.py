"""Drift of production projections against the baseline, overall and per slice.

Distances, not p-values: with thousands of requests a test rejects "same distribution" for
shifts nobody cares about, while a distance measures *how far* production moved and stays on
the same scale whatever the traffic. Three complementary ones:

* ``wasserstein``: earth mover's distance divided by the pooled standard deviation, so it
  reads "how many standard deviations the mass moved" for pixels, characters or milliseconds;
* ``psi``: population stability index over baseline quantile bins (the credit-risk industry's
  rule of thumb: 0.1 moderate, 0.25 large), with fewer bins for small windows so that
  sampling noise does not inflate it;
* ``linf``: the largest gap between the two cumulative distributions (the KS statistic),
  in [0, 1], sensitive to a share that flipped, like polarity.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np
from scipy.stats import wasserstein_distance

from quill.monitoring.records import SYNTHETIC_CLIENTS, Baseline, StoredPrediction
from quill.monitoring.settings import MonitoringSettings

ALL = "all"
#: Floor for bin shares in PSI, so an empty bin costs a bounded amount.
_PSI_FLOOR = 1e-4


def finite(values: Iterable[float | None]) -> np.ndarray:
    """The values that are numbers, as a float64 array.

    >>> finite([1, None, float("nan"), 2.5]).tolist()
    [1.0, 2.5]
    """
    array = np.array([v for v in values if v is not None], dtype=np.float64)
    return array[np.isfinite(array)]


def wasserstein_normalised(reference: np.ndarray, current: np.ndarray) -> float:
    """W1 distance over the pooled standard deviation (0 when both are one same constant).

    >>> wasserstein_normalised(np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    0.0
    >>> round(wasserstein_normalised(np.zeros(50), np.ones(50)), 3)
    2.0
    """
    spread = np.concatenate([reference, current]).std()
    if spread == 0:
        return 0.0
    return float(wasserstein_distance(reference, current) / spread)


def psi(reference: np.ndarray, current: np.ndarray, max_bins: int = 10) -> float:
    """Population stability index over quantile bins of ``reference``.

    Uses one bin per 25 samples of the smaller side (2 to ``max_bins``): with k bins and
    n, m samples PSI reads about (k - 1)(1/n + 1/m) when nothing drifted, so 10 bins for
    100 samples would already show 0.2 of pure noise.

    >>> rng = np.random.default_rng(0)
    >>> psi(rng.normal(size=2000), rng.normal(size=2000)) < 0.02
    True
    >>> psi(rng.normal(size=2000), rng.normal(1.0, size=2000)) > 0.25
    True
    """
    bins = int(np.clip(min(len(reference), len(current)) // 25, 2, max_bins))
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1)
    cur = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1)
    p = np.maximum(ref / ref.sum(), _PSI_FLOOR)
    q = np.maximum(cur / cur.sum(), _PSI_FLOOR)
    return float(((q - p) * np.log(q / p)).sum())


def linf(reference: np.ndarray, current: np.ndarray) -> float:
    """Largest absolute difference of the empirical CDFs.

    >>> linf(np.array([1.0, 1, 1, 1]), np.array([1.0, 1, 0, 0]))
    0.5
    """
    grid = np.union1d(reference, current)
    f_ref = np.searchsorted(np.sort(reference), grid, side="right") / len(reference)
    f_cur = np.searchsorted(np.sort(current), grid, side="right") / len(current)
    return float(np.abs(f_ref - f_cur).max())


def distances(reference: np.ndarray, current: np.ndarray) -> dict[str, float]:
    return {
        "wasserstein": wasserstein_normalised(reference, current),
        "psi": psi(reference, current),
        "linf": linf(reference, current),
    }


def users_traffic(predictions: Iterable[StoredPrediction]) -> list[StoredPrediction]:
    """The predictions made for users: load tests (client ``bench``, see
    :data:`~quill.monitoring.records.SYNTHETIC_CLIENTS`) are left out of drift and alerts."""
    return [p for p in predictions if p.client not in SYNTHETIC_CLIENTS]


# ---- slices -------------------------------------------------------------------------------


def polarity_label(value: float | None) -> str:
    if value is None:
        return "unknown"
    return "dark-on-light" if value >= 0.5 else "light-on-dark"


def size_bucket(width: float | None, height: float | None, buckets: dict[str, int]) -> str:
    """Name of the first bucket whose pixel limit the image is under ("large" above all).

    >>> size_bucket(100, 50, {"small": 100_000, "medium": 1_000_000})
    'small'
    >>> size_bucket(4000, 3000, {"small": 100_000, "medium": 1_000_000})
    'large'
    """
    if width is None or height is None:
        return "unknown"
    pixels = width * height
    for name, limit in sorted(buckets.items(), key=lambda item: item[1]):
        if pixels < limit:
            return name
    return "large"


def slice_values(
    projections: dict[str, float | None],
    settings: MonitoringSettings,
    client: str | None = None,
    model_version: str | None = None,
) -> dict[str, str]:
    """The slice each key puts one prediction (or baseline sample) in."""
    values = {
        "polarity": polarity_label(projections.get("polarity")),
        "size_bucket": size_bucket(
            projections.get("width"), projections.get("height"), settings.size_buckets
        ),
    }
    if client is not None:
        values["client"] = client
    if model_version is not None:
        values["model_version"] = model_version
    return {k: v for k, v in values.items() if k in settings.slices}


# ---- comparing ----------------------------------------------------------------------------


@dataclass
class DriftResult:
    """One projection in one slice of one window, against its reference."""

    projection: str
    slice: str
    n: int
    n_reference: int
    reference: str
    distances: dict[str, float]
    thresholds: dict[str, float]
    exceeded: list[str] = field(default_factory=list)
    #: False when the slice is too small or the projection is ignored: shown, never alerted.
    considered: bool = True
    mean: float | None = None
    reference_mean: float | None = None

    @property
    def alert(self) -> bool:
        return self.considered and bool(self.exceeded)


@dataclass
class Window:
    start: datetime
    end: datetime
    predictions: list[StoredPrediction]


def sliding_windows(
    predictions: Sequence[StoredPrediction],
    window: timedelta,
    step: timedelta,
    start: datetime,
    end: datetime,
) -> list[Window]:
    """Windows of length ``window`` ending at ``end``, ``end - step``, ... (oldest first),
    as long as they start at or after ``start`` (at least the latest one is returned)."""
    windows = []
    stop = end
    while True:
        begin = stop - window
        inside = [p for p in predictions if begin <= p.created_at < stop]
        windows.append(Window(begin, stop, inside))
        stop -= step
        if stop - window < start:
            break
    return windows[::-1]


def baseline_rows(baseline: Baseline) -> list[dict[str, float | None]]:
    """The baseline as one projection dict per sample."""
    rows: list[dict[str, float | None]] = [{} for _ in range(len(baseline))]
    for name, values in baseline.values.items():
        for row, value in zip(rows, values, strict=False):
            row[name] = value
    return rows


def compare(
    baseline: Baseline,
    predictions: Sequence[StoredPrediction],
    settings: MonitoringSettings,
    projection_names: Sequence[str] | None = None,
) -> list[DriftResult]:
    """Drift of every projection, overall and in every slice, against the baseline.

    A polarity or size slice is compared with the same slice of the baseline when the
    baseline has at least ``min_samples`` there (so "dark-on-light" is judged against
    dark-on-light test images), else with the whole baseline. Load-test traffic is left out
    (:func:`users_traffic`).
    """
    predictions = users_traffic(predictions)
    reference_rows = baseline_rows(baseline)
    names = projection_names or sorted(baseline.values)
    groups: dict[str, list[StoredPrediction]] = {ALL: list(predictions)}
    for p in predictions:
        for key, value in slice_values(p.projections, settings, p.client, p.model_version).items():
            groups.setdefault(f"{key}={value}", []).append(p)
    reference_groups: dict[str, list[dict[str, float | None]]] = {ALL: reference_rows}
    for row in reference_rows:
        for key, value in slice_values(row, settings).items():
            reference_groups.setdefault(f"{key}={value}", []).append(row)

    results = []
    for slice_name, members in groups.items():
        reference_name = slice_name
        reference = reference_groups.get(slice_name, [])
        if slice_name != ALL and len(reference) < settings.min_samples:
            reference_name, reference = ALL, reference_rows
        for name in names:
            result = _compare_one(
                name,
                finite(r.get(name) for r in reference),
                finite(p.projections.get(name) for p in members),
                settings,
            )
            if result is None:
                continue
            results.append(
                replace(
                    result,
                    slice=slice_name,
                    reference="baseline" if reference_name == ALL else reference_name,
                    considered=result.considered and len(members) >= settings.min_samples,
                )
            )
    return results


def _compare_one(
    name: str, reference: np.ndarray, current: np.ndarray, settings: MonitoringSettings
) -> DriftResult | None:
    if len(reference) < 2 or len(current) < 1:
        return None
    thresholds = settings.drift.thresholds(name)
    measured = distances(reference, current)
    return DriftResult(
        projection=name,
        slice=ALL,
        n=len(current),
        n_reference=len(reference),
        reference="baseline",
        distances=measured,
        thresholds=thresholds,
        exceeded=[m for m, v in measured.items() if m in thresholds and v > thresholds[m]],
        considered=name not in settings.drift.ignore,
        mean=float(current.mean()),
        reference_mean=float(reference.mean()),
    )
