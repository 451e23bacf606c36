"""The REST API: ``POST /v1/predict`` (and ``/v1/predict/batch``), ``POST /v1/feedback``,
health, readiness, metrics.

A thin FastAPI adapter over :class:`~quill.serving.service.PredictionService`. The model is
loaded when the app starts (``/readyz`` answers 503 until then), recognition runs in a
bounded thread pool under a timeout (:mod:`quill.serving.recognitions`), every error is
JSON with a stable code, and Prometheus metrics live in a registry of their own (one per
app, so tests can build many).

How it is built: one ``APIRouter`` per concern (:data:`predict_router`,
:data:`feedback_router`, :data:`health_router` and :data:`metrics_router`), whose routes
take what they need as dependencies (``Depends``): the app's :class:`ApiState` (kept on
``app.state.quill``), the loaded service, the API key check. :func:`create_app` builds the
state, the lifespan that loads the model, the guard and the error handlers, and includes the
routers.

What guards it (see docs/serving.md, "Deployment stance"):

- a pure-ASGI guard in front of every route: the optional API key (``X-API-Key``) and the
  body limit, counted on the bytes received (chunked uploads too); the protected routers
  also declare the key as a dependency, which documents it in the OpenAPI schema;
- each answer carries a ``feedback_token`` (an HMAC of its request id): ``/v1/feedback``
  needs it, so only the client that got a prediction can flag it;
- at most ``max_concurrency`` recognitions run and ``max_queue`` wait; a request over the
  timeout answers 504 at once, its recognition is not logged as a prediction, and its thread
  stays counted until the work ends, so timeouts cannot pile up threads (503 instead).

Request bodies are read and parsed by :mod:`quill.serving.bodies` (shared with the Lambda
handler). Run it with ``quill serve`` or any ASGI server:
``uvicorn --factory quill.serving.api:app_from_env``.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import importlib.util
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from quill.monitoring.records import Flag
from quill.serving.bodies import (
    RAW_BYTES_TYPE,
    UPLOAD_FIELDS,
    BodyTooLarge,
    invalid_json,
    parse_batch,
    parse_predict,
    read_body,
    require_json,
)
from quill.serving.errors import ServingError, status_code_name
from quill.serving.metrics import ApiMetrics
from quill.serving.recognitions import Recognitions
from quill.serving.service import (
    CLIENT_HEADER,
    MAX_COMMENT_CHARS,
    MAX_CORRECTION_CHARS,
    FeedbackStore,
    PredictionLogger,
    PredictionService,
    build_monitoring,
    client_label,
    load_service,
)
from quill.serving.settings import FeedbackTokens, ServingSettings

log = logging.getLogger(__name__)

#: Paths answered without the API key (when one is set): probes and the documentation.
OPEN_PATHS = ("/healthz", "/readyz", "/docs", "/openapi.json")
#: Where the Swagger UI assets are served from (shipped by ``fastapi-offline``).
DOCS_STATIC = "/docs-static"
#: Seconds /v1/feedback waits for the monitoring queue when the prediction is not stored yet.
FEEDBACK_FLUSH_WAIT_S = 5.0

ASGIApp = Callable[..., Awaitable[None]]
Scope = MutableMapping[str, Any]
Loader = Callable[[ServingSettings], "PredictionService"]


class PredictRequest(BaseModel):
    """JSON body of ``/v1/predict`` (the reference system's contract)."""

    image: str = Field(description="The image as base64 or a data URL (data:image/png;base64,...)")
    kind: str = Field("auto", description="auto, line or paragraph")


class ErrorOut(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorOut


class PredictBatchRequest(BaseModel):
    """JSON body of ``/v1/predict/batch``: several images read in one call."""

    images: list[str] = Field(
        description="The images, each as base64 or a data URL, answered in this order"
    )
    kind: str = Field("auto", description="auto, line or paragraph (the same for every image)")


class LineOut(BaseModel):
    text: str
    confidence: float
    box: list[int] = Field(description="left, top, right, bottom in input pixels")
    margin: bool = Field(
        False, description="A note in the margin beside the main text (read after it)"
    )


class PageOut(BaseModel):
    """What line segmentation found on the page (absent when the image was read as one
    line)."""

    rotation: int = Field(
        description="Degrees the image was turned counter-clockwise to read it: 0, 90, 180, 270"
    )
    skew: float = Field(description="Degrees the page was straightened by")
    paper: list[int] | None = Field(
        description="The paper's box (left, top, right, bottom) when a background around it "
        "(a desk) was cut away"
    )
    columns: int = Field(description="Text columns side by side")
    notes: list[str] = Field(description="What was found, in words (e.g. why no text was found)")


class PredictResponse(BaseModel):
    text: str
    confidence: float = Field(description="Geometric mean of per-frame probabilities, 0-1")
    lines: list[LineOut]
    kind: str
    note: str | None = Field(
        None, description="Why the text did not come from the model (e.g. a blank image)"
    )
    page: PageOut | None = Field(None, description="Line segmentation's findings on a page")
    language: str | None = Field(
        None,
        description="The other language whose language model read the image's lines (a model "
        "can read more than one: quill lm language); null when its main one did",
    )
    model_version: str
    latency_ms: float
    request_id: str = Field(description="Quote it in /v1/feedback")
    feedback_token: str = Field(
        description="Proof that you got this answer: send it with request_id to /v1/feedback "
        "(only the client holding it can flag this prediction)"
    )
    cached: bool
    timings_ms: dict[str, float]


class BatchItemOut(BaseModel):
    """One image's answer in a batch, or why it has none (the other images are answered)."""

    prediction: PredictResponse | None = None
    error: ErrorOut | None = None


class PredictBatchResponse(BaseModel):
    results: list[BatchItemOut] = Field(description="One per image, in the order sent")


class FeedbackRequest(BaseModel):
    """A flag, comment and/or correction of one answer (at least one of the three)."""

    request_id: str = Field(max_length=128, description="request_id of the answer")
    feedback_token: str = Field(
        max_length=256, description="feedback_token of the same answer (403 if it does not match)"
    )
    flag: Flag | None = Field(None, description="incorrect, offensive, other, or null")
    comment: str | None = Field(None, max_length=MAX_COMMENT_CHARS)
    correction: str | None = Field(
        None, max_length=MAX_CORRECTION_CHARS, description="The text the image really shows"
    )


class FeedbackResponse(BaseModel):
    status: Literal["stored"]
    request_id: str


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse} for status in statuses}


