"""The API under abuse, over real HTTP on 127.0.0.1 (issue 15): body and header limits,
feedback tokens, the API key, a timeout that frees nothing it should not, offline /docs."""

from __future__ import annotations

import base64
import io
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from quill.serving.runner import ApiServer
from quill.serving.service import PredictionService, build_monitoring, load_service
from quill.serving.settings import ServingSettings
from quill.staging.parity import render_line

from .conftest import WrappedRecognizer, monitored_settings, stored

MB = 1_000_000
#: The routes that take a JSON body, the one FastAPI validates first.
PATHS_READING_JSON = ("/v1/feedback", "/v1/predict")


def b64_png(text: str) -> str:
    buffer = io.BytesIO()
    render_line(text).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def feedback_rows(settings: ServingSettings) -> list[tuple[str, int]]:
    """(request id, length of the correction) of every stored feedback row."""
    path = str(settings.monitoring_url).removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        return db.execute("SELECT request_id, length(correction) FROM feedback").fetchall()


@pytest.fixture(scope="module")
def answer(client: httpx.Client) -> dict[str, Any]:
    response = client.post("/v1/predict", json={"image": b64_png("Kew")})
    assert response.status_code == 200, response.text
    return response.json()


# ---- 1. the body limit holds for chunked uploads, on every route ----------------------


