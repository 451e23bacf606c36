"""The baseline: the same projections production gets, over a labelled test set.

Drift is only meaningful against what the model was validated on, so the baseline runs the
test split through the very model (and :meth:`Recognizer.predict` path) that serves, and
projects inputs and outputs exactly as the store does on every request.

:class:`BaselineStore` is the monitoring store's part that keeps baselines by name; drift,
alerts and the report load one to compare production with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import delete, insert, select

from quill.data.manifest import Manifest, Sample
from quill.evaluation import corpus_rates
from quill.monitoring import projections as proj
from quill.monitoring.database import StoreBase
from quill.monitoring.records import Baseline, utcnow
from quill.monitoring.schema import BaselineRow, BaselineValueRow
from quill.preprocess import ImageError, load_image


class BaselineStore(StoreBase):
    """Baselines in the monitoring store: one projection dict per test sample, by name."""

    def save_baseline(
        self,
        name: str,
        rows: Sequence[dict[str, float | None]],
        *,
        dataset_version: str | None = None,
        model_version: str | None = None,
        meta: dict | None = None,
    ) -> None:
        """Store (replacing any of the same name) one projection dict per test sample."""
        if not rows:
            raise ValueError(f"baseline {name!r} has no samples")
        with self._writer_turn(), self._sessions.begin() as session:
            old = session.scalar(select(BaselineRow).where(BaselineRow.name == name))
            if old is not None:
                session.execute(
                    delete(BaselineValueRow).where(BaselineValueRow.baseline_id == old.id)
                )
                session.delete(old)
                session.flush()
            baseline = BaselineRow(
                name=name,
                created_at=utcnow(),
                dataset_version=dataset_version,
                model_version=model_version,
                meta=meta or {},
            )
            session.add(baseline)
            session.flush()
            session.execute(
                insert(BaselineValueRow),
                [
                    {"baseline_id": baseline.id, "sample": i, "name": k, "value": v}
                    for i, row in enumerate(rows)
                    for k, v in row.items()
                ],
            )

    def load_baseline(self, name: str = "default") -> Baseline:
        """A stored baseline; KeyError listing the stored ones if ``name`` is not among them."""
        with self._sessions() as session:
            row = session.scalar(select(BaselineRow).where(BaselineRow.name == name))
            if row is None:
                known = list(session.scalars(select(BaselineRow.name)))
                raise KeyError(
                    f"no baseline named {name!r} in the store (stored: {known or 'none'}); "
                    "make one with `quill monitor baseline`"
                )
            values: dict[str, list[float | None]] = {}
            query = (
                select(BaselineValueRow.name, BaselineValueRow.value)
                .where(BaselineValueRow.baseline_id == row.id)
                .order_by(BaselineValueRow.sample)
            )
            for key, value in session.execute(query):
                values.setdefault(key, []).append(value)
            return Baseline(
                row.name,
                row.created_at,
                row.dataset_version,
                row.model_version,
                row.meta or {},
                values,
            )

    def baseline_names(self) -> list[str]:
        with self._sessions() as session:
            return list(session.scalars(select(BaselineRow.name).order_by(BaselineRow.name)))


class Predictor(Protocol):
    """What the baseline, the evaluation and shadow mode need of a model: the
    :class:`quill.inference.recognizer.Recognizer` contract."""

    @property
    def model_version(self) -> str: ...

    def predict(self, images: Sequence[Any], kind: str = "auto") -> list[Any]: ...


@dataclass
class BaselineData:
    rows: list[dict[str, float | None]]
    texts: list[str]
    labels: list[str]
    dataset_version: str
    model_version: str
    skipped: list[str] = field(default_factory=list)

    @property
    def rates(self) -> dict[str, float]:
        return corpus_rates(self.texts, self.labels)


def select_samples(manifest: Manifest, split: str, limit: int | None) -> list[Sample]:
    """The samples of ``split`` (all samples for ``split="all"``), at most ``limit``."""
    samples = [s for s in manifest if split in ("all", s.split)]
    if not samples:
        counts = manifest.counts()
        raise ValueError(
            f"{manifest.root}: no samples in split {split!r} (splits: {counts or 'none'}); "
            "pass --split"
        )
    return samples[:limit] if limit else samples


def compute_baseline(
    manifest: Manifest,
    recognizer: Predictor,
    *,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 16,
    kind: str = "auto",
    tokenizer: Any = None,
    progress: Callable[[int], None] | None = None,
) -> BaselineData:
    """Predict every sample of ``split`` and project input and output.

    An unreadable image is skipped and named in ``skipped``, never fatal.
    """
    samples = select_samples(manifest, split, limit)
    data = BaselineData([], [], [], manifest.version, recognizer.model_version)
    tokenizer = tokenizer or getattr(recognizer, "tokenizer", None)
    for start in range(0, len(samples), batch_size):
        batch = samples[start : start + batch_size]
        images = []
        for sample in batch:
            try:
                images.append((sample, load_image(manifest.path_of(sample))))
            except (ImageError, OSError) as exc:
                data.skipped.append(f"{sample.image}: {exc}")
        predictions = recognizer.predict([image for _, image in images], kind=kind)
        for (sample, image), prediction in zip(images, predictions, strict=True):
            extra = {"tokenizer": tokenizer} if tokenizer is not None else {}
            projected = proj.ProjectionInput(prediction.text, prediction.confidence, image, **extra)
            data.rows.append(proj.compute(projected))
            data.texts.append(prediction.text)
            data.labels.append(sample.text)
        if progress:
            progress(len(batch))
    if not data.rows:
        raise ValueError(f"{manifest.root}: no readable images in split {split!r}")
    return data


def save_baseline(
    store: BaselineStore, name: str, data: BaselineData, dataset: Path, split: str
) -> None:
    rates = data.rates
    store.save_baseline(
        name,
        data.rows,
        dataset_version=data.dataset_version,
        model_version=data.model_version,
        meta={
            "dataset": str(dataset),
            "split": split,
            "samples": len(data.rows),
            "skipped": len(data.skipped),
            "cer": round(rates["cer"], 5),
            "wer": round(rates["wer"], 5),
        },
    )
