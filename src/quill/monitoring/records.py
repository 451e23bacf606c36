"""What the monitoring store takes in and gives back, as plain data (no database types).

:class:`PredictionRecord` and :class:`ShadowRecord` are captured at request time (the
timestamp is the request's, not the write's); :class:`ProjectionJob` is the second half of a
prediction committed on the request path; :class:`StoredPrediction` and :class:`Baseline`
are what queries return.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

#: The client label of load-test traffic (``quill bench serve``).
LOAD_TEST_CLIENT = "bench"
#: Clients whose traffic is not users': stored and listed like the rest, but left out of
#: drift, feedback rates and latency alerts (a load test is not a change in what users send).
SYNTHETIC_CLIENTS = frozenset({LOAD_TEST_CLIENT})


def utcnow() -> datetime:
    """Naive UTC now, the time zone convention of every column in the store."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class PredictionRecord:
    """The arguments of :meth:`MonitoringStore.log_prediction`, captured at request time."""

    request_id: str
    client: str
    model_version: str
    image_bytes: bytes | None
    text: str
    confidence: float | None
    latency_ms: float | None
    lines: list | None = None
    timestamp: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class ShadowRecord:
    """A shadow (candidate) model's answer to a request the current model answered."""

    request_id: str
    model_version: str
    current_model_version: str
    text: str
    confidence: float | None
    latency_ms: float | None
    disagreement: float
    timestamp: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class ProjectionJob:
    """The work left after a prediction's row was committed on the request path
    (:meth:`MonitoringStore.commit_prediction`): its projections, and its image when the
    image store is remote. Written off the request path like the other records."""

    record: PredictionRecord

    @property
    def request_id(self) -> str:
        return self.record.request_id


Record = PredictionRecord | ShadowRecord | ProjectionJob


@dataclass(frozen=True)
class Feedback:
    created_at: datetime
    flag: str | None
    comment: str | None
    correction: str | None


@dataclass
class StoredPrediction:
    """A prediction as read back, with its projections and every feedback it received."""

    id: int
    request_id: str
    created_at: datetime
    client: str
    model_version: str
    text: str
    confidence: float | None
    latency_ms: float | None
    lines: list | None
    image_sha256: str | None
    image_ext: str | None
    projections: dict[str, float | None] = field(default_factory=dict)
    feedback: list[Feedback] = field(default_factory=list)

    @property
    def flag(self) -> str | None:
        """The latest flag a user set (feedback without a flag does not clear it)."""
        return next((f.flag for f in reversed(self.feedback) if f.flag), None)

    @property
    def correction(self) -> str | None:
        """The latest correction a user typed."""
        return next((f.correction for f in reversed(self.feedback) if f.correction), None)

    @property
    def comment(self) -> str | None:
        return next((f.comment for f in reversed(self.feedback) if f.comment), None)


@dataclass
class Baseline:
    """Reference projections: ``values[name]`` lists one value per test sample."""

    name: str
    created_at: datetime
    dataset_version: str | None
    model_version: str | None
    meta: dict
    values: dict[str, list[float | None]]

    def __len__(self) -> int:
        return max((len(v) for v in self.values.values()), default=0)
