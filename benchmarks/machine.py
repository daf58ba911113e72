"""Describe the machine a benchmark ran on, for the results tables."""

from __future__ import annotations

import os
import platform
import re
from datetime import UTC, datetime
from pathlib import Path


def describe_machine() -> str:
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        total_kb = int(meminfo.read_text().split("MemTotal:")[1].split()[0])
        memory = f", {total_kb / 1024 / 1024:.0f} GiB RAM"
    load = ", load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else ""
    # Imported here: the module behind it loads Dagster, which only the measuring benchmarks need.
    from intelligence_assets.defs.processes import available_cores

    total, usable = os.cpu_count() or 1, available_cores()
    # A run pinned to some cores (taskset, a container's cpuset) is a machine of that many cores.
    cores = f"{usable} cores" if usable == total else f"{usable} of {total} cores (CPU affinity)"
    return (
        f"{cores} ({cpu}){memory}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC{load}"
    )


def described_date(description: str) -> str | None:
    """When a `describe_machine()` description was written ("2026-12-06 17:22 UTC"): the figures
    rendered from a measurement later are stamped with the measurement's time, not the render's."""
    found = re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", description)
    return found.group(0) if found else None