# ---- the app's state and the routes' dependencies ---------------------------------------


@dataclass
class ApiState:
    """What the routes of one app share, on ``app.state.quill`` (:func:`api_state`)."""

    settings: ServingSettings
    metrics: ApiMetrics
    recognitions: Recognitions
    feedback_tokens: FeedbackTokens
    #: Loads the service at startup when none was given (in a worker thread).
    loader: Loader
    #: None until the model is loaded (or when it could not be: see ``load_error``).
    service: PredictionService | None = None
    load_error: str | None = None

    def ready_service(self) -> PredictionService:
        """The loaded service; ServingError ``model_not_ready`` (503) until then."""
        if self.service is None:
            message = self.load_error or "the model is still loading; retry shortly"
            raise ServingError("model_not_ready", message)
        return self.service


def api_state(app: Any) -> ApiState:
    """The :class:`ApiState` of an app made by :func:`create_app`."""
    return cast(ApiState, app.state.quill)


def get_state(request: Request) -> ApiState:
    return api_state(request.app)


State = Annotated[ApiState, Depends(get_state)]


def get_settings(state: State) -> ServingSettings:
    return state.settings


def ready_service(state: State) -> PredictionService:
    return state.ready_service()


Settings = Annotated[ServingSettings, Depends(get_settings)]
ReadyService = Annotated[PredictionService, Depends(ready_service)]

