"""Tables of the monitoring store (SQLAlchemy 2, portable between SQLite and Postgres).

Projections are stored long (one row per prediction and projection name) rather than as
columns, so a projection added later is back-filled by inserting rows, with no migration.
Feedback is keyed by request id, not by a foreign key: a flag may arrive while its
prediction is still queued in the asynchronous logger, and must not be refused for that.
Times are naive UTC (SQLite keeps no time zone). A column added to a table later must be
nullable: an older store gains it when opened (:mod:`quill.monitoring.migrate`), with NULL
in the rows it already holds.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class PredictionRow(Base):
    """One answered request: what came in (by hash), what went out, how long it took."""

    __tablename__ = "predictions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(128), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    client: Mapped[str] = mapped_column(String(32), index=True)
    model_version: Mapped[str] = mapped_column(String(128), index=True)
    #: The runtime that read the image (``Recognizer.backend``: ``onnx``, ``onnx-int8``,
    #: ``torchscript``, ``eager``): one model version can serve with different runtimes
    #: across restarts, and their readings differ slightly. None for rows stored before
    #: Quill recorded it.
    runtime: Mapped[str | None] = mapped_column(String(32), nullable=True)
    #: None when image retention is off, or after the image was purged.
    image_sha256: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    image_ext: Mapped[str | None] = mapped_column(String(8), nullable=True)
    text: Mapped[str] = mapped_column(Text)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    lines: Mapped[list | None] = mapped_column(JSON, nullable=True)


class ProjectionRow(Base):
    __tablename__ = "projections"

    prediction_id: Mapped[int] = mapped_column(
        ForeignKey("predictions.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)


class FeedbackRow(Base):
    """A user's flag, comment or correction of one prediction (several are kept)."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(128), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    flag: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    correction: Mapped[str | None] = mapped_column(Text, nullable=True)


class ShadowRow(Base):
    """A candidate model's answer to a live request, never shown to the user."""

    __tablename__ = "shadow_predictions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(128), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    model_version: Mapped[str] = mapped_column(String(128), index=True)
    current_model_version: Mapped[str] = mapped_column(String(128))
    text: Mapped[str] = mapped_column(Text)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: Character error rate of the candidate's text against the current model's.
    disagreement: Mapped[float] = mapped_column(Float)


class BaselineRow(Base):
    """A named reference distribution: projections over a test set through one model."""

    __tablename__ = "baselines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    dataset_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model_version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    meta: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class BaselineValueRow(Base):
    __tablename__ = "baseline_values"

    baseline_id: Mapped[int] = mapped_column(
        ForeignKey("baselines.id", ondelete="CASCADE"), primary_key=True
    )
    sample: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
