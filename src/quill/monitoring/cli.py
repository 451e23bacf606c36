"""Commands of the monitoring layer."""

import typer


def register(app: typer.Typer) -> None:
    """Add this layer's commands to the `quill` app."""
