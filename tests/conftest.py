"""Fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def hooker_dir() -> Path:
    """The real Hooker letters (read-only, outside the repo); skipped where absent."""
    path = SHARED_DATASETS / "hooker-letters"
    if not (path / "labels.tsv").is_file():
        pytest.skip(f"real handwriting not found at {path}")
    return path
