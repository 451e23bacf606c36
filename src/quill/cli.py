"""The ``quill`` command: one sub-command per step of the journeys in DESIGN.md.

Each concern registers its own commands (``register(app)`` in its ``cli`` module) and keeps
heavy imports (torch, mlflow, gradio) inside the command bodies, so ``quill --help`` is
instant. :func:`main` goes further for a start-up that users pay on every call (``quill
predict`` over a folder, one file at a time): it imports only the module of the command
asked for (:data:`COMMANDS`), and every module only for ``quill --help`` or an unknown
command. ``app``, every command registered, is built on first use (tests, ``CliRunner``).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Sequence

import typer

from quill.errors import QuillError, fail

#: Modules that add commands, in the order of the data flow.
COMMAND_MODULES = (
    "quill.data.cli",
    "quill.training.cli",
    "quill.staging.cli",
    "quill.inference.cli",
    "quill.serving.cli",
    "quill.monitoring.cli",
    "quill.annotation.cli",
    "quill.bench.cli",
)

#: Each top-level command and the module that registers it (tests/core/test_cli.py checks
#: this against what the modules register).
COMMANDS = {
    "data": "quill.data.cli",
    "train": "quill.training.cli",
    "detector": "quill.training.cli",
    "sweep": "quill.training.cli",
    "ui": "quill.training.cli",
    "runs": "quill.training.cli",
    "stage": "quill.staging.cli",
    "model": "quill.staging.cli",
    "predict": "quill.inference.cli",
    "lm": "quill.inference.cli",
    "adapt": "quill.inference.cli",
    "serve": "quill.serving.cli",
    "app": "quill.serving.cli",
    "up": "quill.serving.cli",
    "evaluate": "quill.monitoring.cli",
    "monitor": "quill.monitoring.cli",
    "annotate": "quill.annotation.cli",
    "bench": "quill.bench.cli",
}

#: Modules whose commands join a group another module registers, imported with it (their
#: commands join on import): ``quill monitor export`` is annotation's (annotation reads the
#: monitoring store; monitoring never imports annotation), ``quill model warm`` inference's
#: (it loads a model as inference does, which staging may not).
EXTENDS = {
    "quill.monitoring.cli": ("quill.annotation.cli",),
    "quill.staging.cli": ("quill.inference.warm_cli",),
}


def build_app(modules: Sequence[str] = COMMAND_MODULES) -> typer.Typer:
    """The ``quill`` app with the commands of ``modules``."""
    app = typer.Typer(
        name="quill",
        help="Quill: handwritten text recognition, from data to a served, monitored model.\n\n"
        "Exit status (every command): 0 done; 1 ran, and the answer is no (some inputs could "
        "not be read, a check failed, a promotion was refused, nothing was imported); 2 error "
        "(usage, option or config, a missing or unreadable input, model or run, a service that "
        "cannot be reached, a failed step); 130 or 143 stopped by Ctrl+C or SIGTERM.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    # A callback keeps ``quill`` a group when only one command is registered (typer would
    # otherwise run that command as the whole program: ``quill stage X`` as ``stage stage X``).
    app.callback()(_group)
    for module_name in modules:
        importlib.import_module(module_name).register(app)
        for extension in EXTENDS.get(module_name, ()):
            importlib.import_module(extension)
    _reflow_help(app)
    return app


def _reflow_help(app: typer.Typer) -> None:
    """Give every command of ``app`` (and of its groups) its docstring with each paragraph on
    one line, for the terminal to wrap: Typer keeps the line breaks of a help text after its
    first paragraph, so at 80 columns each docstring line was cut twice, once where the
    terminal ends and once where the source line did."""
    for command in app.registered_commands:
        command.help = _one_line_paragraphs(command.help or inspect.getdoc(command.callback))
    for group in app.registered_groups:
        if group.typer_instance is not None:
            _reflow_help(group.typer_instance)


def _one_line_paragraphs(text: str | None) -> str | None:
    """``text`` with the line breaks inside each paragraph made spaces; a paragraph that
    starts with click's \\b (keep as written) is kept as written.

    >>> _one_line_paragraphs("Read images.\\n\\nEach line is\\nthe path.\\n\\n\\b\\na\\nb")
    'Read images.\\n\\nEach line is the path.\\n\\n\\x08\\na\\nb'
    """
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p if p.startswith("\b") else p.replace("\n", " ") for p in paragraphs)


def _group() -> None:
    pass


def modules_for(args: Sequence[str]) -> tuple[str, ...]:
    """The command modules a command line needs: the one owning its command, or all of them
    (for ``quill``, ``quill --help`` and unknown commands, whose error lists them all).

    >>> modules_for(["predict", "a.jpg"])
    ('quill.inference.cli',)
    >>> modules_for(["--help"]) == COMMAND_MODULES
    True
    """
    module = COMMANDS.get(args[0]) if args else None
    return (module,) if module else COMMAND_MODULES


def __getattr__(name: str) -> typer.Typer:
    """``quill.cli.app``: every command, registered on first access."""
    if name == "app":
        app = build_app()
        globals()["app"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Run the command asked for; a :class:`~quill.errors.QuillError` that its command did
    not report itself is still one line and exit 2, not a traceback."""
    try:
        build_app(modules_for(sys.argv[1:]))()
    except QuillError as exc:
        sys.exit(fail(str(exc)).exit_code)
