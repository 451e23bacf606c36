"""AWS Lambda entry point: ``quill.serving.lambda_handler.handler`` (same contract as the API).

Accepts a direct invocation ``{"image": "<base64>", "kind": "auto"}`` or an HTTP event from
a function URL / API Gateway, whose JSON travels in ``body`` (base64-encoded itself when
``isBase64Encoded`` is true). A direct invocation gets the answer dict (or ``{"error": ...}``
with ``statusCode``); an HTTP event gets an HTTP response (``statusCode``, ``headers``,
``body``). The model is loaded once per container, on the first event, from
``$QUILL_MODEL_DIR`` (the image ships it at ``/var/task/models/default``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any

from quill.inference.backends import ModelLoadError
from quill.serving.errors import ServingError
from quill.serving.service import PredictionService, decode_image_field, load_service
from quill.serving.settings import ServingSettings

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


def _payload(event: dict[str, Any]) -> dict[str, Any]:
    if not is_http_event(event):
        return event
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(body, validate=True).decode("utf-8")
        except (binascii.Error, ValueError) as exc:
            raise ServingError("bad_base64", f"the event body is not valid base64: {exc}") from exc
    if not body:
        raise ServingError("empty_body", 'the request body is empty; send {"image": base64}')
    try:
        payload = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ServingError("invalid_json", f"the body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ServingError("invalid_json", "the JSON body must be an object with an 'image'")
    return payload


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Recognise the image in ``event``; never raises for bad input (errors are answers)."""
    http = isinstance(event, dict) and is_http_event(event)
    try:
        if not isinstance(event, dict):
            raise ServingError("invalid_json", "the event must be a JSON object")
        payload = _payload(event)
        settings = get_service().settings
        image = decode_image_field(payload.get("image"))
        if len(image) > settings.max_body_bytes:
            raise ServingError(
                "request_too_large",
                f"the image is larger than the limit of {settings.max_body_bytes:,} bytes",
            )
        request_id = getattr(context, "aws_request_id", None)
        answer = get_service().predict_bytes(
            image, "lambda", str(payload.get("kind", "auto")), request_id
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
