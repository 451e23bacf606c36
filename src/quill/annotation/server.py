"""Run Label Studio as its own application, locally, offline, behind a password.

Label Studio is an application with ~1 GB of exactly pinned dependencies, not a library of
Quill: it lives in its own virtual environment (``make labelstudio`` creates
``.cache/labelstudio-venv``) and Quill only starts it. The process gets:

* the credentials from the environment (``LABEL_STUDIO_USERNAME``, ``LABEL_STUDIO_PASSWORD``,
  ``LABEL_STUDIO_USER_TOKEN``), which Label Studio reads itself, so no secret appears in the
  process list;
* a loopback bind address unless ``allow_remote`` (see docs/annotation.md for a reverse
  proxy with TLS instead), and sign-up without an invitation link disabled;
* the offline settings (no error reporting, analytics or version check phoning home);
* local-files serving rooted at ``document_root``, for tasks made by ``quill annotate tasks``.

A new data folder starts from an empty database built once per installation
(:func:`build_empty_database`, run by ``make labelstudio``): Label Studio's own first start
applies its schema migrations, 48 of its 52 seconds on 2 cores; from the copy it answers in
about 5.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from quill.errors import QuillError

DEFAULT_VENV = Path(".cache/labelstudio-venv")
DEFAULT_DATA_DIR = Path(".cache/labelstudio-data")
DEFAULT_PORT = 8080
#: Label Studio's SQLite database in its data folder.
DATABASE_FILE = "label_studio.sqlite3"
#: The schema of the installed Label Studio with nothing in it, kept in its virtualenv.
EMPTY_DATABASE_FILE = "quill-empty-database.sqlite3"
#: The Label Studio release these docs and the stand-in API were written against.
LABEL_STUDIO_VERSION = "1.23.2"

#: Defaults that phone home; cleared so the server runs without network.
OFFLINE_ENV = {
    "SENTRY_DSN": "",
    "FRONTEND_SENTRY_DSN": "",
    "COLLECT_ANALYTICS": "false",
    "LATEST_VERSION_CHECK": "false",
}
USERNAME_VAR = "LABEL_STUDIO_USERNAME"
PASSWORD_VAR = "LABEL_STUDIO_PASSWORD"
TOKEN_VAR = "LABEL_STUDIO_USER_TOKEN"
#: Label Studio's legacy tokens are Django REST framework keys: at most 40 characters.
TOKEN_LENGTH = (16, 40)
MIN_PASSWORD = 8


class ServeError(QuillError, RuntimeError):
    """Label Studio cannot be started as asked (message says what to do)."""

    code = "label_studio_serve_error"


def is_loopback(host: str) -> bool:
    """
    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("::1")
    (True, True, True)
    >>> is_loopback("0.0.0.0"), is_loopback("192.168.1.5")
    (False, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def credentials(env: Mapping[str, str]) -> dict[str, str]:
    """The admin credentials from ``env``, checked; never defaults, never on the command line."""
    missing = [var for var in (USERNAME_VAR, PASSWORD_VAR, TOKEN_VAR) if not env.get(var)]
    if missing:
        raise ServeError(
            f"set {', '.join(missing)} in the environment: Label Studio never starts without "
            "an admin user, a password and an API token (see docs/annotation.md)"
        )
    if len(env[PASSWORD_VAR]) < MIN_PASSWORD:
        raise ServeError(f"{PASSWORD_VAR} must have at least {MIN_PASSWORD} characters")
    low, high = TOKEN_LENGTH
    if not low <= len(env[TOKEN_VAR]) <= high:
        raise ServeError(
            f"{TOKEN_VAR} must have {low} to {high} characters "
            "(e.g. `python -c 'import secrets; print(secrets.token_hex(20))'`)"
        )
    return {var: env[var] for var in (USERNAME_VAR, PASSWORD_VAR, TOKEN_VAR)}


@dataclass
class ServeSettings:
    """Where Label Studio lives and how it is exposed."""

    venv: Path = DEFAULT_VENV
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data_dir: Path = DEFAULT_DATA_DIR
    document_root: Path = field(default_factory=Path.cwd)
    allow_remote: bool = False

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    def executable(self) -> Path:
        path = self.venv / "bin" / "label-studio"
        if not os.access(path, os.X_OK):
            raise ServeError(
                f"Label Studio is not installed at {self.venv} (no {path}): run `make "
                f"labelstudio` (its own virtualenv, ~1 GB) or pass --venv"
            )
        return path


def build_command(settings: ServeSettings, env: Mapping[str, str]) -> tuple[list[str], dict]:
    """The argv and environment that start Label Studio as ``settings`` say."""
    if not is_loopback(settings.host) and not settings.allow_remote:
        raise ServeError(
            f"refusing to bind {settings.host}: Label Studio would be reachable from the "
            "network over plain HTTP. Keep 127.0.0.1 behind a TLS reverse proxy, or pass "
            "--allow-remote if you really mean it"
        )
    if not settings.document_root.is_dir():
        raise ServeError(f"document root {settings.document_root} is not a directory")
    argv = [
        str(settings.executable()),
        "start",
        "--no-browser",
        "--internal-host",
        settings.host,
        "--port",
        str(settings.port),
        "--data-dir",
        str(settings.data_dir.resolve()),
    ]
    child_env = {
        **env,
        **OFFLINE_ENV,
        **credentials(env),
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(settings.document_root.resolve()),
    }
    return argv, child_env


def wait_healthy(
    url: str, timeout_s: float, process: subprocess.Popen | None = None, interval_s: float = 0.5
) -> float:
    """Poll ``url``/health until it answers 200; seconds waited. Fails fast if ``process`` dies."""
    start = time.monotonic()
    while True:
        if process is not None and process.poll() is not None:
            raise ServeError(f"Label Studio exited with code {process.returncode} while starting")
        try:
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        if time.monotonic() - start > timeout_s:
            raise ServeError(f"Label Studio did not answer {url}/health within {timeout_s:.0f} s")
        time.sleep(interval_s)


def build_empty_database(venv: Path, timeout_s: float = 900.0) -> Path:
    """Apply the migrations of the Label Studio installed in ``venv`` to a new database, with
    no user or project in it, and keep it as ``venv/EMPTY_DATABASE_FILE`` for new data
    folders (:meth:`LabelStudioProcess.start`); its path. Raises :class:`ServeError`."""
    managers = sorted(venv.glob("lib/python*/site-packages/label_studio/manage.py"))
    if not managers:
        raise ServeError(f"Label Studio is not installed at {venv}: run `make labelstudio`")
    package = managers[-1].parent
    with tempfile.TemporaryDirectory(prefix="quill-ls-schema-") as folder:
        env = {**os.environ, **OFFLINE_ENV, "PYTHONPATH": str(package)}
        env["LABEL_STUDIO_BASE_DATA_DIR"] = folder
        command = [str(venv / "bin" / "python"), str(package / "manage.py"), "migrate"]
        done = subprocess.run(
            [*command, "--noinput"], env=env, capture_output=True, text=True, timeout=timeout_s
        )
        built = Path(folder) / DATABASE_FILE
        if done.returncode != 0 or not built.is_file():
            raise ServeError(f"Label Studio's migrations failed: {done.stderr.strip()[-800:]}")
        target = venv / EMPTY_DATABASE_FILE
        partial = target.with_suffix(".partial")
        shutil.copyfile(built, partial)
        partial.replace(target)  # whole or absent, never half copied
    return target


class LabelStudioProcess:
    """A running Label Studio: ``start()``, ``wait_healthy()``, ``stop()`` (or ``with``)."""

    def __init__(self, settings: ServeSettings, env: Mapping[str, str] | None = None):
        self.settings = settings
        self.argv, self.env = build_command(settings, os.environ if env is None else env)
        self.process: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None

    def start(self, log: Path | None = None) -> LabelStudioProcess:
        """Start the server; a data folder without a database gets a copy of the installed
        Label Studio's empty one (:func:`build_empty_database`) where there is one."""
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        database = self.settings.data_dir / DATABASE_FILE
        empty = self.settings.venv / EMPTY_DATABASE_FILE
        if not database.exists() and empty.is_file():
            shutil.copyfile(empty, database)
        self._log = open(log, "ab") if log else None  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT if self._log else None,
        )
        return self

    def wait_healthy(self, timeout_s: float = 180.0) -> float:
        return wait_healthy(self.settings.url, timeout_s, self.process)

    def wait(self) -> int:
        assert self.process is not None
        return self.process.wait()

    def stop(self, grace_s: float = 20.0) -> int | None:
        """Terminate (SIGTERM), then kill after ``grace_s``; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log:
            self._log.close()
        return self.process.returncode

    def __enter__(self) -> LabelStudioProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
