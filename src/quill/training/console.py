"""The console log of a run: everything printed while it trains, copied into a file.

:func:`capture_console` tees stdout and stderr (and so logging) into a file;
:func:`clean_console_log` keeps only the final state of lines a progress bar redrew.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


class _Tee(io.TextIOBase):
    """Writes to the real stream and to a log file."""

    def __init__(self, stream: TextIO, log: TextIO):
        self.stream = stream
        self.log = log

    def write(self, text: str) -> int:
        self.log.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()
        self.log.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")


@contextmanager
def capture_console(path: Path) -> Iterator[Path]:
    """Copy everything printed to stdout/stderr (and logging) into ``path`` meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as log:
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
        try:
            yield path
        finally:
            sys.stdout, sys.stderr = out, err


def clean_console_log(text: str) -> str:
    """Keep only the final state of lines a progress bar redrew with carriage returns.

    >>> clean_console_log("Epoch 0: 10%\\rEpoch 0: 100%\\nDone\\n")
    'Epoch 0: 100%\\nDone\\n'
    """
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))
