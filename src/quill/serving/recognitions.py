"""Where the REST API's recognitions run: a bounded thread pool with a real timeout, and no
prediction logged for a request that gave up.

:class:`Recognitions` gives each request (one image, or a batch read as one) a place among
``max_concurrency`` threads and ``max_queue`` waiting; :class:`GatedLogger` is the prediction
logger that drops the answers of abandoned requests. The API (:mod:`quill.serving.api`)
awaits them; they know nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from quill.monitoring.records import PredictionRecord, ShadowRecord
from quill.serving.errors import ServingError
from quill.serving.recent import Recent
from quill.serving.service import PredictionLogger, PredictionService
from quill.serving.settings import ServingSettings

#: Requests that gave up, remembered so that their late predictions are not logged.
ABANDONED_REMEMBERED = 10_000

log = logging.getLogger(__name__)


class _Ticket:
    """One recognition's state, shared by the waiting request and the worker thread."""

    __slots__ = ("abandoned", "lock", "logged", "started")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = False
        self.logged = False
        self.abandoned = False


class Recognitions:
    """Where recognitions run: ``max_concurrency`` threads, at most ``max_queue`` waiting.

    A place is given back when the work ends, not when the request stops waiting: a
    recognition that outlives its timeout (Python cannot interrupt a running thread) keeps
    its place, and once every place is taken requests answer 503 ``overloaded`` at once
    instead of stacking threads and memory. A request that gives up (timeout, client gone)
    answers at once; if its work had not started it never starts, and if it finishes later
    its prediction is not logged (the caller never got it).
    """

    def __init__(self, settings: ServingSettings):
        self.settings = settings
        self.threads = max(1, settings.max_concurrency)
        self.capacity = self.threads + max(0, settings.max_queue)
        self.executor = ThreadPoolExecutor(self.threads, thread_name_prefix="quill-recognize")
        self._lock = threading.Lock()
        self.taken = 0
        self.tickets: dict[str, _Ticket] = {}
        self.abandoned: Recent[str, None] = Recent(ABANDONED_REMEMBERED)  # recent request ids
        self.stats = {"started": 0, "abandoned": 0, "never_started": 0, "not_logged": 0}

    async def run(
        self, service: PredictionService, image: bytes, kind: str, client: str = "api"
    ) -> dict[str, Any]:
        """The service's answer for ``image``; ServingError for bad input, 503 (full) or
        504 (timeout)."""
        [answer] = await self.run_many(service, [image], kind, client)
        if isinstance(answer, ServingError):
            raise answer
        return answer

    async def run_many(
        self, service: PredictionService, images: list[bytes], kind: str, client: str = "api"
    ) -> list[dict[str, Any] | ServingError]:
        """The service's answers for ``images`` (each with its request id, or its error), read
        as one recognition: one place, one timeout; ServingError 503 (full) or 504."""
        with self._lock:
            if self.taken >= self.capacity:
                raise ServingError(
                    "overloaded",
                    f"the server is busy ({self.taken} recognitions running or waiting, the "
                    "limit); retry shortly",
                )
            self.taken += 1
        request_ids = [uuid.uuid4().hex for _ in images]
        ticket = _Ticket()
        self.tickets.update(dict.fromkeys(request_ids, ticket))

        def work() -> list[dict[str, Any] | ServingError] | None:
            try:
                with ticket.lock:
                    if ticket.abandoned:
                        self.stats["never_started"] += 1
                        return None
                    ticket.started = True
                self.stats["started"] += 1
                return service.predict_many(images, client, kind, request_ids)
            finally:
                for request_id in request_ids:
                    self.tickets.pop(request_id, None)
                with self._lock:
                    self.taken -= 1

        future = asyncio.get_running_loop().run_in_executor(self.executor, work)
        future.add_done_callback(_retrieve_exception)
        try:
            answers = await asyncio.wait_for(asyncio.shield(future), self.settings.timeout_s)
        except TimeoutError as exc:
            if self._abandon(ticket, request_ids):
                future.add_done_callback(_report_abandoned_failure)
                raise ServingError(
                    "timeout",
                    f"recognition took longer than {self.settings.timeout_s:g} s "
                    "(not logged as a prediction)",
                ) from exc
            answers = await future  # it finished (and was logged) as the clock ran out
        except asyncio.CancelledError:  # the client went away, or the server stops
            self._abandon(ticket, request_ids)
            raise
        assert answers is not None  # only abandoned work returns None
        return answers

    def _abandon(self, ticket: _Ticket, request_ids: list[str]) -> bool:
        """Give up on a request; False if its work already logged an answer (it finished)."""
        with ticket.lock:
            if ticket.logged:
                return False
            ticket.abandoned = True
        for request_id in request_ids:
            self._remember_abandoned(request_id)
        return True

    def _remember_abandoned(self, request_id: str) -> None:
        self.stats["abandoned"] += 1
        self.abandoned.put(request_id, None)

    def may_log(self, request_id: str) -> bool:
        """Called by the gated logger: False for a request that was given up on."""
        ticket = self.tickets.get(request_id)
        if ticket is None:
            return request_id not in self.abandoned
        with ticket.lock:
            if ticket.abandoned:
                return False
            ticket.logged = True
            return True

    def gate(self, logger: PredictionLogger) -> GatedLogger:
        return (
            logger
            if isinstance(logger, GatedLogger) and logger.owner is self
            else GatedLogger(logger, self)
        )

    def guard_logging(self, service: PredictionService) -> None:
        """Route ``service``'s prediction log through this gate (idempotent)."""
        if service.logger is not None:
            service.logger = self.gate(service.logger)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=False)


class GatedLogger:
    """A prediction logger that drops the predictions (and shadow answers) of abandoned
    requests (timed out or disconnected: their caller never got an answer) and forwards
    everything else."""

    def __init__(self, inner: PredictionLogger, owner: Recognitions):
        self.inner = inner
        self.owner = owner

    def log(self, record: PredictionRecord) -> None:
        if self.owner.may_log(record.request_id):
            self.inner.log(record)
        else:
            self.owner.stats["not_logged"] += 1
            log.warning(
                "request %s timed out or was abandoned: its prediction is not logged",
                record.request_id,
            )

    def log_shadow(self, record: ShadowRecord) -> None:
        if record.request_id not in self.owner.abandoned:
            self.inner.log_shadow(record)

    def flush(self, timeout: float = 30.0) -> bool:
        return self.inner.flush(timeout)

    def holds(self, request_id: str) -> bool:
        return self.inner.holds(request_id)

    def stats(self) -> dict[str, Any]:
        return self.inner.stats()

    def close(self) -> object:
        return self.inner.close()


def _report_abandoned_failure(future: asyncio.Future) -> None:
    """Log, as a warning, the failure of a recognition its request gave up on (out of memory,
    a bug): nobody is left to answer with it, and an operator must still hear of it."""
    if not future.cancelled() and future.exception() is not None:
        log.warning("a recognition that timed out then failed: %r", future.exception())


def _retrieve_exception(future: asyncio.Future) -> None:
    """Read an abandoned work's exception, so asyncio does not report it as never retrieved
    (the waiting request already answered)."""
    if not future.cancelled() and future.exception() is not None:
        log.debug("an abandoned recognition failed: %r", future.exception())
