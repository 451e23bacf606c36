"""The Lambda handler, called with real event shapes (direct, function URL, API Gateway)."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from PIL import Image

from quill.monitoring.images import OWNER_FILE
from quill.monitoring.store import MonitoringStore
from quill.serving import lambda_handler
from quill.staging.parity import render_line

#: The body limit of the API server (conftest's ``client``) and of the function alike.
MAX_BODY = 400_000
SERVING_OVERRIDES = {"max_body_bytes": MAX_BODY}


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
    monkeypatch.setenv("QUILL_MAX_BODY_BYTES", str(MAX_BODY))
    monkeypatch.setattr(lambda_handler, "_service", None)
    monkeypatch.setattr(lambda_handler, "_store_failure", None)
    yield lambda_handler.handler


#: The caller's address in the events below (TEST-NET-3): it must never be stored.
CALLER_IP = "203.0.113.7"


def function_url_event(body: str, is_base64: bool = False) -> dict:
    """The shape AWS sends for a Lambda function URL (payload format 2.0)."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/",
        "headers": {"content-type": "application/json"},
        "requestContext": {"http": {"method": "POST", "path": "/", "sourceIp": CALLER_IP}},
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
    store = MonitoringStore(url, tmp_path / "images")
    try:
        record = store.get_prediction(answer["request_id"])
    finally:
        store.close()
    assert record is not None and record.client == "lambda"
    assert CALLER_IP not in repr(record)  # every field, projections and feedback included
    # nor anywhere on disk: the SQLite file (and a journal left beside it), the stored image
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert tmp_path / "monitoring.db" in written
    for path in written:
        assert CALLER_IP.encode() not in path.read_bytes(), path


