"""Bad input to ``quill monitor``: one line and exit 2 before any work, never a traceback,
and never a new empty store made by a command that only reads one."""

from __future__ import annotations

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


def test_a_command_that_writes_still_creates_the_store(tmp_path: Path) -> None:
    new = tmp_path / "new" / "monitoring.db"
    code, output = _monitor("purge", "--url", f"sqlite:///{new}", "--older-than", "30")
    assert code == 0, output
    assert new.is_file()


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
