"""The one base of Quill's own exceptions, and the config error every layer raises.

Why one base: the ``quill`` commands and the REST API each catch :class:`QuillError` once, at
their edge, and map it to an exit status or an HTTP answer (by the exception's ``code`` when
it has one); anything else is a bug and keeps its traceback. A layer's exceptions derive from
it (and from the builtin they always were, e.g. ``ValueError``, so existing ``except``
clauses keep working), with names that are unique across the package.
"""

from __future__ import annotations


class QuillError(Exception):
    """Something a user can fix (a bad file, option, config or state); the message says how.

    ``code`` is a stable, machine-readable name for the kind of failure, for adapters that
    report one (the API's error body); subclasses set their own.
    """

    code: str = "quill_error"


class ConfigError(QuillError, ValueError):
    """A config file, override or config mapping is invalid; the message names the file or
    key (and, for an unknown key, the keys that are allowed)."""

    code = "config_invalid"
