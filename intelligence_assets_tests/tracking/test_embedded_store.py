"""The embedded MLflow store (sqlite) when several processes open it for the first time together,
as the steps of one run do when launched from the UI on a new DAGSTER_HOME."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from intelligence_assets.config.universe import REPOSITORY_ROOT

# Each child imports first, says so, and waits for the word to go: the store is then opened by all
# of them at once, however long each one's imports took.
OPEN_AT_ONCE = """
import sys
from pathlib import Path
import mlflow  # imported by ModelTracker on first use: here, so that it does not stagger the opening
from intelligence_assets.tracking.tracker import ModelTracker

uri, root = sys.argv[1], Path(sys.argv[2])
print("READY", flush=True)
sys.stdin.readline()
tracker = ModelTracker(uri, experiment_root=root)
print("EXPERIMENT", tracker.experiment_id("y_up_1b"))
"""


def test_processes_opening_a_fresh_embedded_store_together_all_succeed_and_share_it(tmp_path: Path) -> None:
    database = tmp_path / "mlflow" / "mlflow.db"
    uri = f"sqlite:///{database}"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AT_ONCE, uri, str(tmp_path / "artifacts")],
            cwd=REPOSITORY_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    ready = [child.stdout.readline().strip() for child in children]
    assert ready == ["READY"] * 4, (
        "a child failed before opening the store: "
        f"{[child.stderr.read()[-2000:] for child in children if child.poll()]}"
    )
    assert not database.exists(), "nothing may have opened the store before the word to go"
    for child in children:
        child.stdin.write("go\n")
        child.stdin.flush()
    outputs = [child.communicate(timeout=300) for child in children]
    failures = [
        stderr.strip().splitlines()[-1]
        for child, (_, stderr) in zip(children, outputs, strict=True)
        if child.returncode != 0
    ]
    assert not failures, f"{len(failures)} of 4 processes failed to open the fresh store: {failures}"
    experiments = {
        line.split()[1] for stdout, _ in outputs for line in stdout.splitlines() if line.startswith("EXPERIMENT ")
    }
    assert len(experiments) == 1, f"the processes created different experiments: {experiments}"
