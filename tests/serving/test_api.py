"""The REST API over real HTTP on 127.0.0.1, with the smoke model and a real SQLite store."""

from __future__ import annotations

import base64
import io
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from quill.inference.recognizer import BLANK_NOTE, SEGMENTERS, Recognizer
from quill.serving.api import create_app
from quill.serving.runner import ApiServer
from quill.serving.service import load_service
from quill.serving.settings import ServingSettings
from quill.staging.parity import render_line

from .conftest import monitored_settings, stored

MAX_BODY = 400_000
SERVING_OVERRIDES = {"max_body_bytes": MAX_BODY}


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A well-formed PNG claiming ``width`` x ``height`` with almost no pixel data: what a
    20,000 x 20,000 upload looks like to a server that checks the header before decoding
    (a real one would need 1.2 GB of RGB to decode)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def service_of(server: ApiServer):  # noqa: ANN201 - the PredictionService behind the app
    return server.service


def test_predict_json_data_url_and_multipart(client: httpx.Client) -> None:
    png = encode(render_line("quill"))
    plain = client.post("/v1/predict", json={"image": b64(png)})
    assert plain.status_code == 200, plain.text
    body = plain.json()
    assert body["text"] == "quill"
    assert 0.5 < body["confidence"] <= 1
    assert body["lines"][0]["text"] == "quill" and len(body["lines"][0]["box"]) == 4
    assert body["model_version"].startswith("smoke-")
    assert body["latency_ms"] >= 0 and len(body["request_id"]) == 32
    data_url = client.post(
        "/v1/predict",
        json={"image": "data:image/jpeg;base64," + b64(encode(render_line("Kew"), "JPEG"))},
    )
    assert data_url.json()["text"] == "Kew"
    upload = client.post(
        "/v1/predict", files={"image": ("ink.png", encode(render_line("ink")), "image/png")}
    )
    assert upload.status_code == 200 and upload.json()["text"] == "ink"
    curl_style = client.post(
        "/v1/predict", files={"file": ("h.png", encode(render_line("hello")), "image/png")}
    )
    assert curl_style.json()["text"] == "hello"


def test_an_image_sent_as_its_own_bytes_is_read(client: httpx.Client) -> None:
    """``curl --data-binary @line.jpg -H 'Content-Type: image/jpeg'``: the body is the image
    (the Lambda handler read such bodies and the API answered 415); ``?kind=`` is its kind."""
    jpeg = client.post(
        "/v1/predict?kind=line",
        content=encode(render_line("Kew"), "JPEG"),
        headers={"content-type": "image/jpeg"},
    )
    assert jpeg.status_code == 200, jpeg.text
    assert (jpeg.json()["text"], jpeg.json()["kind"]) == ("Kew", "line")
    octets = client.post(
        "/v1/predict",
        content=encode(render_line("ink")),
        headers={"content-type": "application/octet-stream"},
    )
    assert (octets.status_code, octets.json()["text"]) == (200, "ink"), octets.text
    refusals = {
        # curl's default type for --data-binary: named, with the header to add
        "application/x-www-form-urlencoded": (415, "unsupported_media_type", "Content-Type"),
        "application/json": (415, "unsupported_media_type", "image bytes"),
        "multipart/form-data; boundary=x": (415, "unsupported_media_type", "image bytes"),
    }
    for content_type, (status, code, words) in refusals.items():
        response = client.post(
            "/v1/predict", content=PNG_INK, headers={"content-type": content_type}
        )
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["code"] == code and words in error["message"], error
    bad_kind = client.post(
        "/v1/predict?kind=poem", content=PNG_INK, headers={"content-type": "image/png"}
    )
    assert bad_kind.status_code == 422 and "poem" in bad_kind.json()["error"]["message"]
    not_an_image = client.post(
        "/v1/predict", content=b"plain words", headers={"content-type": "image/png"}
    )
    assert not_an_image.json()["error"]["code"] == "not_an_image", not_an_image.text
    batch = client.post("/v1/predict/batch", content=PNG_INK, headers={"content-type": "image/png"})
    assert batch.status_code == 415, batch.text  # a batch is several images: JSON or multipart
    assert "multipart/form-data upload" in batch.json()["error"]["message"]
    schema = client.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]["requestBody"]
    assert {"image/*", "application/octet-stream"} <= set(schema["content"])


def page_of(texts: tuple[str, ...]) -> Image.Image:
    """A page of rendered texts, one a line."""
    words = [render_line(text) for text in texts]
    page = Image.new("RGB", (400, 60 * len(words) + 60), (246, 242, 232))
    for number, word in enumerate(words):
        page.paste(word, (20, 30 + 60 * number))
    return page


