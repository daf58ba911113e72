"""The Dagster CLI against our code location, in subprocesses with a temporary DAGSTER_HOME."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg

from intelligence_assets.resources.artifact_store import LocalArtifactStore
from intelligence_assets.resources.artifacts import read_value
from intelligence_assets.universe import REPOSITORY_ROOT

DAGSTER = str(Path(sys.executable).parent / "dagster")


def _environment(home: Path, universe_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "INTELLIGENCE_UNIVERSE": str(universe_path),
        "INTELLIGENCE_ARTIFACT_ROOT": str(home / "artifacts"),
    }


def test_definitions_validate_on_the_bundled_universe(tmp_path: Path) -> None:
    environment = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    environment.pop("INTELLIGENCE_UNIVERSE", None)
    completed = subprocess.run(
        [DAGSTER, "definitions", "validate", "-m", "intelligence_assets.definitions"],
        cwd=REPOSITORY_ROOT, env=environment, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_asset_materialize_command_for_symbol_and_symbol_target_partitions(tmp_path: Path, small_universe_path: Path, monkeypatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # dagster.yaml places storage under it
    shutil.copy(REPOSITORY_ROOT / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("symbol", ["SIGNAL"])
    environment = _environment(home, small_universe_path)

    def materialize(selection: str, partition: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [DAGSTER, "asset", "materialize", "-m", "intelligence_assets.definitions", "--select", selection, "--partition", partition],
            cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300,
        )

    first = materialize("bars,features", "SIGNAL")
    assert first.returncode == 0, first.stdout + first.stderr
    second = materialize("labels,target_rankings", "SIGNAL|y_up_1b")
    assert second.returncode == 0, second.stdout + second.stderr
    store = LocalArtifactStore(home / "artifacts")
    assert read_value(store, "features/SIGNAL").height > 0
    assert "passed" in read_value(store, "target_rankings/SIGNAL/y_up_1b")

    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == 2 and all(run.is_success for run in runs)
        assert instance.get_latest_materialization_event(dg.AssetKey("target_rankings")) is not None

    unknown = materialize("bars", "NOT_A_SYMBOL")
    assert unknown.returncode != 0
