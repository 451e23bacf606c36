"""Fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"
#: Columns of the console a command's messages are drawn for in the tests: wide enough that an
#: error naming a temporary path is not wrapped mid-sentence (at 80 columns, where the wrap
#: fell moved with the length of pytest's numbered temporary folder).
CONSOLE_COLUMNS = "250"


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", CONSOLE_COLUMNS)


@pytest.fixture(scope="session")
def hooker_dir() -> Path:
    """The real Hooker letters (read-only, outside the repo); skipped where absent."""
    path = SHARED_DATASETS / "hooker-letters"
    if not (path / "labels.tsv").is_file():
        pytest.skip(f"real handwriting not found at {path}")
    return path


@pytest.fixture(scope="session")
def smoke_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny staged model of quill.staging.smoke (reads "hello", "quill", "Kew", "ink"),
    trained and staged once, then reused by every test package through pytest's cache (keyed
    by a hash of the code that shapes it; the session's temp dir when the cache is disabled)."""
    import torch

    from quill.staging.smoke import cached_smoke_model

    cache = getattr(request.config, "cache", None)
    root = cache.mkdir("quill-smoke-model") if cache else tmp_path_factory.getbasetemp()
    torch.set_num_threads(1)
    return cached_smoke_model(Path(root))


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
def chromium_launch() -> dict:
    """Playwright launch options for Debian's headless Chromium (never a downloaded browser).

    The flags keep Chromium from calling out: this machine has no network but localhost.
    """
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed")
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    return {"executable_path": str(CHROMIUM), "args": args}
