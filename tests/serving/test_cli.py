"""``quill serve`` / ``app`` / ``up`` refuse a runtime or thread count that cannot work at
startup, with exit 2, instead of starting a server that answers 503 forever."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from quill.cli import app
from quill.errors import EXIT_ERROR


def test_serve_refuses_an_unknown_backend_in_one_line(smoke_model: Path) -> None:
    result = CliRunner().invoke(app, ["serve", "-m", str(smoke_model), "--backend", "bogus"])
    assert result.exit_code == EXIT_ERROR, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, lines
    assert "backend must be one of auto, onnx, onnx-int8, torchscript, eager" in lines[0]


@pytest.mark.parametrize("command", ["app", "up"])
def test_an_unknown_backend_from_the_environment_is_refused(
    smoke_model: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setenv("QUILL_BACKEND", "bogus")
    result = CliRunner().invoke(app, [command, "-m", str(smoke_model)])
    assert result.exit_code == EXIT_ERROR, result.output
    assert "QUILL_BACKEND" in result.output and "'bogus'" in result.output


@pytest.mark.parametrize("command", ["serve", "app", "up"])
def test_negative_threads_are_refused(smoke_model: Path, command: str) -> None:
    result = CliRunner().invoke(app, [command, "-m", str(smoke_model), "--threads", "-1"])
    assert result.exit_code == EXIT_ERROR, result.output
    assert "--threads" in result.output
