"""The one base of Quill's own exceptions, and the config error every layer raises.

Why one base: the ``quill`` commands and the REST API each catch :class:`QuillError` once, at
their edge, and map it to an exit status or an HTTP answer (by the exception's ``code`` when
it has one); anything else is a bug and keeps its traceback. A layer's exceptions derive from
it (and from the builtin they always were, e.g. ``ValueError``, so existing ``except``
clauses keep working), with names that are unique across the package.

The commands' exit statuses are here too (``EXIT_*``), with :func:`fail`, the one way a
command reports an error and exits, :func:`check_output`, the check every command runs on
what it will write before it starts, and :func:`sigterm_as_ctrl_c`, how a command that serves
until stopped stops cleanly.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer


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


# -- exit statuses of the ``quill`` commands -----------------------------------------------
# The policy ``quill --help`` and docs/cli.md state. It follows grep's and diff's: 0 yes,
# 1 no, 2 trouble, and Click already exits 2 for a usage error.

#: The command did what was asked.
EXIT_OK = 0
#: The command ran, and the answer is no: some inputs could not be read (``quill predict``),
#: a check failed (``quill monitor check`` alerting, a report card that fails, a refused
#: promotion), or nothing could be imported or exported.
EXIT_FAILED = 1
#: The command could not do what was asked: a usage error, a bad option, config or override,
#: a missing or unreadable input (file, dataset, model, run, baseline), a service that cannot
#: be reached or refuses, or a step that failed (a training setup, an export).
EXIT_ERROR = 2
#: Stopped by Ctrl+C (SIGINT) or by SIGTERM: what a shell reports for a process that signal
#: killed (128 + its number). ``quill train`` records its run as KILLED and says how to resume.
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[list[int]]:
    """Meanwhile SIGTERM (``docker stop``, systemd, a supervisor) raises KeyboardInterrupt,
    as Ctrl+C does, so that a serving command's clean-up runs (a server stopped, a queue
    flushed) instead of the process dying at once. The list yielded gets the signal's number
    when it came (exit :data:`EXIT_TERMINATED` then). The previous handler is put back after:
    a process that goes on (a test run, a script calling the command) keeps its own, and a
    later SIGTERM no longer reads as a Ctrl+C there."""
    import signal

    received: list[int] = []

    def interrupt(number: int, _frame: object) -> None:
        received.append(number)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def fail(message: str, code: int = EXIT_ERROR) -> typer.Exit:
    """Print ``error: message`` (red, on stderr, never wrapped) and return the exit to raise.

    ``raise fail(str(exc)) from exc`` in a command; ``code`` is one of the ``EXIT_*``
    statuses. Imports typer and rich only when called, so this module stays light.
    """
    import typer
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True, soft_wrap=True)
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    return typer.Exit(code)


def check_output(path: Path, *, folder: bool, option: str = "--out") -> None:
    """Refuse, before any work, an output that cannot be written: exit 2 naming it and why.

    Commands write their output last, so a path under a read-only folder, or a folder where
    a file is wanted (or the reverse), used to end in a traceback after all the work. Every
    layer's commands that write a file or folder call this (``folder`` says which); nothing
    is created, and folders that do not exist yet are the command's to make.
    """
    problem = output_problem(path, folder=folder)
    if problem:
        raise fail(f"{option} {path}: {problem}")


def output_problem(path: Path, *, folder: bool) -> str | None:
    """Why ``path`` cannot be written as a file (as a folder with ``folder``); None if it can.

    The nearest existing folder is probed with a temporary file, gone at once: permissions
    alone do not tell (root may write anywhere, except e.g. in /proc or a read-only mount).
    """
    if path.is_dir() and not folder:
        return "is a folder; give a file name"
    if path.exists() and not path.is_dir() and folder:
        return "is a file, not a folder"
    if path.is_file() and not os.access(path, os.W_OK):
        return "is read-only"
    start = path if folder else path.parent
    existing = next(p for p in (start, *start.parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        return f"cannot write in {existing} ({exc.strerror or exc})"
    return None
