"""Where runs are recorded: stores MLflow cannot open are refused at once, in one line, and
the git state recorded is that of the code that ran."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from quill.models import build_model
from quill.training.config import resolve_config
from quill.training.tracking import Tracker, record_run_start
from quill.training.tracking_store import (
    ALLOW_FILE_STORE_ENV,
    TrackingStoreUnreadable,
    check_folder_store,
    prepare_store,
    require_store,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_an_sqlite_uri_naming_a_folder_is_refused_at_once(tmp_path: Path) -> None:
    """`quill train` spent two minutes in MLflow's retries before "unable to open database
    file"; the reading commands said there were no runs yet, and exited 0."""
    uri = f"sqlite:///{tmp_path}"
    for open_store in (prepare_store, require_store):
        started = time.monotonic()
        with pytest.raises(TrackingStoreUnreadable, match="is a folder, not an SQLite database"):
            open_store(uri)
        assert time.monotonic() - started < 5
    assert list(tmp_path.iterdir()) == []  # not even a lock file beside it


def test_a_folder_store_uri_says_what_to_give(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow's answer to a folder was a paragraph about migrating its retired file store."""
    for uri in (str(tmp_path), tmp_path.as_uri()):
        with pytest.raises(TrackingStoreUnreadable, match=f"give sqlite:///{tmp_path}/mlflow.db"):
            check_folder_store(uri)
    monkeypatch.setenv(ALLOW_FILE_STORE_ENV, "true")  # MLflow opens folder stores again
    check_folder_store(str(tmp_path))


def test_the_git_state_is_the_running_codes_wherever_the_run_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started outside the checkout, a run recorded no commit and no diff.patch."""
    if not (REPO_ROOT / ".git").exists():
        pytest.skip("the tests do not run from a git checkout")
    monkeypatch.chdir(tmp_path)
    tracker = Tracker(tmp_path / "run", "r1")
    config = resolve_config(REPO_ROOT / "configs" / "tiny.yaml")
    model = build_model(config["model"]["name"], 10, **config["model"]["config"])
    record_run_start(tracker, config, None, "v1", [], model, "summary")
    tags = json.loads((tmp_path / "run" / "tags.json").read_text())
    assert len(tags["mlflow.source.git.commit"]) == 40
    assert (tmp_path / "run" / "code" / "diff.patch").is_file()