def test_api_gateway_rest_event(handler) -> None:  # noqa: ANN001
    event = {
        "resource": "/{proxy+}",
        "path": "/v1/predict",
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


def png_bytes(text: str) -> bytes:
    return base64.b64decode(b64_png(render_line(text)))


def test_a_json_object_body_is_accepted(handler) -> None:  # noqa: ANN001
    """Test consoles and SDK callers put the JSON object itself in ``body`` (was a 500)."""
    event = function_url_event("")
    event["body"] = {"image": b64_png(render_line("ink")), "kind": "line"}
    response = handler(event, None)
    assert response["statusCode"] == 200, response["body"]
    assert json.loads(response["body"])["text"] == "ink"


@pytest.mark.parametrize(
    "content_type", ["image/png", "IMAGE/PNG; charset=binary", "application/octet-stream"]
)
def test_raw_image_bytes_from_a_binary_media_type(handler, content_type: str) -> None:  # noqa: ANN001
    """API Gateway with binary media types: the body is the image, base64-encoded by the
    gateway (was refused as 'not valid base64')."""
    event = function_url_event(base64.b64encode(png_bytes("Kew")).decode(), is_base64=True)
    event["headers"] = {"Content-Type": content_type}
    event["queryStringParameters"] = {"kind": "line"}
    response = handler(event, None)
    assert response["statusCode"] == 200, response["body"]
    answer = json.loads(response["body"])
    assert answer["text"] == "Kew" and answer["kind"] == "line"


@pytest.mark.parametrize(
    ("body", "is_base64", "content_type", "status", "code", "words"),
    [
        # image bytes labelled as JSON: say what they are and what to send
        ("png", True, "application/json", 415, "unsupported_media_type", "image/png"),
        # an image content type that the gateway did not base64-encode
        ("png-text", False, "image/png", 400, "unsupported_event", "binary media types"),
        ("png", True, "application/pdf", 415, "unsupported_media_type", "application/pdf"),
        ("png", False, "application/json", 400, "invalid_json", "not valid JSON"),
    ],
    ids=["image-labelled-json", "image-not-base64", "other-binary-type", "json-garbage"],
)
def test_binary_bodies_that_cannot_be_read_get_a_precise_error(
    handler,  # noqa: ANN001
    body: str,
    is_base64: bool,
    content_type: str,
    status: int,
    code: str,
    words: str,
) -> None:
    raw = png_bytes("ink")
    text = {
        "png": base64.b64encode(raw).decode() if is_base64 else '{"image": ',
        "png-text": raw.decode("latin-1"),
    }[body]
    event = function_url_event(text, is_base64=is_base64)
    event["headers"] = {"content-type": content_type}
    response = handler(event, None)
    error = json.loads(response["body"])["error"]
    assert (response["statusCode"], error["code"]) == (status, code), error
    assert words in error["message"]


def test_feedback_token_only_with_a_shared_secret(handler, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    from quill.serving.settings import FeedbackTokens

    plain = handler({"image": b64_png(render_line("ink"))}, None)
    assert "feedback_token" not in plain
    monkeypatch.setattr(lambda_handler, "_service", None)
    monkeypatch.setenv("QUILL_FEEDBACK_SECRET", "shared-with-the-api")
    answer = handler({"image": b64_png(render_line("ink"))}, None)
    tokens = FeedbackTokens("shared-with-the-api")
    assert tokens.verify(answer["request_id"], answer["feedback_token"])


def with_fields(**fields: object) -> dict:
    """A function URL event with a JSON body and some fields replaced."""
    return {**function_url_event(json.dumps({"image": b64_png(render_line("ink"))})), **fields}


@pytest.mark.parametrize(
    ("event", "status", "code", "words"),
    [
        (with_fields(headers=["a"]), 422, "invalid_field", "headers must be an object"),
        (with_fields(headers="content-type: x"), 422, "invalid_field", "got str"),
        (
            with_fields(queryStringParameters="kind=line"),
            422,
            "invalid_field",
            "queryStringParameters must be an object",
        ),
        (with_fields(isBase64Encoded="false"), 422, "invalid_field", "isBase64Encoded"),
        (with_fields(isBase64Encoded=1), 422, "invalid_field", "got int"),
        (
            function_url_event("[" * 100_000 + "]" * 100_000),
            400,
            "invalid_json",
            "too deeply",
        ),
        (
            function_url_event(base64.b64encode(b"[" * 100_000).decode(), is_base64=True),
            400,
            "invalid_json",
            "too deeply",
        ),
    ],
    ids=[
        "headers-list",
        "headers-string",
        "query-string",
        "base64-flag-string",
        "base64-flag-int",
        "deeply-nested-json",
        "deeply-nested-base64-json",
    ],
)
def test_malformed_events_get_a_client_error_not_a_500(
    handler,  # noqa: ANN001
    event: dict,
    status: int,
    code: str,
    words: str,
) -> None:
    """Fields of the wrong type and JSON too deep to decode were 500 internal_error."""
    response = handler(event, None)
    error = json.loads(response["body"])["error"]
    assert (response["statusCode"], error["code"]) == (status, code), error
    assert words in error["message"]


def test_null_event_fields_mean_absent(handler) -> None:  # noqa: ANN001
    event = with_fields(queryStringParameters=None, isBase64Encoded=None)
    response = handler(event, None)
    assert response["statusCode"] == 200, response["body"]
    assert json.loads(response["body"])["text"] == "ink"
    # null headers are no headers: no content type, refused as the API refuses one (415)
    response = handler(with_fields(headers=None), None)
    error = json.loads(response["body"])["error"]
    assert (response["statusCode"], error["code"]) == (415, "unsupported_media_type"), error


# ---- the same request to the function and to the REST API --------------------------------


def http_event(method: str, path: str, body: bytes, content_type: str | None, payload: str) -> dict:
    """The event a gateway makes of an HTTP request: API Gateway REST (payload ``1.0``) or a
    function URL / HTTP API (``2.0``); a body that is not ASCII text arrives base64-encoded,
    as the gateways send a binary media type."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    binary = not body.isascii()
    event: dict = {
        "headers": headers,
        "body": base64.b64encode(body).decode() if binary else body.decode(),
        "isBase64Encoded": binary,
    }
    if payload == "1.0":
        return {**event, "resource": "/{proxy+}", "path": path, "httpMethod": method}
    context = {"http": {"method": method, "path": path}, "stage": "$default"}
    return {**event, "version": "2.0", "rawPath": path, "requestContext": context}


def request_body(kind: str) -> tuple[bytes, str | None]:
    """A body and the content type its client would send (None: no header)."""
    if kind == "none":
        return b"", None
    if kind == "json":
        return json.dumps({"image": b64_png(render_line("ink"))}).encode(), "application/json"
    if kind == "too-large":  # the decoded image is under the limit, the body over it
        image = base64.b64encode(b"\x00" * (MAX_BODY * 3 // 4 - 4)).decode()
        return json.dumps({"image": image}).encode(), "application/json"
    uploads = [("image", ("ink.png", png_bytes("ink"), "image/png"))]
    if kind == "multipart-two":
        uploads.append(("file", ("kew.png", png_bytes("Kew"), "image/png")))
    built = httpx.Request("POST", "http://quill", files=uploads, data={"kind": "line"})
    return built.read(), built.headers["content-type"]


@pytest.mark.parametrize("payload", ["1.0", "2.0"])
@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "status", "code"),
    [
        ("GET", "/v1/predict", "json", "", 405, "method_not_allowed"),
        ("DELETE", "/v1/predict", "json", "", 405, "method_not_allowed"),
        ("POST", "/nope", "json", "", 404, "not_found"),
        ("POST", "/healthz", "none", "", 405, "method_not_allowed"),
        ("GET", "/healthz", "none", "", 200, None),
        ("GET", "/readyz", "none", "", 200, None),
        ("POST", "/v1/predict", "multipart", "", 200, None),
        ("POST", "/v1/predict", "multipart-two", "", 400, "multiple_images"),
        ("POST", "/v1/predict", "json", "text/plain", 415, "unsupported_media_type"),
        ("POST", "/v1/predict", "json", None, 415, "unsupported_media_type"),
        ("POST", "/v1/predict", "json", "application/vnd.api+json", 415, "unsupported_media_type"),
        ("POST", "/v1/predict", "too-large", "", 413, "request_too_large"),
    ],
    ids=[
        "get-predict",
        "delete-predict",
        "unknown-path",
        "post-healthz",
        "healthz",
        "readyz",
        "multipart",
        "multipart-two-images",
        "text-plain",
        "no-content-type",
        "vnd-api-json",
        "body-over-the-limit",
    ],
)
def test_http_events_are_answered_as_the_api_answers_the_same_request(
    handler,  # noqa: ANN001
    client: httpx.Client,
    payload: str,
    method: str,
    path: str,
    body: str,
    content_type: str | None,
    status: int,
    code: str | None,
) -> None:
    """The function ignored the method and the path (a GET, or a POST to any path, was a
    prediction; a probe was 400 empty_body), refused multipart uploads (415) and took any
    content type as JSON, and checked its limit on the decoded image, not the body."""
    data, sent_type = request_body(body)
    sent_type = sent_type if content_type == "" else content_type
    headers = {} if sent_type is None else {"content-type": sent_type}
    api = client.request(method, path, content=data, headers=headers)
    response = handler(http_event(method, path, data, sent_type, payload), None)
    answer = json.loads(response["body"])
    assert (response["statusCode"], api.status_code) == (status, status), answer
    if code is None:
        assert answer.get("text", answer.get("status")) == api.json().get(
            "text", api.json().get("status")
        )
        return
    assert answer["error"]["code"] == api.json()["error"]["code"] == code
    if status == 405:  # the methods the path answers, as the API's 405 names them
        assert api.headers["allow"] in response["headers"]["Allow"]
    elif status != 404:  # read by the API's own parsers: its very words
        assert answer["error"]["message"] == api.json()["error"]["message"]


def test_a_named_http_api_stage_and_a_function_url_root_are_predictions(handler) -> None:  # noqa: ANN001
    data, content_type = request_body("json")
    event = http_event("POST", "/prod/v1/predict", data, content_type, "2.0")
    event["requestContext"]["stage"] = "prod"
    for request in (event, http_event("POST", "/", data, content_type, "2.0")):
        response = handler(request, None)
        assert response["statusCode"] == 200, response["body"]
        assert json.loads(response["body"])["text"] == "ink"


def test_feedback_is_refused_as_a_route_the_function_does_not_serve(handler) -> None:  # noqa: ANN001
    """A /v1/feedback body was read as a prediction without an image (400 missing_image)."""
    feedback = json.dumps({"request_id": "r", "feedback_token": "t", "flag": "incorrect"})
    event = http_event("POST", "/v1/feedback", feedback.encode(), "application/json", "2.0")
    response = handler(event, None)
    error = json.loads(response["body"])["error"]
    assert (response["statusCode"], error["code"]) == (404, "not_found")
    assert "feedback" in error["message"] and "POST /v1/predict" in error["message"]


def test_a_monitoring_store_that_cannot_open_is_503_naming_it_logged_once(
    handler,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each event was 500 internal_error, with a traceback in the log every time."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    url = f"sqlite:///{blocker / 'monitoring.db'}"
    monkeypatch.setenv("QUILL_MONITORING_URL", url)
    data, content_type = request_body("json")
    event = http_event("POST", "/v1/predict", data, content_type, "2.0")
    with caplog.at_level(logging.ERROR, logger=lambda_handler.__name__):
        answers = [handler(event, None) for _ in range(2)]
    for response in answers:
        error = json.loads(response["body"])["error"]
        assert (response["statusCode"], error["code"]) == (503, "model_not_ready"), error
        assert error["message"].startswith(f"the monitoring store {url} cannot open: ")
    assert [record.name for record in caplog.records] == [lambda_handler.__name__]


def test_an_image_folder_of_another_store_is_503_naming_the_store(
    handler,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / OWNER_FILE).write_text(f"sqlite:///{tmp_path / 'other.db'}\n")
    monkeypatch.setenv("QUILL_MONITORING_URL", f"sqlite:///{tmp_path / 'b.db'}")
    monkeypatch.delenv("QUILL_MONITORING_IMAGES", raising=False)
    answer = handler({"image": b64_png(render_line("ink"))}, None)
    assert (answer["statusCode"], answer["error"]["code"]) == (503, "model_not_ready")
    assert "holds the images of another monitoring store" in answer["error"]["message"]


@pytest.mark.parametrize("http", [False, True], ids=["direct", "function-url"])
def test_a_null_kind_is_named_null(handler, http: bool) -> None:  # noqa: ANN001
    """It was refused as "got 'None'", Python's name for it, not the caller's."""
    request = {"image": b64_png(render_line("ink")), "kind": None}
    answer = handler(function_url_event(json.dumps(request)), None) if http else handler(request)
    error = json.loads(answer["body"])["error"] if http else answer["error"]
    assert error["code"] == "invalid_field" and error["message"].endswith("got null")


def test_image_bytes_the_gateway_passed_as_text_are_named(handler) -> None:  # noqa: ANN001
    """A JPEG without a binary media type reaches the function as text, its bytes replaced
    by U+FFFD: that was a generic 'the body is not valid JSON'."""
    buffer = io.BytesIO()
    render_line("ink").save(buffer, format="JPEG")
    event = function_url_event(buffer.getvalue().decode("utf-8", "replace"))
    response = handler(event, None)
    error = json.loads(response["body"])["error"]
    assert (response["statusCode"], error["code"]) == (400, "unsupported_event"), error
    assert "did not base64-encode" in error["message"] and "binary media types" in error["message"]
