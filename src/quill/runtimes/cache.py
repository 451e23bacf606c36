"""What loading a model works out once per model and machine, kept between processes.

A command-line call pays its start-up every time, so two costs are paid once and remembered:

* **the ``auto`` backend's choice**: timing ONNX Runtime against TorchScript takes a second
  or more and imports torch. The winner, with its timings, is stored under a key made of the
  model (version, decoding section, size and modification time of its runtime files), the
  thread count, the machine (CPU model and count, Python, the runtimes' installations) and
  the rule ``auto`` chooses by; a change to any of them measures again.
* **the compiled language model**: reading ``lm.json`` and computing its Kneser-Ney tables
  takes a second or more; its compiled arrays load in milliseconds. They are keyed by the LM
  file's content, so a copy of a model (``quill adapt`` copies its base model's LMs, a
  container copies a model folder) shares the compiled form of the original instead of
  compiling, and evicting, its own. Which content a file holds is remembered under its path,
  size and modification time: a start reads one small file, not megabytes to hash.
* **the word lists, read**: telling the letters of 100,000 words from the rest of their file
  takes 20-50 ms a list; the array of their letters loads in a millisecond. Kept by content
  as the language models are.

Files live in the user's cache, never in the model directory (which may be read-only, shared
or inside a container image): ``$QUILL_CACHE_DIR``, else ``$XDG_CACHE_HOME/quill``, else
``~/.cache/quill``. Every write is atomic, and a cache that cannot be written is skipped: the
next start measures or compiles again. ``QUILL_CACHE_DIR=off`` turns the cache off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any, TypeVar

from quill.cores import usable_cores
from quill.digest import json_digest
from quill.models.language_model import COMPILED_FORMAT_VERSION
from quill.staged_model import StagedModel

log = logging.getLogger(__name__)

T = TypeVar("T")

BACKEND_CHOICES = "backend-choice.json"
#: Compiled language models kept (each a few MB; a model reading two languages has four);
#: the least recently written go first.
MAX_COMPILED_LMS = 12
#: Backend choices kept (a few hundred bytes each).
MAX_BACKEND_CHOICES = 64
#: Word lists kept as read (a few MB each).
MAX_READ_WORD_LISTS = 12
#: Language model and word list files whose content digest is remembered (a few bytes each).
MAX_LM_DIGESTS = 64
#: The form word lists are kept in (:func:`read_words_path`); another is read again.
WORDS_FORMAT_VERSION = 1


def cache_dir() -> Path | None:
    """Where Quill keeps what it measured or compiled, or None when turned off."""
    configured = os.environ.get("QUILL_CACHE_DIR")
    if configured:
        return None if configured.lower() == "off" else Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "quill"


def _stamp(path: Path) -> list[object]:
    """Name, size and modification time of a file (None if missing): changes when it does."""
    try:
        stat = path.stat()
    except OSError:
        return [path.name, None]
    return [path.name, stat.st_size, stat.st_mtime_ns]


def _installation(package: str) -> list[object] | None:
    """Where ``package`` is installed and when (reinstalling or upgrading changes it), found
    without importing it (torch takes seconds to import)."""
    try:
        spec = find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    return [spec.origin, *_stamp(Path(spec.origin))[1:]]


def machine_fingerprint() -> dict[str, Any]:
    """What makes one runtime faster than another here: CPU, cores, Python, runtimes."""
    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if "model name" in line), "")
    except OSError:
        pass
    return {
        "machine": platform.machine(),
        "cpu": cpu or platform.processor(),
        "cpus": os.cpu_count(),
        "usable_cpus": usable_cores(),
        "python": sys.version.split()[0],
        "onnxruntime": _installation("onnxruntime"),
        "torch": _installation("torch"),
    }


def backend_choice_key(
    model: StagedModel, threads: int | None, candidates: tuple[str, ...], rule: str
) -> str:
    """The key of ``auto``'s choice for this model, thread count and machine, made among
    ``candidates`` by ``rule`` (a description of how it chooses: a new rule measures again)."""
    files = sorted({path for name in candidates for path in model.files_of(name)})
    decoding = None if model.decoding is None else model.decoding.to_dict()
    described = [model.version, decoding, [_stamp(path) for path in files]]
    return json_digest((described, threads, candidates, rule, machine_fingerprint()), 24)


def read_backend_choice(key: str) -> dict[str, Any] | None:
    """``{"backend", "timings_ms", "measured_at", ...}`` stored for ``key``, if any."""
    root = cache_dir()
    if root is None:
        return None
    try:
        choices = json.loads((root / BACKEND_CHOICES).read_text())
        choice = choices[key]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    valid = isinstance(choice, dict) and isinstance(choice.get("backend"), str)
    return choice if valid and isinstance(choice.get("timings_ms"), dict) else None


def write_backend_choice(key: str, backend: str, timings: dict[str, float], **info: Any) -> None:
    """Remember ``auto``'s choice under ``key`` (skipped silently if the cache is unwritable)."""
    root = cache_dir()
    if root is None:
        return
    path = root / BACKEND_CHOICES
    try:
        choices = json.loads(path.read_text())
        if not isinstance(choices, dict):
            choices = {}
    except (OSError, ValueError):
        choices = {}
    choices.pop(key, None)
    choices[key] = {
        "backend": backend,
        "timings_ms": {name: round(ms, 3) for name, ms in timings.items()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **info,
    }
    kept = dict(list(choices.items())[-MAX_BACKEND_CHOICES:])  # the newest last
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(kept, indent=1) + "\n"))


