"""`make profile`'s garbage-collector probe: each process, forked ones included, reports its own
collector time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from benchmarks.profile_demo import COLLECTOR_PROBE, collector_seconds

# The parent collects twice, then forks a child that collects three times; each pause outlasts
# the probe's 0.2 s between writes, so every pass reaches the files.
PROGRAM = """
import gc, os, time
for _ in range(2):
    gc.collect(); time.sleep(0.25)
child = os.fork()
if child == 0:
    for _ in range(3):
        gc.collect(); time.sleep(0.25)
    os._exit(0)
os.waitpid(child, 0)
print(child)
"""


def test_every_process_reports_its_own_collector_passes(tmp_path: Path) -> None:
    environment = {**os.environ, "PYTHONPATH": str(COLLECTOR_PROBE), "COLLECTOR_PROBE_DIRECTORY": str(tmp_path)}
    completed = subprocess.run(
        [sys.executable, "-c", PROGRAM], env=environment, check=True, timeout=60, capture_output=True, text=True
    )
    child = completed.stdout.strip()
    child_seconds, child_passes = (float(value) for value in (tmp_path / f"{child}.txt").read_text().split())
    # The child's own three passes, not the parent's it inherited at the fork.
    assert child_passes == 3
    assert len(collector_seconds(tmp_path)) == 2
    parent_seconds, parent_passes = next(
        total
        for path, total in ((path, path.read_text().split()) for path in tmp_path.glob("*.txt"))
        if path.stem != child
    )
    assert int(parent_passes) >= 2
    assert child_seconds > 0 and float(parent_seconds) > 0
