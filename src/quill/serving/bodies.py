"""What a request's body holds: read within the size limit, then parsed (JSON, a multipart
upload, or an image's own bytes) into image bytes and a kind, with one error code per
mistake (:mod:`quill.serving.errors`).

The REST API's routes and the Lambda handler read bodies with these functions, so a body is
accepted or refused the same way wherever it is sent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request

from quill.serving.errors import ServingError
from quill.serving.service import decode_image_field, kind_field, load_json_body

#: Content types whose body is the image itself (``curl --data-binary @line.jpg``); the
#: Lambda handler reads them too, from a gateway's binary media types.
RAW_BYTES_TYPE = "application/octet-stream"
RAW_IMAGE_TYPES = ("image/", RAW_BYTES_TYPE)
#: The first bytes of the image formats people send, to name a mislabelled raw upload.
IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"RIFF", b"II*\x00", b"MM\x00*", b"BM")
#: Form fields accepted for a multipart upload (``image`` first, ``file`` as curl users type).
UPLOAD_FIELDS = ("image", "file")


class BodyTooLarge(ServingError):
    def __init__(self, limit: int):
        super().__init__(
            "request_too_large", f"the request body is larger than the limit of {limit:,} bytes"
        )


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, stopping as soon as it passes ``limit`` bytes (chunked uploads too)."""
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise BodyTooLarge(limit)
    except ClientDisconnect as exc:  # was an "unhandled error" 500 with a traceback in the log
        raise ServingError(
            "client_disconnected", "the client closed the connection before its upload ended"
        ) from exc
    if not body:
        raise ServingError("empty_body", "the request body is empty; send an image")
    return bytes(body)


async def parse_predict(request: Request, body: bytes) -> tuple[bytes, str]:
    """(image bytes, kind) from a JSON, multipart or raw image body; image bytes under
    another content type are refused as such (:func:`refuse_mislabelled_image`), as the
    Lambda handler refuses them."""
    content_type = content_type_of(request)
    if content_type.startswith(RAW_IMAGE_TYPES):
        return body, raw_image_kind(request.query_params)
    refuse_mislabelled_image(content_type, body)
    if content_type == "multipart/form-data":
        return await parse_multipart(request, body)
    payload = json_object(request, body, "an 'image'", raw=True)
    return decode_image_field(payload.get("image")), kind_field(payload)


def raw_image_kind(query: Mapping[str, Any]) -> str:
    """The ``kind`` of a raw image body, from the query string (``?kind=line``); absent or
    empty, ``auto`` (as a form's empty kind field). Which kinds exist is checked where the
    image is read."""
    return str(query.get("kind") or "auto")


async def parse_batch(request: Request, body: bytes) -> tuple[list[bytes | ServingError], str]:
    """(each image's bytes, or why its field is unusable; kind) from a JSON or multipart
    batch body."""
    if content_type_of(request) == "multipart/form-data":
        form = await _form(request, body)
        # an error names the field and the image's place in the batch, as images[i] does
        uploaded = [
            await _field_bytes(item, f"{name}[{index}]")
            for index, (name, item) in enumerate(_uploads(form))
        ]
        return uploaded, str(form.get("kind") or "auto")
    payload = json_object(request, body, "an 'images' list")
    images = payload.get("images")
    if not isinstance(images, list):
        raise ServingError("invalid_field", "'images' must be a list of base64 images")
    decoded = [_decoded_or_error(value, f"images[{index}]") for index, value in enumerate(images)]
    return decoded, kind_field(payload)


def _decoded_or_error(value: object, field: str) -> bytes | ServingError:
    try:
        return decode_image_field(value, field)
    except ServingError as exc:
        return exc


async def _field_bytes(item: Any, name: str) -> bytes | ServingError:
    """A multipart field's bytes: an uploaded file's, or a base64 text field decoded."""
    if isinstance(item, str):
        return _decoded_or_error(item, name)
    return cast(bytes, await item.read())


