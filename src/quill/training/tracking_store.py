"""Where runs are recorded: the tracking URI, the artifact root, and the MLflow store's setup.

The default backend is MLflow embedded in the project: an SQLite store at
``<project>/mlruns/mlflow.db`` with artifacts in ``<project>/mlruns/artifacts`` (no server, no
account, works offline). ``QUILL_TRACKING_URI`` (or ``--tracking-uri``) points runs at any
other store or MLflow server instead; ``QUILL_ARTIFACT_ROOT`` moves new experiments'
artifacts. Several processes (sweep workers) may create the store, an experiment or a shared
run's keys at once: the helpers here make that safe.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from quill.errors import QuillError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

TRACKING_URI_ENV = "QUILL_TRACKING_URI"
ARTIFACT_ROOT_ENV = "QUILL_ARTIFACT_ROOT"


def project_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) holding a git repo or pyproject."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / ".git").exists() or (folder / "pyproject.toml").is_file():
            return folder
    return start


def default_tracking_uri() -> str:
    """``$QUILL_TRACKING_URI``, else the project's embedded SQLite store."""
    env = os.environ.get(TRACKING_URI_ENV)
    if env:
        return env
    return f"sqlite:///{project_root() / 'mlruns' / 'mlflow.db'}"


def artifact_root(tracking_uri: str) -> str | None:
    """Artifact folder for new experiments: beside a SQLite store, or the server's choice.

    >>> artifact_root("sqlite:////tmp/x/mlflow.db")
    'file:///tmp/x/artifacts'
    >>> artifact_root("http://127.0.0.1:5000") is None
    True
    """
    env = os.environ.get(ARTIFACT_ROOT_ENV)
    if env:
        return env if "://" in env else Path(env).resolve().as_uri()
    if tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri.removeprefix("sqlite:///"))
        return (database.parent / "artifacts").as_uri()
    return None


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` across processes (no-op where fcntl is missing)."""
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# mlflow takes ~2 s to import, so it is imported inside the functions that need it: this
# module is read by commands that only want a URI (`quill stage`, `quill runs`, inference).


class TrackingServerUnreachable(QuillError, ConnectionError):
    """An http(s) tracking URI with no MLflow server answering at its address."""

    code = "tracking_server_unreachable"


#: Seconds to wait for a tracking server to accept a connection before saying it is not there.
SERVER_PROBE_TIMEOUT_S = 5.0


def check_server(tracking_uri: str) -> None:
    """Refuse an http(s) tracking URI whose server does not accept a connection.

    MLflow's client retries a refused request with backoff for minutes before it raises, and
    then with a page of traceback; one connection attempt says the same in a few seconds.
    """
    address = urlsplit(tracking_uri)
    if address.scheme not in ("http", "https"):
        return
    port = address.port or (443 if address.scheme == "https" else 80)
    try:
        with socket.create_connection((address.hostname or "", port), SERVER_PROBE_TIMEOUT_S):
            return
    except OSError as exc:
        raise TrackingServerUnreachable(
            f"no MLflow tracking server answers at {tracking_uri} ({exc.strerror or exc}): "
            "start it (`mlflow server`, or `quill ui` for the local store), or drop "
            "--tracking-uri / QUILL_TRACKING_URI to record runs in the project's own store"
        ) from exc


class NoTrackingStore(QuillError, FileNotFoundError):
    """A local store that does not exist yet, asked for by a command that only reads."""

    code = "no_tracking_store"


class TrackingStoreUnreadable(QuillError, ValueError):
    """A local store MLflow cannot open: a file that is not an SQLite database, a folder
    named as the database, or a folder store (MLflow stops at each with a page of traceback,
    or after minutes of retries)."""

    code = "tracking_store_unreadable"


#: The first bytes of every SQLite database file.
SQLITE_HEADER = b"SQLite format 3\x00"
#: MLflow's own switch that lets it open a folder (file store) again.
ALLOW_FILE_STORE_ENV = "MLFLOW_ALLOW_FILE_STORE"


def _check_database(database: Path) -> None:
    """Refuse a folder at ``database`` (SQLite retried opening it for two minutes before it
    said "unable to open database file") and a file that is not an SQLite database (an empty
    one is new)."""
    if database.is_dir():
        raise TrackingStoreUnreadable(
            f"{database} is a folder, not an SQLite database file: give "
            f"sqlite:///{database / 'mlflow.db'} to keep the store in it"
        )
    if not database.is_file() or database.stat().st_size == 0:
        return
    with open(database, "rb") as handle:
        if handle.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            raise TrackingStoreUnreadable(
                f"{database} is not an SQLite database, so not a tracking store: give "
                f"--tracking-uri (or {TRACKING_URI_ENV}) of a store, or move the file away"
            )


def check_folder_store(tracking_uri: str) -> None:
    """Refuse a plain path or ``file://`` URI: MLflow no longer opens folder stores (unless
    ``MLFLOW_ALLOW_FILE_STORE`` says so) and answered with a paragraph about migrating that
    never said what to give instead. :func:`require_store` and :func:`prepare_store` call it,
    so every command that opens a store says so before MLflow does.

    >>> check_folder_store("sqlite:///x.db"), check_folder_store("http://host:5000")
    (None, None)
    """
    address = urlsplit(tracking_uri)
    if len(address.scheme) > 1 and address.scheme != "file":  # a drive letter is a path
        return
    if os.environ.get(ALLOW_FILE_STORE_ENV, "").lower() in ("1", "true"):
        return
    folder = Path(address.path if address.scheme == "file" else tracking_uri).expanduser()
    database = folder if folder.suffix == ".db" else folder / "mlflow.db"
    raise TrackingStoreUnreadable(
        f"tracking URI {tracking_uri} is a folder path, and MLflow no longer opens folder "
        f"stores: give sqlite:///{database.absolute()} (an SQLite file) or an MLflow server's "
        "http(s):// address; `mlflow migrate-filestore` moves an old folder store's runs over"
    )


def require_store(tracking_uri: str) -> None:
    """Refuse a store that a command reading runs or models would otherwise create: a local
    SQLite file that is not there (nothing trained or staged yet), or a server that does not
    answer (:func:`check_server`), or a folder (:func:`check_folder_store`). A command that
    only reads leaves no empty store behind.
    """
    check_folder_store(tracking_uri)
    check_server(tracking_uri)
    if not tracking_uri.startswith("sqlite:///"):
        return
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    _check_database(database)
    if not database.is_file():
        raise NoTrackingStore(
            f"no tracking store at {database}: nothing has been trained or staged here yet "
            "(`quill train` and `quill stage` create it); --tracking-uri or "
            f"{TRACKING_URI_ENV} names another store"
        )


def prepare_store(tracking_uri: str) -> None:
    """Create a local SQLite store's folder and tables, one process at a time; for a server,
    check that it answers (:func:`check_server`); refuse a folder (:func:`check_folder_store`).

    Two sweep workers starting together on a new store would otherwise both run MLflow's
    schema migrations and one would fail.
    """
    check_folder_store(tracking_uri)
    check_server(tracking_uri)
    if not tracking_uri.startswith("sqlite:///"):
        return
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    _check_database(database)
    with file_lock(database.with_name(database.name + ".lock")):
        from mlflow import MlflowClient

        MlflowClient(tracking_uri).search_experiments(max_results=1)


def ensure_experiment(client: Any, name: str, tracking_uri: str) -> str:
    """Id of experiment ``name``, created if missing; safe when workers race to create it."""
    from mlflow.exceptions import MlflowException

    for attempt in range(5):
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                client.restore_experiment(experiment.experiment_id)
            return experiment.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifact_root(tracking_uri))
        except MlflowException:
            # Another process created it between our lookup and our insert: look again.
            time.sleep(0.2 * (attempt + 1))
    raise RuntimeError(f"could not create or find MLflow experiment {name!r}")


def log_to_shared_run(
    client: Any, run_id: str, tags: Mapping[str, str], metrics: Mapping[str, float]
) -> None:
    """Write ``tags`` and ``metrics`` (step 0) onto a run that other processes write too.

    The store inserts a key the first time it sees it on a run, so two workers writing the same
    new key at once (sweep workers finishing together on their shared parent run) collide on
    its unique constraint; the batch is one transaction, so the loser retries it whole and then
    updates the row the winner inserted.
    """
    from mlflow.entities import Metric, RunTag
    from mlflow.exceptions import MlflowException

    timestamp = int(time.time() * 1000)
    batch = {
        "metrics": [Metric(key, float(value), timestamp, 0) for key, value in metrics.items()],
        "tags": [RunTag(key, str(value)) for key, value in tags.items()],
    }
    for attempt in range(5):
        try:
            client.log_batch(run_id, **batch)
            return
        except MlflowException:
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
