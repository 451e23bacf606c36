"""The monitoring store's errors that the serving layer answers (light: no SQLAlchemy), so
that a store in trouble is a 503 to retry rather than a 500."""

from __future__ import annotations

from quill.errors import QuillError


class StoreBusy(QuillError, TimeoutError):
    """A request-path write waited too long for another write of this process; a prediction
    is retried from the monitoring queue, a feedback by its sender."""

    code = "store_busy"


class StoreUnavailable(QuillError, ConnectionError):
    """The store refused a write for now (locked past its wait, or its server down)."""

    code = "store_unavailable"
