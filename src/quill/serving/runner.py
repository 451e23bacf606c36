"""Run the REST API under uvicorn: the server options every entry point shares
(``quill serve``, ``quill up``, tests, benchmarks), and :class:`ApiServer`, the API in a
background thread of this process.

With ``ApiServer`` one process holds the model once; the web app in the same process calls
it over real HTTP, exactly as it would call a remote deployment.
"""

from __future__ import annotations

import json
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

import h11
from uvicorn.protocols.http.h11_impl import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE, H11Protocol

from quill.serving.errors import error_body
from quill.serving.settings import ServingSettings

if TYPE_CHECKING:
    from quill.serving.api import ApiState
    from quill.serving.service import PredictionService

STARTUP_TIMEOUT_S = 120.0
#: The HTTP protocol of every Quill server, as uvicorn's ``http`` option (an import string,
#: so that ``--workers`` processes find it too).
HTTP_PROTOCOL = "quill.serving.runner:JsonErrorH11Protocol"


def uvicorn_options(settings: ServingSettings) -> dict[str, Any]:
    """uvicorn options for the API: JSON answers to malformed HTTP and the header limit."""
    return {
        "http": HTTP_PROTOCOL,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "timeout_keep_alive": 5,
    }


class _RecordingConnection(h11.Connection):
    """An h11 connection that keeps the last protocol error (to answer it precisely)."""

    last_error: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.last_error = exc
            raise


class JsonErrorH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, answering requests it cannot parse in the API's JSON error
    format: 431 ``request_header_too_large`` for a request head over the limit (the
    ``h11_max_incomplete_event_size`` option), 400 ``bad_http_request`` otherwise. uvicorn
    itself answers these in plain text, before any application code runs."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.header_limit = (
            config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
        )
        self.conn = _RecordingConnection(h11.SERVER, self.header_limit)

    def send_400_response(self, msg: str) -> None:
        error = getattr(self.conn, "last_error", None)
        if error is not None and error.error_status_hint == 431:
            status, code = 431, "request_header_too_large"
            message = (
                f"the request line and headers are larger than the limit of "
                f"{self.header_limit:,} bytes"
            )
        else:
            status, code = 400, "bad_http_request"
            message = f"the request is not valid HTTP/1.1 ({error or msg})"
        body = json.dumps(error_body(code, message)).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=status, headers=headers),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()


class ApiServer:
    """A uvicorn server on ``host:port`` in a daemon thread; ``port=0`` picks a free port.

    Use as a context manager: entering waits until the model is loaded and the socket
    listens (``url`` is then valid); leaving shuts the server down and flushes monitoring.
    """

    def __init__(
        self,
        settings: ServingSettings,
        host: str = "127.0.0.1",
        port: int = 0,
        **app_kwargs: object,
    ):
        import uvicorn

        # lazy: the app (FastAPI, the model's runtime) only when a server is made; uvicorn's
        # worker processes import this module for JsonErrorH11Protocol alone
        from quill.serving.api import api_state, create_app

        self.app = create_app(settings, **app_kwargs)  # type: ignore[arg-type]
        self.state: ApiState = api_state(self.app)
        config = uvicorn.Config(
            self.app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="on",
            **uvicorn_options(settings),
        )
        self.server = uvicorn.Server(config)
        self.host = host
        self.thread = threading.Thread(target=self.server.run, name="quill-api", daemon=True)

    @property
    def port(self) -> int:
        sockets = self.server.servers[0].sockets
        return int(sockets[0].getsockname()[1])

    @property
    def service(self) -> PredictionService | None:
        """The app's service (None until the model is loaded)."""
        return self.state.service

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ApiServer:
        """Start serving and wait until ``/readyz`` says the model is loaded."""
        import httpx

        self.thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if not self.thread.is_alive():
                raise RuntimeError("the API server stopped during startup (see the log above)")
            if self.server.started:
                ready = httpx.get(f"{self.url}/readyz", timeout=10)
                if ready.status_code == 200:
                    return self
                if "could not be loaded" in ready.text:
                    self.stop()
                    raise RuntimeError(ready.json()["error"]["message"])
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the API was not ready within {STARTUP_TIMEOUT_S:.0f} s")
            time.sleep(0.1)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
