"""``quill monitor report``: one self-contained HTML file a model owner opens in a browser.

Everything is inline (SVG charts, base64 thumbnails, a few lines of JavaScript for sorting
and filtering the example table), so the file can be mailed, archived with a release, or
opened on a machine without network. Sections: predictions per model version and runtime,
alerts of the latest window (exactly what ``quill monitor check`` reports), flags over time,
drift per projection and slice, production-vs-baseline distributions, the slowest requests,
shadow-model disagreement, and the raw examples with thumbnails, outputs, flags and
corrections.
"""

from __future__ import annotations

import base64
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from importlib import resources
from pathlib import Path

import numpy as np

from quill.monitoring import projections as proj
from quill.monitoring import svg
from quill.monitoring.alerts import CheckResult, evaluate_window
from quill.monitoring.drift import ALL, DriftResult, compare, finite, sliding_windows
from quill.monitoring.records import FLAGS, Baseline, StoredPrediction, utcnow
from quill.monitoring.settings import METRICS, MonitoringSettings
from quill.monitoring.store import MonitoringStore
from quill.preprocess import ImageError, load_image

THUMBNAIL = (240, 80)


@dataclass
class ReportData:
    """What the report shows, gathered once from the store."""

    start: datetime
    end: datetime
    settings: MonitoringSettings
    predictions: list[StoredPrediction]
    baseline: Baseline | None
    feedback: list[tuple[datetime, str | None, str | None]]
    latest: CheckResult | None
    period_drift: list[DriftResult]


def gather(
    store: MonitoringStore,
    settings: MonitoringSettings,
    since: timedelta,
    *,
    now: datetime | None = None,
    baseline_name: str | None = None,
) -> ReportData:
    """What the report shows. Without a baseline drift is not measured, unless
    ``baseline_name`` was asked for: then its absence is a KeyError naming the stored ones,
    as ``quill monitor check`` says it.

    The latest window is the one ``check`` judges, loaded on its own: a report period
    shorter than the window (``--since 1h`` with a day's window) would judge only part of
    it under the whole window's dates.
    """
    end = now or utcnow()
    start = end - since
    predictions = store.predictions(since=start, until=end)
    try:
        baseline = store.load_baseline(baseline_name or settings.baseline)
    except KeyError:
        if baseline_name is not None:
            raise
        baseline = None
    latest, period = None, []
    if baseline is not None:
        window_start = end - settings.window
        in_window = (
            [p for p in predictions if p.created_at >= window_start]
            if start <= window_start
            else store.predictions(since=window_start, until=end)
        )
        latest = evaluate_window(in_window, baseline, settings, window_start, end)
        period = compare(baseline, predictions, settings)
    return ReportData(
        start,
        end,
        settings,
        predictions,
        baseline,
        store.feedback_counts(since=start),
        latest,
        period,
    )


def render(store: MonitoringStore, data: ReportData) -> str:
    """The report as one HTML string."""
    baseline = data.baseline
    meta = (
        f"{data.start:%Y-%m-%d %H:%M} to {data.end:%Y-%m-%d %H:%M} UTC · "
        f"{len(data.predictions)} predictions · "
        f"{sum(1 for p in data.predictions if p.flag)} flagged · "
        f"models: {escape(', '.join(sorted({p.model_version for p in data.predictions})) or '-')}"
        " · baseline: "
        + (
            f"{escape(baseline.name)} ({len(baseline)} samples of dataset "
            f"{escape(str(baseline.dataset_version))}, model {escape(str(baseline.model_version))})"
            if baseline
            else "none"
        )
        + f" · rules v{escape(str(data.settings.version))} ({escape(data.settings.source)})"
    )
    sections = {
        "title": "Quill monitoring report",
        "meta": meta,
        "models": _models(data),
        "alerts": _alerts(data),
        "flags_chart": _flags_chart(data),
        "drift": _drift(data),
        "distributions": _distributions(data),
        "slowest": _slowest(store, data),
        "shadow": _shadow(store, data),
        "examples": _examples(store, data),
    }
    html = resources.files("quill.monitoring").joinpath("report_template.html").read_text()
    for key, value in sections.items():
        html = html.replace("{{" + key + "}}", value)
    return html


