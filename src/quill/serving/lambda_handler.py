"""AWS Lambda entry point: ``quill.serving.lambda_handler.handler`` (same contract as the API).

Accepts a direct invocation ``{"image": "<base64>", "kind": "auto"}`` or an HTTP event from
a function URL / API Gateway: REST (payload 1.0, ``httpMethod`` and ``path``) or HTTP API and
function URL (payload 2.0, ``requestContext.http.method`` and ``rawPath``, the stage prefix
of a named HTTP API stage removed). An HTTP event is routed as the API routes it
(:data:`ROUTES`): ``POST /v1/predict``, or ``POST /`` (a function URL's own address), reads
an image; ``GET /healthz`` and ``GET /readyz`` are the probes; another method there is 405
``method_not_allowed`` with ``Allow``, another path 404 ``not_found`` (batches and feedback
are the REST API's). An event with neither method nor path is a prediction, as it always was.

A prediction's body is read with the API's own parsers, so it is refused as the API refuses
it (a body over ``QUILL_MAX_BODY_BYTES`` 413, a content type other than these 415):

- JSON ``{"image": "<base64>", "kind": ...}`` as ``application/json``, or a
  ``multipart/form-data`` upload (field ``image`` or ``file``, what the web app's HTTP
  backend sends), base64-encoded by the gateway when ``isBase64Encoded`` is true;
- a JSON object (test consoles and SDK callers send the object itself), a Lambda extra;
- the raw image bytes, base64-encoded by the gateway (``isBase64Encoded`` true, a binary
  media type), with an ``image/*`` or ``application/octet-stream`` content type; ``kind``
  then comes from the query string (``?kind=line``), as the API reads it.

A direct invocation gets the answer dict (or ``{"error": ...}`` with ``statusCode``); an HTTP
event gets an HTTP response (``statusCode``, ``headers``, ``body``). The model is loaded
once per container, on the first event that needs it, from ``$QUILL_MODEL_DIR`` (the image
ships it at ``/var/task/models/default``). With ``QUILL_FEEDBACK_SECRET`` set, answers carry a
``feedback_token`` that an API deployment with the same secret and store accepts.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from typing import Any

from starlette.requests import Request

from quill.serving.bodies import (
    RAW_IMAGE_TYPES,
    BodyTooLarge,
    json_object,
    parse_multipart,
    raw_image_kind,
    refuse_mislabelled_image,
)
from quill.serving.errors import ServingError
from quill.serving.service import (
    FeedbackStore,
    PredictionLogger,
    PredictionService,
    build_monitoring,
    decode_image_field,
    kind_field,
    load_service,
)
from quill.serving.settings import FeedbackTokens, ServingSettings
from quill.staged_model import ModelLoadError

log = logging.getLogger(__name__)

_service: PredictionService | None = None
#: The message of the monitoring store failure last logged: a store that cannot open is
#: answered on every event but logged once per container (and again if the failure changes).
_store_failure: str | None = None


def get_service(settings: ServingSettings | None = None) -> PredictionService:
    """The container's service, loaded on first use and kept for later invocations.

    The monitoring store is opened before the model is loaded, so that a store that cannot
    open costs each event a failed connection, not a model load as well."""
    global _service
    if _service is None:
        settings = settings or ServingSettings.from_env()
        logger, feedback = _open_monitoring(settings)
        try:
            _service = load_service(settings, logger, feedback)
        except BaseException:
            if logger is not None:  # its writer thread would outlive the failed load
                logger.close()
            raise
    return _service


def _open_monitoring(
    settings: ServingSettings,
) -> tuple[PredictionLogger | None, FeedbackStore | None]:
    """The monitoring logger and store of ``settings`` (None, None when off).

    One that cannot open (a database path under a file, an image folder that another store
    holds, a database server down) is 503 ``model_not_ready`` naming the store, as a model
    that cannot load is: ``quill serve`` refuses to start then, but a function has no start
    to refuse. Each event tries again (a database that comes back is used without a
    redeploy); the failure is logged once, with its traceback, not on every event."""
    global _store_failure
    try:
        monitoring = build_monitoring(settings)
    except Exception as exc:  # noqa: BLE001 - any driver's error, answered in one line
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        message = (
            f"the monitoring store {_store_name(settings.monitoring_url)} cannot open: "
            f"{reason} (QUILL_MONITORING_URL=off serves without one)"
        )
        if message != _store_failure:
            log.exception("%s", message)
            _store_failure = message
        raise ServingError("model_not_ready", message) from exc
    _store_failure = None
    return monitoring


def _store_name(url: str | None) -> str:
    """The store as a caller may be told it: its URL without a server's password."""
    # lazy: SQLAlchemy is loaded already once a store was tried, and a function with
    # monitoring off (the image's default) never pays for its import
    from sqlalchemy.exc import ArgumentError

    from quill.monitoring.database import store_identity

    if not url:
        return "(the default store)"
    try:
        return store_identity(url)
    except ArgumentError:  # a URL that does not parse: the failure being reported
        return "in QUILL_MONITORING_URL (not a database URL)"


