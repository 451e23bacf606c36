"""The REST API: ``POST /v1/predict``, ``POST /v1/feedback``, health, readiness, metrics.

A thin FastAPI adapter over :class:`~quill.serving.service.PredictionService`. The model is
loaded when the app starts (``/readyz`` answers 503 until then), recognition runs in worker
threads under a concurrency limit and a timeout, every error is JSON with a stable code, and
Prometheus metrics live in a registry of their own (one per app, so tests can build many).

Run it with ``quill serve`` or any ASGI server:
``uvicorn --factory quill.serving.api:app_from_env``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from quill.serving.errors import ServingError, status_code_name
from quill.serving.metrics import ApiMetrics
from quill.serving.service import (
    FeedbackStore,
    PredictionLogger,
    PredictionService,
    decode_image_field,
    load_service,
)
from quill.serving.settings import ServingSettings

log = logging.getLogger(__name__)

#: Form fields accepted for a multipart upload (``image`` first, ``file`` as curl users type).
UPLOAD_FIELDS = ("image", "file")


class PredictRequest(BaseModel):
    """JSON body of ``/v1/predict`` (the reference system's contract)."""

    image: str = Field(description="The image as base64 or a data URL (data:image/png;base64,...)")
    kind: str = Field("auto", description="auto, line or paragraph")


class LineOut(BaseModel):
    text: str
    confidence: float
    box: list[int] = Field(description="left, top, right, bottom in input pixels")


class PredictResponse(BaseModel):
    text: str
    confidence: float = Field(description="Geometric mean of per-frame probabilities, 0-1")
    lines: list[LineOut]
    kind: str
    model_version: str
    latency_ms: float
    request_id: str = Field(description="Quote it in /v1/feedback")
    cached: bool
    timings_ms: dict[str, float]


class FeedbackRequest(BaseModel):
    request_id: str
    flag: str | None = Field(None, description="incorrect, offensive, other, or null")
    comment: str | None = None
    correction: str | None = Field(None, description="The text the image really shows")


class ErrorOut(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorOut


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 413, 415, 422, 503, 504)
}


