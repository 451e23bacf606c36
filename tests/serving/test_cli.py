"""``quill serve`` / ``app`` / ``up`` refuse a runtime or thread count that cannot work at
startup, with exit 2, instead of starting a server that answers 503 forever; and a port or
--host they cannot listen on, before the model loads."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from quill.cli import app
from quill.errors import EXIT_ERROR
from quill.model_files import METADATA_FILE


@pytest.fixture(autouse=True)
def own_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands open their monitoring store at startup: a temporary one, not the
    checkout's."""
    monkeypatch.setenv("QUILL_MONITORING_URL", f"sqlite:///{tmp_path / 'monitoring.db'}")


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


def never_started(*args: object, **kwargs: object) -> None:
    raise AssertionError("a server or the model was started before the address was checked")


@pytest.fixture()
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands' servers and model loading fail the test if they are reached."""
    import uvicorn

    from quill.serving import app as web_app
    from quill.serving import runner

    monkeypatch.setattr(uvicorn, "run", never_started)
    monkeypatch.setattr(runner, "ApiServer", never_started)
    monkeypatch.setattr(web_app, "make_backend", never_started)
    monkeypatch.setattr(web_app, "launch", never_started)


@pytest.fixture()
def taken_port() -> Iterator[int]:
    """A localhost port another process listens on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


def one_line_error(result: Result) -> str:
    assert result.exit_code == EXIT_ERROR, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(
    ("command", "option"),
    [("serve", "--port"), ("app", "--port"), ("up", "--api-port"), ("up", "--app-port")],
)
@pytest.mark.usefixtures("nothing_starts")
def test_a_port_in_use_is_refused_before_the_model_loads(
    smoke_model: Path, taken_port: int, command: str, option: str
) -> None:
    """Was: the model loaded, the URL was printed, then uvicorn's 'address already in use'
    (exit 3) or a traceback."""
    result = CliRunner().invoke(app, [command, "-m", str(smoke_model), option, str(taken_port)])
    error = one_line_error(result)
    assert f"port {taken_port} on 127.0.0.1 is already in use" in error
    assert f"pick {option})" in error


@pytest.mark.parametrize("command", ["serve", "app", "up"])
@pytest.mark.parametrize("host", ["not a host!", "999.1.1.1"])
@pytest.mark.usefixtures("nothing_starts")
def test_a_host_that_does_not_resolve_is_refused(
    smoke_model: Path, command: str, host: str
) -> None:
    allow_open = [] if command == "app" else ["--allow-open"]
    result = CliRunner().invoke(app, [command, "-m", str(smoke_model), "--host", host, *allow_open])
    assert f"--host {host!r} is not an address or a name this machine can resolve" in (
        one_line_error(result)
    )


@pytest.mark.parametrize(
    ("command", "option"),
    [("serve", "--port"), ("app", "--port"), ("up", "--api-port"), ("up", "--app-port")],
)
@pytest.mark.parametrize("port", ["0", "70000"])
@pytest.mark.usefixtures("nothing_starts")
def test_a_port_out_of_range_is_a_usage_error(
    smoke_model: Path, command: str, option: str, port: str
) -> None:
    """Was: a traceback (OverflowError: bind(): port must be 0-65535)."""
    result = CliRunner().invoke(app, [command, "-m", str(smoke_model), option, port])
    assert result.exit_code == EXIT_ERROR, result.output
    assert f"Invalid value for '{option}'" in result.output


@pytest.mark.usefixtures("nothing_starts")
def test_up_refuses_one_port_for_both_servers(smoke_model: Path) -> None:
    ports = ["--api-port", "8123", "--app-port", "8123"]
    result = CliRunner().invoke(app, ["up", "-m", str(smoke_model), *ports])
    assert one_line_error(result) == "error: --api-port and --app-port must be different ports"


@pytest.mark.parametrize("command", ["serve", "app", "up"])
@pytest.mark.usefixtures("nothing_starts")
def test_a_model_missing_a_file_is_refused_before_a_server_starts(
    smoke_model: Path, tmp_path: Path, command: str
) -> None:
    """Was: `serve` answered 503 "the model could not be loaded" for as long as it ran, and
    `up` ended in two tracebacks and exit 1."""
    incomplete = tmp_path / "model"
    shutil.copytree(smoke_model, incomplete)
    for weights in incomplete.glob("model.*"):  # every runtime's files
        weights.unlink()
    error = one_line_error(CliRunner().invoke(app, [command, "-m", str(incomplete)]))
    assert f"{incomplete} is incomplete: " in error and "missing" in error


@pytest.mark.parametrize("command", ["serve", "app", "up"])
@pytest.mark.usefixtures("nothing_starts")
def test_a_monitoring_store_that_cannot_open_is_refused_before_a_server_starts(
    smoke_model: Path, tmp_path: Path, command: str
) -> None:
    """Was: the API started and answered 503 with "the model could not be loaded: ...
    unable to open database file" for as long as it ran."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    url = f"sqlite:///{blocker / 'monitoring.db'}"
    args = [command, "-m", str(smoke_model), "--monitoring-url", url]
    error = one_line_error(CliRunner().invoke(app, args))
    assert error.startswith(f"error: cannot open the monitoring store {url}: ")
    assert error.endswith("(--monitoring-url off serves without one)")


@pytest.mark.usefixtures("nothing_starts")
def test_a_model_missing_one_runtime_is_served_by_another_with_a_warning(
    smoke_model: Path, tmp_path: Path, taken_port: int
) -> None:
    """A copy without model.onnx was served on another runtime without a word."""
    partial = tmp_path / "model"
    shutil.copytree(smoke_model, partial)
    for onnx in partial.glob("model.onnx*"):
        onnx.unlink()
    # the taken port stops the command after the model checks, before anything starts
    result = CliRunner().invoke(app, ["serve", "-m", str(partial), "--port", str(taken_port)])
    assert "lacks the files of its onnx runtime(s); serving with torchscript" in result.output


@pytest.mark.parametrize(
    ("damaged", "backend", "expected"),
    [
        ("lm.json", "auto", "cannot read language model"),
        ("model.onnx", "onnx", "cannot load ONNX model"),
    ],
)
@pytest.mark.usefixtures("nothing_starts")
def test_a_model_file_that_does_not_load_is_refused_before_a_server_starts(
    smoke_model: Path, tmp_path: Path, damaged: str, backend: str, expected: str
) -> None:
    """A truncated LM or ONNX file passed the start-up check (it looked for files only): the
    server then answered 503 "the model could not be loaded" for as long as it ran."""
    model = tmp_path / "model"
    shutil.copytree(smoke_model, model)
    if damaged == "lm.json":  # the smoke model decodes greedily: give it a beam search's LM
        meta = json.loads((model / METADATA_FILE).read_text())
        meta["decoding"] = {"method": "beam", "lm": "lm.json", "lm_weight": 0.5}
        (model / METADATA_FILE).write_text(json.dumps(meta))
        (model / damaged).write_text('{"order": 3, "counts": {"ab')
    else:
        (model / damaged).write_bytes((model / damaged).read_bytes()[:100])
    result = CliRunner().invoke(app, ["serve", "-m", str(model), "--backend", backend])
    error = one_line_error(result)
    assert error.startswith(f"error: {model} cannot be served: ") and expected in error
