"""What the monitoring store takes in and gives back, as plain data (no database types).

:class:`PredictionRecord` and :class:`ShadowRecord` are captured at request time (the
timestamp is the request's, not the write's); :class:`ProjectionJob` is the second half of a
prediction committed on the request path; :class:`StoredPrediction` and :class:`Baseline`
are what queries return.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

from PIL import Image

#: What a user may say about an answer: the one list the API, the web app, the store and the
#: report read.
FLAGS = ("incorrect", "offensive", "other")
Flag = Literal["incorrect", "offensive", "other"]

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
    """One answered prediction, captured at request time: what serving logs
    (:meth:`AsyncPredictionLogger.log`), the store writes (:meth:`MonitoringStore.log_prediction`)
    and the service's ``after_prediction`` hook (shadow mode) receives."""

    request_id: str
    client: str
    model_version: str
    #: The runtime that served it (``Recognizer.backend``); keyword only, so that callers
    #: that predate it keep working.
    runtime: str | None = field(default=None, kw_only=True)
    #: The image as it was sent (stored as it came, named by its hash).
    image_bytes: bytes | None
    text: str
    confidence: float | None
    latency_ms: float | None
    lines: list | None = None
    timestamp: datetime = field(default_factory=utcnow)
    #: How the request asked for the image to be read (auto, line or paragraph), so that a
    #: shadow model reads it the same way. Not stored.
    kind: str = "auto"
    #: ``image_bytes`` as the model read them (upright, mode L or RGB), when the caller
    #: decoded them already: projections and a shadow model use it instead of decoding the
    #: bytes again. Not stored; a logger drops it from a backlog (the bytes are kept).
    decoded: Image.Image | None = field(default=None, repr=False, compare=False)

    @property
    def decoded_pixels(self) -> int:
        """Pixels held in :attr:`decoded` (0 without it): what keeping this record costs."""
        return 0 if self.decoded is None else self.decoded.width * self.decoded.height

    def without_decoded(self) -> PredictionRecord:
        """This record holding only the encoded bytes (decoded again when projected)."""
        return self if self.decoded is None else replace(self, decoded=None)


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

    @property
    def decoded_pixels(self) -> int:
        return self.record.decoded_pixels

    def without_decoded(self) -> ProjectionJob:
        return self if self.record.decoded is None else ProjectionJob(self.record.without_decoded())


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
    #: The runtime that served it; None for predictions stored before it was recorded.
    runtime: str | None = None
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
