"""The Lambda handler, called with real event shapes (direct, function URL, API Gateway)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from quill.monitoring.store import MonitoringStore
from quill.serving import lambda_handler
from quill.staging.parity import render_line


def b64_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@pytest.fixture()
def handler(smoke_model: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """A fresh 'container': model from QUILL_MODEL_DIR, monitoring off, nothing loaded yet."""
    monkeypatch.setenv("QUILL_MODEL_DIR", str(smoke_model))
    monkeypatch.setenv("QUILL_MONITORING_URL", "off")
    monkeypatch.setenv("QUILL_THREADS", "1")
    monkeypatch.setattr(lambda_handler, "_service", None)
    yield lambda_handler.handler


def function_url_event(body: str, is_base64: bool = False) -> dict:
    """The shape AWS sends for a Lambda function URL (payload format 2.0)."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/",
        "headers": {"content-type": "application/json"},
        "requestContext": {"http": {"method": "POST", "path": "/", "sourceIp": "203.0.113.7"}},
        "body": body,
        "isBase64Encoded": is_base64,
    }


def test_direct_invocation_and_model_loaded_once(handler) -> None:  # noqa: ANN001
    context = SimpleNamespace(aws_request_id="req-1")
    answer = handler({"image": b64_png(render_line("quill"))}, context)
    assert answer["text"] == "quill" and answer["request_id"] == "req-1"
    service = lambda_handler._service
    again = handler({"image": b64_png(render_line("Kew")), "kind": "line"}, None)
    assert again["text"] == "Kew"
    assert lambda_handler._service is service  # not reloaded for the second event


def test_function_url_event_with_json_body_and_base64_body(handler) -> None:  # noqa: ANN001
    body = json.dumps({"image": b64_png(render_line("ink"))})
    response = handler(function_url_event(body), None)
    assert response["statusCode"] == 200
    assert response["headers"]["Content-Type"] == "application/json"
    assert json.loads(response["body"])["text"] == "ink"
    encoded = base64.b64encode(body.encode()).decode()
    response = handler(function_url_event(encoded, is_base64=True), None)
    assert json.loads(response["body"])["text"] == "ink"


def test_predictions_are_logged_as_the_lambda_client_without_the_caller_ip(
    handler,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    url = f"sqlite:///{tmp_path / 'monitoring.db'}"
    monkeypatch.setenv("QUILL_MONITORING_URL", url)
    monkeypatch.setenv("QUILL_MONITORING_IMAGES", str(tmp_path / "images"))
    body = json.dumps({"image": b64_png(render_line("ink"))})
    answer = json.loads(handler(function_url_event(body), None)["body"])
    lambda_handler.get_service().close()
    record = MonitoringStore(url, tmp_path / "images").get_prediction(answer["request_id"])
    assert record is not None and record.client == "lambda"


def test_api_gateway_rest_event(handler) -> None:  # noqa: ANN001
    event = {
        "resource": "/predict",
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"image": "data:image/png;base64," + b64_png(render_line("hello"))}),
        "isBase64Encoded": False,
    }
    response = handler(event, None)
    assert response["statusCode"] == 200 and json.loads(response["body"])["text"] == "hello"


@pytest.mark.parametrize(
    ("event", "status", "code"),
    [
        (function_url_event(""), 400, "empty_body"),
        (function_url_event("{not json"), 400, "invalid_json"),
        (function_url_event("%%%", is_base64=True), 400, "bad_base64"),
        (function_url_event(json.dumps({"image": "!!"})), 400, "bad_base64"),
        (function_url_event(json.dumps({"img": "abc"})), 400, "missing_image"),
        (
            function_url_event(json.dumps({"image": base64.b64encode(b"GIF89a?").decode()})),
            400,
            "not_an_image",
        ),
    ],
    ids=["empty", "not-json", "bad-body-base64", "bad-image-base64", "no-image", "not-an-image"],
)
def test_bad_http_events_get_json_errors(handler, event: dict, status: int, code: str) -> None:  # noqa: ANN001
    response = handler(event, None)
    assert response["statusCode"] == status
    assert json.loads(response["body"])["error"]["code"] == code


def test_bad_direct_events_and_a_missing_model(
    handler, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:  # noqa: ANN001
    tiny = Image.new("RGB", (1, 1))
    answer = handler({"image": b64_png(tiny)}, None)
    assert answer["statusCode"] == 422 and answer["error"]["code"] == "image_too_small"
    monkeypatch.setattr(lambda_handler, "_service", None)
    monkeypatch.setenv("QUILL_MODEL_DIR", str(tmp_path / "no-model"))
    missing = handler({"image": b64_png(render_line("ink"))}, None)
    assert missing["statusCode"] == 503 and missing["error"]["code"] == "model_not_ready"
