"""Serving configuration: defaults that suit a laptop, every value overridable by environment.

Environment variables are how containers, uvicorn workers (which re-import the app in each
process) and Lambda functions receive their configuration, so one ``from_env`` serves all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from quill.inference import DEFAULT_MODEL_DIR
from quill.inference.recognizer import SEGMENTERS
from quill.preprocess import MAX_PIXELS

ENV_PREFIX = "QUILL_"


@dataclass(frozen=True)
class ServingSettings:
    """Each field ``x`` is read from ``QUILL_X`` (e.g. ``QUILL_MODEL_DIR``, ``QUILL_THREADS``)."""

    model_dir: Path = DEFAULT_MODEL_DIR
    #: Runtime: auto (the fastest measured at load), onnx, torchscript or eager.
    backend: str = "auto"
    #: Intra-op threads per worker process (0: the runtime's default, all cores).
    threads: int = 0
    #: How a page is cut into lines: ``trace`` (follows the ink, the default) or ``learned``
    #: (the line detector in models/line_detector); docs/models.md measures both.
    segmenter: str = "trace"
    #: Largest request body accepted, in bytes (a base64 image is 4/3 of the file); counted
    #: on the bytes received, so chunked uploads are cut off too, on every route.
    max_body_bytes: int = 10 * 1024 * 1024
    #: Largest request head (request line + headers) uvicorn buffers, in bytes; a larger one
    #: is answered 431 ``request_header_too_large``.
    max_header_bytes: int = 16 * 1024
    #: Largest image accepted, in pixels (checked from the header, before decoding).
    max_pixels: int = MAX_PIXELS
    #: Seconds one recognition may take, waiting included, before the request answers 504.
    timeout_s: float = 30.0
    #: Recognitions run at once per process; more wait (they would only share the cores).
    max_concurrency: int = 2
    #: Recognitions waiting for a free thread; beyond that a request answers 503
    #: ``overloaded`` at once. A timed-out recognition keeps its thread until it ends, so
    #: timeouts cannot pile up threads.
    max_queue: int = 16
    #: Images one ``/v1/predict/batch`` request may hold (read together, as one recognition).
    max_batch_images: int = 32
    #: Answers kept in the LRU cache keyed by (image hash, model version, kind); 0 disables.
    cache_size: int = 256
    #: Monitoring store (the same variables ``quill.monitoring`` reads): None uses its default
    #: (``monitoring/monitoring.db``), "" or "off" disables logging and feedback.
    monitoring_url: str | None = None
    #: Where the store keeps images (None: the store's default beside its database).
    monitoring_images: Path | None = None
    #: Shadow mode: a candidate staged model that reads the same requests unseen by callers;
    #: its answers and disagreement go to the monitoring store (None: no shadow model).
    shadow_model_dir: Path | None = None
    #: When set, ``/v1/*`` and ``/metrics`` need it in the ``X-API-Key`` header (or as
    #: ``Authorization: Bearer``); ``/healthz``, ``/readyz`` and ``/docs`` stay open.
    api_key: str | None = field(default=None, repr=False)
    #: Serve on a non-loopback interface without an API key (a proxy in front authenticates).
    allow_open: bool = False
    #: Key of the feedback tokens (HMAC of the request id). Unset: a random key per process
    #: (``quill serve`` shares one between its workers), so tokens die with a restart; set
    #: it to keep them valid across restarts and replicas.
    feedback_secret: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.segmenter not in SEGMENTERS:
            raise ValueError(
                f"segmenter must be one of {', '.join(SEGMENTERS)} "
                f"({ENV_PREFIX}SEGMENTER or --segmenter), got {self.segmenter!r}"
            )

    @property
    def monitoring_enabled(self) -> bool:
        return self.monitoring_url not in ("", "off")

    def exposure_problem(self, host: str) -> str | None:
        """Why serving on ``host`` with these settings is refused (one line), or None.

        >>> ServingSettings().exposure_problem("127.0.0.1") is None
        True
        >>> ServingSettings(api_key="k").exposure_problem("0.0.0.0") is None
        True
        >>> print(ServingSettings().exposure_problem("0.0.0.0"))  # doctest: +ELLIPSIS
        refusing to serve on 0.0.0.0 without an API key: set QUILL_API_KEY, or ...
        """
        if is_loopback(host) or self.api_key or self.allow_open:
            return None
        return (
            f"refusing to serve on {host} without an API key: set QUILL_API_KEY, or pass "
            "--allow-open (QUILL_ALLOW_OPEN=1) if a proxy in front authenticates callers"
        )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: object
    ) -> ServingSettings:
        """Defaults, then ``QUILL_*`` variables, then ``overrides`` (e.g. CLI options).

        >>> ServingSettings.from_env({"QUILL_THREADS": "1", "QUILL_TIMEOUT_S": "2.5"}).timeout_s
        2.5
        """
        env = os.environ if environ is None else environ
        # Any: each value was converted to its field's type (_convert) or is a CLI option's.
        values: dict[str, Any] = {}
        for item in fields(cls):
            raw = env.get(ENV_PREFIX + item.name.upper())
            if raw is not None:
                values[item.name] = _convert(item.type, raw, item.name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values)

    def to_env(self) -> dict[str, str]:
        """The ``QUILL_*`` variables that reproduce these settings in another process."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {ENV_PREFIX + k.upper(): str(v) for k, v in values.items() if v is not None}


def is_loopback(host: str) -> bool:
    """Whether ``host`` keeps a server on this machine.

    >>> [is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "10.0.0.2")]
    [True, True, True, False, False]
    """
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


class FeedbackTokens:
    """Feedback tokens: an HMAC-SHA256 of the request id under a server-side key.

    The token proves that the caller got that prediction's answer, without storing anything
    per request, so feedback sent a millisecond after the answer (its prediction still in
    the monitoring queue) is checked as surely as feedback sent a week later.

    >>> tokens = FeedbackTokens("key")
    >>> token = tokens.issue("abc")
    >>> tokens.verify("abc", token), tokens.verify("abd", token), tokens.verify("abc", "x")
    (True, False, False)
    """

    def __init__(self, secret: str | bytes | None = None):
        if secret is None:
            secret = os.urandom(32)
        self._key = secret.encode() if isinstance(secret, str) else secret

    def issue(self, request_id: str) -> str:
        digest = hmac.new(self._key, b"quill-feedback:" + request_id.encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(digest.digest()).decode("ascii").rstrip("=")

    def verify(self, request_id: str, token: str) -> bool:
        """Constant-time comparison of ``token`` with the token of ``request_id``."""
        return hmac.compare_digest(self.issue(request_id).encode(), token.encode("utf-8"))


def _convert(kind: object, raw: str, name: str) -> object:
    kind = str(kind).removesuffix(" | None")
    if kind == "bool":
        if raw.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if raw.strip().lower() in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a boolean (1/0)")
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a {kind}") from exc
    if kind == "Path":
        return Path(raw)
    return raw
