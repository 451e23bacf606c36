"""Serving configuration: defaults that suit a laptop, every value overridable by environment.

Environment variables are how containers, uvicorn workers (which re-import the app in each
process) and Lambda functions receive their configuration, so one ``from_env`` serves all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

from quill.inference import DEFAULT_MODEL_DIR
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
    #: Largest request body accepted, in bytes (a base64 image is 4/3 of the file).
    max_body_bytes: int = 10 * 1024 * 1024
    #: Largest image accepted, in pixels (checked from the header, before decoding).
    max_pixels: int = MAX_PIXELS
    #: Seconds one recognition may take before the request answers 504.
    timeout_s: float = 30.0
    #: Recognitions run at once per process; more wait (they would only share the cores).
    max_concurrency: int = 2
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

    @property
    def monitoring_enabled(self) -> bool:
        return self.monitoring_url not in ("", "off")

    @classmethod
    def from_env(
        cls, environ: dict[str, str] | None = None, **overrides: object
    ) -> ServingSettings:
        """Defaults, then ``QUILL_*`` variables, then ``overrides`` (e.g. CLI options).

        >>> ServingSettings.from_env({"QUILL_THREADS": "1", "QUILL_TIMEOUT_S": "2.5"}).timeout_s
        2.5
        """
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in fields(cls):
            raw = environ.get(ENV_PREFIX + field.name.upper())
            if raw is not None:
                values[field.name] = _convert(field.type, raw, field.name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values)

    def to_env(self) -> dict[str, str]:
        """The ``QUILL_*`` variables that reproduce these settings in another process."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {ENV_PREFIX + k.upper(): str(v) for k, v in values.items() if v is not None}


def _convert(kind: object, raw: str, name: str) -> object:
    kind = str(kind).removesuffix(" | None")
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
