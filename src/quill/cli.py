"""The ``quill`` command: one sub-command per step of the journeys in DESIGN.md.

Each concern registers its own commands (``register(app)`` in its ``cli`` module) and keeps
heavy imports (torch, mlflow, gradio) inside the command bodies, so ``quill --help`` is
instant.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="quill",
    help="Quill: handwritten text recognition, from data to a served, monitored model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

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

for module_name in COMMAND_MODULES:
    importlib.import_module(module_name).register(app)


def main() -> None:
    app()
