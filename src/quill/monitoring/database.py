"""The monitoring store's connection: which database and image store, and how to talk to them.

:class:`StoreBase` holds what every part of :class:`~quill.monitoring.store.MonitoringStore`
shares: the SQLAlchemy engines and sessions, the in-process write mutex, the image store, and
the choice to retain images. The parts (predictions, backfill, retention, baselines) are
subclasses of it, each in a module of its own. Opening a store creates the tables it lacks
and adds to older tables the nullable columns added since (:mod:`quill.monitoring.migrate`);
only serving and ``quill monitor baseline`` create a store: the other commands open an existing
one (``create=False``), and refuse a missing file or a database that is not a Quill store
rather than make Quill's tables in it.

Configuration: ``$QUILL_MONITORING_URL`` (database), ``$QUILL_MONITORING_IMAGES`` (image
folder or URL), ``$QUILL_MONITORING_RETAIN_IMAGES`` (``0`` keeps projections only),
``$QUILL_MONITORING_SQLITE_SYNCHRONOUS`` (``NORMAL``, the default, survives a killed process;
``FULL`` also survives power loss, at the cost of an fsync per commit),
``$QUILL_MONITORING_LOCK_TIMEOUT`` (seconds a writer waits for another process's lock on an
SQLite store, 30 by default).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Self

from sqlalchemy import create_engine, event, inspect, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker

from quill.errors import QuillError
from quill.monitoring.errors import StoreBusy, StoreUnavailable
from quill.monitoring.images import ImageStore
from quill.monitoring.migrate import add_missing_columns
from quill.monitoring.records import StoredPrediction
from quill.monitoring.schema import Base, PredictionRow
from quill.monitoring.settings import MonitoringSettings
from quill.vocab import Tokenizer

log = logging.getLogger(__name__)

URL_ENV = "QUILL_MONITORING_URL"
IMAGES_ENV = "QUILL_MONITORING_IMAGES"
RETAIN_ENV = "QUILL_MONITORING_RETAIN_IMAGES"
SYNCHRONOUS_ENV = "QUILL_MONITORING_SQLITE_SYNCHRONOUS"
SYNCHRONOUS_MODES = ("NORMAL", "FULL", "EXTRA")
LOCK_TIMEOUT_ENV = "QUILL_MONITORING_LOCK_TIMEOUT"
#: Seconds SQLite waits for a lock held by another writer (a purge, another worker), unless
#: ``$QUILL_MONITORING_LOCK_TIMEOUT`` says otherwise.
LOCK_TIMEOUT_S = 30.0
#: The same wait on the request path: past it the prediction is queued instead, so that a
#: long purge delays answers by at most this much.
REQUEST_LOCK_TIMEOUT_S = 2.0
#: Where the embedded store lives when nothing is configured (relative to the working dir).
DEFAULT_DIR = Path("monitoring")
#: Rows per IN (...) list: well under every backend's parameter limit.
CHUNK = 500
_IN_MEMORY = (None, "", ":memory:")


class NoMonitoringStore(QuillError, FileNotFoundError):
    """A command that needs an existing store was pointed at an SQLite file that does not
    exist (a typo in --url, another working directory): creating an empty store there
    would report on, or purge, nothing."""

    code = "no_monitoring_store"


class NotAMonitoringStore(QuillError, ValueError):
    """The database holds no Quill store (no ``predictions`` table): a command that only
    opens an existing store must not create Quill's tables in someone else's database."""

    code = "not_a_monitoring_store"


def default_url() -> str:
    """``$QUILL_MONITORING_URL``, else an SQLite file under ``./monitoring/``."""
    return os.environ.get(URL_ENV) or f"sqlite:///{(DEFAULT_DIR / 'monitoring.db').resolve()}"


def normalise_url(url: str) -> str:
    """Route plain Postgres URLs to psycopg 3, the driver Quill installs.

    >>> normalise_url("postgresql://u@h/db")
    'postgresql+psycopg://u@h/db'
    >>> normalise_url("sqlite:///x.db")
    'sqlite:///x.db'
    """
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def sqlite_file(url: str) -> Path | None:
    """The file an SQLite URL names; None for a server database or an in-memory one.

    Commands that only read ask it whether the store exists before opening it, since
    opening creates a missing one (as serving wants); the store asks it where its images
    go and whether its writers share a file.

    >>> sqlite_file("sqlite:////srv/monitoring.db")
    PosixPath('/srv/monitoring.db')
    >>> sqlite_file("postgresql://u@h/db") is None, sqlite_file("sqlite://") is None
    (True, True)
    """
    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() == "sqlite" and parsed.database not in _IN_MEMORY:
        return Path(parsed.database)
    return None


def sqlite_synchronous() -> str:
    """SQLite's ``synchronous`` setting from ``$QUILL_MONITORING_SQLITE_SYNCHRONOUS``.

    In WAL mode ``NORMAL`` (the default) makes a commit survive the death of the process
    (kill -9, out of memory): the WAL is in the operating system's cache. ``FULL`` also
    survives a power loss or a kernel crash, with an fsync per commit.

    >>> sqlite_synchronous()
    'NORMAL'
    """
    value = os.environ.get(SYNCHRONOUS_ENV, "NORMAL").strip().upper()
    if value not in SYNCHRONOUS_MODES:
        raise ValueError(f"${SYNCHRONOUS_ENV}={value!r}: use one of {', '.join(SYNCHRONOUS_MODES)}")
    return value


def lock_timeout() -> float:
    """Seconds a writer waits for another process's lock on an SQLite store, from
    ``$QUILL_MONITORING_LOCK_TIMEOUT`` (default :data:`LOCK_TIMEOUT_S`).

    >>> lock_timeout()
    30.0
    """
    value = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not value:
        return LOCK_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise ValueError(f"${LOCK_TIMEOUT_ENV}={value!r}: give a number of seconds above 0")
    return seconds


def require_store(url: str) -> None:
    """Refuse a database that holds no Quill store, without creating or writing anything.

    :class:`NoMonitoringStore` for a missing SQLite file, :class:`NotAMonitoringStore` for
    a database without the ``predictions`` table. An SQLite file is asked through a
    read-only connection of its own: the store's connections switch a file to WAL mode as
    they open it, which writes to it.
    """
    file = sqlite_file(url)
    table = PredictionRow.__tablename__
    if file is None:
        engine = _create_engine(url)
        try:
            found = inspect(engine).has_table(table)
        finally:
            engine.dispose()
    elif not file.is_file():
        raise NoMonitoringStore(f"no monitoring store at {file}")
    else:
        try:
            with closing(sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True)) as db:
                query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
                found = db.execute(query, (table,)).fetchone() is not None
        except sqlite3.OperationalError:
            raise  # cannot be opened (its folder, its permissions): said by the caller
        except sqlite3.DatabaseError as exc:
            raise NotAMonitoringStore(f"{file} is not a Quill monitoring store ({exc})") from exc
    if not found:
        where = file or make_url(url).render_as_string(hide_password=True)
        raise NotAMonitoringStore(
            f"{where} is not a Quill monitoring store (it has no {table} table)"
        )


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    """``items`` in slices of at most ``size`` (one IN (...) list each)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class StoreBase:
    """The database and the image store of the monitoring store, and how to reach them.

    ``retain_images=False`` keeps projections only: image bytes are used to compute the input
    projections and then dropped. Thread safe: each call opens its own session.
    """

    def __init__(
        self,
        url: str | None = None,
        image_dir: str | Path | None = None,
        *,
        retain_images: bool | None = None,
        tokenizer: Tokenizer | None = None,
        storage_options: dict[str, Any] | None = None,
        create: bool = True,
    ):
        """``create=False`` opens an existing store only (:func:`require_store`); with
        ``create`` (serving, a baseline) a missing store is made, and an image folder
        another store holds is refused at once rather than at the first image."""
        self.url = normalise_url(url or default_url())
        if not create:
            require_store(self.url)
        self.engine = _create_engine(self.url)
        Base.metadata.create_all(self.engine)
        # A store written by an older Quill gains the nullable columns added since.
        add_missing_columns(self.engine, Base.metadata)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # The request path's connections wait less for a lock (an SQLite file only: an
        # in-memory database exists once per engine).
        on_file = sqlite_file(self.url) is not None
        # Writers of this process take turns on a mutex: a request waiting for the logger's
        # batch is woken as soon as it commits, where SQLite's busy handler would sleep
        # 1, 2, 5, 10... ms between tries. Other processes still meet the busy handler.
        self._write_lock: Any = threading.Lock() if on_file else _FreeLock()
        self._request_engine = (
            _create_engine(self.url, wait_s=REQUEST_LOCK_TIMEOUT_S) if on_file else self.engine
        )
        self._request_sessions = sessionmaker(self._request_engine, expire_on_commit=False)
        self._file = sqlite_file(self.url)
        self._file_id = _file_id(self._file)
        if image_dir is None:
            image_dir = os.environ.get(IMAGES_ENV) or _default_image_dir(self.url)
        self.images = ImageStore(
            str(image_dir), store_identity(self.url), **(storage_options or {})
        )
        if create:
            self.images.check_owner()
        if retain_images is None:
            retain_images = os.environ.get(RETAIN_ENV, "1").lower() not in ("0", "false", "no")
        self.retain_images = retain_images
        self.tokenizer = tokenizer or Tokenizer()

    @classmethod
    def from_settings(
        cls,
        settings: MonitoringSettings,
        url: str | None = None,
        image_dir: str | Path | None = None,
        *,
        create: bool = True,
    ) -> Self:
        """A store honouring ``configs/monitoring.yaml``'s ``store.retain_images`` (the
        environment variable, when set, wins)."""
        configured = bool(settings.store.get("retain_images", True))
        retain = None if RETAIN_ENV in os.environ else configured
        return cls(url, image_dir, retain_images=retain, create=create)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({make_url(self.url).render_as_string(hide_password=True)!r})"

    @contextmanager
    def _request_turn(self) -> Iterator[None]:
        """This process's write mutex for a write on the request path, waited for at most
        :data:`REQUEST_LOCK_TIMEOUT_S` (:class:`StoreBusy` after): the other writer (the
        logger's batch, a feedback) may itself wait 30 s for another process's lock, and
        every answer queued behind it waited as long."""
        if not self._write_lock.acquire(timeout=REQUEST_LOCK_TIMEOUT_S):
            raise StoreBusy(
                f"another write of this process has held the store for {REQUEST_LOCK_TIMEOUT_S} s"
            )
        try:
            self._reopen_if_replaced()
            yield
        finally:
            self._write_lock.release()

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        """This process's write mutex for a write off the request path (waited for).

        A database that refuses the write (another process's lock held past
        :func:`lock_timeout`, a server down) raises :class:`StoreUnavailable`, one line a
        command can print, rather than SQLAlchemy's error with its statement.
        """
        with self._write_lock:
            self._reopen_if_replaced()
            try:
                yield
            except OperationalError as exc:
                locked = "locked" in str(exc.orig)
                hint = ": another process holds it, try again when it is done" if locked else ""
                raise StoreUnavailable(
                    f"the monitoring store cannot be written now ({exc.orig}){hint}"
                ) from exc

    def _reopen_if_replaced(self) -> None:
        """Start a new SQLite file when the store's was deleted or replaced while open (an
        operator's `rm monitoring.db`): the connections still open wrote every later
        prediction and flag into the deleted file, lost with it, while answering 200. Called
        with the write mutex held; one ``stat`` a write."""
        if self._file is None or _file_id(self._file) == self._file_id:
            return
        log.error(
            "the monitoring store %s was deleted or replaced while open: a new one is started "
            "there; what was in the old one is not in it",
            self._file,
        )
        self.engine.dispose()
        self._request_engine.dispose()
        Base.metadata.create_all(self.engine)
        self._file_id = _file_id(self._file)

    def close(self) -> None:
        self.engine.dispose()
        self._request_engine.dispose()

    # ---- images -------------------------------------------------------------------------

    def image_bytes(self, prediction: StoredPrediction) -> bytes | None:
        """The stored input image, or None when it was not retained or has been purged."""
        if prediction.image_sha256 is None or prediction.image_ext is None:
            return None
        return self.images.get(prediction.image_sha256, prediction.image_ext)

    def image_location(self, prediction: StoredPrediction) -> str | None:
        """Path or URL of the stored input image (None if it was not kept)."""
        if prediction.image_sha256 is None or prediction.image_ext is None:
            return None
        return self.images.url(prediction.image_sha256, prediction.image_ext)

    def _delete_unreferenced(self, images: Iterable[tuple[str, str]]) -> int:
        """Delete image files no remaining prediction points to (the same photo can be
        shared by several requests)."""
        images = list(images)
        with self._sessions() as session:
            referenced: set[str | None] = set()
            for chunk in chunks([sha for sha, _ in images]):
                referenced.update(
                    session.scalars(
                        select(PredictionRow.image_sha256).where(
                            PredictionRow.image_sha256.in_(chunk)
                        )
                    )
                )
        return sum(self.images.delete(sha, ext) for sha, ext in images if sha not in referenced)