@pytest.mark.parametrize("size", [30 * MB, 100 * MB], ids=["30MB", "100MB"])
def test_a_chunked_correction_over_the_limit_is_refused_and_not_stored(
    client: httpx.Client, settings: ServingSettings, answer: dict[str, Any], size: int
) -> None:
    head = (
        f'{{"request_id": "{answer["request_id"]}", "feedback_token": '
        f'"{answer["feedback_token"]}", "flag": "incorrect", "correction": "'
    ).encode()

    def chunks() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding: chunked
        yield head
        for _ in range(size // MB):
            yield b"A" * MB
        yield b'"}'

    start = time.perf_counter()
    response = client.post(
        "/v1/feedback", content=chunks(), headers={"content-type": "application/json"}
    )
    elapsed = time.perf_counter() - start
    assert response.status_code == 413, response.text[:300]
    assert response.json()["error"]["code"] == "request_too_large"
    assert "10,485,760 bytes" in response.json()["error"]["message"]
    assert all((length or 0) < MB for _, length in feedback_rows(settings))
    print(f"{size // MB} MB chunked feedback: 413 after {elapsed:.2f} s")
    # the server (and the same connection) keeps serving
    assert client.get("/healthz").json() == {"status": "ok"}


def test_a_declared_length_over_the_limit_is_refused_before_reading(client: httpx.Client) -> None:
    body = b'{"correction": "' + b"A" * (11 * 1024 * 1024) + b'"}'
    for path in ("/v1/feedback", "/v1/predict"):
        response = client.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 413 and response.json()["error"]["code"] == (
            "request_too_large"
        )


# ---- 2 and 3. feedback: not empty, for a stored prediction, with its token -------------


def test_feedback_needs_content_a_matching_token_and_a_stored_prediction(
    client: httpx.Client, server: ApiServer, settings: ServingSettings
) -> None:
    fresh = client.post("/v1/predict", json={"image": b64_png("ink")}).json()
    rid, token = fresh["request_id"], fresh["feedback_token"]

    def send(**payload: Any) -> httpx.Response:
        return client.post("/v1/feedback", json=payload)

    for empty in ({}, {"flag": None, "comment": "  ", "correction": ""}):
        response = send(request_id=rid, feedback_token=token, **empty)
        assert response.status_code == 422, response.text  # was 500 + a reset connection
        assert response.json()["error"]["code"] == "empty_feedback"
    missing = send(request_id=rid, flag="incorrect")
    assert missing.status_code == 422 and "feedback_token" in missing.json()["error"]["message"]
    # One character changed, whatever the token's last character is (it is "A" one time in 16).
    tampered = token[:-1] + ("B" if token.endswith("A") else "A")
    for wrong in ("x" * 43, "", tampered):
        forged = send(request_id=rid, feedback_token=wrong, flag="offensive")
        assert forged.status_code == 403, forged.text
        assert forged.json()["error"]["code"] == "invalid_feedback_token"
    other = client.post("/v1/predict", json={"image": b64_png("hello")}).json()
    swapped = send(request_id=rid, feedback_token=other["feedback_token"], flag="other")
    assert swapped.status_code == 403  # a token is good for its own prediction only

    # A request id this server never answered: no token can match it...
    unknown = "0" * 32
    assert send(request_id=unknown, feedback_token=token, flag="incorrect").status_code == 403
    # ...and even with a token signed by the server's key, a prediction not in the store is 404.
    signed = server.state.feedback_tokens.issue(unknown)
    absent = send(request_id=unknown, feedback_token=signed, flag="incorrect")
    assert absent.status_code == 404 and absent.json()["error"]["code"] == "unknown_request_id"

    # Sent at once after the answer, the good one is stored.
    accepted = send(request_id=rid, feedback_token=token, flag="incorrect", correction=" ink pen ")
    assert accepted.status_code == 200, accepted.text
    record = stored(settings).get_prediction(rid)
    assert record is not None and (record.flag, record.correction) == ("incorrect", "ink pen")
    assert unknown not in {request_id for request_id, _ in feedback_rows(settings)}


@pytest.mark.parametrize(
    ("field", "text", "code_point"),
    [("correction", "nul \x00 inside", "U+0000"), ("comment", "an \x1b escape", "U+001B")],
)
def test_feedback_holding_a_control_character_is_refused_and_not_stored(
    client: httpx.Client, settings: ServingSettings, field: str, text: str, code_point: str
) -> None:
    """A NUL byte in a correction was a 500 on PostgreSQL (which cannot store one) and reset
    the client's connection; SQLite stored it. Now both refuse it, naming the character."""
    fresh = client.post("/v1/predict", json={"image": b64_png("Kew")}).json()
    payload = {"request_id": fresh["request_id"], "feedback_token": fresh["feedback_token"]}
    response = client.post("/v1/feedback", json={**payload, "flag": "incorrect", field: text})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (
        error["code"] == "invalid_field"
        and f"control character ({code_point})" in (error["message"])
    )
    assert fresh["request_id"] not in {request_id for request_id, _ in feedback_rows(settings)}
    lines = {"correction": "Kew\nGardens\t1843"}  # line breaks and tabs are text
    assert client.post("/v1/feedback", json={**payload, **lines}).status_code == 200


@pytest.mark.parametrize(
    "body", [b'{"request_id": "x", ', b"\xff\xfe{"], ids=["cut short", "not utf-8"]
)
def test_broken_json_feedback_answers_as_predict_does(client: httpx.Client, body: bytes) -> None:
    """The same 400 ``invalid_json`` with the decoder's reason as /v1/predict, not a 422
    "1: JSON decode error" from the framework's validation."""
    headers = {"content-type": "application/json"}
    answers = [client.post(path, content=body, headers=headers) for path in PATHS_READING_JSON]
    assert [answer.status_code for answer in answers] == [400, 400], [a.text for a in answers]
    feedback, predict = (answer.json()["error"] for answer in answers)
    assert feedback == predict and feedback["code"] == "invalid_json"
    assert feedback["message"].startswith("the body is not valid JSON: ")


def test_the_feedback_token_is_documented_in_the_openapi_schema(client: httpx.Client) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    answer, request = schemas["PredictResponse"], schemas["FeedbackRequest"]
    assert "feedback_token" in answer["required"]
    assert "/v1/feedback" in answer["properties"]["feedback_token"]["description"]
    assert {"request_id", "feedback_token"} <= set(request["required"])
    assert request["properties"]["flag"]["anyOf"][0]["enum"] == ["incorrect", "offensive", "other"]


# ---- 4. the optional API key -----------------------------------------------------------


def test_an_api_key_guards_v1_and_metrics_but_not_the_probes(settings: ServingSettings) -> None:
    keyed = replace(settings, api_key="s3cret-key-for-tests", monitoring_url="off")
    image = {"image": b64_png("ink")}
    with ApiServer(keyed) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        for path in ("/healthz", "/readyz", "/docs", "/openapi.json"):
            assert http.get(path).status_code == 200, path
        nokey = http.post("/v1/predict", json=image)
        assert nokey.status_code == 401 and nokey.json()["error"]["code"] == "missing_api_key"
        assert "X-API-Key" in nokey.headers["www-authenticate"]
        wrong = http.post("/v1/predict", json=image, headers={"X-API-Key": "s3cret-key-for-tes"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        good = http.post("/v1/predict", json=image, headers={"X-API-Key": "s3cret-key-for-tests"})
        assert good.status_code == 200 and good.json()["text"] == "ink"
        assert http.post("/v1/feedback", json={}).status_code == 401
        assert http.get("/metrics").status_code == 401
        bearer = {"Authorization": "Bearer s3cret-key-for-tests"}  # what Prometheus sends
        assert "quill_http_requests_total" in http.get("/metrics", headers=bearer).text
        # a body is not read for a caller without the key
        big = http.post("/v1/predict", content=b"A" * (20 * MB), headers={"content-type": "x/y"})
        assert big.status_code == 401
        schema = http.get("/openapi.json").json()
        assert schema["components"]["securitySchemes"]["ApiKey"]["name"] == "X-API-Key"
        assert schema["paths"]["/v1/predict"]["post"]["security"] == [{"ApiKey": []}]
        assert "security" not in schema["paths"]["/healthz"]["get"]


@pytest.mark.parametrize("command", ["serve", "up"])
def test_serving_on_a_public_interface_without_a_key_is_refused_in_one_line(
    smoke_model: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    from typer.testing import CliRunner

    from quill.cli import app

    for name in ("QUILL_API_KEY", "QUILL_ALLOW_OPEN"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, [command, "--model", str(smoke_model), "--host", "0.0.0.0"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refusing to serve on 0.0.0.0"), lines
    assert "QUILL_API_KEY" in lines[0] and "--allow-open" in lines[0]


def test_the_api_container_starts_only_with_a_key_or_when_told() -> None:
    dockerfile = (Path(__file__).resolve().parents[2] / "docker" / "Dockerfile.api").read_text()
    assert '"--host", "0.0.0.0"' in dockerfile  # so quill serve's refusal applies in it
    assert "requirements.lock" in dockerfile and "QUILL_API_KEY" in dockerfile


# ---- 6. a request head over the limit gets the JSON error format -----------------------


def test_a_1mb_header_gets_a_json_431_and_bad_http_a_json_400(server: ApiServer) -> None:
    response = httpx.get(f"{server.url}/healthz", headers={"X-Big": "a" * MB}, timeout=30)
    assert response.status_code == 431, response.text[:200]
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "request_header_too_large" and "16,384 bytes" in error["message"]
    assert httpx.get(f"{server.url}/healthz", headers={"X-Ok": "a" * 8_000}).status_code == 200
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        reply = b""
        while chunk := raw.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head
    assert b'"bad_http_request"' in body


def _raw_answer(port: int, request: bytes) -> tuple[bytes, bytes]:
    """The head and body of the answer to ``request`` sent in one write on a new socket."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(request)
        reply = b""
        while chunk := raw.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return head, body


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /healthz?" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 50_000 + b"\r\n",
    ],
    ids=["100 kB query", "50 kB header"],
)
def test_a_head_over_the_limit_sent_in_one_write_is_refused_too(
    server: ApiServer, request_head: bytes
) -> None:
    """The HTTP server checks the limit only while a head is still arriving: these, whole in
    one read, were answered 200."""
    head, body = _raw_answer(server.port, request_head + b"Connection: close\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431"), head
    assert b'"request_header_too_large"' in body


def test_health_probes_answer_head_and_a_405_says_what_is_allowed(server: ApiServer) -> None:
    for path in ("/healthz", "/readyz"):
        assert httpx.head(f"{server.url}{path}").status_code == 200
    wrong = httpx.delete(f"{server.url}/healthz")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    assert "GET" in wrong.headers["allow"]  # was no Allow header at all


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_feedback_in_another_content_type_is_415_as_predict(
    client: httpx.Client, answer: dict[str, Any], content_type: str | None
) -> None:
    """Was: 422 "body: Input should be a valid dictionary or object to extract fields from"."""
    body = json.dumps({**answer, "flag": "incorrect"}).encode()
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/v1/feedback", content=body, headers=headers)
    assert response.status_code == 415, response.text
    assert response.json()["error"]["code"] == "unsupported_media_type"


# ---- 7. /docs renders offline ----------------------------------------------------------


@pytest.mark.browser
@pytest.mark.slow
def test_docs_render_offline_in_a_real_browser(server: ApiServer, chromium_launch: dict) -> None:
    from playwright.sync_api import sync_playwright

    outside: list[str] = []

    def only_localhost(route: Any) -> None:
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(**chromium_launch)
        page = browser.new_page()
        page.route("**/*", only_localhost)
        page.goto(f"{server.url}/docs")
        operations = page.locator(".opblock-summary-path")
        operations.filter(has_text="/v1/predict").first.wait_for(timeout=60_000)
        shown = {text.strip() for text in operations.all_inner_texts()}
        title = page.locator(".information-container .title").inner_text()
        page.get_by_text("/v1/predict").first.click()  # an operation opens, with its text
        page.get_by_text("Recognise the handwriting in one image").first.wait_for(timeout=30_000)
        browser.close()
    assert {"/v1/predict", "/v1/feedback", "/healthz", "/metrics"} <= shown, shown
    assert "Quill handwriting recognition API" in title
    assert outside == []  # nothing fetched from a CDN


# ---- 8. a timeout answers in time, is not logged, and cannot pile up threads -----------


class SlowRecognizer(WrappedRecognizer):
    """The real recognizer behind a sleep, as a pathological image would be."""

    def __init__(self, inner: Any, delay: float):
        super().__init__(inner)
        self.delay, self.calls = delay, 0

    def predict(self, images: list, kind: str = "auto") -> list:
        self.calls += 1
        time.sleep(self.delay)
        return self.inner.predict(images, kind=kind)


def test_a_timeout_answers_in_time_frees_nothing_early_and_is_not_logged(
    smoke_model: Path, tmp_path: Path
) -> None:
    settings = monitored_settings(
        smoke_model,
        tmp_path,
        timeout_s=0.5,
        max_concurrency=1,
        max_queue=1,
    )
    logger, store = build_monitoring(settings)
    real = load_service(replace(settings, monitoring_url="off")).recognizer
    slow = SlowRecognizer(real, delay=4.0)
    service = PredictionService(slow, settings, logger, store)
    results: dict[str, tuple[int, float, dict]] = {}

    def post(name: str, url: str, text: str) -> None:
        start = time.perf_counter()
        response = httpx.post(f"{url}/v1/predict", json={"image": b64_png(text)}, timeout=60)
        results[name] = (response.status_code, time.perf_counter() - start, response.json())

    with ApiServer(settings, service=service) as server:
        recognitions = server.state.recognitions
        running = threading.Thread(target=post, args=("running", server.url, "ink"))
        running.start()
        while slow.calls == 0:
            time.sleep(0.01)
        queued = threading.Thread(target=post, args=("queued", server.url, "Kew"))
        queued.start()
        while recognitions.taken < 2:
            time.sleep(0.01)
        post("full", server.url, "hello")  # one running + one waiting: no place left
        healthz_start = time.perf_counter()
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
        healthz_s = time.perf_counter() - healthz_start
        running.join()
        queued.join()
        assert recognitions.taken >= 1  # the timed-out recognition still holds its thread
        while recognitions.taken:  # ...until it ends
            time.sleep(0.05)
        slow.delay = 0.0
        post("after", server.url, "quill")
    logger.close()

    status, seconds, body = results["running"]
    assert (status, body["error"]["code"]) == (504, "timeout") and seconds < 2.0, results
    status, seconds, body = results["queued"]
    assert (status, body["error"]["code"]) == (504, "timeout") and seconds < 2.0, results
    assert results["full"][0] == 503 and results["full"][2]["error"]["code"] == "overloaded"
    assert results["after"][0] == 200 and results["after"][2]["text"] == "quill"
    assert healthz_s < 1.0
    assert slow.calls == 2  # the queued request timed out before it started: it never ran
    assert recognitions.stats["never_started"] == 1 and recognitions.stats["not_logged"] == 1
    logged = stored(settings).predictions()
    assert [p.request_id for p in logged] == [results["after"][2]["request_id"]]
    print(
        f"timeout 0.5 s, recognition 4 s: 504 after {results['running'][1]:.2f} s, "
        f"queued 504 after {results['queued'][1]:.2f} s, healthz {healthz_s * 1000:.0f} ms"
    )


def test_a_client_that_hangs_up_mid_upload_is_no_server_error(
    server: ApiServer, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    """Half a body, then the socket closed: starlette's ClientDisconnect reached the
    catch-all, logged as "unhandled error" with a traceback and counted as a 500."""
    head = (
        "POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: 100000\r\n\r\n"
    )
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            raw.sendall(head.encode() + b'{"image": "' + b"A" * 2000)
    time.sleep(0.5)
    metrics = client.get("/metrics").text
    assert 'code="internal_error"' not in metrics
    assert 'code="client_disconnected"' in metrics
    assert "unhandled error" not in caplog.text
    assert client.get("/readyz").status_code == 200


def test_a_flag_for_a_prediction_waiting_in_the_queue_is_retryable_not_unknown(
    smoke_model: Path, tmp_path: Path
) -> None:
    """While another process held the store's write lock, each answered prediction waited in
    the monitoring queue and its flag was answered 404 "no prediction is stored (not logged,
    or purged)": the user's correction lost, and a wrong reason given. Now 503 and
    Retry-After; /readyz says the store is not taking writes; once it is, the flag lands."""
    settings = monitored_settings(smoke_model, tmp_path)
    database = str(settings.monitoring_url).removeprefix("sqlite:///")
    with ApiServer(settings) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        assert http.get("/readyz").json()["monitoring"]["healthy"] is True
        locker = sqlite3.connect(database, timeout=30, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            answer = http.post("/v1/predict", json={"image": b64_png("ink")}).json()
            flag = {
                "request_id": answer["request_id"],
                "feedback_token": answer["feedback_token"],
                "flag": "incorrect",
                "correction": "ink pen",
            }
            refused = http.post("/v1/feedback", json=flag)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "monitoring_unavailable"
            assert refused.headers["retry-after"] == "1"
            waiting = http.get("/readyz").json()["monitoring"]
            assert waiting["healthy"] is False and waiting["queued"] >= 1
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        for _ in range(60):  # the queue drains once the lock is gone
            if http.get("/readyz").json()["monitoring"]["queued"] == 0:
                break
            time.sleep(0.5)
        stored_now = http.post("/v1/feedback", json=flag)
        assert stored_now.status_code == 200, stored_now.text
    assert feedback_rows(settings) == [(answer["request_id"], len("ink pen"))]
