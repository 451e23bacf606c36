"""``quill monitor export``: interesting production examples as Label Studio tasks.

This is annotation's side of the loop (monitoring -> annotation): it reads the monitoring
store through its public API (:meth:`MonitoringStore.predictions`,
:meth:`MonitoringStore.image_bytes`) and monitoring's slice values, and writes tasks in the
annotation layer's own format. Monitoring never imports annotation; the command is
registered on ``quill monitor`` by :mod:`quill.annotation.cli`.

Each stored prediction becomes one task whose image is copied next to the task file and
whose pre-annotation is what the model answered (one region per recognised line, a
rectangle and a transcription sharing an id, in percent of the image). Annotators correct a
draft instead of typing from scratch, and ``quill annotate import`` turns their export into
a dataset version. The task format is the annotation layer's own
(:func:`quill.annotation.tasks.build_tasks`), so the two cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from quill.annotation.tasks import ImageRef, build_tasks, upright_size
from quill.monitoring.drift import polarity_label, size_bucket, slice_values
from quill.monitoring.records import StoredPrediction
from quill.monitoring.settings import MonitoringSettings
from quill.monitoring.store import MonitoringStore

FORMATS = ("labelstudio",)


@dataclass
class ExportResult:
    path: Path
    tasks: list[dict[str, Any]]
    skipped: list[str] = field(default_factory=list)


def select(
    predictions: Sequence[StoredPrediction],
    settings: MonitoringSettings,
    *,
    flagged: bool = False,
    corrected: bool = False,
    slices: Sequence[tuple[str, str]] = (),
) -> list[StoredPrediction]:
    """Predictions matching every filter; ``slices`` are (key, value) pairs from
    :func:`parse_slices`."""
    chosen = []
    for p in predictions:
        if flagged and p.flag is None:
            continue
        if corrected and p.correction is None:
            continue
        values = slice_values(p.projections, settings, p.client, p.model_version)
        if all(values.get(key) == value for key, value in slices):
            chosen.append(p)
    return chosen


def slice_choices(settings: MonitoringSettings) -> dict[str, list[str] | None]:
    """The slices predictions can be chosen by, each with its possible values (None: any).

    The keys are the settings' ``slices`` (no other key is ever computed). Polarity and
    size bucket are labels :func:`~quill.monitoring.drift.slice_values` makes from
    projections, so their values are what its labelling functions give for every input (the
    polarity projection is 1, 0 or missing; a size is under a bucket's limit, above all of
    them, or missing); client and model version are whatever was stored.
    """
    buckets = settings.size_buckets
    closed = {
        "polarity": sorted({polarity_label(value) for value in (1.0, 0.0, None)}),
        "size_bucket": [
            *sorted(buckets, key=buckets.__getitem__),
            size_bucket(math.inf, math.inf, buckets),
            size_bucket(None, None, buckets),
        ],
    }
    return {key: closed.get(key) for key in settings.slices}


def parse_slices(texts: Sequence[str], settings: MonitoringSettings) -> list[tuple[str, str]]:
    """``KEY=VALUE`` filters as (key, value) pairs, checked against :func:`slice_choices`.

    A misspelt key or value would match nothing, and an export of nothing looks like a quiet
    week: ValueError names what is known instead.
    """
    choices = slice_choices(settings)
    pairs = []
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"slice {text!r}: use KEY=VALUE, e.g. polarity=light-on-dark")
        if key not in choices:
            raise ValueError(f"slice {text!r}: unknown key {key!r}; known: {', '.join(choices)}")
        known = choices[key]
        if known is not None and value not in known:
            raise ValueError(f"slice {text!r}: unknown {key} {value!r}; known: {', '.join(known)}")
        pairs.append((key, value))
    return pairs


def labelstudio_tasks(
    store: MonitoringStore,
    predictions: Sequence[StoredPrediction],
    out: Path,
    *,
    document_root: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> ExportResult:
    """The tasks for ``predictions`` that will be written to ``out``, their images copied into
    ``out``'s folder/``images/``.

    ``out`` itself is not written: only once the images are looked up is it known whether
    any task is left (every image may be gone), and an empty list must not replace tasks
    written earlier, so the caller decides (:func:`~quill.annotation.tasks.write_tasks`).
    ``document_root`` is Label Studio's ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` (default:
    the task file's folder); image URLs are local-files URLs relative to it.
    """
    out = Path(out)
    image_dir = out.parent / "images"
    refs, by_path, skipped = [], {}, []
    for p in predictions:
        try:
            data = store.image_bytes(p)
        except FileNotFoundError as exc:
            skipped.append(f"{p.request_id}: {exc}")
            continue
        if data is None:
            skipped.append(f"{p.request_id}: image not retained (privacy setting or purged)")
            continue
        image_dir.mkdir(parents=True, exist_ok=True)
        path = (image_dir / f"{p.image_sha256}.{p.image_ext}").resolve()
        if not path.exists():
            path.write_bytes(data)
        refs.append(ImageRef(path=path, extra=_task_data(p)))
        by_path[path] = p

    def stored_answers(paths: list[Path]) -> list[Any]:
        return [_as_prediction(by_path[path], upright_size(path)) for path in paths]

    tasks, notes = build_tasks(
        refs, (document_root or out.parent).resolve(), predictor=stored_answers, progress=progress
    )
    return ExportResult(out, tasks, skipped + notes)


def _task_data(p: StoredPrediction) -> dict[str, Any]:
    """What an annotator (and the import afterwards) may want to see beside the image."""
    data: dict[str, Any] = {
        "sha256": p.image_sha256,
        "request_id": p.request_id,
        "model_version": p.model_version,
        "client": p.client,
        "created_at": p.created_at.isoformat(),
        "model_text": p.text,
    }
    for key in ("flag", "correction", "comment"):
        value = getattr(p, key)
        if value is not None:
            data[key] = value
    return data


def _as_prediction(p: StoredPrediction, size: tuple[int, int]) -> SimpleNamespace:
    """A stored prediction in the shape of ``quill.inference.Prediction`` (what
    ``prediction_for`` reads). Without stored lines, one line covers the whole image."""
    width, height = size
    stored = p.lines or [{"text": p.text, "confidence": p.confidence, "box": (0, 0, width, height)}]
    lines = [
        SimpleNamespace(
            text=line.get("text", ""),
            confidence=line.get("confidence") if line.get("confidence") is not None else 0.0,
            box=tuple(line.get("box") or (0, 0, width, height)),
        )
        for line in stored
    ]
    return SimpleNamespace(
        lines=lines,
        model_version=p.model_version,
        confidence=p.confidence if p.confidence is not None else 0.0,
    )