def _file_id(path: Path | None) -> tuple[int, int] | None:
    """(device, inode) of a file, None when there is none: which file a path names now."""
    try:
        found = path.stat() if path is not None else None
    except FileNotFoundError:
        return None
    return None if found is None else (found.st_dev, found.st_ino)


class _FreeLock:
    """The write lock of a server database (Postgres): its own locking serves, so writers of
    one process need not take turns; a lock that is always free."""

    def acquire(self, timeout: float = -1) -> bool:
        return True

    def release(self) -> None:
        return None

    def __enter__(self) -> _FreeLock:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _create_engine(url: str, wait_s: float | None = None) -> Engine:
    """An engine for ``url``; on SQLite, waiting ``wait_s`` seconds for another writer's
    lock (default :func:`lock_timeout`)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        file = sqlite_file(url)
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
        synchronous = sqlite_synchronous()
        timeout = lock_timeout() if wait_s is None else wait_s
        engine = create_engine(url, connect_args={"timeout": timeout})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection: Any, _record: Any) -> None:
            # WAL lets the report read while the logger writes; several API workers may
            # share the file.
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.close()

        return engine
    connect_args = {}
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        # An unreachable server fails a write in seconds, not after the TCP timeout.
        connect_args["connect_timeout"] = 10
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def store_identity(url: str) -> str:
    """What names a store in its image folder (:data:`quill.monitoring.images.OWNER_FILE`):
    an SQLite file's absolute path, a server's URL without its password.

    >>> store_identity("postgresql://quill:secret@db/quill")
    'postgresql+psycopg://quill:***@db/quill'
    """
    file = sqlite_file(url)
    if file is not None:
        return f"sqlite:///{file.resolve()}"
    return make_url(normalise_url(url)).render_as_string(hide_password=True)


def _default_image_dir(url: str) -> str:
    """Beside an SQLite file; under ./monitoring/ for a server database."""
    file = sqlite_file(url)
    return str(file.parent / "images") if file else str((DEFAULT_DIR / "images").resolve())
