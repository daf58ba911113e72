"""End to end: `dagster-daemon` against a temporary instance sees new bars, the `new_bars` sensor
launches a run through the queued run coordinator, and the run succeeds and stores its artifacts."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from intelligence_assets.defs.assets.market_data import BARS
from intelligence_assets.store.artifact_store import LocalArtifactStore
from intelligence_assets.store.artifacts import read_value
from intelligence_assets.store.keys import artifact_prefix
from intelligence_assets_tests.conftest import fresh_home, home_environment, write_small_universe
from intelligence_assets_tests.support.daemon import running_daemon

DEADLINE_SECONDS = 240


def test_daemon_runs_the_new_bars_sensor_and_its_run_succeeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = fresh_home(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # dagster.yaml places storage under it
    universe_path = write_small_universe(
        tmp_path / "universe", families={"linear": {"params": {}}}, automation={"bars_sensor_interval_seconds": 5}
    )
    config = yaml.safe_load(universe_path.read_text())
    config["symbols"] = ["SIGNAL"]
    universe_path.write_text(yaml.safe_dump(config, sort_keys=False))
    environment = home_environment(home, universe_path)
    log_path = tmp_path / "daemon.log"
    store = LocalArtifactStore(home / "artifacts")
    succeeded = None
    with (
        running_daemon(home, environment, log_path) as daemon,
        dg.DagsterInstance.from_config(str(home)) as instance,
    ):
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline and succeeded is None and daemon.poll() is None:
            runs = instance.get_runs(filters=dg.RunsFilter(tags={"intelligence/trigger": "new_bars"}))
            failed = [run for run in runs if run.status == dg.DagsterRunStatus.FAILURE]
            assert not failed, (
                f"sensor-triggered run {failed[0].run_id} failed; daemon "
                f"log:\n{log_path.read_text(errors='replace')[-3000:]}"
            )
            succeeded = next((run for run in runs if run.status == dg.DagsterRunStatus.SUCCESS), None)
            time.sleep(2)
        assert succeeded is not None, (
            f"no sensor-triggered run succeeded within {DEADLINE_SECONDS}s; daemon "
            f"log:\n{log_path.read_text(errors='replace')[-3000:]}"
        )
        assert succeeded.tags["dagster/priority"] == "10" and succeeded.tags.get("dagster/partition") == "SIGNAL"
        assert "SIGNAL" in instance.get_dynamic_partitions("symbol")  # registered by the sensor
    assert read_value(store, artifact_prefix(BARS, "SIGNAL")).height == 1600
