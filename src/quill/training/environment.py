"""What a run records about the code and the machine it ran on.

The git commit, branch and dirty state with a ``diff.patch`` of uncommitted work (so the code
a run used can be restored), ``pip freeze``, Python/OS/hardware and library versions, and the
model's parameter count.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

#: Untracked files larger than this are listed in diff.patch but not inlined.
MAX_UNTRACKED_BYTES = 200_000


def _git(root: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout


def git_info(root: Path) -> dict[str, str]:
    """Commit, branch and dirty flag of the project's git checkout ({} outside git)."""
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        return {}
    branch = (_git(root, "rev-parse", "--abbrev-ref", "HEAD") or "").strip()
    status = _git(root, "status", "--porcelain", "--untracked-files=no") or ""
    return {"commit": commit.strip(), "branch": branch, "dirty": str(bool(status.strip()))}


def git_diff_patch(root: Path) -> str:
    """Uncommitted changes as a patch: tracked edits plus untracked (not ignored) files.

    Applying it to the recorded commit (``git apply diff.patch``) restores the code the run
    used, which the commit alone would not.
    """
    parts = [_git(root, "diff", "HEAD", "--binary") or ""]
    untracked = (_git(root, "ls-files", "--others", "--exclude-standard") or "").split("\n")
    for name in filter(None, untracked):
        path = root / name
        if path.is_file() and path.stat().st_size <= MAX_UNTRACKED_BYTES:
            # --no-index exits 1 when the files differ, which they always do here.
            result = subprocess.run(
                ["git", "diff", "--no-index", "--binary", "--", "/dev/null", name],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=30,
            )
            parts.append(result.stdout)
        else:
            parts.append(f"# untracked file not inlined (too large or unreadable): {name}\n")
    return "".join(parts)


def pip_freeze() -> str:
    """Installed distributions as ``name==version`` lines (what ``pip freeze`` prints)."""
    seen: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and name.lower() not in seen:
            seen[name.lower()] = f"{name}=={dist.version}"
    return "\n".join(sorted(seen.values(), key=str.lower)) + "\n"


def environment_info() -> dict[str, str]:
    """Python, OS, hardware and the versions of the libraries that shape training."""
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu_count": str(os.cpu_count()),
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
    for package in ("lightning", "torchmetrics", "mlflow", "optuna", "numpy"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = "not installed"
    return info


def parameter_count(model: Any) -> dict[str, int]:
    """Total and trainable parameters of a module."""
    params = list(model.parameters())
    return {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
    }
