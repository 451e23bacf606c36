"""Projections computed after the fact, over predictions already stored.

:meth:`Backfill.backfill` fills in projections a prediction lacks (a projection registered
since, or all of them with ``recompute``); :meth:`Backfill.project_pending` projects the
predictions committed on the request path by a process that died before writing their
projections. Input projections need the retained image; where it is gone they stay empty.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime

from sqlalchemy import delete, func, insert, select

from quill.monitoring import projections as proj
from quill.monitoring.database import chunks
from quill.monitoring.predictions import PredictionLog, decode_for_projections
from quill.monitoring.records import StoredPrediction
from quill.monitoring.schema import PredictionRow, ProjectionRow

log = logging.getLogger(__name__)


class Backfill(PredictionLog):
    """Projections of stored predictions, computed off the request path."""

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
        retained image; where it is gone they stay empty. Returns values written.

        Refused, like every command that changes a store, while its image folder is
        another store's (a mix-up of --url and --images is said before anything is
        written)."""
        self.images.check_owner()
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
        for chunk in chunks(request_ids, batch_size):
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
            image = decode_for_projections(self._image_or_none(prediction), prediction.request_id)
            data = proj.ProjectionInput(
                prediction.text, prediction.confidence, image, self.tokenizer
            )
            rows += [
                {"prediction_id": prediction.id, "name": n, "value": v}
                for n, v in proj.compute(data, missing).items()
            ]
        with self._writer_turn(), self._sessions.begin() as session:
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
        for chunk in chunks(request_ids, batch_size):
            yield self.predictions(request_ids=chunk)

    def _image_or_none(self, prediction: StoredPrediction) -> bytes | None:
        try:
            return self.image_bytes(prediction)
        except FileNotFoundError:
            log.warning(
                "image of request %s is missing from the image store", prediction.request_id
            )
            return None
