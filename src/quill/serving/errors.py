"""Errors every serving adapter returns: a stable code, a message, the right HTTP status.

The body is always ``{"error": {"code": ..., "message": ...}}``: clients branch on ``code``
(stable across releases), people read ``message``. Nothing else leaks out: an unexpected
exception becomes ``internal_error`` and its traceback goes to the server log only.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from quill.errors import QuillError
from quill.preprocess import ImageError

#: HTTP status for each stable error code. Image codes come from ``quill.preprocess``.
STATUS_BY_CODE: dict[str, int] = {
    # the request itself
    "empty_body": 400,
    "invalid_json": 400,
    "missing_image": 400,
    "too_many_images": 422,
    "bad_base64": 400,
    "invalid_field": 422,
    "unsupported_media_type": 415,
    "request_too_large": 413,
    "not_found": 404,
    "method_not_allowed": 405,
    "unknown_request_id": 404,
    "empty_feedback": 422,
    "invalid_feedback_token": 403,
    "missing_api_key": 401,
    "invalid_api_key": 401,
    "request_header_too_large": 431,
    "bad_http_request": 400,
    "multiple_images": 400,
    "invalid_multipart": 400,
    "unsupported_event": 400,
    "client_disconnected": 400,
    # the image (codes raised by quill.preprocess / quill.inference)
    "image_empty": 400,
    "not_an_image": 400,
    "image_corrupt": 400,
    "bad_array": 400,
    "image_not_found": 400,
    "image_unreadable": 400,
    "image_many_pages": 422,
    "url_fetch_failed": 400,
    "image_too_small": 422,
    "image_bad_aspect": 422,
    "image_too_large": 413,
    # the server
    "model_not_ready": 503,
    "feedback_disabled": 503,
    "monitoring_unavailable": 503,
    "timeout": 504,
    "overloaded": 503,
    "internal_error": 500,
    "backend_unreachable": 502,
    "backend_error": 502,
    "missing_request_id": 400,
}


class ServingError(QuillError):
    """An error to answer with; ``status`` defaults to the code's entry in STATUS_BY_CODE."""

    def __init__(self, code: str, message: str, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or STATUS_BY_CODE.get(code, 400)

    @classmethod
    def from_image_error(cls, error: ImageError) -> ServingError:
        return cls(error.code, str(error))

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message)


def error_body(code: str, message: str) -> dict[str, Any]:
    """
    >>> error_body("bad_base64", "the image field is not valid base64")
    {'error': {'code': 'bad_base64', 'message': 'the image field is not valid base64'}}
    """
    return {"error": {"code": code, "message": message}}


def status_code_name(status: int) -> str:
    """A code for an HTTP status raised by the framework itself (404, 405, ...).

    >>> status_code_name(405), status_code_name(418)
    ('method_not_allowed', 'im_a_teapot')
    """
    known = {
        404: "not_found",
        405: "method_not_allowed",
        413: "request_too_large",
        431: "request_header_too_large",
    }
    if status in known:
        return known[status]
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("'", "")
    except ValueError:
        return "http_error"
