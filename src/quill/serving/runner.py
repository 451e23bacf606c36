"""Run the REST API in a background thread of this process (``quill up``, tests, benchmarks).

One process holds the model once; the web app in the same process calls it over real HTTP,
exactly as it would call a remote deployment.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

from quill.serving.settings import ServingSettings

STARTUP_TIMEOUT_S = 120.0


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

        from quill.serving.api import create_app

        self.app = create_app(settings, **app_kwargs)  # type: ignore[arg-type]
        config = uvicorn.Config(self.app, host=host, port=port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.host = host
        self.thread = threading.Thread(target=self.server.run, name="quill-api", daemon=True)

    @property
    def port(self) -> int:
        sockets = self.server.servers[0].sockets
        return int(sockets[0].getsockname()[1])

    @property
    def service(self):  # noqa: ANN201 - the PredictionService, None until loaded
        return self.app.state.quill["service"]

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
