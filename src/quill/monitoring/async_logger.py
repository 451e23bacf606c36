"""Logging predictions for monitoring: a durable commit, then a queue and a writer thread.

Serving calls :meth:`AsyncPredictionLogger.log` before it answers. By default (durable mode)
that commits the prediction's row to the :class:`~quill.monitoring.store.MonitoringStore`
(a fraction of a millisecond: no image decoding) and queues the rest, its projections, for
a daemon thread that writes batches. So an answered prediction is in the store even if the
process is killed the next instant. The store failing must never fail a request: while it
fails, predictions are queued in memory instead (best effort, counted as ``deferred``), and
a clean shutdown never loses a queued record.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from quill.monitoring.records import PredictionRecord, ProjectionJob, Record, ShadowRecord, utcnow
from quill.preprocess import MAX_PIXELS

if TYPE_CHECKING:
    from quill.monitoring.store import MonitoringStore

log = logging.getLogger(__name__)

#: ``0`` turns durable mode off: predictions are only queued, and a killed process loses the
#: last ones (up to ``flush_interval`` seconds of traffic). Shadow answers are always queued.
DURABLE_ENV = "QUILL_MONITORING_DURABLE"


def durable_default() -> bool:
    """Durable mode unless ``$QUILL_MONITORING_DURABLE`` is 0/false/no."""
    return os.environ.get(DURABLE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


class AsyncPredictionLogger:
    """Logs predictions: ``log()`` commits the row (``durable=True``) and queues the rest.

    ``durable`` (default: ``$QUILL_MONITORING_DURABLE``, on) makes ``log()`` return only once
    the prediction's row is committed (:meth:`MonitoringStore.commit_prediction`); its
    projections are queued. Off, or while the store is failing, the whole record is queued:
    best effort, lost if the process dies before the next batch.

    A daemon thread writes the queue in batches (at ``batch_size`` records or every
    ``flush_interval`` seconds). If the store fails, the batch stays queued and is retried
    with backoff while the error is logged (once per failure streak) and counted in
    :meth:`stats`; requests keep being answered, and do not wait on the store again until a
    retry succeeds. Beyond ``max_pending`` queued records new ones are dropped and counted
    rather than exhausting memory. :meth:`close` (also run at interpreter exit) flushes what
    is queued. When it starts, the thread projects the predictions an earlier process
    committed but did not live to project (:meth:`MonitoringStore.project_pending`).

    A record may carry its image as the model decoded it (:attr:`PredictionRecord.decoded`),
    so that its projections need no second decode. Queued records keep at most
    ``max_decoded_pixels`` of such images in all; the others (a burst, a failing store, a
    batch to retry) keep only their encoded bytes, decoded again when written: a backlog
    costs encoded bytes, never pixels.
    """

    def __init__(
        self,
        store: MonitoringStore,
        *,
        batch_size: int = 64,
        flush_interval: float = 0.5,
        max_pending: int = 10_000,
        max_backoff: float = 10.0,
        durable: bool | None = None,
        max_decoded_pixels: int = MAX_PIXELS,
    ):
        self.store = store
        self.max_decoded_pixels = max_decoded_pixels
        self._decoded_pixels = 0  # held by the decoded images of queued records
        self.durable = durable_default() if durable is None else durable
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.max_backoff = max_backoff
        self._queue: deque[Record] = deque()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._writing: list[Record] = []  # the batch being written, out of the queue
        self._closed = False
        self._close_deadline = float("inf")
        self._flush_requested = False
        self._failures_in_row = 0
        self._stats = {
            "logged": 0,
            "written": 0,
            "committed_before_answer": 0,
            "deferred": 0,
            "dropped": 0,
            "rejected": 0,
            "failed_writes": 0,
        }
        self._last_error: str | None = None
        self._started_at = utcnow()
        self._thread = threading.Thread(target=self._run, name="quill-monitoring", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def log(self, record: PredictionRecord) -> None:
        """Store a prediction: committed before returning in durable mode, else queued."""
        if not (self.durable and self._commit(record)):
            self._enqueue(record)

    def _commit(self, record: PredictionRecord) -> bool:
        """Commit ``record``'s row now and queue its projections; False when the record
        must be queued whole instead (the store is failing, or this logger is closed)."""
        with self._cond:
            if self._closed:
                return False
            if self._failures_in_row:  # a failing store must not make each request wait
                self._stats["deferred"] += 1
                return False
        try:
            new = self.store.commit_prediction(record)
        except Exception as exc:  # any store failure must not reach the request path
            if _is_permanent(exc):
                with self._cond:
                    self._stats["logged"] += 1
                self._rejected(record, exc)
                return True
            self._failed(exc, 1)
            with self._cond:
                self._stats["deferred"] += 1
            return False
        with self._cond:
            self._stats["logged"] += 1
            self._stats["written"] += int(new)
            self._stats["committed_before_answer"] += int(new)
        if new:
            self._enqueue(ProjectionJob(record), count=False)
        return True

    def log_shadow(self, record: ShadowRecord) -> None:
        """Queue a shadow model's answer."""
        self._enqueue(record)

    def _enqueue(self, record: Record, *, count: bool = True) -> None:
        """Queue ``record``; ``count=False`` for a :class:`ProjectionJob`, whose prediction
        is already stored (losing it loses projections that ``project_pending`` restores)."""
        with self._cond:
            if self._closed or len(self._queue) >= self.max_pending:
                why = "logger is closed" if self._closed else "queue is full (store failing?)"
                if count:
                    self._stats["dropped"] += 1
                    log.error("monitoring %s; request %s not logged", why, record.request_id)
                else:
                    log.warning("monitoring %s; request %s not projected", why, record.request_id)
                return
            pixels = _decoded_pixels(record)
            if pixels and self._decoded_pixels + pixels > self.max_decoded_pixels:
                record = _without_decoded(record)
            else:
                self._decoded_pixels += pixels
            self._queue.append(record)
            self._stats["logged"] += int(count)
            if len(self._queue) >= self.batch_size:
                self._cond.notify_all()

    def stats(self) -> dict[str, Any]:
        """Counters for health checks and metrics: queued, written, dropped, failures."""
        with self._cond:
            return {
                **self._stats,
                "queued": len(self._queue) + self._in_flight,
                "healthy": self._failures_in_row == 0,
                "last_error": self._last_error,
            }

    def holds(self, request_id: str) -> bool:
        """Whether ``request_id``'s prediction is still queued, not yet in the store (a
        flag for it can be sent again once the queue drains)."""
        with self._cond:
            return any(
                isinstance(record, PredictionRecord) and record.request_id == request_id
                for record in (*self._queue, *self._writing)
            )

    def flush(self, timeout: float = 30.0) -> bool:
        """Block until everything queued so far is written; False on timeout or failure."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flush_requested = True
            self._cond.notify_all()
            while self._queue or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._failures_in_row or not self._thread.is_alive():
                    return False
                self._cond.wait(min(remaining, 0.05))
            return True

    def close(self, timeout: float = 30.0) -> bool:
        """Flush and stop the writer; True if nothing was left unwritten.

        A failing store is retried (with backoff) until ``timeout`` runs out, so a store
        that comes back during shutdown still receives everything.
        """
        with self._cond:
            if self._closed:
                return not self._queue
            self._closed = True
            self._close_deadline = time.monotonic() + timeout
            self._cond.notify_all()
        self._thread.join(timeout + 1.0)
        atexit.unregister(self.close)
        left = len(self._queue)
        if left:
            log.error("monitoring store unavailable at shutdown: %d records not written", left)
        return left == 0

    def __enter__(self) -> AsyncPredictionLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        self._catch_up()
        while True:
            with self._cond:
                idle = not self._closed and not self._flush_requested
                if idle and len(self._queue) < self.batch_size:
                    self._cond.wait(self.flush_interval)
                if not self._queue:
                    self._flush_requested = False
                    self._cond.notify_all()
                    if self._closed:
                        return
                    continue
                batch = [
                    self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))
                ]
                self._in_flight = len(batch)
                self._writing = batch
                self._decoded_pixels -= sum(_decoded_pixels(r) for r in batch)
            left = self._write(batch)
            with self._cond:
                self._in_flight = 0
                self._writing = []
                # a batch to retry waits with its bytes only: the store may stay down a while
                self._queue.extendleft(reversed([_without_decoded(r) for r in left]))
                self._cond.notify_all()
                if left:
                    backoff = min(self.max_backoff, 0.1 * 2**self._failures_in_row)
                    if self._closed:
                        remaining = self._close_deadline - time.monotonic()
                        if remaining <= 0:
                            return  # close() reports what is left
                        backoff = min(backoff, remaining)
                    self._cond.wait(backoff)

    def _catch_up(self) -> None:
        """Project what an earlier process committed but did not live to project."""
        project = getattr(self.store, "project_pending", None)
        if not self.durable or project is None:
            return
        try:
            done = project(before=self._started_at, stop=lambda: self._closed)
        except Exception as exc:  # noqa: BLE001 - a later backfill can do it
            log.warning("could not project earlier predictions: %s", exc)
            return
        if done:
            log.info("projected %d predictions stored before a crash", done)

    def _write(self, batch: list[Record]) -> list[Record]:
        """Write ``batch``; returns the records to retry.

        When the batch fails, its records are tried one by one: a record the database
        refuses for its content (:func:`_is_permanent`) is dropped and logged by request id,
        so one bad record never blocks the queue; at the first other error the store is
        taken to be down and the rest waits for the retry.
        """
        try:
            self.store.write(batch)
        except Exception as exc:  # any store failure must not reach the request path
            if len(batch) == 1 and not _is_permanent(exc):
                self._failed(exc, len(batch))
                return batch
        else:
            self._succeeded(_new_records(batch))
            return []
        for index, record in enumerate(batch):
            try:
                self.store.write([record])
            except Exception as exc:
                if not _is_permanent(exc):
                    self._failed(exc, len(batch) - index)
                    return batch[index:]
                self._rejected(record, exc)
            else:
                self._succeeded(_new_records([record]))
        return []

    def _rejected(self, record: Record, exc: Exception) -> None:
        log.error("monitoring store rejected request %s: %s", record.request_id, exc)
        with self._cond:
            self._stats["rejected"] += 1

    def _failed(self, exc: Exception, queued: int) -> None:
        with self._cond:
            self._stats["failed_writes"] += 1
            self._failures_in_row += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            first = self._failures_in_row == 1
        if first:
            log.error("monitoring store write failed; retrying (%d queued)", queued, exc_info=exc)

    def _succeeded(self, count: int) -> None:
        with self._cond:
            if self._failures_in_row:
                log.warning(
                    "monitoring store recovered after %d failed writes", self._failures_in_row
                )
            self._failures_in_row = 0
            self._last_error = None
            self._stats["written"] += count


def _decoded_pixels(record: Record) -> int:
    return 0 if isinstance(record, ShadowRecord) else record.decoded_pixels


def _without_decoded(record: Record) -> Record:
    return record if isinstance(record, ShadowRecord) else record.without_decoded()


def _new_records(records: list[Record]) -> int:
    """Records that store something new (a projection job completes a stored prediction)."""
    return sum(not isinstance(r, ProjectionJob) for r in records)


def _is_permanent(exc: Exception) -> bool:
    """Whether retrying cannot help: the database refused the record's content (a
    constraint, a value out of range) or the record cannot be serialised. Connection
    failures, missing tables and storage errors are transient."""
    if isinstance(exc, DataError | IntegrityError):
        return True
    if isinstance(exc, StatementError) and not isinstance(exc, DBAPIError):
        return True  # raised while binding parameters, e.g. lines that are not JSON
    return isinstance(exc, TypeError | ValueError)