#: The key's header, as the OpenAPI schema declares it (Swagger UI's Authorize button).
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", scheme_name="ApiKey", auto_error=False)


def require_api_key(
    request: Request, settings: Settings, _: Annotated[str | None, Security(API_KEY_HEADER)]
) -> None:
    """The routers' API key check (the guard makes the same check before any body is read,
    on every path; this one states it in each protected route and in the schema)."""
    headers = {name.lower(): value for name, value in request.scope.get("headers", [])}
    error = api_key_error(settings.api_key, headers)
    if error is not None:
        raise error


def api_key_error(api_key: str | None, headers: Mapping[bytes, bytes]) -> ServingError | None:
    """Why a request with these (lower-cased) headers may not pass, or None: the key in
    ``X-API-Key`` or as an ``Authorization: Bearer`` token (what Prometheus sends)."""
    if not api_key:
        return None
    given = headers.get(b"x-api-key")
    if given is None:
        scheme, _, credentials = headers.get(b"authorization", b"").partition(b" ")
        given = credentials.strip() if scheme.lower() == b"bearer" else None
    if not given:
        return ServingError(
            "missing_api_key", "this server needs an API key: send it in the X-API-Key header"
        )
    if not hmac.compare_digest(given, api_key.encode()):
        return ServingError("invalid_api_key", "the X-API-Key header is not the server's key")
    return None


# ---- routes -----------------------------------------------------------------------------

predict_router = APIRouter()
feedback_router = APIRouter()
health_router = APIRouter()  # the probes: never behind the API key
metrics_router = APIRouter()


#: An uploaded file in an OpenAPI schema.
FILE_SCHEMA = {"type": "string", "format": "binary"}


def _image_body(
    json_model: type[BaseModel], image: dict[str, Any], raw: bool = False
) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads its body itself: JSON as
    ``json_model``, a multipart upload whose ``image`` field is ``image``, and with ``raw``
    the image's own bytes (:data:`quill.serving.bodies.RAW_IMAGE_TYPES`)."""
    upload = {
        "type": "object",
        "properties": {"image": image, "kind": {"type": "string", "default": "auto"}},
        "required": ["image"],
    }
    content: dict[str, Any] = {
        "application/json": {"schema": json_model.model_json_schema()},
        "multipart/form-data": {"schema": upload},
    }
    if raw:
        content |= {media: {"schema": FILE_SCHEMA} for media in ("image/*", RAW_BYTES_TYPE)}
    return {"requestBody": {"content": content, "required": True}}


@predict_router.post(
    "/v1/predict",
    response_model=PredictResponse,
    responses=_errors(400, 401, 413, 415, 422, 503, 504),
    openapi_extra=_image_body(PredictRequest, FILE_SCHEMA, raw=True),
)
async def predict(request: Request, service: ReadyService, state: State) -> dict[str, Any]:
    """Recognise the handwriting in one image: JSON ``{"image": base64}``, a multipart
    upload (field ``image`` or ``file``, once: several images go to ``/v1/predict/batch``),
    or the image's own bytes as ``image/*`` or ``application/octet-stream`` (``?kind=line``
    in the query string). Keep ``request_id`` and ``feedback_token`` to flag the answer
    later."""
    body = await read_body(request, state.settings.max_body_bytes)
    image, kind = await parse_predict(request, body)
    client = client_label("api", request.headers.get(CLIENT_HEADER))  # "bench": load tests
    answer = await state.recognitions.run(service, image, kind, client)
    answer["feedback_token"] = state.feedback_tokens.issue(answer["request_id"])
    state.metrics.prediction(answer)
    return answer


