"""Reading tracked runs back: list, show, compare, and a shareable HTML report.

All of it goes through the MLflow client, so it works the same on the embedded SQLite store
and on a team's MLflow server. A run is named by its full id, a unique id prefix (the
8 characters ``quill train`` prints) or its run name.

Staging a model (``quill stage --register``) records a run of its own in the
``quill-staging`` experiment, with the training run's metrics copied in. Lists show training
runs only unless asked (``include_staging``, or that experiment named), so a staged model
does not show up as a second run with the same numbers; a staging run can still be shown
by its id or name.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quill.errors import QuillError

#: Metrics shown in run tables, in this order, when a run has them.
KEY_METRICS = ("val_cer", "best_val_cer", "val_wer", "test_cer", "test_wer", "val_loss")
#: The experiment of staging runs (``quill.staging.registry.STAGING_EXPERIMENT``; training
#: must not import staging, so the name is repeated here and a test keeps them equal).
STAGING_EXPERIMENT = "quill-staging"
#: Columns of the run list besides the key metrics.
LIST_COLUMNS = ("run", "name", "experiment", "status", "started", "minutes", "model", "dataset")


class RunNotFoundError(QuillError, LookupError):
    """No run, or more than one run, matches what the user typed."""

    code = "run_not_found"


class RunQueryError(QuillError, ValueError):
    """A run filter or ordering the store refuses; ``part`` says which (``filter`` or
    ``order_by``), so a command can name its own option for it."""

    code = "run_query_invalid"

    def __init__(self, message: str, part: str):
        super().__init__(message)
        self.part = part


def client_for(tracking_uri: str | None) -> Any:
    """An MLflow client of an existing store; raises ``NoTrackingStore`` (a fresh checkout,
    where nothing has been trained) rather than creating an empty one."""
    from mlflow import MlflowClient

    from quill.training.tracking_store import (
        default_tracking_uri,
        require_store,
    )

    uri = tracking_uri or default_tracking_uri()
    require_store(uri)
    return MlflowClient(uri)


def experiment_names(
    client: Any, names: Sequence[str] = (), *, include_staging: bool = True
) -> dict[str, str]:
    """experiment id -> name, for the named experiments or all of them (without the staging
    experiment if not ``include_staging``, unless it is named)."""
    experiments = client.search_experiments()
    chosen = {
        e.experiment_id: e.name
        for e in experiments
        if (e.name in names if names else include_staging or e.name != STAGING_EXPERIMENT)
    }
    missing = set(names) - set(chosen.values())
    if missing:
        known = ", ".join(sorted(e.name for e in experiments)) or "none"
        raise RunNotFoundError(f"no experiment named {sorted(missing)}; known: {known}")
    return chosen


def search(
    client: Any,
    experiments: Sequence[str] = (),
    filter_string: str = "",
    order_by: Sequence[str] = ("attributes.start_time DESC",),
    max_results: int = 100,
    *,
    include_staging: bool = False,
) -> list[Any]:
    """Runs matching an MLflow filter (e.g. ``metrics.val_cer < 0.2 and params.model.name =
    'ctc_line'``), newest first by default: training runs, plus the staging runs if
    ``include_staging`` or the staging experiment is among ``experiments``.

    Each ordering is checked on its own first: the store's error for a bad one was reported
    as a bad filter, naming the filter (often empty) rather than the ordering.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.utils.search_utils import SearchUtils

    for clause in order_by:
        try:
            SearchUtils.parse_order_by_for_search_runs(clause)
        except MlflowException as exc:
            raise RunQueryError(f"bad run ordering {clause!r}: {exc.message}", "order_by") from exc
    ids = experiment_names(client, experiments, include_staging=include_staging)
    if not ids:
        return []
    try:
        return list(
            client.search_runs(
                list(ids),
                filter_string=filter_string,
                order_by=list(order_by),
                max_results=max_results,
            )
        )
    except MlflowException as exc:
        raise RunQueryError(f"bad run filter {filter_string!r}: {exc.message}", "filter") from exc


def resolve_run(client: Any, key: str) -> Any:
    """The one run whose id, id prefix or name is ``key``."""
    from mlflow.exceptions import MlflowException

    if len(key) == 32:
        try:
            return client.get_run(key)
        except MlflowException:
            pass
    runs = search(client, max_results=50_000, include_staging=True)
    matches = [r for r in runs if r.info.run_id.startswith(key) or r.info.run_name == key]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise RunNotFoundError(f"no run with id, id prefix or name {key!r}")
    shown = ", ".join(f"{r.info.run_id[:8]} ({r.info.run_name})" for r in matches[:5])
    raise RunNotFoundError(f"{key!r} matches {len(matches)} runs: {shown}; give more of the id")