def three_line_page() -> Image.Image:
    """A page of three rendered words, one a line."""
    return page_of(("quill", "Kew", "ink"))


def test_a_page_answer_has_its_lines_findings_and_notes(client: httpx.Client) -> None:
    """Lines with boxes and the margin mark, the segmenter's findings, and a note saying why
    blank paper read as nothing."""
    page = three_line_page()
    answer = client.post("/v1/predict", json={"image": b64(encode(page)), "kind": "paragraph"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["kind"] == "paragraph" and len(body["lines"]) == 3
    assert [line["margin"] for line in body["lines"]] == [False] * 3
    assert body["page"]["rotation"] == 0 and body["page"]["columns"] == 1
    assert body["note"] is None
    blank = client.post(
        "/v1/predict", json={"image": b64(encode(Image.new("RGB", (500, 400), (246, 242, 232))))}
    ).json()
    assert (blank["text"], blank["note"]) == ("", BLANK_NOTE)
    assert any("no text" in note for note in blank["page"]["notes"])


def test_the_settings_choose_the_segmenter_that_cuts_pages(
    smoke_model: Path, tmp_path: Path
) -> None:
    """QUILL_SEGMENTER (``--segmenter``) chooses how pages are cut into lines: a server told
    ``learned`` loads the line detector, says so on /readyz and reads a page through it."""
    assert ServingSettings.from_env({"QUILL_SEGMENTER": "learned"}).segmenter == "learned"
    with pytest.raises(ValueError, match="QUILL_SEGMENTER"):
        ServingSettings.from_env({"QUILL_SEGMENTER": "magic"})
    settings = monitored_settings(smoke_model, tmp_path, segmenter="learned")
    with ApiServer(settings) as server, httpx.Client(base_url=server.url, timeout=120) as http:
        assert http.get("/readyz").json()["model"]["segmenter"] == "learned"
        answer = http.post("/v1/predict", json={"image": b64(encode(three_line_page()))})
    assert answer.status_code == 200, answer.text
    boxes = {
        segmenter: [list(line.box) for line in reader.predict([three_line_page()])[0].lines]
        for segmenter in SEGMENTERS
        for reader in [Recognizer.from_path(smoke_model, threads=1, segmenter=segmenter)]
    }
    assert boxes["learned"] != boxes["trace"]  # (the detector cuts rendered words apart)
    assert [line["box"] for line in answer.json()["lines"]] == boxes["learned"]


@pytest.mark.parametrize("command", ["serve", "app", "up"])
def test_an_unknown_segmenter_is_refused_in_one_line(smoke_model: Path, command: str) -> None:
    from typer.testing import CliRunner

    from quill.cli import app

    result = CliRunner().invoke(app, [command, "--model", str(smoke_model), "--segmenter", "magic"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "segmenter must be one of trace, learned" in lines[0], lines


def test_identical_images_are_answered_from_the_cache(client: httpx.Client) -> None:
    payload = {"image": b64(encode(render_line("hello")))}
    first, second = (
        client.post("/v1/predict", json=payload),
        client.post("/v1/predict", json=payload),
    )
    assert second.json()["cached"] is True
    assert second.json()["text"] == first.json()["text"] == "hello"
    assert second.json()["request_id"] != first.json()["request_id"]
    metrics = client.get("/metrics").text
    assert 'quill_predictions_total{cached="true",kind="line"}' in metrics


def test_feedback_lands_in_the_monitoring_store(
    client: httpx.Client, server: ApiServer, settings: ServingSettings
) -> None:
    answer = client.post("/v1/predict", json={"image": b64(encode(render_line("Kew")))}).json()
    accepted = client.post(
        "/v1/feedback",
        json={
            "request_id": answer["request_id"],
            "feedback_token": answer["feedback_token"],
            "flag": "incorrect",
            "correction": "Kew Gardens",
        },
    )
    assert accepted.status_code == 200, accepted.text
    service_of(server).logger.flush()
    store = stored(settings)
    record = store.get_prediction(answer["request_id"])
    assert record is not None and record.text == "Kew" and record.client == "api"
    assert record.runtime == service_of(server).recognizer.backend
    assert record.flag == "incorrect" and record.correction == "Kew Gardens"
    bad_flag = client.post(
        "/v1/feedback",
        json={
            "request_id": answer["request_id"],
            "feedback_token": answer["feedback_token"],
            "flag": "rude",
        },
    )
    assert bad_flag.status_code == 422 and bad_flag.json()["error"]["code"] == "invalid_field"


def test_health_readiness_metrics_and_docs(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["model"]["backend"] in ("onnx", "torchscript")
    assert ready["model"]["segmenter"] == "trace"
    assert "quill_http_requests_total" in client.get("/metrics").text
    schema = client.get("/openapi.json").json()
    content = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(content)
    assert client.get("/docs").status_code == 200


PNG_INK = encode(render_line("ink"))
TRUNCATED_PNG = encode(render_line("quill"))[:300]
TRUNCATED_JPEG = encode(render_line("quill"), "JPEG")[:400]

BAD_REQUESTS = {
    "not an image": (
        {"json": {"image": b64(b"%PDF-1.4 definitely not a picture")}},
        400,
        "not_an_image",
    ),
    "truncated png": ({"json": {"image": b64(TRUNCATED_PNG)}}, 400, "image_corrupt"),
    "truncated jpeg": ({"json": {"image": b64(TRUNCATED_JPEG)}}, 400, "image_corrupt"),
    "1x1 image": (
        {"json": {"image": b64(encode(Image.new("RGB", (1, 1))))}},
        422,
        "image_too_small",
    ),
    "20000x20000 image": (
        {"json": {"image": b64(png_header_only(20_000, 20_000))}},
        413,
        "image_too_large",
    ),
    "bad base64": ({"json": {"image": "this is not base64!!"}}, 400, "bad_base64"),
    "no image field": ({"json": {"picture": "abc"}}, 400, "missing_image"),
    "image not a string": ({"json": {"image": 42}}, 422, "invalid_field"),
    "invalid json": (
        {"content": b"{'image':", "headers": {"content-type": "application/json"}},
        400,
        "invalid_json",
    ),
    "empty body": (
        {"content": b"", "headers": {"content-type": "application/json"}},
        400,
        "empty_body",
    ),
    "empty raw image": (
        {"content": b"", "headers": {"content-type": "image/png"}},
        400,
        "empty_body",
    ),
    "truncated raw image": (
        {"content": TRUNCATED_PNG, "headers": {"content-type": "image/png"}},
        400,
        "image_corrupt",
    ),
    "huge body": ({"json": {"image": "A" * (MAX_BODY + 10)}}, 413, "request_too_large"),
    "deeply nested json": (
        {
            "content": b"[" * 100_000 + b"]" * 100_000,
            "headers": {"content-type": "application/json"},
        },
        400,
        "invalid_json",
    ),
    "wrong content type": (
        {"content": b"hello", "headers": {"content-type": "text/plain"}},
        415,
        "unsupported_media_type",
    ),
    "multipart without image": (
        {"files": {"other": ("a.txt", b"x", "text/plain")}},
        400,
        "missing_image",
    ),
    "empty upload": ({"files": {"image": ("a.png", b"", "image/png")}}, 400, "image_empty"),
    "empty base64": ({"json": {"image": ""}}, 400, "image_empty"),
    "two uploads": (
        {"files": [("image", ("a.png", PNG_INK, "image/png"))] * 2},
        400,
        "multiple_images",
    ),
    "multipart without boundary": (
        {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}},
        400,
        "invalid_multipart",
    ),
    "unparseable multipart": (
        {"content": b"garbage", "headers": {"content-type": "multipart/form-data; boundary=x"}},
        400,
        "invalid_multipart",
    ),
    "bad kind": (
        {"json": {"image": b64(encode(render_line("ink"))), "kind": "poem"}},
        422,
        "invalid_field",
    ),
}


@pytest.mark.parametrize("path", ["/v1/predict", "/v1/predict/batch"])
def test_a_kind_that_is_not_a_string_is_named_as_json_writes_it(
    client: httpx.Client, path: str
) -> None:
    """``"kind": null`` was refused as "got 'None'" (Python's word, not the caller's), as the
    Lambda handler had stopped doing; a form's empty kind field is its unset choice: auto."""
    image = b64(encode(render_line("ink")))
    body = {"images": [image]} if path.endswith("batch") else {"image": image}
    for kind, named in ((None, "got null"), (5, "got 5"), ("", "got ''")):
        response = client.post(path, json={**body, "kind": kind})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_field" and error["message"].endswith(named)
    form = client.post(
        path, files={"image": ("a.png", encode(render_line("ink")), "image/png")}, data={"kind": ""}
    )
    assert form.status_code == 200, form.text


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_bad_input_gets_the_right_4xx_and_the_server_keeps_serving(
    client: httpx.Client, case: str
) -> None:
    request, status, code = BAD_REQUESTS[case]
    response = client.post("/v1/predict", **request)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert "Traceback" not in response.text
    assert (
        client.post("/v1/predict", json={"image": b64(encode(render_line("ink")))}).json()["text"]
        == "ink"
    )


def test_several_uploads_to_predict_are_refused_not_all_but_one_dropped(
    client: httpx.Client,
) -> None:
    """Two images sent to the one-image route were once answered for the last alone."""
    blank = encode(Image.new("RGB", (400, 100), "white"))
    for second_field in ("image", "file"):
        files = [
            ("image", ("ink.png", PNG_INK, "image/png")),
            (second_field, ("white.png", blank, "image/png")),
        ]
        response = client.post("/v1/predict", files=files)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "multiple_images"
        assert "one image per request" in error["message"]
        assert "/v1/predict/batch" in error["message"]


def test_a_file_in_a_field_that_is_not_read_is_refused_not_ignored(
    client: httpx.Client,
) -> None:
    """`images` (the JSON batch's key) as a multipart field was ignored beside `image`
    fields, and alone answered "the batch holds no images"."""
    stray = ("images", ("ink.png", PNG_INK, "image/png"))
    files = [("image", ("ink.png", PNG_INK, "image/png")), stray]
    response = client.post("/v1/predict/batch", files=files)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_field" and "field(s) images" in error["message"]
    alone = client.post("/v1/predict/batch", files=[stray]).json()["error"]
    assert alone["code"] == "missing_image"
    assert "a multipart upload repeating a field named image or file" in alone["message"]


def test_an_empty_or_missing_boundary_is_named_in_the_message(client: httpx.Client) -> None:
    """An empty image field is said to be empty (it is there); a multipart body without a
    boundary says so, rather than a parser's status line."""
    empty = client.post("/v1/predict", json={"image": ""}).json()["error"]
    assert empty == {"code": "image_empty", "message": "field 'image' is empty"}
    headers = {"content-type": "multipart/form-data"}
    unbounded = client.post("/v1/predict", content=b"--x\r\n", headers=headers)
    assert "no boundary" in unbounded.json()["error"]["message"]


def test_a_chunked_upload_over_the_limit_is_cut_off(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_BODY // 10_000 + 5):
            yield b"A" * 10_000

    response = client.post(
        "/v1/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


def test_unknown_routes_and_methods_are_json_errors(client: httpx.Client) -> None:
    missing = client.get("/v2/predict")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = client.get("/v1/predict")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


def test_slow_recognition_times_out_with_504(server: ApiServer, settings: ServingSettings) -> None:
    from dataclasses import replace

    impatient = replace(settings, timeout_s=0.001)
    with TestClient(create_app(impatient, service=service_of(server))) as http:
        # An image no test sent before, so the service's cache cannot answer it at once; a
        # page of four lines, so that its reading outlasts the 1 ms by far even when a busy
        # machine fires the timer late (a one-line image once finished first: 200).
        unseen = encode(page_of(("ink quill", "Kew hello", "quill ink", "hello")))
        response = http.post("/v1/predict", json={"image": b64(unseen), "kind": "paragraph"})
    assert response.status_code == 504 and response.json()["error"]["code"] == "timeout"


def test_readiness_is_503_until_the_model_is_loaded(settings: ServingSettings) -> None:
    release = threading.Event()

    def slow_loader(config: ServingSettings):  # noqa: ANN202
        release.wait(30)
        return load_service(config, logger=None, feedback=None)

    from dataclasses import replace

    quiet = replace(settings, monitoring_url="off")
    with TestClient(create_app(quiet, loader=slow_loader)) as http:
        assert http.get("/healthz").status_code == 200
        waiting = http.get("/readyz")
        assert waiting.status_code == 503 and waiting.json()["error"]["code"] == "model_not_ready"
        refused = http.post("/v1/predict", json={"image": b64(encode(render_line("ink")))})
        assert refused.status_code == 503
        release.set()
        for _ in range(600):
            if http.get("/readyz").status_code == 200:
                break
            threading.Event().wait(0.1)
        assert http.get("/readyz").status_code == 200


def test_shadow_model_answers_are_stored_but_never_returned(
    smoke_model: Path, tmp_path: Path
) -> None:
    settings = monitored_settings(smoke_model, tmp_path, shadow_model_dir=smoke_model)
    with ApiServer(settings) as server:
        current = service_of(server).recognizer  # the shadow model is a hook beside it
        response = httpx.post(
            f"{server.url}/v1/predict", json={"image": b64(encode(render_line("Kew")))}, timeout=60
        )
    answer = response.json()
    assert response.status_code == 200 and answer["text"] == "Kew"
    assert answer["model_version"] == current.model_version
    assert set(answer) == {
        "text", "confidence", "lines", "kind", "note", "page", "language", "model_version",
        "timings_ms",
        "latency_ms", "request_id", "feedback_token", "cached",
    }  # fmt: skip
    store = stored(settings)
    [shadow] = store.shadow_predictions()
    assert shadow.request_id == answer["request_id"]
    assert (shadow.text, shadow.disagreement) == ("Kew", 0.0)
    assert shadow.current_model_version == answer["model_version"]
    assert store.get_prediction(answer["request_id"]) is not None