def create_app(
    settings: ServingSettings | None = None,
    service: PredictionService | None = None,
    logger: PredictionLogger | None = None,
    feedback: FeedbackStore | None = None,
    loader: Callable[[ServingSettings], PredictionService] | None = None,
) -> FastAPI:
    """The API app. Pass ``service`` to serve an already loaded model; otherwise the model
    in ``settings.model_dir`` is loaded at startup with the monitoring store from settings
    (``logger``/``feedback`` override it)."""
    settings = settings or ServingSettings.from_env()
    metrics = ApiMetrics()
    state: dict[str, Any] = {"service": service}
    limiter = asyncio.Semaphore(max(1, settings.max_concurrency))

    def default_loader(config: ServingSettings) -> PredictionService:
        return load_service(config, logger, feedback)

    async def load() -> None:
        try:
            service = await run_in_threadpool(loader or default_loader, settings)
        except Exception as exc:  # noqa: BLE001 - reported by /readyz and the log
            log.exception("the model could not be loaded")
            state["load_error"] = f"the model could not be loaded: {exc}"
            return
        state["service"] = service
        metrics.model_info(service.recognizer.describe())
        log.info("model loaded: %s", service.recognizer.describe())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Load in the background: /healthz answers at once, /readyz once the model is in.
        loading = asyncio.create_task(load()) if state["service"] is None else None
        if loading is None:
            metrics.model_info(state["service"].recognizer.describe())
        yield
        if loading is not None:
            await loading  # the app loaded the service, so it flushes and closes it
            if state["service"] is not None:
                await run_in_threadpool(state["service"].close)

    app = FastAPI(
        title="Quill handwriting recognition API",
        version="1",
        description="Send an image of handwriting, get its text back.",
        lifespan=lifespan,
    )

    app.state.quill = state  # the loaded service, for embedding code and tests

    def ready_service() -> PredictionService:
        if state["service"] is None:
            message = state.get("load_error") or "the model is still loading; retry shortly"
            raise ServingError("model_not_ready", message)
        return state["service"]

    @app.middleware("http")
    async def limit_and_measure(request: Request, call_next: Callable) -> Response:
        start = time.perf_counter()
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > settings.max_body_bytes:
            response: Response = _error_response(_too_large(settings))
        else:
            response = await call_next(request)
        metrics.observe(request.url.path, request.method, response.status_code, start)
        return response

    @app.exception_handler(ServingError)
    async def serving_error(_: Request, exc: ServingError) -> JSONResponse:
        metrics.error(exc.code)
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        error = ServingError("invalid_field", f"{where or 'body'}: {first.get('msg', 'invalid')}")
        metrics.error(error.code)
        return _error_response(error)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = status_code_name(exc.status_code)
        metrics.error(code)
        return _error_response(ServingError(code, str(exc.detail), exc.status_code))

    @app.exception_handler(Exception)
    async def unexpected_error(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        metrics.error("internal_error")
        return _error_response(
            ServingError("internal_error", "the server failed to answer; the error is logged")
        )

    @app.post(
        "/v1/predict",
        response_model=PredictResponse,
        responses=ERROR_RESPONSES,
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/json": {"schema": PredictRequest.model_json_schema()},
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "image": {"type": "string", "format": "binary"},
                                "kind": {"type": "string", "default": "auto"},
                            },
                            "required": ["image"],
                        }
                    },
                },
                "required": True,
            }
        },
    )
    async def predict(request: Request) -> dict[str, Any]:
        """Recognise the handwriting in one image: JSON ``{"image": base64}`` or a multipart
        upload (field ``image`` or ``file``)."""
        service = ready_service()
        body = await _read_body(request, settings)
        image, kind = await _parse_predict(request, body)
        async with limiter:
            try:
                answer = await asyncio.wait_for(
                    run_in_threadpool(service.predict_bytes, image, "api", kind),
                    timeout=settings.timeout_s,
                )
            except TimeoutError as exc:
                raise ServingError(
                    "timeout", f"recognition took longer than {settings.timeout_s:g} s"
                ) from exc
        metrics.prediction(answer)
        return answer

    @app.post("/v1/feedback", responses=ERROR_RESPONSES)
    async def feedback_endpoint(payload: FeedbackRequest) -> dict[str, Any]:
        """Flag an answer (incorrect / offensive / other) and optionally give the right text."""
        service = ready_service()
        await run_in_threadpool(
            service.add_feedback,
            payload.request_id,
            payload.flag,
            payload.comment,
            payload.correction,
        )
        metrics.feedback(payload.flag)
        return {"status": "stored", "request_id": payload.request_id}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers (the model may still be loading)."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"model": ErrorResponse}})
    async def readyz() -> dict[str, Any]:
        """Readiness: the model is loaded and requests will be answered."""
        return {"status": "ready", "model": ready_service().recognizer.describe()}

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        """Prometheus metrics of this process."""
        payload, content_type = metrics.render()
        return Response(payload, media_type=content_type)

    return app


def app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory`` and multi-worker serving (settings from QUILL_*)."""
    return create_app(ServingSettings.from_env())


def _too_large(settings: ServingSettings) -> ServingError:
    return ServingError(
        "request_too_large",
        f"the request body is larger than the limit of {settings.max_body_bytes:,} bytes",
    )


def _error_response(error: ServingError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


async def _read_body(request: Request, settings: ServingSettings) -> bytes:
    """The whole body, stopping as soon as it passes the limit (chunked uploads too)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > settings.max_body_bytes:
            raise _too_large(settings)
    if not body:
        raise ServingError("empty_body", "the request body is empty; send an image")
    return bytes(body)


async def _parse_predict(request: Request, body: bytes) -> tuple[bytes, str]:
    """(image bytes, kind) from a JSON or multipart body."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        import json

        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ServingError("invalid_json", f"the body is not valid JSON: {exc}") from exc
        if not isinstance(payload, dict):
            raise ServingError("invalid_json", "the JSON body must be an object with an 'image'")
        return decode_image_field(payload.get("image")), str(payload.get("kind", "auto"))
    if content_type == "multipart/form-data":
        return await _parse_multipart(request, body)
    raise ServingError(
        "unsupported_media_type",
        f"content type {content_type or 'missing'!r} is not supported; send application/json "
        '{"image": "<base64>"} or a multipart/form-data upload with an "image" file',
    )


async def _parse_multipart(request: Request, body: bytes) -> tuple[bytes, str]:
    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form()
    except Exception as exc:  # noqa: BLE001 - the multipart parser raises several types
        raise ServingError("invalid_field", f"the multipart body cannot be parsed: {exc}") from exc
    kind = str(form.get("kind") or "auto")
    for name in UPLOAD_FIELDS:
        item = form.get(name)
        if item is None:
            continue
        if isinstance(item, str):
            return decode_image_field(item, name), kind
        return await item.read(), kind
    raise ServingError(
        "missing_image", f"the multipart upload has no {' or '.join(UPLOAD_FIELDS)} field"
    )
