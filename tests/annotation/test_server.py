"""``quill annotate serve``: command, environment and process handling.

The "Label Studio" started here is a fake ``label-studio`` executable in a fake venv that
runs the stand-in API server (Label Studio itself runs in test_client.py). What is tested is
Quill's part: the argv and environment it builds, that it waits for /health, that the token
reaches the server through the environment only, that a new data folder starts from the
empty database, and that it stops the process.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from quill.annotation.cli import register
from quill.annotation.client import LabelStudioClient
from quill.annotation.server import (
    DATABASE_FILE,
    EMPTY_DATABASE_FILE,
    LabelStudioProcess,
    ServeError,
    ServeSettings,
    build_command,
    build_empty_database,
    credentials,
)
from quill.ports import free_port

STANDIN = Path(__file__).with_name("standin_labelstudio.py")
TOKEN = "serve-test-token-1234567890"
CREDENTIALS = {
    "LABEL_STUDIO_USERNAME": "annotator@example.org",
    "LABEL_STUDIO_PASSWORD": "correct horse battery",
    "LABEL_STUDIO_USER_TOKEN": TOKEN,
}


def fake_venv(root: Path, body: str | None = None) -> Path:
    """A venv whose bin/label-studio runs the stand-in server (or ``body``, a script)."""
    script = root / "bin" / "label-studio"
    script.parent.mkdir(parents=True)
    script.write_text(
        body
        or f"#!{sys.executable}\nimport runpy, sys\n"
        f"sys.argv = ['label-studio', *sys.argv[1:]]\n"
        f"runpy.run_path({str(STANDIN)!r}, run_name='__main__')\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return root


def settings(tmp_path: Path, **kwargs) -> ServeSettings:
    venv = kwargs.pop("venv", None) or fake_venv(tmp_path / "venv")
    return ServeSettings(
        venv=venv,
        port=kwargs.pop("port", free_port()),
        data_dir=tmp_path / "data",
        document_root=tmp_path,
        **kwargs,
    )


def test_starts_waits_for_health_and_stops(tmp_path):
    config = settings(tmp_path)
    env = {"PATH": os.environ["PATH"], **CREDENTIALS}
    server = LabelStudioProcess(config, env)
    assert not any(secret in arg for arg in server.argv for secret in CREDENTIALS.values())
    with server:
        waited = server.wait_healthy(timeout_s=60)
        assert waited < 60
        # The token set in the environment is the one the server accepts.
        with LabelStudioClient(config.url, TOKEN) as client:
            assert client.health() and list(client.projects()) == []
        launch = json.loads((tmp_path / "data" / "launch.json").read_text())
    assert server.process.returncode is not None, "stopped on leaving the with-block"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{config.url}/health", timeout=2)

    argv = launch["argv"]
    assert argv[:2] == ["start", "--no-browser"]
    assert argv[argv.index("--internal-host") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == str(config.port)
    assert argv[argv.index("--data-dir") + 1] == str((tmp_path / "data").resolve())
    child = launch["env"]
    assert child["SENTRY_DSN"] == "" and child["FRONTEND_SENTRY_DSN"] == ""
    assert child["COLLECT_ANALYTICS"] == "false" and child["LATEST_VERSION_CHECK"] == "false"
    assert child["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert child["LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK"] == "true"
    assert child["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] == "true"
    assert child["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == str(tmp_path.resolve())
    assert child["LABEL_STUDIO_USERNAME"] == CREDENTIALS["LABEL_STUDIO_USERNAME"]


def test_a_server_that_dies_while_starting_is_reported(tmp_path):
    venv = fake_venv(tmp_path / "venv", "#!/bin/sh\necho 'port in use' >&2\nexit 3\n")
    server = LabelStudioProcess(settings(tmp_path, venv=venv), CREDENTIALS).start()
    with pytest.raises(ServeError, match="exited with code 3"):
        server.wait_healthy(timeout_s=30)
    server.stop()


def test_a_new_data_folder_starts_from_the_empty_database_and_an_old_one_keeps_its_own(
    tmp_path,
):
    venv = fake_venv(tmp_path / "venv", "#!/bin/sh\nexit 0\n")
    (venv / EMPTY_DATABASE_FILE).write_bytes(b"the installed schema")
    new = settings(tmp_path, venv=venv)
    LabelStudioProcess(new, CREDENTIALS).start().stop()
    assert (new.data_dir / DATABASE_FILE).read_bytes() == b"the installed schema"
    (new.data_dir / DATABASE_FILE).write_bytes(b"their projects")
    LabelStudioProcess(new, CREDENTIALS).start().stop()
    assert (new.data_dir / DATABASE_FILE).read_bytes() == b"their projects"


def test_the_empty_database_needs_label_studio_installed(tmp_path):
    with pytest.raises(ServeError, match="not installed at .*make labelstudio"):
        build_empty_database(fake_venv(tmp_path / "venv"))


def test_refuses_unsafe_or_incomplete_setups(tmp_path):
    with pytest.raises(ServeError, match="refusing to bind 0.0.0.0"):
        build_command(settings(tmp_path, host="0.0.0.0"), CREDENTIALS)
    argv, _ = build_command(
        ServeSettings(
            venv=tmp_path / "venv", host="0.0.0.0", document_root=tmp_path, allow_remote=True
        ),
        CREDENTIALS,
    )
    assert argv[argv.index("--internal-host") + 1] == "0.0.0.0"
    with pytest.raises(ServeError, match="make labelstudio"):
        build_command(ServeSettings(venv=tmp_path / "none", document_root=tmp_path), CREDENTIALS)
    with pytest.raises(ServeError, match="LABEL_STUDIO_PASSWORD, LABEL_STUDIO_USER_TOKEN"):
        credentials({"LABEL_STUDIO_USERNAME": "a@b.c"})
    with pytest.raises(ServeError, match="at least 8"):
        credentials({**CREDENTIALS, "LABEL_STUDIO_PASSWORD": "short"})
    with pytest.raises(ServeError, match="16 to 40"):
        credentials({**CREDENTIALS, "LABEL_STUDIO_USER_TOKEN": "x" * 41})


def test_cli_serve_errors_are_clear(tmp_path):
    app = typer.Typer()
    register(app)
    venv = fake_venv(tmp_path / "venv")
    empty = {var: "" for var in CREDENTIALS}
    result = CliRunner().invoke(app, ["annotate", "serve", "--venv", str(venv)], env=empty)
    assert result.exit_code == 2 and "never starts without" in result.output
    result = CliRunner().invoke(
        app, ["annotate", "serve", "--venv", str(tmp_path / "missing")], env=CREDENTIALS
    )
    assert result.exit_code == 2 and "make labelstudio" in result.output


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_cli_serve_runs_until_interrupted(tmp_path, stop_signal):
    """Ctrl-C or a service manager's SIGTERM stops quill and the Label Studio it started."""
    venv = fake_venv(tmp_path / "venv")
    port = free_port()
    code = (
        "import typer; from quill.annotation.cli import register; app = typer.Typer(); "
        "register(app); app()"
    )
    args = ["annotate", "serve", "--venv", str(venv), "--port", str(port)]
    args += ["--data-dir", str(tmp_path / "data"), "--document-root", str(tmp_path)]
    env = {**os.environ, **CREDENTIALS}
    quill = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stderr=subprocess.PIPE,
        # as in a terminal: a background job of a non-interactive shell (a CI runner's, say)
        # inherits SIGINT ignored, and Python then never turns Ctrl-C into KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    printed: list[bytes] = []
    reader = threading.Thread(
        target=lambda: printed.extend(iter(quill.stderr.readline, b"")), daemon=True
    )
    reader.start()
    banner = f"Label Studio is up at http://127.0.0.1:{port}"
    url = f"http://127.0.0.1:{port}/health"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail("serve never came up")
        # quill polls /health itself before printing its banner: wait for the banner.
        while time.monotonic() < deadline and banner not in b"".join(printed).decode():
            time.sleep(0.2)
        quill.send_signal(stop_signal)
        try:
            code = quill.wait(timeout=60)
        except subprocess.TimeoutExpired:
            output = b"".join(printed).decode(errors="replace")
            pytest.fail(
                f"{stop_signal!r} did not stop `quill annotate serve`; it printed:\n{output}"
            )
        assert code == 0
    finally:
        quill.kill()
    reader.join(timeout=10)
    assert banner in b"".join(printed).decode()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=2)