def summary(run: Any, experiment_names: dict[str, str] | None = None) -> dict[str, Any]:
    """The row of a run in ``quill runs list``."""
    info, data = run.info, run.data
    end = info.end_time or info.start_time
    row: dict[str, Any] = {
        "run": info.run_id,
        "name": info.run_name,
        "experiment": (experiment_names or {}).get(info.experiment_id, info.experiment_id),
        "status": info.status,
        "started": _timestamp(info.start_time),
        "minutes": round((end - info.start_time) / 60000, 1) if info.start_time else None,
        "model": data.tags.get("quill.model_name", data.params.get("model.name")),
        "dataset": data.tags.get("quill.dataset_version"),
    }
    for key in KEY_METRICS:
        if key in data.metrics:
            row[key] = round(data.metrics[key], 4)
    return row


def _timestamp(millis: int | None) -> str | None:
    import datetime as dt

    if not millis:
        return None
    return dt.datetime.fromtimestamp(millis / 1000).strftime("%Y-%m-%d %H:%M")


def runs_frame(runs: Sequence[Any], experiment_names: dict[str, str]) -> Any:
    """A pandas DataFrame of runs with every metric, param and tag as a column."""
    import pandas as pd

    records = []
    for run in runs:
        record = summary(run, experiment_names)
        record.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
        record.update({f"params.{k}": v for k, v in run.data.params.items()})
        record.update({f"tags.{k}": v for k, v in run.data.tags.items()})
        records.append(record)
    return pd.DataFrame.from_records(records)


def details(client: Any, run: Any) -> dict[str, Any]:
    """Everything ``quill runs show`` prints: info, metrics, params, tags, artifacts."""
    return {
        **summary(run, experiment_names(client)),
        "metrics": dict(sorted(run.data.metrics.items())),
        "params": dict(sorted(run.data.params.items())),
        "tags": {k: v for k, v in sorted(run.data.tags.items()) if k != "mlflow.loggedArtifacts"},
        "artifacts": [a.path for a in client.list_artifacts(run.info.run_id)],
        "artifact_uri": run.info.artifact_uri,
    }


def comparison(runs: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """Metrics of every run, and only the params that differ between them."""
    metric_keys = sorted({k for r in runs for k in r.data.metrics if not k.startswith("system/")})
    param_keys = sorted({k for r in runs for k in r.data.params})
    differing = [k for k in param_keys if len({r.data.params.get(k) for r in runs}) > 1]
    table: dict[str, dict[str, Any]] = {}
    for run in runs:
        column = run.info.run_id[:8]
        table[column] = {
            "name": run.info.run_name,
            **{f"metrics.{k}": _round(run.data.metrics.get(k)) for k in metric_keys},
            **{f"params.{k}": run.data.params.get(k) for k in differing},
        }
    return table


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 5)


# -- HTML report ----------------------------------------------------------------------------


@dataclass
class Curves:
    """Metric histories of one run, by step, and the epoch each step belongs to."""

    label: str
    series: dict[str, list[tuple[int, float]]]
    epoch_of_step: dict[int, int]

    def by_epoch(self, key: str) -> dict[int, float]:
        """Last value of ``key`` in each epoch."""
        out: dict[int, float] = {}
        for step, value in self.series.get(key, []):
            epoch = self.epoch_of_step.get(step)
            if epoch is None:
                earlier = [s for s in self.epoch_of_step if s <= step]
                epoch = self.epoch_of_step[max(earlier)] if earlier else 0
            out[epoch] = value
        return out


CURVE_KEYS = ("train_loss", "train_loss_epoch", "val_loss", "val_cer", "val_wer", "lr")


def curves(client: Any, run: Any) -> Curves:
    series = {
        key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
        for key in (*CURVE_KEYS, "epoch")
    }
    epoch_of_step = {step: int(value) for step, value in series.pop("epoch")}
    return Curves(f"{run.info.run_name} ({run.info.run_id[:8]})", series, epoch_of_step)


def generalization_gap(c: Curves) -> dict[int, float]:
    """val_loss − train_loss per epoch: how much worse the model does on unseen data.

    >>> c = Curves("r", {"val_loss": [(9, 2.0), (19, 1.5)],
    ...                  "train_loss_epoch": [(9, 1.0), (19, 0.5)]}, {9: 0, 19: 1})
    >>> generalization_gap(c)
    {0: 1.0, 1: 1.0}
    """
    val, train = c.by_epoch("val_loss"), c.by_epoch("train_loss_epoch")
    return {e: val[e] - train[e] for e in sorted(val) if e in train}


