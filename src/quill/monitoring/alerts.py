"""``quill monitor check``: the latest window against the thresholds, as alerts.

Drift alerts come from :mod:`quill.monitoring.drift`; feedback and latency alerts from the
window's own numbers. The result prints as a short summary a cron mail or CI log can carry,
and the command exits non-zero when anything alerts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from quill.monitoring.drift import ALL, DriftResult, compare, users_traffic
from quill.monitoring.records import SYNTHETIC_CLIENTS, Baseline, StoredPrediction, utcnow
from quill.monitoring.settings import MonitoringSettings
from quill.monitoring.store import MonitoringStore


@dataclass(frozen=True)
class Alert:
    kind: str  # "drift" | "feedback" | "latency"
    subject: str
    slice: str
    message: str


@dataclass
class CheckResult:
    """What one check found over one window."""

    start: datetime
    end: datetime
    n: int
    settings: MonitoringSettings
    baseline: Baseline
    drift: list[DriftResult]
    alerts: list[Alert] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.alerts

    def verdict(self) -> str:
        """``OK``, or the alerts counted as :meth:`grouped` lists them (one per subject),
        then each slice's: the words ``check`` prints and the report repeats, so the two
        never give different counts for one window."""
        if self.ok:
            return "OK"
        return f"ALERT: {len(self.grouped())} alert(s) ({len(self.alerts)} counting each slice)"

    def summary(self, limit: int = 30) -> str:
        """A few lines: verdict, window, then one line per alert (overall ones first)."""
        grouped = self.grouped()
        lines = [
            self.verdict(),
            f"window {self.start:%Y-%m-%d %H:%M} .. {self.end:%Y-%m-%d %H:%M} UTC: "
            f"{self.n} predictions; baseline {self.baseline.name!r} ({len(self.baseline)} "
            f"samples); rules v{self.settings.version} from {self.settings.source}",
        ]
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"- {line}" for line in grouped[:limit]]
        if len(grouped) > limit:
            lines.append(f"- ... and {len(grouped) - limit} more")
        return "\n".join(lines)

    def grouped(self) -> list[str]:
        """One line per alerting subject: the overall alert (or, if only slices alert, the
        first slice's) followed by the other slices where it also alerts. A shift in all
        traffic shows in every slice; listing each would bury the message."""
        by_subject: dict[tuple[str, str], list[Alert]] = {}
        for alert in sorted(self.alerts, key=lambda a: (a.kind, a.subject, a.slice != ALL)):
            by_subject.setdefault((alert.kind, alert.subject), []).append(alert)
        lines = []
        for (kind, _), alerts in by_subject.items():
            head, rest = alerts[0], [a.slice for a in alerts[1:]]
            also = f" (also in {', '.join(rest)})" if rest else ""
            lines.append(f"[{kind}] {head.message}{also}")
        return sorted(lines, key=lambda line: not line.startswith("[drift]"))


def run_check(
    store: MonitoringStore,
    settings: MonitoringSettings,
    *,
    now: datetime | None = None,
    baseline_name: str | None = None,
) -> CheckResult:
    """Compare the window ending ``now`` (default: the current time) with the baseline."""
    end = now or utcnow()
    start = end - settings.window
    baseline = store.load_baseline(baseline_name or settings.baseline)
    predictions = store.predictions(since=start, until=end)
    return evaluate_window(predictions, baseline, settings, start, end)


def evaluate_window(
    predictions: list[StoredPrediction],
    baseline: Baseline,
    settings: MonitoringSettings,
    start: datetime,
    end: datetime,
) -> CheckResult:
    """Alerts of one window. Load-test traffic (client ``bench``) is stored but never
    judged: it is left out here, and a note says how much of it there was."""
    users = users_traffic(predictions)
    synthetic = len(predictions) - len(users)
    predictions = users
    drift = compare(baseline, predictions, settings)
    result = CheckResult(start, end, len(predictions), settings, baseline, drift)
    if synthetic:
        labels = "/".join(sorted(SYNTHETIC_CLIENTS))
        result.notes.append(
            f"{synthetic} load-test prediction(s) (client {labels}) left out of drift and alerts"
        )
    if len(predictions) < settings.min_samples:
        result.notes.append(
            f"only {len(predictions)} predictions (< min_samples={settings.min_samples}): "
            "nothing can alert"
        )
        return result
    result.alerts += [_drift_alert(r) for r in drift if r.alert]
    result.alerts += feedback_alerts(predictions, settings)
    result.alerts += latency_alerts(predictions, settings)
    return result


def _drift_alert(result: DriftResult) -> Alert:
    crossed = ", ".join(
        f"{m} {result.distances[m]:.3f} > {result.thresholds[m]:g}" for m in result.exceeded
    )
    where = "" if result.slice == ALL else f" [{result.slice}]"
    return Alert(
        "drift",
        result.projection,
        result.slice,
        f"{result.projection}{where}: {crossed} (mean {result.mean:.3g} vs baseline "
        f"{result.reference_mean:.3g}, n={result.n})",
    )


def feedback_alerts(
    predictions: list[StoredPrediction], settings: MonitoringSettings
) -> list[Alert]:
    """Users' flags and offensive outputs, as shares of the window."""
    n = len(predictions)
    flags = Counter(p.flag for p in predictions if p.flag)
    offensive_outputs = sum(1 for p in predictions if (p.projections.get("offensive") or 0) > 0)
    rates = {
        "max_flag_rate": ("flag rate", sum(flags.values()) / n),
        "max_offensive_rate": ("offensive flag rate", flags["offensive"] / n),
        "max_offensive_output_rate": ("offensive output rate", offensive_outputs / n),
    }
    alerts = []
    for key, (label, rate) in rates.items():
        limit = settings.feedback.get(key)
        if limit is not None and rate > limit:
            alerts.append(Alert("feedback", label, ALL, f"{label} {rate:.1%} > {limit:.1%}"))
    return alerts


def latency_alerts(
    predictions: list[StoredPrediction], settings: MonitoringSettings
) -> list[Alert]:
    limit = settings.latency.get("p95_ms")
    latencies = [p.latency_ms for p in predictions if p.latency_ms is not None]
    if limit is None or not latencies:
        return []
    p95 = float(np.percentile(latencies, 95))
    if p95 <= limit:
        return []
    return [Alert("latency", "p95_ms", ALL, f"latency p95 {p95:.0f} ms > {limit:g} ms")]
