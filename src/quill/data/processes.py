"""Worker processes for data jobs (synthetic lines, paragraphs, ink caches).

They start from a fresh interpreter (``forkserver``, else ``spawn``), never as a fork of the
caller. A caller that has loaded pyarrow (MLflow does, and so do training and the test
suite) runs jemalloc's background thread; a child forked while that thread held an allocator
lock waits on it for ever. A test run hung that way once: the parent waiting for its pool,
the worker asleep on a futex. A fresh worker pays its own imports (a second or two) instead.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import BaseContext


def worker_context() -> BaseContext:
    """The multiprocessing context data jobs start their workers with.

    >>> worker_context().get_start_method() in ("forkserver", "spawn")
    True
    """
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