def content_type_of(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def require_json(request: Request) -> None:
    """A route whose body is a JSON object answers 415 to another declared type, as
    /v1/predict does (a dependency: it runs before FastAPI validates the body, which
    answered a form or text body 422 "Input should be a valid dictionary")."""
    content_type = content_type_of(request)
    if content_type != "application/json":
        raise ServingError(
            "unsupported_media_type",
            f"{_described(content_type)} is not supported; send application/json",
        )


def _described(content_type: str) -> str:
    """A request's content type as an error names it (it said "content type 'missing'").

    >>> _described(""), _described("text/plain")
    ('a body without a content type', "content type 'text/plain'")
    """
    return f"content type {content_type!r}" if content_type else "a body without a content type"


def json_object(request: Request, body: bytes, expected: str, raw: bool = False) -> dict[str, Any]:
    """The JSON object of a body; ServingError for another content type or bad JSON. ``raw``:
    the route also reads an image's own bytes, which the refusal then offers."""
    content_type = content_type_of(request)
    if content_type != "application/json":
        raw_offer = ", or the image's bytes as image/png, image/jpeg, ..." if raw else ""
        raise ServingError(
            "unsupported_media_type",
            f"{_described(content_type)} is not supported; send "
            f"application/json with {expected} (base64), a multipart/form-data upload with "
            f'an "image" file{raw_offer}',
        )
    try:
        payload = load_json_body(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise invalid_json(exc) from exc
    if not isinstance(payload, dict):
        raise ServingError("invalid_json", f"the JSON body must be an object with {expected}")
    return payload


def refuse_mislabelled_image(content_type: str, body: bytes) -> None:
    """An image's bytes sent to a route that reads them (``/v1/predict``, the Lambda handler)
    under another content type (JSON, multipart, or the form type that ``curl --data-binary``
    writes unless told) are refused with what to send instead, not read as bad JSON."""
    if body.startswith(IMAGE_MAGIC):
        raise ServingError(
            "unsupported_media_type",
            f"the body is image bytes but its content type is {content_type or 'missing'}: "
            "send it with its image type (image/png, image/jpeg, ...; curl: -H 'Content-Type: "
            "image/jpeg')",
        )


def invalid_json(exc: json.JSONDecodeError | UnicodeDecodeError) -> ServingError:
    """The error of a body that is not JSON, with where the decoder stopped (every route)."""
    return ServingError("invalid_json", f"the body is not valid JSON: {exc}")


def _content_type_params(request: Request) -> dict[str, str]:
    """The parameters of the Content-Type header (``boundary``, ``charset``), keys lower-cased.

    >>> from starlette.requests import Request
    >>> header = (b"content-type", b'multipart/form-data; Boundary="x-1"; charset=utf-8')
    >>> _content_type_params(Request({"type": "http", "headers": [header]}))
    {'boundary': 'x-1', 'charset': 'utf-8'}
    """
    _, *params = request.headers.get("content-type", "").split(";")
    pairs = (param.partition("=") for param in params)
    return {key.strip().lower(): value.strip().strip('"') for key, _, value in pairs}


async def _form(request: Request, body: bytes) -> Any:
    """The parsed multipart form of ``body`` (read already, so it is replayed). A body that
    cannot be split into fields is ``invalid_multipart`` (400): a malformed request, as
    broken JSON is ``invalid_json``, not a field with a wrong value."""
    if not _content_type_params(request).get("boundary"):
        raise ServingError(
            "invalid_multipart",
            "the multipart body has no boundary: its Content-Type must be "
            "'multipart/form-data; boundary=...', which HTTP clients write themselves "
            "(curl -F, a files= upload) when the header is not set by hand",
        )

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        return await Request(request.scope, replay).form()
    except Exception as exc:  # noqa: BLE001 - the multipart parser raises several types
        # Starlette reports the parser's own message as an HTTPException's detail
        reason = exc.detail if isinstance(exc, StarletteHTTPException) else exc
        raise ServingError(
            "invalid_multipart", f"the multipart body cannot be parsed: {reason}"
        ) from exc


def _uploads(form: Any) -> list[tuple[str, Any]]:
    """Every (field name, value) of the form's image fields, in the order sent.

    All of them, not ``form.get(name)``: that keeps one value of a repeated field and would
    drop the other images without a word. A file sent under another name beside them is
    refused, for the same reason (``images``, the JSON batch's key, was ignored); alone, it
    is an upload with no image (``missing_image``)."""
    uploads = [(name, item) for name, item in form.multi_items() if name in UPLOAD_FIELDS]
    strays = sorted(
        {name for name, item in form.multi_items() if not isinstance(item, str)}
        - set(UPLOAD_FIELDS)
    )
    if uploads and strays:
        raise ServingError(
            "invalid_field",
            f"the multipart upload has a file in field(s) {', '.join(strays)}, which are not "
            f"read: send each image in a field named {' or '.join(UPLOAD_FIELDS)}",
        )
    return uploads


async def parse_multipart(request: Request, body: bytes) -> tuple[bytes, str]:
    """(image bytes, kind) from a multipart upload of exactly one image: several are
    refused (``multiple_images``) rather than all but one answered as if they were one."""
    form = await _form(request, body)
    uploads = _uploads(form)
    if not uploads:
        raise ServingError(
            "missing_image", f"the multipart upload has no {' or '.join(UPLOAD_FIELDS)} field"
        )
    if len(uploads) > 1:
        fields = ", ".join(name for name, _ in uploads)
        raise ServingError(
            "multiple_images",
            f"the multipart upload holds {len(uploads)} images ({fields}): send one image per "
            "request to /v1/predict, or several to /v1/predict/batch",
        )
    name, item = uploads[0]
    image = await _field_bytes(item, name)
    if isinstance(image, ServingError):
        raise image
    return image, str(form.get("kind") or "auto")
