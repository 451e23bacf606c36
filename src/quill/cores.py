"""How many CPU cores this process may use: what sizes worker pools and thread pools."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on (its affinity on Linux, e.g. under ``taskset`` or
    a container's CPU set), else every core of the machine; at least 1.

    >>> usable_cores() >= 1
    True
    """
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)