@predict_router.post(
    "/v1/predict/batch",
    response_model=PredictBatchResponse,
    responses=_errors(400, 401, 413, 415, 422, 503, 504),
    openapi_extra=_image_body(PredictBatchRequest, {"type": "array", "items": FILE_SCHEMA}),
)
async def predict_batch(request: Request, service: ReadyService, state: State) -> dict[str, Any]:
    """Recognise several images in one request (the lines of a document, say): JSON
    ``{"images": [base64, ...]}`` or a multipart upload repeating the ``image`` field. They
    are read together, which costs the server less per image than a request each. Each image
    gets its own answer (``request_id``, ``feedback_token``) or its own error, in order."""
    settings = state.settings
    body = await read_body(request, settings.max_body_bytes)
    parsed, kind = await parse_batch(request, body)
    if not parsed:
        raise ServingError(
            "missing_image",
            'the batch holds no images: send JSON {"images": [base64, ...]} or a multipart '
            f"upload repeating a field named {' or '.join(UPLOAD_FIELDS)}",
        )
    if len(parsed) > settings.max_batch_images:
        raise ServingError(
            "too_many_images",
            f"the batch holds {len(parsed)} images; this server reads at most "
            f"{settings.max_batch_images} per request (QUILL_MAX_BATCH_IMAGES)",
        )
    images = [item for item in parsed if isinstance(item, bytes)]
    client = client_label("api", request.headers.get(CLIENT_HEADER))
    answers = iter(await state.recognitions.run_many(service, images, kind, client))
    results = []
    for item in parsed:
        answer = next(answers) if isinstance(item, bytes) else item
        if isinstance(answer, ServingError):
            state.metrics.error(answer.code)
            results.append(answer.body())
            continue
        answer["feedback_token"] = state.feedback_tokens.issue(answer["request_id"])
        state.metrics.prediction(answer)
        results.append({"prediction": answer})
    return {"results": results}


@feedback_router.post(
    "/v1/feedback",
    response_model=FeedbackResponse,
    responses=_errors(400, 401, 403, 404, 413, 422, 503),
)
async def feedback_endpoint(
    payload: FeedbackRequest, state: State, _: Annotated[None, Depends(require_json)]
) -> dict[str, Any]:
    """Flag an answer (incorrect / offensive / other), comment on it and/or give the
    right text. Needs the answer's ``request_id`` and ``feedback_token``; 404 if that
    prediction is not stored."""
    # The service is asked for here, not as a dependency: a body that fails validation is
    # answered 422 even while the model loads (dependencies run before body validation).
    service = state.ready_service()
    comment, correction = _text_or_none(payload.comment), _text_or_none(payload.correction)
    if payload.flag is None and comment is None and correction is None:
        raise ServingError(
            "empty_feedback", "feedback needs a flag, a comment or a correction (all empty)"
        )
    store = service.feedback_store
    if store is None:
        raise ServingError(
            "feedback_disabled", "this server has no monitoring store configured", 503
        )
    if not state.feedback_tokens.verify(payload.request_id, payload.feedback_token):
        raise ServingError(
            "invalid_feedback_token",
            "feedback_token does not match request_id: send the feedback_token that came "
            "with that prediction's answer",
        )
    stored = await run_in_threadpool(_prediction_stored, store, service.logger, payload.request_id)
    # a prediction still waiting in the monitoring queue (its store failing) was logged: its
    # feedback is kept beside it (a 404 "not logged" lost it, and said it never was)
    queued = service.logger is not None and service.logger.holds(payload.request_id)
    if not stored and not queued:
        raise ServingError(
            "unknown_request_id",
            f"no prediction {payload.request_id!r} is stored (not logged, or purged)",
        )
    await run_in_threadpool(
        service.add_feedback, payload.request_id, payload.flag, comment, correction
    )
    state.metrics.feedback(payload.flag)
    return {"status": "stored", "request_id": payload.request_id}


