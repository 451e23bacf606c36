"""The request path shared by the REST API, the Lambda handler and the local web app.

Decode the image field, answer from the cache or decode the image once
(:class:`~quill.inference.sources.LoadedImage`) and recognise it, log a
:class:`~quill.monitoring.records.PredictionRecord` to the monitoring store (which keeps the
bytes as they came and projects the decoded image), then hand the record to the optional
``after_prediction`` hook (shadow mode). Each adapter only translates its transport (HTTP,
Lambda event, Gradio callback) to :meth:`PredictionService.predict_bytes`, or
:meth:`PredictionService.predict_many` for the API's batches.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from quill.inference.recognizer import KINDS, Kind, Recognizer, Segmenter
from quill.inference.sources import LoadedImage, decoded_in_groups
from quill.monitoring.errors import StoreBusy, StoreUnavailable
from quill.monitoring.records import FLAGS, SYNTHETIC_CLIENTS, Flag, PredictionRecord, ShadowRecord
from quill.preprocess import ImageError
from quill.serving.errors import ServingError
from quill.serving.recent import Recent
from quill.serving.settings import ServingSettings

if TYPE_CHECKING:
    from quill.monitoring.store import MonitoringStore

log = logging.getLogger(__name__)

#: Request header with which a caller labels its traffic for monitoring: ``bench`` for a
#: load test (``quill bench serve`` sends it), so that it is stored but left out of drift and
#: alerts. Only the labels in ``quill.monitoring.records.SYNTHETIC_CLIENTS`` are honoured.
CLIENT_HEADER = "X-Quill-Client"

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(;[\w=.+-]+)*;base64,", re.IGNORECASE)


class PredictionLogger(Protocol):
    """What serving needs of monitoring: an
    :class:`~quill.monitoring.async_logger.AsyncPredictionLogger`."""

    def log(self, record: PredictionRecord) -> None: ...

    def log_shadow(self, record: ShadowRecord) -> None: ...

    def flush(self, timeout: float = 30.0) -> bool: ...

    def holds(self, request_id: str) -> bool: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> object: ...  # the service ignores what it returns


class FeedbackStore(Protocol):
    """What serving needs of the monitoring store (``quill.monitoring.store.MonitoringStore``)."""

    def add_feedback(
        self,
        request_id: str,
        flag: Flag | None,
        comment: str | None = None,
        correction: str | None = None,
    ) -> None: ...

    def get_prediction(self, request_id: str) -> object | None: ...


class AfterPrediction(Protocol):
    """What the service calls with each prediction its model made (not answers from the
    cache), after logging it: shadow mode's :class:`~quill.monitoring.shadow.ShadowRunner`.
    It must return at once (queue its work); its failures are logged, never answered."""

    def __call__(self, record: PredictionRecord) -> None: ...

    def close(self) -> None: ...  # on shutdown, before the logger is flushed


#: Longest comment and correction stored with a feedback, in characters, whichever way it
#: comes (the API, the web app in its own process, the Lambda handler).
MAX_COMMENT_CHARS = 10_000
MAX_CORRECTION_CHARS = 50_000


def load_json_body(body: bytes | str) -> Any:
    """A request body decoded as JSON, for the REST API and the Lambda handler alike. The
    decoder recurses once per nested ``[`` or ``{``, so a body like ``[[[...]]]`` raised
    RecursionError (a 500): it is ``invalid_json`` here. A body that is not JSON at all
    raises the decoder's own error, which each adapter explains in its own words.

    >>> load_json_body(b"[" * 100_000 + b"]" * 100_000)
    Traceback (most recent call last):
    ...
    quill.serving.errors.ServingError: the body nests JSON arrays or objects too deeply to read
    """
    try:
        return json.loads(body)
    except RecursionError as exc:
        raise ServingError(
            "invalid_json", "the body nests JSON arrays or objects too deeply to read"
        ) from exc


def kind_field(payload: dict[str, Any]) -> str:
    """The ``kind`` of a JSON request body, ``auto`` when absent. One that is not a string
    (null, a number) is named as JSON writes it, not as Python's ``str`` does ("None").
    Which kinds exist is checked where the image is read.

    >>> kind_field({}), kind_field({"kind": "line"})
    ('auto', 'line')
    >>> kind_field({"kind": None})
    Traceback (most recent call last):
    ...
    quill.serving.errors.ServingError: kind must be one of ('auto', 'line', 'paragraph'), got null
    """
    kind = payload.get("kind", "auto")
    if not isinstance(kind, str):
        raise ServingError(
            "invalid_field", f"kind must be one of {KINDS}, got {json.dumps(kind, default=str)}"
        )
    return kind


def decode_image_field(value: object, field: str = "image") -> bytes:
    """Bytes of a base64 string or ``data:image/...;base64,`` URL; ServingError otherwise.

    >>> decode_image_field("data:image/png;base64,aGVsbG8=")
    b'hello'
    >>> decode_image_field("aGVs bG8=\\n")
    b'hello'
    >>> decode_image_field("not base64!")
    Traceback (most recent call last):
    ...
    quill.serving.errors.ServingError: field 'image' is not valid base64 (not base64!)

    An empty string is a field that is there but empty (``image_empty``, like a data URL of
    0 bytes), not a missing one (``missing_image``: absent or null), so the client is told
    what it sent:

    >>> decode_image_field("", "images[1]")
    Traceback (most recent call last):
    ...
    quill.serving.errors.ServingError: field 'images[1]' is empty
    """
    if value is None:
        raise ServingError("missing_image", f"the request has no {field!r} field (base64 image)")
    if not isinstance(value, str):
        raise ServingError(
            "invalid_field", f"field {field!r} must be a base64 string, got {type(value).__name__}"
        )
    if not value.strip():
        raise ServingError("image_empty", f"field {field!r} is empty")
    payload = _DATA_URL.sub("", value.strip(), count=1)
    payload = "".join(payload.split())  # line breaks from MIME-style encoders
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        shown = value[:40] + ("..." if len(value) > 40 else "")
        raise ServingError("bad_base64", f"field {field!r} is not valid base64 ({shown})") from exc
    if not data:
        raise ServingError("image_empty", f"field {field!r} decodes to 0 bytes")
    return data


def client_label(interface: str, requested: str | None = None) -> str:
    """The monitoring client of a request: the ``interface`` it came through (``api``,
    ``app``, ``lambda``), or the label its :data:`CLIENT_HEADER` asks for when that is a known
    synthetic label. Any other value is ignored, so a caller can neither invent slices nor
    put a per-caller value (an address, a name) into the store.

    >>> client_label("api", "bench"), client_label("api", " Bench "), client_label("api")
    ('bench', 'bench', 'api')
    >>> client_label("api", "alice@example.com")
    'api'
    """
    label = (requested or "").strip().lower()
    return label if label in SYNTHETIC_CLIENTS else interface


class PredictionService:
    """Recognition with the serving policies: limits, cache, monitoring, stable errors."""

    def __init__(
        self,
        recognizer: Recognizer,
        settings: ServingSettings,
        logger: PredictionLogger | None = None,
        feedback: FeedbackStore | None = None,
        after_prediction: AfterPrediction | None = None,
    ):
        self.recognizer = recognizer
        self.settings = settings
        self.logger = logger
        self.feedback_store = feedback
        self.after_prediction = after_prediction
        # answers by (image sha256, model version, kind): a resent image is not read again
        self.cache: Recent[tuple[str, str, str], dict[str, Any]] = Recent(settings.cache_size)

    @property
    def model_version(self) -> str:
        return self.recognizer.model_version

    def predict_bytes(
        self, image: bytes, client: str, kind: str = "auto", request_id: str | None = None
    ) -> dict[str, Any]:
        """The JSON answer for one encoded image (raises ServingError for bad input).

        ``client`` is the interface, ``"api"``, ``"app"`` or ``"lambda"``, or a synthetic label
        such as ``"bench"`` (:func:`client_label`): monitoring slices by it, so it must never
        carry a per-caller value such as an IP address.
        """
        [answer] = self.predict_many([image], client, kind, [request_id or uuid.uuid4().hex])
        if isinstance(answer, ServingError):
            raise answer
        return answer

    def predict_many(
        self, images: Sequence[bytes], client: str, kind: str, request_ids: Sequence[str]
    ) -> list[dict[str, Any] | ServingError]:
        """:meth:`predict_bytes` of each image, read together (the recognizer batches all
        their lines by width), each answer or error in its place: one bad image does not
        cost the others their answers. Each answer is logged under its own request id; its
        ``latency_ms`` is the whole call's."""
        start = time.perf_counter()
        if kind not in KINDS:
            raise ServingError("invalid_field", f"kind must be one of {KINDS}, got {kind!r}")
        keys = [(hashlib.sha256(image).hexdigest(), self.model_version, kind) for image in images]
        answers: list[dict[str, Any] | ServingError | None] = [self.cache.get(k) for k in keys]
        read_now: set[int] = set()
        kept: dict[int, LoadedImage] = {}  # decoded images handed on to monitoring
        kept_pixels = 0
        unanswered = [index for index, answer in enumerate(answers) if answer is None]
        # a cached answer needs no pixels: not decoded. The others are read in groups of about
        # max_pixels, and at most that many decoded pixels go on to monitoring: a batch of 32
        # large PNGs (2 MB of body, 49 megapixels each) held them all decoded, 2.5 GB.
        for group in decoded_in_groups(
            unanswered,
            lambda index: LoadedImage.from_bytes(images[index], self.settings.max_pixels),
            self.settings.max_pixels,
        ):
            loaded = [(i, item) for i, item in group if isinstance(item, LoadedImage)]
            read = self.recognizer.predict_each([item for _, item in loaded], cast("Kind", kind))
            for (index, image), prediction in zip(loaded, read, strict=True):
                if isinstance(prediction, ImageError):
                    answers[index] = ServingError.from_image_error(prediction)
                    continue
                fresh = answers[index] = prediction.to_dict()
                self.cache.put(keys[index], fresh)
                read_now.add(index)
                if kept_pixels + image.pixels <= self.settings.max_pixels:
                    kept[index] = image
                    kept_pixels += image.pixels
            for index, item in group:
                if isinstance(item, ImageError):
                    answers[index] = ServingError.from_image_error(item)
        latency_ms = round((time.perf_counter() - start) * 1000, 2)
        results: list[dict[str, Any] | ServingError] = []
        for index, answer in enumerate(answers):
            assert answer is not None  # each image was answered from the cache, read or refused
            if isinstance(answer, ServingError):
                results.append(answer)
                continue
            decoded = kept.get(index)
            response = {
                **answer,
                "latency_ms": latency_ms,
                "request_id": request_ids[index],
                "cached": index not in read_now,
            }
            record = PredictionRecord(
                response["request_id"],
                client,
                response["model_version"],
                images[index],
                response["text"],
                response["confidence"],
                latency_ms,
                lines=response["lines"],
                runtime=self.recognizer.backend,
                kind=kind,
                decoded=None if decoded is None else decoded.image,
            )
            self._log(record)
            if index in read_now:
                self._after_prediction(record)
            results.append(response)
        return results

    def _log(self, record: PredictionRecord) -> None:
        if self.logger is None:
            return
        try:
            self.logger.log(record)
        except Exception:  # noqa: BLE001 - monitoring must never fail a prediction
            log.exception("could not queue prediction %s for monitoring", record.request_id)

    def _after_prediction(self, record: PredictionRecord) -> None:
        if self.after_prediction is None:
            return
        try:
            self.after_prediction(record)
        except Exception:  # noqa: BLE001 - a shadow model must never fail a prediction
            log.exception("after_prediction failed for request %s", record.request_id)

    def add_feedback(
        self,
        request_id: str,
        flag: str | None,
        comment: str | None = None,
        correction: str | None = None,
    ) -> None:
        """Store a user's flag/correction for an earlier answer (errors propagate: never lost
        silently)."""
        if self.feedback_store is None:
            raise ServingError(
                "feedback_disabled", "this server has no monitoring store configured", 503
            )
        if flag is not None and flag not in FLAGS:
            raise ServingError(
                "invalid_field", f"flag must be incorrect, offensive, other or null, got {flag!r}"
            )
        checked = cast("Flag | None", flag)  # one of the flags (or None), checked just above
        for name, text, limit in (
            ("comment", comment, MAX_COMMENT_CHARS),
            ("correction", correction, MAX_CORRECTION_CHARS),
        ):
            if text is not None and len(text) > limit:
                raise ServingError(
                    "invalid_field", f"{name}: at most {limit:,} characters, got {len(text):,}"
                )
        try:
            self.feedback_store.add_feedback(
                request_id, checked, comment=comment, correction=correction
            )
        except ValueError as exc:  # the store's own checks, e.g. a control character
            raise ServingError("invalid_field", str(exc)) from exc
        except (StoreBusy, StoreUnavailable) as exc:  # locked or down: worth sending again
            raise ServingError(
                "monitoring_unavailable",
                f"the feedback could not be stored now ({exc}): send it again shortly",
            ) from exc

    def close(self) -> None:
        """Finish shadow comparisons, then flush queued monitoring writes (on shutdown)."""
        if self.after_prediction is not None:
            self.after_prediction.close()
        if self.logger is not None:
            self.logger.close()


def build_monitoring(
    settings: ServingSettings,
) -> tuple[PredictionLogger | None, FeedbackStore | None]:
    """The monitoring store and its async logger from settings (None, None when disabled).

    The store honours ``configs/monitoring.yaml`` (e.g. ``store.retain_images``), so what
    serving keeps is decided in the same versioned file as the monitoring rules.
    """
    store = open_store(settings)
    if store is None:
        return None, None
    from quill.monitoring.async_logger import AsyncPredictionLogger

    return AsyncPredictionLogger(store), store


def open_store(settings: ServingSettings) -> MonitoringStore | None:
    """The monitoring store of ``settings`` (None when disabled); ``quill serve`` opens it
    once at startup too, so that one that cannot open is an error before the server starts."""
    if not settings.monitoring_enabled:
        return None
    # lazy: SQLAlchemy and the store load only with monitoring on (a Lambda's cold start)
    from quill.monitoring.settings import MonitoringSettings
    from quill.monitoring.store import MonitoringStore

    return MonitoringStore.from_settings(
        MonitoringSettings.load(), settings.monitoring_url, settings.monitoring_images
    )


def load_service(
    settings: ServingSettings,
    logger: PredictionLogger | None = None,
    feedback: FeedbackStore | None = None,
) -> PredictionService:
    """Load and warm up the model of ``settings`` (and its shadow model, if any); monitoring
    from settings unless given."""
    recognizer = _load_recognizer(settings.model_dir, settings)
    if logger is None and feedback is None:
        logger, feedback = build_monitoring(settings)
    shadow = None
    if settings.shadow_model_dir is not None:
        shadow = _shadow_runner(settings.shadow_model_dir, recognizer, settings, logger)
    return PredictionService(recognizer, settings, logger, feedback, after_prediction=shadow)


def _load_recognizer(model_dir: Path, settings: ServingSettings) -> Recognizer:
    recognizer = Recognizer.from_path(
        model_dir,
        backend=settings.backend,
        threads=settings.threads or None,
        segmenter=cast("Segmenter", settings.segmenter),  # checked by ServingSettings
    )
    recognizer.warm_up()
    return recognizer


def _shadow_runner(
    model_dir: Path, current: Recognizer, settings: ServingSettings, logger: PredictionLogger | None
) -> AfterPrediction:
    """The shadow model of ``model_dir``, reading what ``current`` answered, logging to the
    monitoring store."""
    # lazy: shadow mode is rare, and its module imports the evaluation package
    from quill.monitoring.shadow import ShadowRunner

    if logger is None:
        raise ValueError(
            f"shadow model {model_dir}: shadow mode needs the monitoring store "
            "(its answers are only logged there); do not turn monitoring off"
        )
    candidate = _load_recognizer(model_dir, settings)
    log.info("shadow model %s beside %s", candidate.model_version, current.model_version)
    # Predictor.predict takes any kind string, a Recognizer one of KINDS: the runner passes
    # the request's kind, which the service checked.
    return ShadowRunner(candidate, logger)  # type: ignore[arg-type]