def compiled_lm_path(lm_file: Path) -> Path | None:
    """Where the compiled form of ``lm_file`` is kept (None when the cache is off): named by
    the file's content, so that every copy of one LM maps to one compiled folder; None too
    when the file cannot be read (loading it will say why)."""
    return _by_content(lm_file, "lm", COMPILED_FORMAT_VERSION, "")


def read_words_path(words_file: Path) -> Path | None:
    """Where the letters of the word list ``words_file`` are kept as read
    (:attr:`~quill.models.lexicon.WordLexicon.letters`, an ``.npy`` file), named by its content
    as :func:`compiled_lm_path` names LMs; None when the cache is off or the file unreadable."""
    return _by_content(words_file, "words", WORDS_FORMAT_VERSION, ".npy")


def _by_content(source: Path, kind: str, version: int, suffix: str) -> Path | None:
    """A path in the cache's ``kind`` folder named by ``source``'s content and the ``version``
    of the form kept there."""
    root = cache_dir()
    if root is None:
        return None
    try:
        content = _content_digest(root / "lm-digests", source)
    except OSError:
        return None
    return root / kind / f"{source.stem}-{json_digest((content, version), 24)}{suffix}"


def _content_digest(digests: Path, path: Path) -> str:
    """The SHA-256 of ``path``'s bytes, remembered in ``digests`` under its path, size and
    modification time (a changed file is hashed again); OSError if it cannot be read."""
    remembered = digests / json_digest((str(path.resolve()), _stamp(path)), 24)
    try:
        digest = remembered.read_text("ascii").strip()
        if len(digest) == 64 and all(c in "0123456789abcdef" for c in digest):
            return digest
    except (OSError, UnicodeDecodeError):
        pass
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    if write_atomic(remembered, lambda new: new.write_text(digest, "ascii")):
        prune(digests, MAX_LM_DIGESTS)
    return digest


def kept_or_made(
    kept: Path | None,
    read: Callable[[Path], T],
    make: Callable[[], T],
    keep: Callable[[T, Path], object],
    limit: int,
) -> T:
    """What the cache keeps at ``kept`` (``read(kept)``), or, when it keeps nothing there,
    ``make()``, kept for the next start (``keep(made, a new path)``, the folder then pruned to
    its ``limit`` newest entries). A kept copy that cannot be read (damaged, or of another
    form) is discarded and made again; ``kept`` None (the cache off) only makes."""
    if kept is not None and kept.exists():
        try:
            return read(kept)
        except (OSError, ValueError, EOFError) as exc:
            log.info("%s: %s", kept, exc)
            _discard(kept)
    made = make()
    if kept is not None and write_atomic(kept, lambda new: keep(made, new)):
        prune(kept.parent, limit)
    return made


def _discard(path: Path) -> None:
    """Remove a file or folder of the cache, if it can be (a read-only cache keeps it)."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
        return
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.info("cache %s not removed: %s", path, exc)


def write_atomic(path: Path, write: Callable[[Path], object]) -> bool:
    """Call ``write(a new temporary path)``, which makes a file or a folder there, then move
    it to ``path`` in one step, so that readers never see half of it; False (logged, not
    raised) if the cache cannot be written. A folder already at ``path`` (another process
    wrote it first) is kept."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)) / "new"
        try:
            write(temporary)
            if temporary.is_dir():
                try:
                    temporary.rename(path)
                except OSError:
                    if not path.is_dir():
                        raise
            else:
                os.replace(temporary, path)
        finally:
            shutil.rmtree(temporary.parent, ignore_errors=True)
    except OSError as exc:
        log.info("cache %s not written: %s", path, exc)
        return False
    return True


def prune(folder: Path, keep: int) -> None:
    """Delete all but the ``keep`` most recently modified entries of ``folder`` (best effort;
    entries starting with a dot are other writers' work in progress)."""
    try:
        entries = [entry for entry in folder.iterdir() if not entry.name.startswith(".")]
        entries.sort(key=lambda entry: entry.stat().st_mtime, reverse=True)
        for old in entries[keep:]:
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
    except OSError:
        pass