def write_report(
    store: MonitoringStore,
    settings: MonitoringSettings,
    out: Path,
    since: timedelta,
    *,
    now: datetime | None = None,
    baseline_name: str | None = None,
) -> ReportData:
    data = gather(store, settings, since, now=now, baseline_name=baseline_name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(store, data), encoding="utf-8")
    return data


# ---- sections -----------------------------------------------------------------------------


def _models(data: ReportData) -> str:
    """Predictions per model version and runtime: one version served by two runtimes
    (``--backend auto`` chose differently after a restart) reads slightly differently, which
    a drift or accuracy question must be able to tell apart."""
    served = Counter((p.model_version, p.runtime) for p in data.predictions)
    if not served:
        return '<p class="muted">No predictions in the period.</p>'
    rows = []
    for (version, runtime), count in sorted(served.items(), key=lambda i: (i[0][0], i[0][1] or "")):
        runtime_cell = (
            f"<td>{escape(runtime)}</td>" if runtime else '<td class="muted">not recorded</td>'
        )
        rows.append(
            f'<tr><td>{escape(version)}</td>{runtime_cell}<td class="num">{count}</td></tr>'
        )
    return (
        '<table id="models-table"><thead><tr><th>model version</th><th>runtime</th>'
        f"<th>predictions</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _alerts(data: ReportData) -> str:
    if data.baseline is None:
        return (
            '<p class="bad">No baseline in the store: drift cannot be measured. Make one with '
            "<code>quill monitor baseline --dataset DIR --model DIR</code>.</p>"
        )
    latest = data.latest
    assert latest is not None
    head = (
        f'<p class="{"ok" if latest.ok else "bad"}" id="verdict">{escape(latest.verdict())} in '
        f"the latest window ({latest.start:%Y-%m-%d %H:%M} .. {latest.end:%Y-%m-%d %H:%M} UTC,"
        f" {latest.n} predictions) — what <code>quill monitor check</code> reports.</p>"
    )
    notes = "".join(f'<p class="muted">{escape(n)}</p>' for n in latest.notes)
    items = "".join(f"<li>{escape(line)}</li>" for line in latest.grouped())
    return head + notes + (f'<ul id="alert-list">{items}</ul>' if items else "")


def _flags_chart(data: ReportData) -> str:
    hourly = data.end - data.start <= timedelta(days=2)
    step = timedelta(hours=1) if hourly else timedelta(days=1)
    fmt = "%m-%d %H:00" if hourly else "%Y-%m-%d"
    floor = data.start.replace(minute=0, second=0, microsecond=0)
    if not hourly:
        floor = floor.replace(hour=0)
    labels, starts = [], []
    moment = floor
    while moment < data.end:
        labels.append(moment.strftime(fmt))
        starts.append(moment)
        moment += step

    def bucket(when: datetime) -> int:
        return min(int((when - floor) / step), len(labels) - 1)

    flags = {name: [0] * len(labels) for name in FLAGS}
    corrections = 0
    for when, flag, correction in data.feedback:
        if flag in flags:
            flags[flag][bucket(when)] += 1
        corrections += correction is not None
    traffic = [0] * len(labels)
    for p in data.predictions:
        traffic[bucket(p.created_at)] += 1
    totals = Counter({name: sum(v) for name, v in flags.items()})
    summary = ", ".join(f"{n} {name}" for name, n in totals.items())
    return (
        svg.stacked_bars(labels, flags, "Flags by type")
        + svg.stacked_bars(labels, {"predictions": traffic}, "Predictions", height=140)
        + f"<p>{summary}; {corrections} correction(s) typed by users.</p>"
    )


def _drift(data: ReportData) -> str:
    if data.baseline is None:
        return '<p class="muted">No baseline.</p>'
    overall = [r for r in data.period_drift if r.slice == ALL]
    slices = [r for r in data.period_drift if r.slice != ALL]
    parts = [
        "<p>Whole report period against the baseline. Red cells cross their threshold "
        f"(configs: v{escape(str(data.settings.version))}).</p>",
        _drift_table(overall, "drift-table"),
        _windows_table(data),
        "<details><summary>Per slice "
        f"({len({r.slice for r in slices})} slices: "
        f"{escape(', '.join(data.settings.slices))})</summary>",
        _drift_table(slices, "slice-table"),
        "</details>",
    ]
    return "".join(parts)


def _drift_table(results: Sequence[DriftResult], table_id: str) -> str:
    head = "".join(f"<th>{m}</th>" for m in METRICS)
    rows = []
    for r in sorted(results, key=lambda r: (r.slice, not r.alert, r.projection)):
        cells = "".join(
            f'<td class="num{" over" if m in r.exceeded else ""}" '
            f'title="threshold {r.thresholds.get(m, "-")}">{r.distances[m]:.3f}</td>'
            for m in METRICS
        )
        status = "ALERT" if r.alert else ("not judged" if not r.considered else "ok")
        rows.append(
            f'<tr class="{"alert" if r.alert else ""}"><td>{escape(r.projection)}</td>'
            f"<td>{escape(r.slice)}</td><td>{escape(r.reference)}</td>"
            f'<td class="num">{r.n}</td><td class="num">{_fmt(r.mean)}</td>'
            f'<td class="num">{_fmt(r.reference_mean)}</td>{cells}<td>{status}</td></tr>'
        )
    return (
        f'<table id="{table_id}"><thead><tr><th>projection</th><th>slice</th>'
        f"<th>reference</th><th>n</th><th>mean</th><th>baseline mean</th>{head}"
        f"<th>status</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _windows_table(data: ReportData) -> str:
    """Which projections alerted in each sliding window of the period."""
    assert data.baseline is not None
    settings = data.settings
    windows = sliding_windows(
        data.predictions, settings.window, settings.step, data.start, data.end
    )
    rows = []
    for window in windows[-30:]:
        result = evaluate_window(
            window.predictions, data.baseline, settings, window.start, window.end
        )
        drifted = sorted({a.subject for a in result.alerts if a.slice == ALL})
        flagged = sum(1 for p in window.predictions if p.flag)
        rows.append(
            f"<tr><td>{window.start:%Y-%m-%d %H:%M}</td><td>{window.end:%Y-%m-%d %H:%M}</td>"
            f'<td class="num">{len(window.predictions)}</td><td class="num">{flagged}</td>'
            f'<td class="{"over" if drifted else ""}">{escape(", ".join(drifted)) or "-"}</td></tr>'
        )
    return (
        "<h3>Sliding windows</h3>"
        '<table id="window-table"><thead><tr><th>from</th><th>to</th><th>predictions</th>'
        "<th>flagged</th><th>alerts (all traffic)</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _distributions(data: ReportData) -> str:
    drifted = {r.projection for r in data.period_drift if r.slice == ALL and r.alert}
    charts = []
    for projection in proj.REGISTRY.values():
        name = projection.name
        production = finite(p.projections.get(name) for p in data.predictions)
        reference = finite(data.baseline.values.get(name, [])) if data.baseline else np.array([])
        if production.size == 0 and reference.size == 0:
            continue
        charts.append(
            f'<div class="plot{" alert" if name in drifted else ""}" data-projection="{name}" '
            f'title="{escape(projection.description)}">'
            + svg.histogram(reference, production, name)
            + "</div>"
        )
    return "".join(charts)


def _slowest(store: MonitoringStore, data: ReportData) -> str:
    timed = [p for p in data.predictions if p.latency_ms is not None]
    slow = sorted(timed, key=lambda p: p.latency_ms or 0, reverse=True)
    slow = slow[: data.settings.report.get("slowest", 20)]
    if not slow:
        return '<p class="muted">No timed requests.</p>'
    latencies = np.array([p.latency_ms for p in timed])
    stats = ", ".join(f"p{q} {np.percentile(latencies, q):.0f} ms" for q in (50, 95, 99))
    rows = "".join(
        f'<tr><td class="num">{p.latency_ms:.0f}</td><td>{_thumb(store, p)}</td>'
        f"<td>{escape(p.request_id)}</td><td>{escape(p.client)}</td>"
        f'<td class="num">{_fmt(p.projections.get("width"))}×{_fmt(p.projections.get("height"))}'
        f'</td><td class="text">{escape(p.text)}</td></tr>'
        for p in slow
    )
    return (
        f"<p>Latency over the period: {stats}.</p>"
        '<table id="slowest-table"><thead><tr><th>ms</th><th>image</th><th>request</th>'
        f"<th>client</th><th>size</th><th>output</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _shadow(store: MonitoringStore, data: ReportData) -> str:
    shadows = [s for s in store.shadow_predictions(since=data.start) if s.timestamp < data.end]
    if not shadows:
        return ""
    by_model: dict[str, list[float]] = {}
    for s in shadows:
        by_model.setdefault(s.model_version, []).append(s.disagreement)
    summary = "".join(
        f"<tr><td>{escape(m)}</td><td class='num'>{len(v)}</td>"
        f"<td class='num'>{np.mean(v):.3f}</td>"
        f"<td class='num'>{np.mean([d > 0 for d in v]):.1%}</td></tr>"
        for m, v in by_model.items()
    )
    current = {p.request_id: p.text for p in data.predictions}
    worst = sorted(shadows, key=lambda s: s.disagreement, reverse=True)[:20]
    examples = "".join(
        f"<tr><td>{escape(s.request_id)}</td><td class='text'>"
        f"{escape(current.get(s.request_id, '?'))}</td><td class='text'>{escape(s.text)}</td>"
        f"<td class='num'>{s.disagreement:.3f}</td></tr>"
        for s in worst
    )
    return (
        '<h2 id="shadow">Shadow models</h2>'
        '<table id="shadow-table"><thead><tr><th>candidate</th><th>requests</th>'
        "<th>mean CER vs current</th><th>share disagreeing</th></tr></thead>"
        f"<tbody>{summary}</tbody></table>"
        "<details><summary>Largest disagreements</summary><table><thead><tr><th>request</th>"
        "<th>current</th><th>candidate</th><th>CER</th></tr></thead>"
        f"<tbody>{examples}</tbody></table></details>"
    )


def _examples(store: MonitoringStore, data: ReportData) -> str:
    limit = data.settings.report.get("max_examples", 500)
    ordered = sorted(data.predictions, key=lambda p: (p.flag is None, p.correction is None, -p.id))[
        :limit
    ]
    rows = []
    for p in ordered:
        flag = p.flag or ""
        rows.append(
            f'<tr data-flag="{flag}" data-request="{escape(p.request_id)}">'
            f"<td>{_thumb(store, p)}</td>"
            f'<td data-sort="{p.created_at.isoformat()}">{p.created_at:%Y-%m-%d %H:%M:%S}</td>'
            f"<td>{escape(p.request_id)}</td><td>{escape(p.client)}</td>"
            f"<td>{escape(p.model_version)}</td>"
            f'<td class="text">{escape(p.text)}</td>'
            f'<td class="num">{_fmt(p.confidence)}</td>'
            f'<td class="num">{_fmt(p.latency_ms)}</td>'
            f'<td class="num">{_fmt(p.projections.get("char_entropy"))}</td>'
            f"<td>{escape(_polarity(p))}</td>"
            f'<td class="flag-{flag}">{flag}</td>'
            f'<td class="text">{escape(p.correction or "")}</td>'
            f"<td>{escape(p.comment or '')}</td></tr>"
        )
    columns = [
        ("image", "none"),
        ("time", "text"),
        ("request", "text"),
        ("client", "text"),
        ("model", "text"),
        ("output", "text"),
        ("confidence", "num"),
        ("latency ms", "num"),
        ("entropy", "num"),
        ("polarity", "text"),
        ("flag", "text"),
        ("correction", "text"),
        ("comment", "text"),
    ]
    head = "".join(f'<th data-type="{kind}">{name}</th>' for name, kind in columns)
    note = (
        f'<p class="muted">Showing {len(ordered)} of {len(data.predictions)} predictions '
        "(flagged and corrected first).</p>"
        if len(ordered) < len(data.predictions)
        else ""
    )
    return (
        note + f'<table id="examples"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


# ---- helpers ------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _polarity(p: StoredPrediction) -> str:
    value = p.projections.get("polarity")
    if value is None:
        return ""
    return "dark on light" if value >= 0.5 else "light on dark"


def _thumb(store: MonitoringStore, p: StoredPrediction) -> str:
    """An inline JPEG thumbnail of the stored image ('no image' when not retained)."""
    try:
        data = store.image_bytes(p)
    except FileNotFoundError:
        data = None
    if not data:
        return '<span class="muted">no image</span>'
    try:
        image = load_image(data)
    except ImageError:
        return '<span class="muted">unreadable</span>'
    image.thumbnail(THUMBNAIL)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=75)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    alt = f"input of {escape(p.request_id)}"
    return f'<img class="thumb" alt="{alt}" src="data:image/jpeg;base64,{encoded}">'