def _figure_png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def plot_curves(all_curves: Sequence[Curves]) -> dict[str, str]:
    """Base64 PNGs: loss by step, CER by epoch, generalization gap by epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts = {}
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for c in all_curves:
        for key, style in (("train_loss", "-"), ("val_loss", "o--")):
            points = c.series.get(key, [])
            if points:
                ax.plot(*zip(*points, strict=True), style, label=f"{key} · {c.label}", alpha=0.85)
    ax.set(xlabel="step", ylabel="loss", title="Loss", yscale="log")
    ax.legend(fontsize=7)
    charts["Loss"] = _figure_png(fig)

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for c in all_curves:
        for key in ("val_cer", "val_wer"):
            epochs = c.by_epoch(key)
            if epochs:
                ax.plot(list(epochs), list(epochs.values()), "o-", label=f"{key} · {c.label}")
    ax.set(xlabel="epoch", ylabel="error rate", title="Validation CER / WER", ylim=(0, None))
    ax.legend(fontsize=7)
    charts["Error rates"] = _figure_png(fig)

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for c in all_curves:
        gap = generalization_gap(c)
        if gap:
            ax.plot(list(gap), list(gap.values()), "o-", label=c.label)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="epoch", ylabel="val_loss − train_loss", title="Generalization gap")
    ax.legend(fontsize=7)
    charts["Generalization gap"] = _figure_png(fig)
    return charts


def latest_prediction_table(client: Any, run: Any, folder: Path) -> tuple[str, dict] | None:
    """(artifact name, table) of the run's last prediction table, images as data URIs."""
    tables = sorted(a.path for a in client.list_artifacts(run.info.run_id, "predictions"))
    if not tables:
        return None
    name = tables[-1]
    local = Path(client.download_artifacts(run.info.run_id, name, str(folder)))
    table = json.loads(local.read_text(encoding="utf-8"))
    for row in table["data"]:
        for i, cell in enumerate(row):
            if isinstance(cell, dict) and cell.get("type") == "image":
                image = Path(
                    client.download_artifacts(run.info.run_id, cell["filepath"], str(folder))
                )
                row[i] = {
                    "data_uri": "data:image/png;base64,"
                    + base64.b64encode(image.read_bytes()).decode()
                }
    return name, table


def _cell(value: Any) -> str:
    if isinstance(value, dict) and "data_uri" in value:
        return f'<img src="{value["data_uri"]}" alt="input">'
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return html.escape(str(value))


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


DIRTY_NOTE = " (uncommitted changes: see the run's code/diff.patch)"
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:middle}
th{background:#f3f3f3} td img{max-height:64px;max-width:520px}
img.chart{display:block;max-width:100%;height:auto}
code{background:#f3f3f3;padding:1px 4px}
"""


def write_report(client: Any, runs: Sequence[Any], out: Path) -> Path:
    """One self-contained HTML page (charts and images inlined) about ``runs``."""
    all_curves = [curves(client, r) for r in runs]
    charts = plot_curves(all_curves)
    names = experiment_names(client)
    parts = [f"<h1>Quill run report</h1><p>{len(runs)} run(s)</p>", "<h2>Runs</h2>"]
    rows = [summary(r, names) for r in runs]
    columns = [c for c in (*LIST_COLUMNS, *KEY_METRICS) if any(c in row for row in rows)]
    parts.append(_html_table(columns, [[row.get(c, "") for c in columns] for row in rows]))
    for run in runs:
        tags = run.data.tags
        parts.append(
            f"<p><code>{run.info.run_id[:8]}</code> git "
            f"<code>{html.escape(tags.get('mlflow.source.git.commit', 'unknown')[:12])}</code> "
            f"on {html.escape(tags.get('mlflow.source.git.branch', '?'))}"
            f"{DIRTY_NOTE if tags.get('quill.git.dirty') == 'True' else ''}"
            f", dataset <code>{html.escape(tags.get('quill.dataset_version', '?'))}</code></p>"
        )
    if len(runs) > 1:
        table = comparison(runs)
        keys = [k for k in next(iter(table.values())) if k.startswith("params.")]
        if keys:
            parts.append("<h2>Parameters that differ</h2>")
            parts.append(
                _html_table(["param", *table], [[k, *(table[c][k] for c in table)] for k in keys])
            )
    parts.append("<h2>Curves</h2>")
    for title, png in charts.items():
        parts.append(f'<h3>{title}</h3><img class="chart" src="data:image/png;base64,{png}">')
    with tempfile.TemporaryDirectory() as tmp:
        for run, c in zip(runs, all_curves, strict=True):
            found = latest_prediction_table(client, run, Path(tmp) / run.info.run_id)
            if found is None:
                continue
            name, predictions = found
            parts.append(f"<h2>Predictions · {html.escape(c.label)}</h2><p>{html.escape(name)}</p>")
            parts.append(_html_table(predictions["columns"], predictions["data"]))
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Quill run report</title>"
        f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