@health_router.head("/healthz", include_in_schema=False)  # for probes that send HEAD
@health_router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers (the model may still be loading)."""
    return {"status": "ok"}


@health_router.head("/readyz", include_in_schema=False)
@health_router.get("/readyz", responses=_errors(503))
async def readyz(service: ReadyService) -> dict[str, Any]:
    """Readiness: the model is loaded and requests will be answered; ``monitoring`` says
    whether the store takes the predictions (answers go on while it does not: they wait in
    the queue, which an operator had no way to see)."""
    ready: dict[str, Any] = {"status": "ready", "model": service.recognizer.describe()}
    if service.logger is not None:
        stats = service.logger.stats()
        ready["monitoring"] = {
            "healthy": stats["healthy"],
            "queued": stats["queued"],
            "dropped": stats["dropped"],
            "last_error": stats["last_error"],
        }
    return ready


@metrics_router.get("/metrics", responses=_errors(401))
async def metrics_endpoint(state: State) -> Response:
    """Prometheus metrics of this process."""
    payload, content_type = state.metrics.render()
    return Response(payload, media_type=content_type)


# ---- the app ----------------------------------------------------------------------------


def create_app(
    settings: ServingSettings | None = None,
    service: PredictionService | None = None,
    logger: PredictionLogger | None = None,
    feedback: FeedbackStore | None = None,
    loader: Loader | None = None,
) -> FastAPI:
    """The API app. Pass ``service`` to serve an already loaded model; otherwise the model
    in ``settings.model_dir`` is loaded at startup with the monitoring store from settings
    (``logger``/``feedback`` override it)."""
    settings = settings or ServingSettings.from_env()
    recognitions = Recognitions(settings)
    state = ApiState(
        settings=settings,
        metrics=ApiMetrics(),
        recognitions=recognitions,
        feedback_tokens=FeedbackTokens(settings.feedback_secret),
        loader=loader or functools.partial(_load_gated, recognitions, logger, feedback),
        service=service,
    )
    if service is not None:
        recognitions.guard_logging(service)
    app = FastAPI(
        title="Quill handwriting recognition API",
        version="1",
        description="Send an image of handwriting, get its text back. "
        + (
            "Every /v1 route and /metrics need the X-API-Key header (Authorize above)."
            if settings.api_key
            else "No API key is configured: serve on localhost or behind an authenticating proxy."
        ),
        lifespan=_lifespan,
        docs_url=None,  # served below from local assets: /docs works offline
        redoc_url=None,  # ReDoc loads its logo from a CDN
    )
    app.state.quill = state  # for the routes, embedding code and tests: api_state(app)
    app.add_middleware(Guard, settings=settings, metrics=state.metrics)
    app.exception_handler(ServingError)(_serving_error)
    app.exception_handler(RequestValidationError)(_validation_error)
    app.exception_handler(StarletteHTTPException)(_http_error)
    app.exception_handler(Exception)(_unexpected_error)
    keyed = [Depends(require_api_key)] if settings.api_key else []
    app.include_router(predict_router, dependencies=keyed)
    app.include_router(feedback_router, dependencies=keyed)
    app.include_router(health_router)
    app.include_router(metrics_router, dependencies=keyed)
    _add_offline_docs(app)
    return app


def app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory`` and multi-worker serving (settings from QUILL_*)."""
    return create_app(ServingSettings.from_env())


def _load_gated(
    recognitions: Recognitions,
    logger: PredictionLogger | None,
    feedback: FeedbackStore | None,
    settings: ServingSettings,
) -> PredictionService:
    """The default loader: the model of ``settings``, monitoring from settings unless
    ``logger``/``feedback`` are given, logging through ``recognitions``' gate."""
    if logger is None and feedback is None:
        logger, feedback = build_monitoring(settings)
    # The gate goes in before the service is built, so a shadow model logs through it too.
    gated = recognitions.gate(logger) if logger is not None else None
    return load_service(settings, gated, feedback)


