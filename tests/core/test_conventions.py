"""One Typer style (issue 14): command parameters are ``Annotated[T, typer.Option(...)]``."""

from __future__ import annotations

import ast
from pathlib import Path

import quill

SOURCE = Path(quill.__file__).parent


def _typer_calls_as_defaults(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for default in [*node.args.defaults, *node.args.kw_defaults]:
                if isinstance(default, ast.Call) and ast.unparse(default.func) in (
                    "typer.Option",
                    "typer.Argument",
                ):
                    found.append(f"{path.relative_to(SOURCE)}:{default.lineno} ({node.name})")
    return found


def test_commands_take_annotated_parameters_not_typer_defaults() -> None:
    offenders = [
        hit for path in sorted(SOURCE.rglob("*.py")) for hit in _typer_calls_as_defaults(path)
    ]
    assert offenders == [], "use Annotated[T, typer.Option(...)] = default: " + ", ".join(offenders)