def is_http_event(event: dict[str, Any]) -> bool:
    """Function URLs and API Gateway put the request in ``body`` with HTTP metadata beside it.

    >>> is_http_event({"body": "{}", "requestContext": {}}), is_http_event({"image": "..."})
    (True, False)
    """
    return "body" in event or "requestContext" in event or "httpMethod" in event


#: The routes of an HTTP event, path to the methods answered there: predictions at the
#: API's path and at a function URL's own address, the probes at the API's.
ROUTES: dict[str, tuple[str, ...]] = {
    "/v1/predict": ("POST",),
    "/": ("POST",),
    "/healthz": ("GET", "HEAD"),
    "/readyz": ("GET", "HEAD"),
}
#: What bytes that are not UTF-8 become when a gateway passes a binary body on as text.
_REPLACEMENT = "\ufffd"


class _MethodNotAllowed(ServingError):
    """405 with the methods the path answers, for the ``Allow`` header a 405 must carry."""

    def __init__(self, method: str, path: str, allowed: tuple[str, ...]):
        self.allow = ", ".join(allowed)
        super().__init__(
            "method_not_allowed", f"{method} is not allowed on {path}; it answers {self.allow}"
        )


def _event_mapping(event: dict[str, Any], *fields: str) -> dict[str, Any]:
    """The object at ``event[fields[0]][fields[1]]...`` (``headers``, ``requestContext``,
    ``http``): AWS sends an object or null (absent: empty); anything else is a malformed
    event, refused as ``invalid_field``."""
    value: Any = event
    for depth, field in enumerate(fields, 1):
        value = value.get(field)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ServingError(
                "invalid_field",
                f"the event's {'.'.join(fields[:depth])} must be an object (name to value) "
                f"or null, got {type(value).__name__}",
            )
    return value


def _event_text(value: object, field: str, default: str) -> str:
    """A string field of the event (``default`` when absent or null), or ``invalid_field``."""
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise ServingError(
            "invalid_field", f"the event's {field} must be a string, got {type(value).__name__}"
        )
    return value


def _method_and_path(event: dict[str, Any]) -> tuple[str, str]:
    """The HTTP method and path of an event of either payload format (POST / when it names
    neither: a hand-made event with a body alone is the prediction it always was)."""
    context = _event_mapping(event, "requestContext")
    http = _event_mapping(event, "requestContext", "http")
    if http:  # payload 2.0: function URL, HTTP API
        method = _event_text(http.get("method"), "requestContext.http.method", "POST")
        path = _event_text(event.get("rawPath") or http.get("path"), "rawPath", "/")
        stage = context.get("stage")
        # an HTTP API stage other than $default prefixes the path with its name
        if isinstance(stage, str) and stage != "$default" and f"{path}/".startswith(f"/{stage}/"):
            path = path[len(stage) + 1 :]
    else:  # payload 1.0: REST API (path without the stage; resource is the route's template)
        method = _event_text(event.get("httpMethod"), "httpMethod", "POST")
        path = _event_text(event.get("path") or event.get("resource"), "path", "/")
    return method.upper(), path


def _route(event: dict[str, Any]) -> str:
    """The :data:`ROUTES` path of an HTTP event, or the 404 / 405 that the API answers."""
    method, path = _method_and_path(event)
    route = path.rstrip("/") or "/"
    allowed = ROUTES.get(route)
    if allowed is None:
        raise ServingError(
            "not_found",
            f"nothing is served at {path}: this function answers POST /v1/predict (or POST / "
            "on a function URL), GET /healthz and GET /readyz; batches and feedback are the "
            "REST API's (quill serve)",
        )
    if method not in allowed:
        raise _MethodNotAllowed(method, route, allowed)
    return route


def _header(event: dict[str, Any], name: str) -> str:
    """A request header, whatever its case (REST APIs keep the client's, function URLs
    lower-case it)."""
    for key, value in _event_mapping(event, "headers").items():
        if str(key).lower() == name:
            return str(value)
    return ""


def _is_base64_encoded(event: dict[str, Any]) -> bool:
    """The event's ``isBase64Encoded`` flag (absent or null: false); otherwise strictly a
    bool, because the string "false" is truthy and would send a JSON body to the base64
    decoder."""
    flag = event.get("isBase64Encoded")
    if flag is None:
        return False
    if not isinstance(flag, bool):
        raise ServingError(
            "invalid_field",
            f"the event's isBase64Encoded must be true or false, got {type(flag).__name__}",
        )
    return flag


def _check_size(size: int, limit: int) -> None:
    """The API's body limit (``QUILL_MAX_BODY_BYTES``), on the bytes the client sent."""
    if size > limit:
        raise BodyTooLarge(limit)