async def _load(state: ApiState) -> None:
    try:
        service = await run_in_threadpool(state.loader, state.settings)
    except Exception as exc:  # noqa: BLE001 - reported by /readyz and the log
        log.exception("the model could not be loaded")
        state.load_error = f"the model could not be loaded: {exc}"
        return
    state.recognitions.guard_logging(service)
    state.service = service
    state.metrics.model_info(service.recognizer.describe())
    log.info("model loaded: %s", service.recognizer.describe())


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = api_state(app)
    # Load in the background: /healthz answers at once, /readyz once the model is in.
    loading = asyncio.create_task(_load(state)) if state.service is None else None
    if state.service is not None:
        state.metrics.model_info(state.service.recognizer.describe())
    yield
    state.recognitions.shutdown()
    if loading is not None:
        await loading  # the app loaded the service, so it flushes and closes it
        if state.service is not None:
            await run_in_threadpool(state.service.close)


# ---- errors: every one JSON with a stable code -------------------------------------------


async def _serving_error(request: Request, exc: ServingError) -> JSONResponse:
    api_state(request.app).metrics.error(exc.code)
    return _error_response(exc)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A body FastAPI validated against a route's model (``/v1/feedback``): broken JSON is
    ``invalid_json`` (400) as on the routes that parse their own body, anything else
    ``invalid_field`` (422) naming the field."""
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":
        # FastAPI keeps the decoder's message and position: rebuilt, they read as /v1/predict's
        position = first["loc"][-1]
        error = invalid_json(json.JSONDecodeError(first["ctx"]["error"], exc.body, position))
    else:
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        error = ServingError("invalid_field", f"{where or 'body'}: {first.get('msg', 'invalid')}")
    api_state(request.app).metrics.error(error.code)
    return _error_response(error)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """An HTTP error the framework raised itself (404, 405, ...). A JSON body that is not
    UTF-8 reaches here too (FastAPI's 400 "error parsing the body", caused by the decode
    error): it is ``invalid_json``, as on the routes that parse their own body."""
    if isinstance(exc.__cause__, UnicodeDecodeError):
        error = invalid_json(exc.__cause__)
    else:
        error = ServingError(status_code_name(exc.status_code), str(exc.detail), exc.status_code)
    api_state(request.app).metrics.error(error.code)
    response = _error_response(error)
    response.headers.update(exc.headers or {})  # e.g. a 405's Allow: the methods there are
    return response


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error")
    api_state(request.app).metrics.error("internal_error")
    return _error_response(
        ServingError("internal_error", "the server failed to answer; the error is logged")
    )


# ---- the guard: API key and body limit on every route ------------------------------------


class _HeadTooLarge(ServingError):
    def __init__(self, limit: int):
        super().__init__(
            "request_header_too_large",
            f"the request line and headers are larger than the limit of {limit:,} bytes",
        )


def _head_size(scope: Scope) -> int:
    """Bytes of a request's line and headers, as sent (near enough: separators counted)."""
    line = len(scope.get("method", "")) + len(scope.get("raw_path") or b"") + 12
    line += len(scope.get("query_string", b"")) + 1
    return line + sum(len(name) + len(value) + 4 for name, value in scope.get("headers", []))


