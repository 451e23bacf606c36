"""The monitoring store: every prediction, its projections, and what users said about it.

:class:`MonitoringStore` writes to any SQLAlchemy URL (an SQLite file by default, Postgres
for a team: ``postgresql+psycopg://user@host/db``) and keeps input images as files named by
their hash (:class:`~quill.monitoring.images.ImageStore`, local or any fsspec URL). Serving
calls it through :class:`~quill.monitoring.async_logger.AsyncPredictionLogger` (importable
from here, as the serving contract names it). By default the logger commits each prediction's
row (and, on a local image store, its image) with :meth:`MonitoringStore.commit_prediction`
before the answer is sent, a fraction of a millisecond; the projections follow off the
request path. A background thread writes them in batches, retries a failing store, reports
the failure in the log and its ``stats()``, and flushes on close and at exit.

Configuration: ``$QUILL_MONITORING_URL`` (database), ``$QUILL_MONITORING_IMAGES`` (image
folder or URL), ``$QUILL_MONITORING_RETAIN_IMAGES`` (``0`` keeps projections only),
``$QUILL_MONITORING_SQLITE_SYNCHRONOUS`` (``NORMAL``, the default, survives a killed process;
``FULL`` also survives power loss, at the cost of an fsync per commit).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import create_engine, delete, event, func, insert, select, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from quill.monitoring import projections as proj
from quill.monitoring.async_logger import AsyncPredictionLogger
from quill.monitoring.images import ImageStore
from quill.monitoring.records import (
    Baseline,
    Feedback,
    PredictionRecord,
    ProjectionJob,
    Record,
    ShadowRecord,
    StoredPrediction,
    utcnow,
)
from quill.monitoring.schema import (
    Base,
    BaselineRow,
    BaselineValueRow,
    FeedbackRow,
    PredictionRow,
    ProjectionRow,
    ShadowRow,
)
from quill.monitoring.settings import MonitoringSettings
from quill.vocab import Tokenizer

__all__ = [
    "AsyncPredictionLogger",
    "Baseline",
    "Feedback",
    "MonitoringStore",
    "PredictionRecord",
    "ProjectionJob",
    "ShadowRecord",
    "StoredPrediction",
    "UnknownRequestError",
    "utcnow",
]

log = logging.getLogger(__name__)

URL_ENV = "QUILL_MONITORING_URL"
IMAGES_ENV = "QUILL_MONITORING_IMAGES"
RETAIN_ENV = "QUILL_MONITORING_RETAIN_IMAGES"
SYNCHRONOUS_ENV = "QUILL_MONITORING_SQLITE_SYNCHRONOUS"
SYNCHRONOUS_MODES = ("NORMAL", "FULL", "EXTRA")
#: Seconds SQLite waits for a lock held by another writer (a purge, another worker).
LOCK_TIMEOUT_S = 30.0
#: The same wait on the request path: past it the prediction is queued instead, so that a
#: long purge delays answers by at most this much.
REQUEST_LOCK_TIMEOUT_S = 2.0
#: Where the embedded store lives when nothing is configured (relative to the working dir).
DEFAULT_DIR = Path("monitoring")
FLAGS = ("incorrect", "offensive", "other")
Flag = Literal["incorrect", "offensive", "other"]
#: Rows per IN (...) list: well under every backend's parameter limit.
_CHUNK = 500
_IN_MEMORY = (None, "", ":memory:")
_INSERT_PREDICTION = insert(PredictionRow.__table__)
#: Names of the files an ImageStore writes: <sha256>.<ext>, or a temporary one beside it.
_IMAGE_NAME = re.compile(r"(?P<sha>[0-9a-f]{64})\.\w+(?P<partial>\.partial-\w+)?")


def default_url() -> str:
    """``$QUILL_MONITORING_URL``, else an SQLite file under ``./monitoring/``."""
    return os.environ.get(URL_ENV) or f"sqlite:///{(DEFAULT_DIR / 'monitoring.db').resolve()}"


def normalise_url(url: str) -> str:
    """Route plain Postgres URLs to psycopg 3, the driver Quill installs.

    >>> normalise_url("postgresql://u@h/db")
    'postgresql+psycopg://u@h/db'
    >>> normalise_url("sqlite:///x.db")
    'sqlite:///x.db'
    """
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class UnknownRequestError(KeyError):
    """No prediction with this request id is stored."""


class MonitoringStore:
    """Predictions, projections, feedback, shadow answers and baselines in one database.

    ``retain_images=False`` keeps projections only: image bytes are used to compute the input
    projections and then dropped. Thread safe: each call opens its own session.
    """

    def __init__(
        self,
        url: str | None = None,
        image_dir: str | Path | None = None,
        *,
        retain_images: bool | None = None,
        tokenizer: Tokenizer | None = None,
        storage_options: dict[str, Any] | None = None,
    ):
        self.url = normalise_url(url or default_url())
        self.engine = _create_engine(self.url)
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # The request path's connections wait less for a lock (an SQLite file only: an
        # in-memory database exists once per engine).
        parsed = make_url(self.url)
        on_file = parsed.get_backend_name() == "sqlite" and parsed.database not in _IN_MEMORY
        # Writers of this process take turns on a mutex: a request waiting for the logger's
        # batch is woken as soon as it commits, where SQLite's busy handler would sleep
        # 1, 2, 5, 10... ms between tries. Other processes still meet the busy handler.
        self._write_lock: Any = threading.Lock() if on_file else contextlib.nullcontext()
        self._request_engine = (
            _create_engine(self.url, lock_timeout=REQUEST_LOCK_TIMEOUT_S)
            if on_file
            else self.engine
        )
        if image_dir is None:
            image_dir = os.environ.get(IMAGES_ENV) or _default_image_dir(self.url)
        self.images = ImageStore(str(image_dir), **(storage_options or {}))
        if retain_images is None:
            retain_images = os.environ.get(RETAIN_ENV, "1").lower() not in ("0", "false", "no")
        self.retain_images = retain_images
        self.tokenizer = tokenizer or Tokenizer()

    @classmethod
    def from_settings(
        cls,
        settings: MonitoringSettings,
        url: str | None = None,
        image_dir: str | Path | None = None,
    ) -> MonitoringStore:
        """A store honouring ``configs/monitoring.yaml``'s ``store.retain_images`` (the
        environment variable, when set, wins)."""
        configured = bool(settings.store.get("retain_images", True))
        return cls(url, image_dir, retain_images=None if RETAIN_ENV in os.environ else configured)

    def __repr__(self) -> str:
        return f"MonitoringStore({make_url(self.url).render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        self.engine.dispose()
        self._request_engine.dispose()

    # ---- writing ------------------------------------------------------------------------

    def log_prediction(
        self,
        request_id: str,
        client: str,
        model_version: str,
        image_bytes: bytes | None,
        text: str,
        confidence: float | None,
        latency_ms: float | None,
        lines: list | None = None,
        *,
        timestamp: datetime | None = None,
    ) -> None:
        """Store one prediction now (serving should use :class:`AsyncPredictionLogger`)."""
        self.write(
            [
                PredictionRecord(
                    request_id,
                    client,
                    model_version,
                    image_bytes,
                    text,
                    confidence,
                    latency_ms,
                    lines,
                    timestamp or utcnow(),
                )
            ]
        )

    def log_shadow(
        self,
        request_id: str,
        model_version: str,
        current_model_version: str,
        text: str,
        confidence: float | None,
        latency_ms: float | None,
        disagreement: float,
    ) -> None:
        self.write(
            [
                ShadowRecord(
                    request_id,
                    model_version,
                    current_model_version,
                    text,
                    confidence,
                    latency_ms,
                    disagreement,
                )
            ]
        )

    def commit_prediction(self, record: PredictionRecord) -> bool:
        """Store the row of one prediction now, durably, in a transaction of its own: the
        request-path half of a write. Returns False if the request id was already stored.

        Nothing is decoded: the image is stored as it came (when images are retained and the
        image store is local; a remote one is written later, off the request path), and the
        projections are written afterwards by :meth:`write` of a :class:`ProjectionJob`, or by
        :meth:`project_pending` if the process dies first. On SQLite the commit survives a
        killed process (``synchronous=NORMAL`` in WAL mode) and, with
        ``$QUILL_MONITORING_SQLITE_SYNCHRONOUS=FULL``, a power loss; on Postgres it is
        durable when the commit returns.
        """
        image = None
        if self.retain_images and record.image_bytes and self.images.is_local:
            image = self.images.put(record.image_bytes)
        try:
            with self._write_lock, self._request_engine.begin() as connection:
                # Core statement, parameters apart: compiled once, cached (~0.1 ms)
                connection.execute(_INSERT_PREDICTION, _prediction_values(record, image))
        except IntegrityError:
            if self._stored(record.request_id):
                log.warning("request %s is already stored; skipped", record.request_id)
                return False
            raise
        return True

    def _stored(self, request_id: str) -> bool:
        with self._sessions() as session:
            query = select(func.count()).where(PredictionRow.request_id == request_id)
            return bool(session.scalar(query))

    def write(self, records: Sequence[Record]) -> int:
        """Store a batch in one transaction; returns how many predictions were new.

        A request id already stored is skipped with a warning, so a retried batch never
        duplicates rows. Images are written before the transaction: if it fails, a retry
        finds them already there. A :class:`ProjectionJob` adds the projections (and the
        image, if it is not stored yet) of a prediction already committed; one whose
        prediction already has projections, or was deleted meanwhile, is skipped.
        """
        predictions = list(
            {r.request_id: r for r in records if isinstance(r, PredictionRecord)}.values()
        )
        shadows = [r for r in records if isinstance(r, ShadowRecord)]
        jobs = list({r.request_id: r for r in records if isinstance(r, ProjectionJob)}.values())
        prepared = [(r, *self._prepare(r)) for r in predictions]
        # commit_prediction already stored the image unless the image store is remote
        remote = not self.images.is_local
        prepared_jobs = [(j, *self._prepare(j.record, store_image=remote)) for j in jobs]
        orphans: set[tuple[str, str]] = set()
        with self._write_lock, self._sessions.begin() as session:
            existing = set()
            for chunk in _chunks([r.request_id for r in predictions]):
                query = select(PredictionRow.request_id).where(PredictionRow.request_id.in_(chunk))
                existing.update(session.scalars(query))
            rows, values = [], []
            for record, image, projected in prepared:
                if record.request_id in existing:
                    log.warning("request %s is already stored; skipped", record.request_id)
                    continue
                rows.append(_prediction_row(record, image))
                values.append(projected)
            session.add_all(rows)
            session.flush()  # assigns ids
            projection_rows = [
                {"prediction_id": row.id, "name": name, "value": value}
                for row, projected in zip(rows, values, strict=True)
                for name, value in projected.items()
            ]
            if prepared_jobs:
                projection_rows += self._job_rows(session, prepared_jobs, orphans)
            if projection_rows:
                session.execute(insert(ProjectionRow), projection_rows)
            session.add_all(_shadow_row(s) for s in shadows)
        if orphans:
            self._delete_unreferenced(orphans)
        return len(rows)

    def _job_rows(
        self,
        session: Any,
        prepared: list[tuple[ProjectionJob, tuple[str, str] | None, dict]],
        orphans: set[tuple[str, str]],
    ) -> list[dict[str, Any]]:
        """Projection rows of committed predictions that have none yet; sets the image of
        those stored without one. Images of predictions deleted meanwhile go to ``orphans``."""
        found: dict[str, Any] = {}
        for chunk in _chunks([job.request_id for job, _, _ in prepared]):
            query = select(
                PredictionRow.id, PredictionRow.request_id, PredictionRow.image_sha256
            ).where(PredictionRow.request_id.in_(chunk))
            found.update((row.request_id, row) for row in session.execute(query))
        projected: set[int] = set()
        for chunk in _chunks([row.id for row in found.values()]):
            query = select(ProjectionRow.prediction_id).where(
                ProjectionRow.prediction_id.in_(chunk)
            )
            projected.update(session.scalars(query.distinct()))
        rows = []
        for job, image, values in prepared:
            row = found.get(job.request_id)
            if row is None:
                log.warning(
                    "request %s was deleted before its projections were stored", job.request_id
                )
                if image:
                    orphans.add(image)
                continue
            if image and row.image_sha256 is None:
                session.execute(
                    update(PredictionRow)
                    .where(PredictionRow.id == row.id)
                    .values(image_sha256=image[0], image_ext=image[1])
                )
            if row.id not in projected:
                rows += [
                    {"prediction_id": row.id, "name": k, "value": v} for k, v in values.items()
                ]
        return rows

    def _prepare(
        self, record: PredictionRecord, *, store_image: bool = True
    ) -> tuple[tuple[str, str] | None, dict]:
        """(stored image hash and extension or None, projections) of one record."""
        image = _decode(record.image_bytes, record.request_id)
        data = proj.ProjectionInput(record.text, record.confidence, image, self.tokenizer)
        stored = None
        if store_image and self.retain_images and record.image_bytes:
            stored = self.images.put(record.image_bytes)
        return stored, proj.compute(data)

    def add_feedback(
        self,
        request_id: str,
        flag: Flag | None,
        comment: str | None = None,
        correction: str | None = None,
        *,
        strict: bool = False,
    ) -> None:
        """Attach a flag, comment and/or correction to a prediction.

        Feedback for a request not (yet) in the store is kept, because the prediction may
        still be queued in an :class:`AsyncPredictionLogger`; ``strict=True`` refuses it
        with :class:`UnknownRequestError` instead (flush the logger first).
        """
        if flag is not None and flag not in FLAGS:
            raise ValueError(f"flag must be one of {FLAGS} or None, not {flag!r}")
        if flag is None and not comment and correction is None:
            raise ValueError("feedback needs a flag, a comment or a correction")
        with self._write_lock, self._sessions.begin() as session:
            if strict and not session.scalar(
                select(func.count()).where(PredictionRow.request_id == request_id)
            ):
                raise UnknownRequestError(request_id)
            session.add(
                FeedbackRow(
                    request_id=request_id,
                    created_at=utcnow(),
                    flag=flag,
                    comment=comment,
                    correction=correction,
                )
            )

    # ---- reading ------------------------------------------------------------------------

    def predictions(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        client: str | None = None,
        model_version: str | None = None,
        flagged: bool = False,
        request_ids: Iterable[str] | None = None,
    ) -> list[StoredPrediction]:
        """Predictions in a time window, oldest first, with projections and feedback."""
        conditions = []
        if since is not None:
            conditions.append(PredictionRow.created_at >= since)
        if until is not None:
            conditions.append(PredictionRow.created_at < until)
        if client is not None:
            conditions.append(PredictionRow.client == client)
        if model_version is not None:
            conditions.append(PredictionRow.model_version == model_version)
        if flagged:
            conditions.append(
                PredictionRow.request_id.in_(
                    select(FeedbackRow.request_id).where(FeedbackRow.flag.is_not(None))
                )
            )
        if request_ids is not None:
            conditions.append(PredictionRow.request_id.in_(list(request_ids)))
        with self._sessions() as session:
            rows = session.scalars(
                select(PredictionRow).where(*conditions).order_by(PredictionRow.created_at)
            ).all()
            found = {row.id: _stored(row) for row in rows}
            window = select(PredictionRow.id).where(*conditions)
            for row in session.scalars(
                select(ProjectionRow).where(ProjectionRow.prediction_id.in_(window))
            ):
                found[row.prediction_id].projections[row.name] = row.value
            by_request = {p.request_id: p for p in found.values()}
            feedback = select(FeedbackRow).where(
                FeedbackRow.request_id.in_(select(PredictionRow.request_id).where(*conditions))
            )
            for row in session.scalars(feedback.order_by(FeedbackRow.created_at, FeedbackRow.id)):
                by_request[row.request_id].feedback.append(
                    Feedback(row.created_at, row.flag, row.comment, row.correction)
                )
        return list(found.values())

    def get_prediction(self, request_id: str) -> StoredPrediction | None:
        found = self.predictions(request_ids=[request_id])
        return found[0] if found else None

    def feedback_counts(
        self, since: datetime | None = None
    ) -> list[tuple[datetime, str | None, str | None]]:
        """(time, flag, correction) of every feedback since ``since``: the report's timeline."""
        with self._sessions() as session:
            query = select(FeedbackRow.created_at, FeedbackRow.flag, FeedbackRow.correction)
            if since is not None:
                query = query.where(FeedbackRow.created_at >= since)
            return [tuple(r) for r in session.execute(query.order_by(FeedbackRow.created_at))]

    def shadow_predictions(self, since: datetime | None = None) -> list[ShadowRecord]:
        with self._sessions() as session:
            query = select(ShadowRow)
            if since is not None:
                query = query.where(ShadowRow.created_at >= since)
            return [
                ShadowRecord(
                    r.request_id,
                    r.model_version,
                    r.current_model_version,
                    r.text,
                    r.confidence,
                    r.latency_ms,
                    r.disagreement,
                    r.created_at,
                )
                for r in session.scalars(query.order_by(ShadowRow.created_at))
            ]

    def image_bytes(self, prediction: StoredPrediction) -> bytes | None:
        """The stored input image, or None when it was not retained or has been purged."""
        if prediction.image_sha256 is None or prediction.image_ext is None:
            return None
        return self.images.get(prediction.image_sha256, prediction.image_ext)

    def image_location(self, prediction: StoredPrediction) -> str | None:
        """Path or URL of the stored input image (None if it was not kept)."""
        if prediction.image_sha256 is None or prediction.image_ext is None:
            return None
        return self.images.url(prediction.image_sha256, prediction.image_ext)

    def counts(self) -> dict[str, int]:
        """Rows per table, for ``quill monitor status``."""
        tables = {
            "predictions": PredictionRow,
            "feedback": FeedbackRow,
            "shadow_predictions": ShadowRow,
            "baselines": BaselineRow,
        }
        with self._sessions() as session:
            return {
                name: session.scalar(select(func.count()).select_from(table)) or 0
                for name, table in tables.items()
            }

    # ---- privacy and retention ----------------------------------------------------------

    def delete_request(self, request_id: str) -> bool:
        """Erase everything about one request (a user's deletion request); True if found."""
        with self._write_lock, self._sessions.begin() as session:
            row = session.scalar(
                select(PredictionRow).where(PredictionRow.request_id == request_id)
            )
            had_feedback = session.execute(
                delete(FeedbackRow).where(FeedbackRow.request_id == request_id)
            ).rowcount
            session.execute(delete(ShadowRow).where(ShadowRow.request_id == request_id))
            images = set()
            if row is not None:
                session.execute(delete(ProjectionRow).where(ProjectionRow.prediction_id == row.id))
                if row.image_sha256:
                    images.add((row.image_sha256, row.image_ext))
                session.delete(row)
        self._delete_unreferenced(images)
        return row is not None or bool(had_feedback)

    def purge(self, older_than: timedelta, *, images_only: bool = False) -> dict[str, int]:
        """Apply a retention period: drop every row and file older than ``older_than``.

        ``timedelta(0)`` means everything stored until now. Rows age by their own time:
        predictions (with their projections, their feedback and their shadow answers, however
        recent), feedback (also feedback for a request that is not stored), shadow answers,
        and image files that no prediction refers to (left by a crash or a refused record).
        Baselines hold test-set projections, not user data, and are kept.

        ``images_only`` deletes the image files but keeps predictions and projections (so the
        drift history stays while the pictures users sent go away). Returns counts per kind.
        """
        if older_than < timedelta(0):
            raise ValueError(f"older_than must not be negative, got {older_than}")
        cutoff = utcnow() - older_than
        old = PredictionRow.created_at < cutoff
        counts = dict.fromkeys(
            ("predictions", "projections", "feedback", "shadow_predictions", "images"), 0
        )
        with self._write_lock, self._sessions.begin() as session:
            images = set(
                session.execute(
                    select(PredictionRow.image_sha256, PredictionRow.image_ext).where(
                        old, PredictionRow.image_sha256.is_not(None)
                    )
                ).all()
            )
            if images_only:
                session.execute(
                    update(PredictionRow).where(old).values(image_sha256=None, image_ext=None)
                )
            else:
                old_ids = select(PredictionRow.id).where(old)
                old_requests = select(PredictionRow.request_id).where(old)
                counts["projections"] = session.execute(
                    delete(ProjectionRow).where(ProjectionRow.prediction_id.in_(old_ids))
                ).rowcount
                counts["feedback"] = session.execute(
                    delete(FeedbackRow).where(
                        FeedbackRow.request_id.in_(old_requests) | (FeedbackRow.created_at < cutoff)
                    )
                ).rowcount
                counts["shadow_predictions"] = session.execute(
                    delete(ShadowRow).where(
                        ShadowRow.request_id.in_(old_requests) | (ShadowRow.created_at < cutoff)
                    )
                ).rowcount
                counts["predictions"] = session.execute(delete(PredictionRow).where(old)).rowcount
        counts["images"] = self._delete_unreferenced(images)
        counts["images"] += self._delete_stray_images(cutoff)
        return counts

    def _delete_stray_images(self, cutoff: datetime) -> int:
        """Delete image files older than ``cutoff`` that no prediction refers to (and
        half-written ones). Other files under the image root are left alone."""
        try:
            files = self.images.fs.find(self.images.root, detail=True)
        except FileNotFoundError:
            return 0
        candidates: dict[str, list[str]] = {}
        for path, info in files.items():
            modified = _modified(info)
            if modified is None or modified.astimezone(UTC).replace(tzinfo=None) >= cutoff:
                continue
            name = _IMAGE_NAME.fullmatch(path.rsplit("/", 1)[-1])
            if name is None:
                continue
            # a half-written file is never referenced, whatever its hash
            sha = "" if name["partial"] else name["sha"]
            candidates.setdefault(sha, []).append(path)
        if not candidates:
            return 0
        with self._sessions() as session:
            referenced = set()
            for chunk in _chunks(list(candidates)):
                query = select(PredictionRow.image_sha256).where(
                    PredictionRow.image_sha256.in_(chunk)
                )
                referenced.update(session.scalars(query))
        deleted = 0
        for sha, paths in candidates.items():
            if sha in referenced:
                continue
            for path in paths:
                self.images.fs.rm(path)
                deleted += 1
        return deleted

    def _delete_unreferenced(self, images: Iterable[tuple[str, str]]) -> int:
        """Delete image files no remaining prediction points to (the same photo can be
        shared by several requests)."""
        images = list(images)
        with self._sessions() as session:
            referenced = set()
            for chunk in _chunks([sha for sha, _ in images]):
                referenced.update(
                    session.scalars(
                        select(PredictionRow.image_sha256).where(
                            PredictionRow.image_sha256.in_(chunk)
                        )
                    )
                )
        return sum(self.images.delete(sha, ext) for sha, ext in images if sha not in referenced)

    # ---- projections --------------------------------------------------------------------

    def backfill(
        self,
        names: Sequence[str] | None = None,
        *,
        recompute: bool = False,
        batch_size: int = 200,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Compute projections missing from stored predictions (all of them if
        ``recompute``), e.g. after registering a new projection. Input projections need the
        retained image; where it is gone they stay empty. Returns values written."""
        wanted = [p.name for p in proj.get_projections(names)]
        written = 0
        for batch in self._batches_missing(wanted, recompute, batch_size):
            written += self._project(batch, wanted, recompute)
            if progress:
                progress(len(batch))
        return written

    def project_pending(
        self,
        before: datetime | None = None,
        *,
        batch_size: int = 200,
        stop: Callable[[], bool] | None = None,
    ) -> int:
        """Project the predictions that have no projections at all (created before
        ``before``): those committed by :meth:`commit_prediction` in a process that died
        before writing their :class:`ProjectionJob`. Input projections need the image, so
        they stay empty where it was not stored. Returns how many predictions were projected.
        ``stop`` is asked between batches (a logger shutting down)."""
        wanted = [p.name for p in proj.get_projections()]
        with self._sessions() as session:
            query = select(PredictionRow.request_id).where(
                PredictionRow.id.not_in(select(ProjectionRow.prediction_id).distinct())
            )
            if before is not None:
                query = query.where(PredictionRow.created_at < before)
            request_ids = list(session.scalars(query.order_by(PredictionRow.id)))
        done = 0
        for chunk in _chunks(request_ids, batch_size):
            if stop is not None and stop():
                break
            batch = [p for p in self.predictions(request_ids=chunk) if not p.projections]
            self._project(batch, wanted, recompute=False)
            done += len(batch)
        return done

    def _project(self, batch: list[StoredPrediction], wanted: list[str], recompute: bool) -> int:
        """Compute and store the ``wanted`` projections missing from ``batch`` (all of them
        if ``recompute``); returns the values written."""
        rows = []
        for prediction in batch:
            missing = [n for n in wanted if recompute or n not in prediction.projections]
            image = _decode(self._image_or_none(prediction), prediction.request_id)
            data = proj.ProjectionInput(
                prediction.text, prediction.confidence, image, self.tokenizer
            )
            rows += [
                {"prediction_id": prediction.id, "name": n, "value": v}
                for n, v in proj.compute(data, missing).items()
            ]
        with self._write_lock, self._sessions.begin() as session:
            ids = [p.id for p in batch]
            # Replace what is recomputed; an absent row is simply added.
            session.execute(
                delete(ProjectionRow).where(
                    ProjectionRow.prediction_id.in_(ids),
                    ProjectionRow.name.in_({r["name"] for r in rows}),
                )
            )
            if rows:
                session.execute(insert(ProjectionRow), rows)
        return len(rows)

    def _batches_missing(
        self, wanted: list[str], recompute: bool, batch_size: int
    ) -> Iterator[list[StoredPrediction]]:
        with self._sessions() as session:
            query = select(PredictionRow.request_id).order_by(PredictionRow.id)
            if not recompute:
                have = (
                    select(ProjectionRow.prediction_id)
                    .where(ProjectionRow.name.in_(wanted))
                    .group_by(ProjectionRow.prediction_id)
                    .having(func.count() == len(wanted))
                )
                query = query.where(PredictionRow.id.not_in(have))
            request_ids = list(session.scalars(query))
        for chunk in _chunks(request_ids, batch_size):
            yield self.predictions(request_ids=chunk)

    def _image_or_none(self, prediction: StoredPrediction) -> bytes | None:
        try:
            return self.image_bytes(prediction)
        except FileNotFoundError:
            log.warning(
                "image of request %s is missing from the image store", prediction.request_id
            )
            return None

    # ---- baselines ----------------------------------------------------------------------

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
        with self._write_lock, self._sessions.begin() as session:
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


# ---- helpers --------------------------------------------------------------------------------


def sqlite_synchronous() -> str:
    """SQLite's ``synchronous`` setting from ``$QUILL_MONITORING_SQLITE_SYNCHRONOUS``.

    In WAL mode ``NORMAL`` (the default) makes a commit survive the death of the process
    (kill -9, out of memory): the WAL is in the operating system's cache. ``FULL`` also
    survives a power loss or a kernel crash, with an fsync per commit.

    >>> sqlite_synchronous()
    'NORMAL'
    """
    value = os.environ.get(SYNCHRONOUS_ENV, "NORMAL").strip().upper()
    if value not in SYNCHRONOUS_MODES:
        raise ValueError(f"${SYNCHRONOUS_ENV}={value!r}: use one of {', '.join(SYNCHRONOUS_MODES)}")
    return value


def _create_engine(url: str, lock_timeout: float = LOCK_TIMEOUT_S) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        synchronous = sqlite_synchronous()
        engine = create_engine(url, connect_args={"timeout": lock_timeout})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection: Any, _record: Any) -> None:
            # WAL lets the report read while the logger writes; several API workers may
            # share the file.
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.close()

        return engine
    connect_args = {}
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        # An unreachable server fails a write in seconds, not after the TCP timeout.
        connect_args["connect_timeout"] = 10
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def _default_image_dir(url: str) -> str:
    """Beside an SQLite file; under ./monitoring/ for a server database."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return str(Path(parsed.database).parent / "images")
    return str((DEFAULT_DIR / "images").resolve())


def _modified(info: dict[str, Any]) -> datetime | None:
    """Modification time of a file from an fsspec listing (local ``mtime``, S3-style
    ``LastModified``), time-zone aware; None when the backend does not say."""
    value = info.get("mtime", info.get("LastModified", info.get("last_modified")))
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


def _decode(image_bytes: bytes | None, request_id: str) -> Any:
    """PIL image of the upload, upright (as the model saw it), or None."""
    if not image_bytes:
        return None
    from quill.preprocess import ImageError, load_image

    try:
        return load_image(image_bytes)
    except ImageError as exc:
        log.warning("request %s: image not readable for projections: %s", request_id, exc)
        return None


def _prediction_values(record: PredictionRecord, image: tuple[str, str] | None) -> dict[str, Any]:
    return {
        "request_id": record.request_id,
        "created_at": record.timestamp,
        "client": record.client[:32],
        "model_version": record.model_version[:128],
        "image_sha256": image[0] if image else None,
        "image_ext": image[1] if image else None,
        "text": record.text,
        "confidence": record.confidence,
        "latency_ms": record.latency_ms,
        "lines": _jsonable(record.lines),
    }


def _prediction_row(record: PredictionRecord, image: tuple[str, str] | None) -> PredictionRow:
    return PredictionRow(**_prediction_values(record, image))


def _jsonable(lines: list | None) -> list | None:
    """Line predictions as plain JSON (serving may pass its dataclasses)."""
    if lines is None:
        return None
    return [asdict(line) if is_dataclass(line) else line for line in lines]


def _shadow_row(record: ShadowRecord) -> ShadowRow:
    return ShadowRow(
        request_id=record.request_id,
        created_at=record.timestamp,
        model_version=record.model_version,
        current_model_version=record.current_model_version,
        text=record.text,
        confidence=record.confidence,
        latency_ms=record.latency_ms,
        disagreement=record.disagreement,
    )


def _stored(row: PredictionRow) -> StoredPrediction:
    return StoredPrediction(
        id=row.id,
        request_id=row.request_id,
        created_at=row.created_at,
        client=row.client,
        model_version=row.model_version,
        text=row.text,
        confidence=row.confidence,
        latency_ms=row.latency_ms,
        lines=row.lines,
        image_sha256=row.image_sha256,
        image_ext=row.image_ext,
    )


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
