"""The machine a benchmark ran on, recorded with every result.

Latency numbers mean nothing without the CPU, the cores the process may use and how busy the
box was (the load average at the start tells a reader whether other work competed).
"""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

#: Packages whose versions change the numbers.
PACKAGES = ("torch", "onnxruntime", "numpy", "pillow", "rapidocr")


def cpu_model() -> str:
    """The CPU's marketing name (Linux ``/proc/cpuinfo``, else what platform reports)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (absent packages are left out)."""
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def machine_info() -> dict:
    """CPU, cores, memory, load and software versions, as plain JSON values."""
    import psutil

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": usable,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": package_versions(),
    }


def describe_machine(info: dict) -> str:
    """One line for a report heading.

    >>> describe_machine({"cpu": "AMD EPYC", "usable_cores": 2, "logical_cores": 2,
    ...     "memory_gib": 24.0, "load_average_1m": 1.5})
    'AMD EPYC, 2 of 2 logical cores usable, 24.0 GiB RAM, load 1.5 at start'
    """
    return (
        f"{info['cpu']}, {info['usable_cores']} of {info['logical_cores']} logical cores "
        f"usable, {info['memory_gib']} GiB RAM, load {info['load_average_1m']} at start"
    )
