"""AWS Lambda entry point: ``quill.serving.lambda_handler.handler`` (same contract as the API).

Accepts a direct invocation ``{"image": "<base64>", "kind": "auto"}`` or an HTTP event from
a function URL / API Gateway (REST or HTTP API). Its ``body`` may be:

- JSON text ``{"image": "<base64>", "kind": ...}``, base64-encoded itself when
  ``isBase64Encoded`` is true;
- a JSON object (test consoles and SDK callers send the object itself);
- the raw image bytes, base64-encoded by the gateway (``isBase64Encoded`` true, a binary
  media type), with an ``image/*`` or ``application/octet-stream`` content type; ``kind``
  then comes from the query string (``?kind=line``).

A direct invocation gets the answer dict (or ``{"error": ...}`` with ``statusCode``); an HTTP
event gets an HTTP response (``statusCode``, ``headers``, ``body``). The model is loaded
once per container, on the first event, from ``$QUILL_MODEL_DIR`` (the image ships it at
``/var/task/models/default``). With ``QUILL_FEEDBACK_SECRET`` set, answers carry a
``feedback_token`` that an API deployment with the same secret and store accepts.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any

from quill.serving.errors import ServingError
from quill.serving.service import (
    PredictionService,
    decode_image_field,
    load_json_body,
    load_service,
)
from quill.serving.settings import FeedbackTokens, ServingSettings
from quill.staged_model import ModelLoadError

log = logging.getLogger(__name__)

_service: PredictionService | None = None


def get_service(settings: ServingSettings | None = None) -> PredictionService:
    """The container's service, loaded on first use and kept for later invocations."""
    global _service
    if _service is None:
        _service = load_service(settings or ServingSettings.from_env())
    return _service


def is_http_event(event: dict[str, Any]) -> bool:
    """Function URLs and API Gateway put the request in ``body`` with HTTP metadata beside it.

    >>> is_http_event({"body": "{}", "requestContext": {}}), is_http_event({"image": "..."})
    (True, False)
    """
    return "body" in event or "requestContext" in event or "httpMethod" in event


#: Content types whose body is the image itself (sent as a binary media type).
RAW_IMAGE_TYPES = ("image/", "application/octet-stream")
#: The first bytes of the image formats people send, to name a mislabelled raw upload.
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"RIFF", b"II*\x00", b"MM\x00*", b"BM")


def _event_mapping(event: dict[str, Any], field: str) -> dict[str, Any]:
    """The object in ``event[field]`` (``headers``, ``queryStringParameters``): AWS sends an
    object or null; anything else is a malformed event, refused as ``invalid_field``."""
    value = event.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ServingError(
            "invalid_field",
            f"the event's {field} must be an object (name to value) or null, "
            f"got {type(value).__name__}",
        )
    return value


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


def _request(event: dict[str, Any]) -> tuple[bytes, str]:
    """(image bytes, kind) of a direct invocation or an HTTP event."""
    if not is_http_event(event):
        return decode_image_field(event.get("image")), str(event.get("kind", "auto"))
    body = event.get("body")
    if isinstance(body, dict):
        return _from_json_object(body)
    if body is not None and not isinstance(body, str):
        raise ServingError(
            "invalid_field",
            f"the event body must be a string or a JSON object, got {type(body).__name__}",
        )
    media = _header(event, "content-type").split(";")[0].strip().lower()
    raw_image = media.startswith(RAW_IMAGE_TYPES)
    if _is_base64_encoded(event):
        try:
            data = base64.b64decode(body or "", validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ServingError(
                "bad_base64", f"isBase64Encoded is true but the event body is not base64: {exc}"
            ) from exc
    elif raw_image:
        raise ServingError(
            "unsupported_event",
            f"a {media} body must reach the function base64-encoded (isBase64Encoded true): "
            "add image/* to the API Gateway's binary media types, or send JSON "
            '{"image": "<base64>"}',
        )
    else:
        data = (body or "").encode("utf-8")
    if not data:
        raise ServingError(
            "empty_body", 'the request body is empty; send {"image": base64} or image bytes'
        )
    kind = str(_event_mapping(event, "queryStringParameters").get("kind") or "auto")
    if raw_image:
        return data, kind
    if media not in ("", "application/json", "text/plain") and not media.endswith("+json"):
        raise ServingError(
            "unsupported_media_type",
            f"content type {media!r} is not supported; send application/json "
            '{"image": "<base64>"} or the image bytes as image/* (a binary media type)',
        )
    try:
        payload = load_json_body(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        if data.startswith(_IMAGE_MAGIC):
            raise ServingError(
                "unsupported_media_type",
                f"the body is image bytes but its content type is {media or 'missing'}: send "
                "it with content-type image/png, image/jpeg, ... (a binary media type)",
            ) from exc
        raise ServingError("invalid_json", f"the body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ServingError("invalid_json", "the JSON body must be an object with an 'image'")
    return _from_json_object(payload)


def _from_json_object(payload: dict[str, Any]) -> tuple[bytes, str]:
    return decode_image_field(payload.get("image")), str(payload.get("kind", "auto"))


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Recognise the image in ``event``; never raises for bad input (errors are answers)."""
    http = isinstance(event, dict) and is_http_event(event)
    try:
        if not isinstance(event, dict):
            raise ServingError("invalid_json", "the event must be a JSON object")
        image, kind = _request(event)
        settings = get_service().settings
        if len(image) > settings.max_body_bytes:
            raise ServingError(
                "request_too_large",
                f"the image is larger than the limit of {settings.max_body_bytes:,} bytes",
            )
        request_id = getattr(context, "aws_request_id", None)
        answer = get_service().predict_bytes(image, "lambda", kind, request_id)
        if settings.feedback_secret:  # an API sharing the key and the store takes its flags
            answer["feedback_token"] = FeedbackTokens(settings.feedback_secret).issue(
                answer["request_id"]
            )
        status = 200
    except ServingError as exc:
        answer, status = exc.body(), exc.status
    except ModelLoadError as exc:
        log.error("model not loaded: %s", exc)
        answer, status = ServingError("model_not_ready", str(exc)).body(), 503
    except Exception:  # noqa: BLE001 - the caller gets a JSON error, the log gets the trace
        log.exception("unhandled error in the Lambda handler")
        answer = ServingError("internal_error", "the function failed; the error is logged").body()
        status = 500
    if http:
        return {
            "statusCode": status,
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps(answer),
        }
    return answer if status == 200 else {**answer, "statusCode": status}