class Guard:
    """Pure-ASGI middleware in front of every route: checks the API key (when one is set),
    refuses a declared ``Content-Length`` over the limit, counts the body bytes as they
    arrive (a chunked upload has no length to declare) and answers 413 as soon as they pass
    the limit, whatever the route does with its body. Also counts every answer in metrics.

    It also answers 431 to a request line and headers over their limit: the HTTP server's
    own check (``h11_max_incomplete_event_size``) only holds while the head is still
    arriving, and a head that arrives whole in one read (up to 256 KiB) passed it."""

    def __init__(self, app: ASGIApp, settings: ServingSettings, metrics: ApiMetrics):
        self.app = app
        self.limit = settings.max_body_bytes
        self.header_limit = settings.max_header_bytes
        self.api_key = settings.api_key
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path = _route_path(scope)
        status = {"code": 500, "sent": False}
        headers = {k.lower(): v for k, v in scope.get("headers", [])}

        async def answer(error: ServingError) -> None:
            self.metrics.error(error.code)
            await _error_response(error)(scope, receive, send_counted)

        async def send_counted(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["sent"] = message["status"], True
            await send(message)

        try:
            denied = self._check_key(path, headers)
            declared = headers.get(b"content-length", b"")
            if _head_size(scope) > self.header_limit:
                await answer(_HeadTooLarge(self.header_limit))
            elif denied is not None:
                await answer(denied)
            elif declared.isdigit() and int(declared) > self.limit:
                await answer(BodyTooLarge(self.limit))
            else:
                await self._call_counting(scope, receive, send_counted, answer)
        finally:
            self.metrics.observe(path, scope.get("method", ""), status["code"], start)

    def _check_key(self, path: str, headers: dict[bytes, bytes]) -> ServingError | None:
        if path in OPEN_PATHS or path.startswith(DOCS_STATIC + "/"):
            return None
        return api_key_error(self.api_key, headers)

    async def _call_counting(
        self,
        scope: Scope,
        receive: Callable,
        send: Callable,
        answer: Callable[[ServingError], Awaitable[None]],
    ) -> None:
        received = 0
        over = {"limit": False, "app_started": False}

        async def counted_receive() -> MutableMapping[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    over["limit"] = True
                    raise BodyTooLarge(self.limit)
            return message

        async def guarded_send(message: MutableMapping[str, Any]) -> None:
            # Once the body passed the limit, whatever the route answers (a parse error,
            # typically) is replaced by the 413 below.
            if over["limit"] and not over["app_started"]:
                return
            if message["type"] == "http.response.start":
                over["app_started"] = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not over["limit"]:
                raise
        if over["limit"] and not over["app_started"]:
            await answer(BodyTooLarge(self.limit))


def _route_path(scope: Scope) -> str:
    """The path below the app's root path (what the routes match)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


# ---- feedback ---------------------------------------------------------------------------


def _text_or_none(text: str | None) -> str | None:
    """
    >>> _text_or_none("  Kew  "), _text_or_none("   "), _text_or_none(None)
    ('Kew', None, None)
    """
    if text is None or not text.strip():
        return None
    return text.strip()


def _prediction_stored(
    store: FeedbackStore, logger: PredictionLogger | None, request_id: str
) -> bool:
    """Whether the store holds ``request_id``'s prediction, waiting for the monitoring
    queue once if not (a flag may come right after its answer, before the write)."""
    if store.get_prediction(request_id) is not None:
        return True
    if logger is None:
        return False
    logger.flush(FEEDBACK_FLUSH_WAIT_S)
    return store.get_prediction(request_id) is not None


# ---- docs, bodies, errors ---------------------------------------------------------------


def _docs_assets() -> Path:
    """The Swagger UI 5 files that ``fastapi-offline`` ships (found without importing it)."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("fastapi-offline is not installed (it ships the /docs assets)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def _add_offline_docs(app: FastAPI) -> None:
    """/docs (Swagger UI 5) from local assets: it renders with no network. (No /redoc: its
    page fetches a logo from a CDN, and one documentation page is enough.)"""
    app.mount(DOCS_STATIC, StaticFiles(directory=_docs_assets()), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - docs",
            swagger_js_url=f"{root}{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_STATIC}/favicon.png",
        )


def _error_response(error: ServingError) -> JSONResponse:
    headers = None
    if error.code in ("overloaded", "monitoring_unavailable"):
        headers = {"Retry-After": "1"}
    elif error.status == 401:
        headers = {"WWW-Authenticate": 'ApiKey header="X-API-Key"'}
    return JSONResponse(error.body(), status_code=error.status, headers=headers)
