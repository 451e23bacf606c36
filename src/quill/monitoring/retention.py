"""Privacy and retention: erasing one request, and purging what is older than a period.

:meth:`Retention.delete_request` answers a user's deletion request; :meth:`Retention.purge`
applies a retention period to every table and to the image files (``quill monitor purge``).
Baselines hold test-set projections, not user data, and are never purged.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Executable, delete, select, update
from sqlalchemy.orm import Session

from quill.monitoring.database import StoreBase, chunks
from quill.monitoring.records import utcnow
from quill.monitoring.schema import FeedbackRow, PredictionRow, ProjectionRow, ShadowRow

#: Names of the files an ImageStore writes: <sha256>.<ext>, or a temporary one beside it.
_IMAGE_NAME = re.compile(r"(?P<sha>[0-9a-f]{64})\.\w+(?P<partial>\.partial-\w+)?")


class Retention(StoreBase):
    """Deleting stored predictions, their feedback, shadow answers and images."""

    def delete_request(self, request_id: str) -> bool:
        """Erase everything about one request (a user's deletion request); True if found.

        Refused before any row goes when the image folder is another store's
        (:meth:`~quill.monitoring.images.ImageStore.check_owner`): the rows would be gone
        and the photo left.
        """
        self.images.check_owner()
        with self._writer_turn(), self._sessions.begin() as session:
            row = session.scalar(
                select(PredictionRow).where(PredictionRow.request_id == request_id)
            )
            had_feedback = _deleted(
                session, delete(FeedbackRow).where(FeedbackRow.request_id == request_id)
            )
            session.execute(delete(ShadowRow).where(ShadowRow.request_id == request_id))
            images: set[tuple[str, str]] = set()
            if row is not None:
                session.execute(delete(ProjectionRow).where(ProjectionRow.prediction_id == row.id))
                if row.image_sha256:
                    images.add((row.image_sha256, cast(str, row.image_ext)))
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
        # before any row goes: a folder another store holds would keep the photos
        self.images.check_owner()
        cutoff = utcnow() - older_than
        old = PredictionRow.created_at < cutoff
        counts = dict.fromkeys(
            ("predictions", "projections", "feedback", "shadow_predictions", "images"), 0
        )
        with self._writer_turn(), self._sessions.begin() as session:
            # the image's hash and extension are set together
            images = cast(
                set[tuple[str, str]],
                set(
                    session.execute(
                        select(PredictionRow.image_sha256, PredictionRow.image_ext).where(
                            old, PredictionRow.image_sha256.is_not(None)
                        )
                    ).all()
                ),
            )
            if images_only:
                session.execute(
                    update(PredictionRow).where(old).values(image_sha256=None, image_ext=None)
                )
            else:
                old_ids = select(PredictionRow.id).where(old)
                old_requests = select(PredictionRow.request_id).where(old)
                counts["projections"] = _deleted(
                    session, delete(ProjectionRow).where(ProjectionRow.prediction_id.in_(old_ids))
                )
                counts["feedback"] = _deleted(
                    session,
                    delete(FeedbackRow).where(
                        FeedbackRow.request_id.in_(old_requests) | (FeedbackRow.created_at < cutoff)
                    ),
                )
                counts["shadow_predictions"] = _deleted(
                    session,
                    delete(ShadowRow).where(
                        ShadowRow.request_id.in_(old_requests) | (ShadowRow.created_at < cutoff)
                    ),
                )
                counts["predictions"] = _deleted(session, delete(PredictionRow).where(old))
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
        self.images.claim()
        with self._sessions() as session:
            referenced: set[str | None] = set()
            for chunk in chunks(list(candidates)):
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


def _deleted(session: Session, statement: Executable) -> int:
    """Run a DELETE; the number of rows it deleted."""
    return cast(CursorResult, session.execute(statement)).rowcount


def _modified(info: dict[str, Any]) -> datetime | None:
    """Modification time of a file from an fsspec listing (local ``mtime``, S3-style
    ``LastModified``), time-zone aware; None when the backend does not say."""
    value = info.get("mtime", info.get("LastModified", info.get("last_modified")))
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None
