"""The embedded MLflow store (sqlite) when several processes open it for the first time together,
as the steps of one run do when launched from the UI on a new DAGSTER_HOME."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from intelligence_assets.universe import REPOSITORY_ROOT

# Each child imports first, then waits for a common moment, so that the store is opened by all of
# them at once rather than in the order their imports happen to finish.
OPEN_AT_ONCE = """
import sys, time
from pathlib import Path
import mlflow  # imported by ModelTracker on first use: here, so that it does not stagger the opening
from intelligence_assets.tracking.tracker import ModelTracker

uri, root, moment = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
print("IN TIME", time.time() < moment)
while time.time() < moment:
    time.sleep(0.001)
tracker = ModelTracker(uri, experiment_root=root)
print("EXPERIMENT", tracker.experiment_id("y_up_1b"))
"""


def test_processes_opening_a_fresh_embedded_store_together_all_succeed_and_share_it(tmp_path: Path) -> None:
    database = tmp_path / "mlflow" / "mlflow.db"
    uri = f"sqlite:///{database}"
    # Imports take a few seconds; a common moment well after them (this machine can be slow).
    moment = time.time() + 25
    children = [
        subprocess.Popen([sys.executable, "-c", OPEN_AT_ONCE, uri, str(tmp_path / "artifacts"), str(moment)],
                         cwd=REPOSITORY_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [child.communicate(timeout=300) for child in children]
    in_time = sum("IN TIME True" in stdout for stdout, _ in outputs)
    assert in_time >= 2, "the children's imports took past the common moment; nothing opened the store together"
    failures = [stderr.strip().splitlines()[-1] for child, (_, stderr) in zip(children, outputs) if child.returncode != 0]
    assert not failures, f"{len(failures)} of 4 processes failed to open the fresh store: {failures}"
    experiments = {line.split()[1] for stdout, _ in outputs for line in stdout.splitlines() if line.startswith("EXPERIMENT ")}
    assert len(experiments) == 1, f"the processes created different experiments: {experiments}"
