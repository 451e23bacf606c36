"""Monitoring settings from the versioned ``configs/monitoring.yaml``.

The file is the single place thresholds live, so an alert can always be traced to the rules
(and their ``version``) that raised it. Unknown keys are errors: a misspelt threshold must not
silently fall back to a default.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from quill.errors import QuillError

CONFIG_ENV = "QUILL_MONITORING_CONFIG"
DEFAULT_PATH = Path("configs/monitoring.yaml")
#: The shipped file, when running from a source checkout (src/quill/monitoring -> repo root).
CHECKOUT_PATH = Path(__file__).resolve().parents[3] / "configs" / "monitoring.yaml"
METRICS = ("wasserstein", "psi", "linf")
SLICE_KEYS = ("client", "model_version", "polarity", "size_bucket")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
#: The longest duration accepted: "now minus it" must stay a date (year 1 at the earliest).
MAX_DURATION = timedelta(days=365_000)


class SettingsError(QuillError, ValueError):
    """The monitoring config is malformed; the message names the file and key."""

    code = "monitoring_settings_invalid"


def parse_duration(text: str | int | float) -> timedelta:
    """``"7d"``, ``"24h"``, ``"30m"``, ``"90s"``, ``"2w"`` (a bare number is days).

    >>> parse_duration("36h")
    datetime.timedelta(days=1, seconds=43200)
    >>> parse_duration(2)
    datetime.timedelta(days=2)
    """
    if isinstance(text, int | float):
        amount, unit = float(text), "days"
    else:
        match = _DURATION.match(text)
        if not match:
            raise ValueError(f"not a duration: {text!r} (use e.g. 30m, 24h, 7d, 2w)")
        amount, unit = float(match.group(1)), _UNITS[match.group(2)]
    try:
        duration: timedelta | None = timedelta(**{unit: amount})
    except OverflowError:
        duration = None
    if duration is None or duration > MAX_DURATION:
        raise ValueError(f"duration too long: {text!r} (at most {MAX_DURATION.days}d)")
    return duration


@dataclass
class DriftSettings:
    default: dict[str, float] = field(
        default_factory=lambda: {"wasserstein": 0.5, "psi": 0.25, "linf": 0.3}
    )
    projections: dict[str, dict[str, float]] = field(default_factory=dict)
    ignore: list[str] = field(default_factory=list)

    def thresholds(self, projection: str) -> dict[str, float]:
        """The thresholds that apply to one projection (its own over the defaults)."""
        return {**self.default, **self.projections.get(projection, {})}


@dataclass
class MonitoringSettings:
    version: int | str = 1
    baseline: str = "default"
    window: timedelta = timedelta(days=1)
    step: timedelta = timedelta(days=1)
    min_samples: int = 30
    slices: list[str] = field(default_factory=lambda: list(SLICE_KEYS))
    size_buckets: dict[str, int] = field(
        default_factory=lambda: {"small": 100_000, "medium": 1_000_000}
    )
    drift: DriftSettings = field(default_factory=DriftSettings)
    feedback: dict[str, float] = field(
        default_factory=lambda: {
            "max_flag_rate": 0.2,
            "max_offensive_rate": 0.02,
            "max_offensive_output_rate": 0.01,
        }
    )
    latency: dict[str, float] = field(default_factory=lambda: {"p95_ms": 2000.0})
    store: dict[str, Any] = field(
        default_factory=lambda: {
            "retain_images": True,
            "retention_days": 180,
            "image_retention_days": 30,
        }
    )
    report: dict[str, int] = field(default_factory=lambda: {"max_examples": 500, "slowest": 20})
    source: str = "built-in defaults"

    @classmethod
    def load(cls, path: str | Path | None = None) -> MonitoringSettings:
        """Read ``path``; without one, ``$QUILL_MONITORING_CONFIG``, else
        ``configs/monitoring.yaml`` in the working directory or the source checkout, else
        generic built-in defaults (no per-projection thresholds)."""
        if path is None:
            path = os.environ.get(CONFIG_ENV) or next(
                (p for p in (DEFAULT_PATH, CHECKOUT_PATH) if p.is_file()), None
            )
            if path is None:
                return cls()
        path = Path(path)
        if not path.is_file():
            raise SettingsError(f"monitoring config not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise SettingsError(f"{path}: not valid YAML: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise SettingsError(f"{path}: not a UTF-8 text file ({exc.reason})") from exc
        except OSError as exc:
            raise SettingsError(f"{path}: cannot read ({exc.strerror or exc})") from exc
        if not isinstance(raw, dict):
            raise SettingsError(f"{path}: not a mapping of settings (got {type(raw).__name__})")
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "dict") -> MonitoringSettings:
        known = {f.name for f in fields(cls)} - {"source"}
        unknown = set(raw) - known
        if unknown:
            raise SettingsError(
                f"{source}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}"
            )
        values = dict(raw)
        try:
            for key in ("window", "step"):
                if key in values:
                    values[key] = parse_duration(values[key])
                    if not values[key]:  # an empty window judges nothing and says OK
                        raise ValueError(f"{key} must be longer than 0, got {raw[key]!r}")
            if "drift" in values:
                values["drift"] = _drift(values["drift"] or {})
        except (ValueError, TypeError) as exc:
            raise SettingsError(f"{source}: {exc}") from exc
        settings = cls(**values, source=source)
        bad_slices = set(settings.slices) - set(SLICE_KEYS)
        if bad_slices:
            raise SettingsError(
                f"{source}: unknown slice(s) {sorted(bad_slices)}; use {SLICE_KEYS}"
            )
        return settings


def _drift(raw: dict[str, Any]) -> DriftSettings:
    unknown = set(raw) - {"default", "projections", "ignore"}
    if unknown:
        raise ValueError(f"drift: unknown key(s) {sorted(unknown)}")
    drift = DriftSettings(
        default={**DriftSettings().default, **(raw.get("default") or {})},
        projections=raw.get("projections") or {},
        ignore=list(raw.get("ignore") or []),
    )
    for name, thresholds in [("default", drift.default), *drift.projections.items()]:
        bad = set(thresholds) - set(METRICS)
        if bad:
            raise ValueError(f"drift.{name}: unknown metric(s) {sorted(bad)}; use {METRICS}")
        for metric, value in thresholds.items():
            if not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"drift.{name}.{metric}: threshold must be > 0, got {value!r}")
    return drift
