"""Build a config dataclass from a plain mapping (YAML, JSON, a checkpoint), strictly.

Every config Quill reads from a file goes through :func:`strict_from_dict`, so a typo such as
``hieght: 48`` is an error naming the key and the allowed ones, never a silently ignored key
that leaves the default in place. Nested config dataclasses are built the same way,
recursively, and lists come back as tuples where the field is a tuple (JSON and YAML have no
tuples).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from quill.errors import ConfigError

T = TypeVar("T")


def unknown_key_message(where: str, unknown: list[str], allowed: list[str]) -> str:
    """The one wording of an unknown-key error: the keys, a close match, the allowed keys.

    >>> unknown_key_message("PreprocessConfig", ["hieght"], ["height", "kind"])
    "PreprocessConfig: unknown key 'hieght' (did you mean 'height'?); allowed: height, kind"
    """
    hints = [difflib.get_close_matches(key, allowed, n=1) for key in unknown]
    named = ", ".join(
        repr(key) + (f" (did you mean {close[0]!r}?)" if close else "")
        for key, close in zip(unknown, hints, strict=True)
    )
    plural = "s" if len(unknown) > 1 else ""
    return f"{where}: unknown key{plural} {named}; allowed: {', '.join(allowed)}"


def strict_from_dict(cls: type[T], data: Mapping[str, Any], where: str | None = None) -> T:
    """``cls(**data)`` for a dataclass ``cls``, refusing keys it has no field for.

    ``where`` names the mapping in errors (a config path such as ``data.preprocess``;
    default: the class name). Raises :class:`~quill.errors.ConfigError` (a ``ValueError``).

    >>> @dataclasses.dataclass
    ... class Pen:
    ...     width: float = 1.0
    ...     rgb: tuple[int, int, int] = (0, 0, 0)
    >>> strict_from_dict(Pen, {"rgb": [0, 0, 255]})
    Pen(width=1.0, rgb=(0, 0, 255))
    >>> strict_from_dict(Pen, {"widht": 2})
    Traceback (most recent call last):
    ...
    quill.errors.ConfigError: Pen: unknown key 'widht' (did you mean 'width'?); allowed: width, rgb
    """
    where = where or cls.__name__
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of fields, not {type(data).__name__}")
    fields = field_names(cls)
    unknown = [str(key) for key in data if key not in fields]
    if unknown:
        raise ConfigError(unknown_key_message(where, unknown, fields))
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        hint = hints.get(name)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            value = strict_from_dict(hint, value, f"{where}.{name}")
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return cls(**values)


def field_names(cls: type) -> list[str]:
    """The keys :func:`strict_from_dict` accepts for ``cls``."""
    return [f.name for f in dataclasses.fields(cls) if f.init]
