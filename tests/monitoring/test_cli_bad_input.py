"""Bad input to ``quill monitor``: one line and exit 2 before any work, never a traceback,
and never a new empty store made (nor Quill's tables in another database) by a command that
needs an existing store: every one but ``baseline``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quill.cli import app
from quill.errors import EXIT_ERROR
from quill.monitoring.database import sqlite_file
from quill.monitoring.store import MonitoringStore

runner = CliRunner()


def _monitor(*args: object) -> tuple[int, str]:
    result = runner.invoke(app, ["monitor", *(str(a) for a in args)])
    return result.exit_code, result.output


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    """An existing (empty) SQLite store."""
    url = f"sqlite:///{tmp_path / 'store' / 'monitoring.db'}"
    MonitoringStore(url).close()
    return url


def test_sqlite_file_of_a_url(tmp_path: Path) -> None:
    assert sqlite_file(f"sqlite:///{tmp_path / 'm.db'}") == tmp_path / "m.db"
    assert sqlite_file("sqlite:///:memory:") is None
    assert sqlite_file("postgresql://u@localhost/db") is None


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["check"],
        ["report", "-o", "{tmp}/r.html"],
        ["feedback-dataset", "-o", "{tmp}/fd"],
        ["export", "-o", "{tmp}/tasks.json"],
    ],
)
def test_read_only_commands_refuse_a_missing_store_and_create_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "nosuch" / "x.db"
    args = [part.format(tmp=tmp_path) for part in command]
    code, output = _monitor(*args, "--url", f"sqlite:///{missing}")
    assert code == EXIT_ERROR, output
    assert f"no monitoring store at {missing}" in output and "Traceback" not in output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "command",
    [["purge"], ["purge", "--older-than", "0"], ["delete", "--request-id", "r1"], ["backfill"]],
)
def test_commands_that_write_refuse_a_missing_store_too(tmp_path: Path, command: list[str]) -> None:
    """A purge with a typo in --url (or from cron in another working directory) made an
    empty store there and reported success, having purged nothing."""
    missing = tmp_path / "nosuch" / "monitoring.db"
    code, output = _monitor(*command, "--url", f"sqlite:///{missing}")
    assert code == EXIT_ERROR, output
    assert output == f"error: no monitoring store at {missing}\n"
    assert list(tmp_path.iterdir()) == []


ALL_COMMANDS = [
    ["status"],
    ["check"],
    ["report", "-o", "{tmp}/r.html"],
    ["feedback-dataset", "-o", "{tmp}/fd"],
    ["export", "-o", "{tmp}/tasks.json"],
    ["backfill"],
    ["delete", "--request-id", "r1"],
    ["purge", "--older-than", "0"],
]


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_a_database_that_is_not_a_store_is_refused_and_left_alone(
    tmp_path: Path, command: list[str]
) -> None:
    """Pointed at any SQLite file, the commands created Quill's tables in it (an app's
    database with a users table gained predictions, feedback, ...), and status reported
    on the empty store it had made."""
    database = tmp_path / "app.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE users (name TEXT)")
        connection.execute("INSERT INTO users VALUES ('ada')")
    connection.close()
    before = database.read_bytes()
    args = [part.format(tmp=tmp_path) for part in command]
    code, output = _monitor(*args, "--url", f"sqlite:///{database}")
    assert code == EXIT_ERROR, output
    assert output == (
        f"error: {database} is not a Quill monitoring store (it has no predictions table)\n"
    )
    assert database.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]


@pytest.mark.parametrize("content", [b"", b"not a database at all\n" * 20])
def test_an_empty_file_or_another_file_is_not_a_store(tmp_path: Path, content: bytes) -> None:
    """An empty file became a 90 KB store and status answered 0."""
    file = tmp_path / "m.db"
    file.write_bytes(content)
    code, output = _monitor("status", "--url", f"sqlite:///{file}")
    assert code == EXIT_ERROR, output
    assert output.startswith(f"error: {file} is not a Quill monitoring store (")
    assert file.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.db"]


def test_status_reads_an_existing_store(store_url: str) -> None:
    code, output = _monitor("status", "--url", store_url)
    assert code == 0, output
    assert "predictions" in output


def test_report_refuses_a_folder_as_its_file(store_url: str, tmp_path: Path) -> None:
    code, output = _monitor("report", "--url", store_url, "-o", tmp_path)
    assert code == EXIT_ERROR, output
    assert f"--out {tmp_path}: is a folder; give a file name" in output


def test_report_refuses_a_path_under_a_file(store_url: str, tmp_path: Path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    code, output = _monitor("report", "--url", store_url, "-o", a_file / "report.html")
    assert code == EXIT_ERROR, output
    assert f"{a_file} is a file, not a folder" in output


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_report_refuses_an_unwritable_path(store_url: str) -> None:
    code, output = _monitor("report", "--url", store_url, "-o", "/proc/nope/report.html")
    assert code == EXIT_ERROR, output
    assert "/proc/nope/report.html: cannot write in /proc" in output


def test_report_refuses_a_duration_too_long(store_url: str, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    code, output = _monitor("report", "--url", store_url, "--since", "99999999999d", "-o", out)
    assert code == EXIT_ERROR, output
    assert "duration too long" in output and "Traceback" not in output
    assert not out.exists()


@pytest.mark.parametrize(
    ("command", "option"),
    [
        (["check", "--window", "0s"], "--window"),
        (["check", "--window", "0d"], "--window"),
        (["report", "--since", "0h", "-o", "{tmp}/r.html"], "--since"),
        (["feedback-dataset", "--since", "0m", "-o", "{tmp}/fd"], "--since"),
        (["export", "--since", "0w", "-o", "{tmp}/tasks.json"], "--since"),
    ],
)
def test_a_zero_duration_is_refused(
    store_url: str, tmp_path: Path, command: list[str], option: str
) -> None:
    """`check --window 0s` judged an empty window and said OK, exit 0."""
    args = [part.format(tmp=tmp_path) for part in command]
    code, output = _monitor(*args, "--url", store_url)
    assert code == EXIT_ERROR, output
    assert option in output and "must be longer than 0" in output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_a_config_with_a_zero_window_is_refused(store_url: str, tmp_path: Path) -> None:
    config = tmp_path / "zero.yaml"
    config.write_text("window: 0h\n")
    code, output = _monitor("check", "--url", store_url, "--config", config)
    assert code == EXIT_ERROR, output
    assert output == f"error: {config}: window must be longer than 0, got '0h'\n"


def test_a_config_that_is_not_text_is_named(store_url: str, tmp_path: Path) -> None:
    config = tmp_path / "big.bin"
    config.write_bytes(bytes(range(256)) * 4)
    code, output = _monitor("status", "--url", store_url, "--config", config)
    assert code == EXIT_ERROR, output
    assert f"{config}: not a UTF-8 text file" in output


def test_a_config_that_is_not_a_mapping_is_named(store_url: str, tmp_path: Path) -> None:
    config = tmp_path / "list.yaml"
    config.write_text("- 1\n- 2\n")
    code, output = _monitor("status", "--url", store_url, "--config", config)
    assert code == EXIT_ERROR, output
    assert f"{config}: not a mapping of settings" in output


@pytest.mark.parametrize(
    ("fractions", "message"),
    [
        (["--val-fraction", "1.5"], "--val-fraction"),
        (["--val-fraction", "0.6", "--test-fraction", "0.6"], "add up to 1.2"),
    ],
)
def test_feedback_dataset_checks_fractions_before_making_anything(
    store_url: str, tmp_path: Path, fractions: list[str], message: str
) -> None:
    out = tmp_path / "fd"
    code, output = _monitor("feedback-dataset", "--url", store_url, "-o", out, *fractions)
    assert code == EXIT_ERROR, output
    assert message in output and not out.exists()


@pytest.mark.parametrize("option", ["--batch-size", "--limit"])
def test_baseline_refuses_zero_counts(store_url: str, tmp_path: Path, option: str) -> None:
    code, output = _monitor(
        "baseline", "--url", store_url, "--dataset", tmp_path, "--model", tmp_path, option, "0"
    )
    assert code == EXIT_ERROR, output
    assert option in output