def _request(event: dict[str, Any], limit: int) -> tuple[bytes, str]:
    """(image bytes, kind) of a direct invocation or an HTTP event's body."""
    if not is_http_event(event):
        # the event is the JSON body; default=str: a Python caller's bytes are refused below
        _check_size(len(json.dumps(event, default=str)), limit)
        return _from_json_object(event)
    body = event.get("body")
    if isinstance(body, dict):
        _check_size(len(json.dumps(body, default=str)), limit)
        return _from_json_object(body)
    if body is not None and not isinstance(body, str):
        raise ServingError(
            "invalid_field",
            f"the event body must be a string or a JSON object, got {type(body).__name__}",
        )
    content_type = _header(event, "content-type")
    media = content_type.split(";")[0].strip().lower()
    raw_image = media.startswith(RAW_IMAGE_TYPES)
    query = _event_mapping(event, "queryStringParameters")  # a malformed event, whatever body
    text = body or ""
    if _is_base64_encoded(event):
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ServingError(
                "bad_base64", f"isBase64Encoded is true but the event body is not base64: {exc}"
            ) from exc
    elif raw_image or _REPLACEMENT in text:
        raise _not_base64_encoded(f"a {media} body" if raw_image else "a binary body")
    else:
        data = text.encode("utf-8")
    _check_size(len(data), limit)
    if not data:
        raise ServingError(
            "empty_body", 'the request body is empty; send {"image": base64} or image bytes'
        )
    if raw_image:
        return data, raw_image_kind(query)
    refuse_mislabelled_image(media, data)
    # the API's parsers read the content type from a request: this one holds only that
    header = (b"content-type", content_type.encode("latin-1", "replace"))
    request = Request({"type": "http", "headers": [header]})
    if media == "multipart/form-data":
        return asyncio.run(parse_multipart(request, data))
    return _from_json_object(json_object(request, data, "an 'image'", raw=True))


def _not_base64_encoded(what: str) -> ServingError:
    """A binary body that reached the function as text: the gateway decoded its bytes as
    UTF-8, each invalid one now U+FFFD, so the image is lost; say what to configure."""
    return ServingError(
        "unsupported_event",
        f"{what} must reach the function base64-encoded (isBase64Encoded true), but it came "
        "as text (an image the gateway did not base64-encode, its bytes replaced by U+FFFD): "
        "add image/* and multipart/form-data to the API Gateway's binary media types, or "
        'send JSON {"image": "<base64>"}',
    )


def _from_json_object(payload: dict[str, Any]) -> tuple[bytes, str]:
    """(image bytes, kind) of a JSON object."""
    return decode_image_field(payload.get("image")), kind_field(payload)


def _predict(event: dict[str, Any], context: Any, settings: ServingSettings) -> dict[str, Any]:
    """The answer to a prediction (the body is read before the model is loaded: a bad
    request is told what is wrong with it even while the model cannot load)."""
    image, kind = _request(event, settings.max_body_bytes)
    service = get_service(settings)
    request_id = getattr(context, "aws_request_id", None)
    answer = service.predict_bytes(image, "lambda", kind, request_id)
    if settings.feedback_secret:  # an API sharing the key and the store takes its flags
        answer["feedback_token"] = FeedbackTokens(settings.feedback_secret).issue(
            answer["request_id"]
        )
    return answer


def _answer(event: dict[str, Any], context: Any, http: bool) -> dict[str, Any]:
    """The answer to an event: a probe's or a prediction's."""
    settings = _service.settings if _service is not None else ServingSettings.from_env()
    route = _route(event) if http else "/v1/predict"
    if route == "/healthz":  # liveness: the function runs (the model may not be loaded)
        return {"status": "ok"}
    if route == "/readyz":
        return {"status": "ready", "model": get_service(settings).recognizer.describe()}
    return _predict(event, context, settings)


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Answer ``event`` (a prediction or a probe); never raises (errors are answers)."""
    http = isinstance(event, dict) and is_http_event(event)
    headers = {"Content-Type": "application/json"}
    try:
        if not isinstance(event, dict):
            raise ServingError("invalid_json", "the event must be a JSON object")
        answer, status = _answer(event, context, http), 200
    except ServingError as exc:
        answer, status = exc.body(), exc.status
        if isinstance(exc, _MethodNotAllowed):
            headers["Allow"] = exc.allow
    except ModelLoadError as exc:
        log.error("model not loaded: %s", exc)
        answer, status = ServingError("model_not_ready", str(exc)).body(), 503
    except Exception:  # noqa: BLE001 - the caller gets a JSON error, the log gets the trace
        log.exception("unhandled error in the Lambda handler")
        answer = ServingError("internal_error", "the function failed; the error is logged").body()
        status = 500
    if http:
        return {"statusCode": status, "headers": headers, "body": json.dumps(answer)}
    return answer if status == 200 else {**answer, "statusCode": status}
