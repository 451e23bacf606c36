"""Commands of the data layer: ``quill data ...``."""

import typer

data_app = typer.Typer(help="Make, import, inspect and version datasets.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``quill data`` to the ``quill`` app."""
    app.add_typer(data_app, name="data")
