"""``POST /v1/predict/batch`` over real HTTP on 127.0.0.1, with the smoke model and a real
SQLite store: several images in one request, each answered (or refused) on its own."""

from __future__ import annotations

import io

import httpx
from PIL import Image, ImageDraw

from quill.serving.runner import ApiServer
from quill.serving.settings import ServingSettings
from quill.staging.parity import render_line

from .conftest import stored
from .test_api import b64, encode

MAX_BATCH = 6
SERVING_OVERRIDES = {"max_batch_images": MAX_BATCH}


def thin_rule() -> bytes:
    """A page that decodes, but whose one line, once cut out, is 284 times wider than high:
    it fails while being read, not while being decoded."""
    page = Image.new("L", (2000, 40), 255)
    ImageDraw.Draw(page).rectangle((10, 18, 1990, 21), fill=0)
    buffer = io.BytesIO()
    page.save(buffer, format="PNG")
    return buffer.getvalue()


def test_each_image_gets_its_answer_in_order_and_a_bad_one_only_its_error(
    client: httpx.Client, server: ApiServer, settings: ServingSettings
) -> None:
    images = [
        b64(encode(render_line("hello"))),
        "not base64!",
        b64(encode(render_line("quill"))),
        b64(b"GIF89a but nothing after it"),
        b64(encode(render_line("Kew"))),
    ]
    response = client.post("/v1/predict/batch", json={"images": images, "kind": "line"})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    texts = [(result["prediction"] or {}).get("text") for result in results]
    assert texts == ["hello", None, "quill", None, "Kew"]
    assert (
        results[1]["error"]["code"] == "bad_base64"
        and "images[1]" in results[1]["error"]["message"]
    )
    assert results[3]["error"]["code"] in {"not_an_image", "image_corrupt"}
    answers = [result["prediction"] for result in results if result["prediction"]]
    assert len({answer["request_id"] for answer in answers}) == 3
    flagged = client.post(
        "/v1/feedback",
        json={
            "request_id": answers[1]["request_id"],
            "feedback_token": answers[1]["feedback_token"],
            "flag": "incorrect",
        },
    )
    assert flagged.status_code == 200, flagged.text
    server.service.logger.flush()
    store = stored(settings)
    records = [store.get_prediction(answer["request_id"]) for answer in answers]
    assert [record.text for record in records] == ["hello", "quill", "Kew"]
    assert records[1].flag == "incorrect" and records[0].flag is None


def test_a_multipart_batch_repeats_the_image_field(client: httpx.Client) -> None:
    files = [
        ("image", ("a.png", encode(render_line("ink")), "image/png")),
        ("image", ("b.jpg", encode(render_line("Kew"), "JPEG"), "image/jpeg")),
        ("file", ("c.png", encode(render_line("quill")), "image/png")),
    ]
    response = client.post("/v1/predict/batch", files=files, data={"kind": "line"})
    assert response.status_code == 200, response.text
    assert [r["prediction"]["text"] for r in response.json()["results"]] == ["ink", "Kew", "quill"]
    # a text field that is not base64 is that image's error, named by its place in the batch
    fields = [("image", (None, "not base64!")), files[0]]
    response = client.post("/v1/predict/batch", files=fields, data={"kind": "line"})
    assert response.status_code == 200, response.text
    first, second = response.json()["results"]
    assert first["error"]["code"] == "bad_base64" and "'image[0]'" in first["error"]["message"]
    assert second["prediction"]["text"] == "ink"


def test_a_multipart_batch_is_answered_in_the_order_sent_across_both_fields(
    client: httpx.Client,
) -> None:
    """``file`` then ``image``: the answers follow the upload, not the list of field names."""
    files = [
        ("file", ("a.png", encode(render_line("quill")), "image/png")),
        ("image", ("b.png", encode(render_line("ink")), "image/png")),
    ]
    response = client.post("/v1/predict/batch", files=files, data={"kind": "line"})
    assert response.status_code == 200, response.text
    assert [r["prediction"]["text"] for r in response.json()["results"]] == ["quill", "ink"]


def test_an_empty_image_in_a_batch_is_said_to_be_empty(client: httpx.Client) -> None:
    images = [b64(encode(render_line("hello"))), ""]
    response = client.post("/v1/predict/batch", json={"images": images, "kind": "line"})
    assert response.status_code == 200, response.text
    answered, empty = response.json()["results"]
    assert answered["prediction"]["text"] == "hello"
    assert empty == {
        "prediction": None,
        "error": {"code": "image_empty", "message": "field 'images[1]' is empty"},
    }


def test_an_image_that_fails_while_being_read_costs_the_others_nothing(
    client: httpx.Client,
) -> None:
    alone = client.post("/v1/predict", json={"image": b64(thin_rule()), "kind": "paragraph"})
    assert alone.status_code == 422 and alone.json()["error"]["code"] == "image_bad_aspect"
    images = [b64(encode(render_line("hello"))), b64(thin_rule()), b64(encode(render_line("ink")))]
    response = client.post("/v1/predict/batch", json={"images": images, "kind": "paragraph"})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[1] == {"prediction": None, "error": alone.json()["error"]}
    assert [results[0]["prediction"]["text"], results[2]["prediction"]["text"]] == ["hello", "ink"]


def test_a_batch_that_cannot_be_read_at_all_is_refused_whole(client: httpx.Client) -> None:
    line = b64(encode(render_line("ink")))
    cases = {
        "no images": ({"json": {"images": []}}, 400, "missing_image"),
        "too many": ({"json": {"images": [line] * (MAX_BATCH + 1)}}, 422, "too_many_images"),
        "not a list": ({"json": {"images": line}}, 422, "invalid_field"),
        "bad kind": ({"json": {"images": [line], "kind": "poem"}}, 422, "invalid_field"),
        "text body": ({"content": b"ink", "headers": {"content-type": "text/plain"}}, 415, None),
        "multipart without boundary": (
            {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}},
            400,
            "invalid_multipart",
        ),
    }
    for name, (request, status, code) in cases.items():
        response = client.post("/v1/predict/batch", **request)
        assert response.status_code == status, (name, response.text)
        assert response.json()["error"]["code"] == (code or "unsupported_media_type"), name
    assert client.post("/v1/predict/batch", json={"images": [line]}).status_code == 200
