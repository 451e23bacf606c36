"""Reaching a store that is somewhere else or busy: a copied or moved store is read where it
is, and a store locked by another process is one line and exit 2, never a traceback."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect
from typer.testing import CliRunner

from quill.cli import app
from quill.data.manifest import Manifest
from quill.errors import EXIT_ERROR
from quill.monitoring.database import LOCK_TIMEOUT_ENV, NotAMonitoringStore, sqlite_file
from quill.monitoring.images import OWNER_FILE
from quill.monitoring.records import PredictionRecord
from quill.monitoring.store import MonitoringStore


def _monitor(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["monitor", *(str(a) for a in args)])
    return result.exit_code, result.output


@pytest.fixture
def store_file(tmp_path: Path, make_line: Callable[..., bytes]) -> Path:
    """An SQLite store as serving leaves it: two corrected photos, images beside the file."""
    file = tmp_path / "mon" / "m.db"
    store = MonitoringStore(f"sqlite:///{file}")
    for seed, (rid, text) in enumerate((("r1", "Dear Sir"), ("r2", "Kew Gardens"))):
        record = PredictionRecord(rid, "api", "m-1", make_line(text, seed=seed), "x", 0.5, 9.0)
        store.log_prediction(record)
        store.add_feedback(rid, "incorrect", correction=text)
    store.close()
    return file


def test_a_copied_store_is_read_where_it_is_and_written_once_its_mark_is_removed(
    tmp_path: Path, store_file: Path
) -> None:
    """`cp -r mon monc` gave a store no command could open ("holds the images of another
    monitoring store"): its image folder's mark names the original. Reading never deletes
    a photo, so only a write or a deletion is refused, with the way out."""
    copy = tmp_path / "monc"
    shutil.copytree(store_file.parent, copy)
    url = f"sqlite:///{copy / 'm.db'}"
    code, output = _monitor("status", "--url", url)
    assert code == 0, output
    assert "predictions          2" in output
    report = tmp_path / "report.html"
    code, output = _monitor("report", "--url", url, "-o", report)
    assert code == 0, output
    assert report.read_text().count('src="data:image/jpeg;base64,') >= 2  # its photos, read
    code, output = _monitor("feedback-dataset", "--url", url, "-o", tmp_path / "fd")
    assert code == 0, output
    assert len(Manifest.load(tmp_path / "fd")) == 2

    photos = sorted((copy / "images").rglob("*.png"))
    mark = copy / "images" / OWNER_FILE
    code, output = _monitor("purge", "--url", url, "--older-than", "0")
    assert code == EXIT_ERROR, output
    assert output.startswith(f"error: the image folder {copy / 'images'} holds the images of")
    assert f"if it is that store copied or moved here, delete {mark} so that" in output
    assert sorted((copy / "images").rglob("*.png")) == photos
    assert MonitoringStore(url, create=False).counts()["predictions"] == 2

    mark.unlink()  # what the message says to do
    code, output = _monitor("purge", "--url", url, "--older-than", "0")
    assert code == 0, output
    assert mark.read_text().strip() == f"sqlite:///{copy / 'm.db'}"
    assert list((copy / "images").rglob("*.png")) == []
    # the original is untouched by all of it
    assert len(list((store_file.parent / "images").rglob("*.png"))) == 2


@pytest.mark.parametrize(
    "command",
    [["purge", "--older-than", "0"], ["delete", "--request-id", "r1"], ["backfill", "--recompute"]],
)
def test_a_store_locked_by_another_process_is_one_line_and_exit_2(
    store_file: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    """A purge meeting another process's write lock printed SQLAlchemy's OperationalError
    traceback and exited 1, the status of "ran, the answer is no"."""
    monkeypatch.setenv(LOCK_TIMEOUT_ENV, "0.2")
    url = f"sqlite:///{store_file}"
    holder = sqlite3.connect(store_file, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        code, output = _monitor(*command, "--url", url)
    finally:
        holder.close()
    assert code == EXIT_ERROR, output
    assert output == (
        "error: the monitoring store cannot be written now (database is locked): another "
        "process holds it, try again when it is done\n"
    )
    assert MonitoringStore(url, create=False).counts()["predictions"] == 2


def test_a_lock_timeout_that_is_not_a_number_of_seconds_is_named(
    store_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LOCK_TIMEOUT_ENV, "soon")
    code, output = _monitor("purge", "--url", f"sqlite:///{store_file}")
    assert code == EXIT_ERROR, output
    assert output == (
        "error: cannot open the monitoring store: "
        f"${LOCK_TIMEOUT_ENV}='soon': give a number of seconds above 0\n"
    )


def test_opening_an_existing_store_only_creates_nothing_on_either_backend(
    store_url: str, tmp_path: Path
) -> None:
    """What every command but baseline opens: an empty database is refused and left empty
    (on Postgres too, where no file tells), a store made by serving is opened."""
    file = sqlite_file(store_url)
    if file is not None:
        file.touch()  # an empty database, as Postgres's is
    with pytest.raises(NotAMonitoringStore, match="is not a Quill monitoring store"):
        MonitoringStore(store_url, image_dir=tmp_path / "images", create=False)
    engine = create_engine(store_url)
    assert inspect(engine).get_table_names() == []
    MonitoringStore(store_url, image_dir=tmp_path / "images").close()
    store = MonitoringStore(store_url, image_dir=tmp_path / "images", create=False)
    assert store.counts()["predictions"] == 0
    store.close()
    engine.dispose()
