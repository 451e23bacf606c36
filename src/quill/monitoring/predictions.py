"""The request-facing tables of the monitoring store: predictions, feedback, shadow answers.

:class:`PredictionLog` writes a prediction (its row on the request path with
:meth:`~PredictionLog.commit_prediction`, its projections afterwards), the feedback users
send about it and the shadow model's answer to the same request, and reads them back for the
report, the drift check and the export. Serving calls it through
:class:`~quill.monitoring.async_logger.AsyncPredictionLogger`.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import asdict, is_dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from quill.monitoring import projections as proj
from quill.monitoring.database import StoreBase, chunks
from quill.monitoring.errors import StoreUnavailable
from quill.monitoring.records import (
    FLAGS,
    Feedback,
    Flag,
    PredictionRecord,
    ProjectionJob,
    Record,
    ShadowRecord,
    StoredPrediction,
    utcnow,
)
from quill.monitoring.schema import FeedbackRow, PredictionRow, ProjectionRow, ShadowRow
from quill.preprocess import ImageError, load_image

log = logging.getLogger(__name__)

_INSERT_PREDICTION = insert(cast(Table, PredictionRow.__table__))


class UnknownRequestError(KeyError):
    """No prediction with this request id is stored."""


class PredictionLog(StoreBase):
    """Predictions with their projections, feedback and shadow answers: write and read."""

    # ---- writing ------------------------------------------------------------------------

    def log_prediction(self, record: PredictionRecord) -> None:
        """Store one prediction now (serving should use :class:`AsyncPredictionLogger`)."""
        self.write([record])

    def log_shadow(self, record: ShadowRecord) -> None:
        """Store a shadow model's answer now."""
        self.write([record])

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
            with self._request_turn(), self._request_engine.begin() as connection:
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
        with self._writer_turn(), self._sessions.begin() as session:
            existing: set[str] = set()
            for chunk in chunks([r.request_id for r in predictions]):
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
        for chunk in chunks([job.request_id for job, _, _ in prepared]):
            query = select(
                PredictionRow.id, PredictionRow.request_id, PredictionRow.image_sha256
            ).where(PredictionRow.request_id.in_(chunk))
            found.update((row.request_id, row) for row in session.execute(query))
        projected: set[int] = set()
        for chunk in chunks([row.id for row in found.values()]):
            ids = select(ProjectionRow.prediction_id).where(ProjectionRow.prediction_id.in_(chunk))
            projected.update(session.scalars(ids.distinct()))
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
        """(stored image hash and extension or None, projections) of one record: the image
        the model read when the record carries it, else its bytes decoded."""
        image = record.decoded
        if image is None:
            image = decode_for_projections(record.image_bytes, record.request_id)
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
        for field, text in (("comment", comment), ("correction", correction)):
            _check_plain_text(field, text)
        # on the request path (POST /v1/feedback): waits as briefly as a prediction's commit,
        # and a store that cannot take it now says so (it was a 500 after 60 s)
        try:
            with self._request_turn(), self._request_sessions.begin() as session:
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
        except OperationalError as exc:
            raise StoreUnavailable(f"the monitoring store cannot take it now: {exc.orig}") from exc

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
            for fb in session.scalars(feedback.order_by(FeedbackRow.created_at, FeedbackRow.id)):
                by_request[fb.request_id].feedback.append(
                    Feedback(fb.created_at, fb.flag, fb.comment, fb.correction)
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
            rows = session.execute(query.order_by(FeedbackRow.created_at))
            return [(created, flag, correction) for created, flag, correction in rows]

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


def decode_for_projections(image_bytes: bytes | None, request_id: str) -> Any:
    """PIL image of the upload, upright (as the model saw it), or None."""
    if not image_bytes:
        return None
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
        "runtime": None if record.runtime is None else record.runtime[:32],
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
    return [
        asdict(line) if is_dataclass(line) and not isinstance(line, type) else line
        for line in lines
    ]


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
        runtime=row.runtime,
    )


#: Control characters a comment or correction may hold: line breaks and tabs.
_ALLOWED_CONTROLS = frozenset("\n\r\t")


def _check_plain_text(field: str, text: str | None) -> None:
    """Refuse a text holding a control character other than a line break or a tab: a NUL
    byte cannot be stored in PostgreSQL (the write failed with a 500), and no correction of
    handwriting holds a bell or an escape.

    >>> _check_plain_text("correction", "Dear Sir,\\nKew")
    >>> _check_plain_text("correction", "nul \\x00 inside")
    Traceback (most recent call last):
    ...
    ValueError: correction holds a control character (U+0000) at position 4: send plain text
    """
    for position, character in enumerate(text or ""):
        if unicodedata.category(character) == "Cc" and character not in _ALLOWED_CONTROLS:
            raise ValueError(
                f"{field} holds a control character (U+{ord(character):04X}) at position "
                f"{position}: send plain text"
            )
