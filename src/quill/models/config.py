"""Base class for model configurations, kept apart from model code (as in Hugging Face).

A config is what a checkpoint and a staged model store to rebuild the exact architecture,
so it must round-trip through JSON/YAML: tuples come back as lists and are restored here,
and an unknown key is an error that names the key rather than a silently ignored typo.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Self, get_type_hints


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Frozen dataclass with strict ``from_dict``/``to_dict`` for JSON and YAML."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None = None, **overrides: Any) -> Self:
        """Build from a dict (e.g. ``model_config`` of a checkpoint) plus keyword overrides.

        Raises ``ValueError`` naming any key the config does not know.
        """
        values = {**(data or {}), **overrides}
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} field(s) {unknown}; known fields: {sorted(fields)}"
            )
        hints = get_type_hints(cls)
        for name, value in values.items():
            if isinstance(value, list) and str(hints[name]).startswith("tuple"):
                values[name] = tuple(value)
        return cls(**values)
