"""The monitoring store: every prediction, its projections, and what users said about it.

:class:`MonitoringStore` writes to any SQLAlchemy URL (an SQLite file by default, Postgres
for a team: ``postgresql+psycopg://user@host/db``) and keeps input images as files named by
their hash (:class:`~quill.monitoring.images.ImageStore`, local or any fsspec URL). Serving
calls it through :class:`~quill.monitoring.async_logger.AsyncPredictionLogger`. By default
the logger commits each prediction's row (and, on a local image store, its image) with
:meth:`MonitoringStore.commit_prediction` before the answer is sent, a fraction of a
millisecond; the projections follow off the request path. A background thread writes them in
batches, retries a failing store, reports the failure in the log and its ``stats()``, and
flushes on close and at exit.

The store is assembled from one part per concern, each in its own module:

- :mod:`quill.monitoring.database`: the connection, the image store and their configuration
  (``$QUILL_MONITORING_URL``, ``..._IMAGES``, ``..._RETAIN_IMAGES``,
  ``..._SQLITE_SYNCHRONOUS``);
- :mod:`quill.monitoring.predictions`: predictions, feedback and shadow answers;
- :mod:`quill.monitoring.backfill`: projections computed after the fact;
- :mod:`quill.monitoring.retention`: deleting a request, purging by age;
- :mod:`quill.monitoring.baseline`: baselines, by name.
"""

from __future__ import annotations

from sqlalchemy import func, select

from quill.monitoring.backfill import Backfill
from quill.monitoring.baseline import BaselineStore
from quill.monitoring.retention import Retention
from quill.monitoring.schema import BaselineRow, FeedbackRow, PredictionRow, ShadowRow

__all__ = ["MonitoringStore"]


class MonitoringStore(Backfill, Retention, BaselineStore):
    """Predictions, projections, feedback, shadow answers and baselines in one database.

    ``retain_images=False`` keeps projections only: image bytes are used to compute the input
    projections and then dropped. Thread safe: each call opens its own session.
    """

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
