"""End to end with the real `dagster-daemon`: a universe with a healthy new symbol (SIGNAL) and a
broken one (FLAT, a constant price), whose bars files arrive while the daemon runs. With no
hand-made run, the `new_bars` sensor registers both and requests their bars; declarative
automation carries SIGNAL through features, labels, rankings, feature sets, models, the
leaderboard, the registry and its predictions, while FLAT fails in `features`, stays failed and
is reported as missing by the leaderboard."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from intelligence_assets.defs.assets.leaderboard import MODEL_LEADERBOARD
from intelligence_assets.defs.assets.market_data import BARS, FEATURES
from intelligence_assets.defs.assets.predictions import PREDICTIONS
from intelligence_assets.defs.assets.registry import MODEL_REGISTRY
from intelligence_assets.store.artifact_store import ArtifactStoreError, LocalArtifactStore
from intelligence_assets.store.artifacts import ArtifactHandle, latest_failure, read_value
from intelligence_assets.store.keys import artifact_prefix
from intelligence_assets_tests.conftest import fresh_home, home_environment, write_small_universe
from intelligence_assets_tests.support.daemon import running_daemon
from intelligence_assets_tests.support.real_series import constant_price_bars

pytestmark = pytest.mark.long_running

DEADLINE_SECONDS = 600
# How often the automation sensor evaluates the graph here (30 s by default), and how long with no
# run in flight and nothing new means the chain has settled: several evaluations.
AUTOMATION_INTERVAL_SECONDS = 5
SETTLED_SECONDS = 6 * AUTOMATION_INTERVAL_SECONDS
FIRST_AUTOMATION_TICK = "Finished auto-materialization tick for automation"
IN_FLIGHT = {
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
}


def _stored(store: LocalArtifactStore, prefix: str):
    try:
        return read_value(store, prefix)
    except ArtifactStoreError:
        return None


def _runs_report(instance: dg.DagsterInstance) -> list[str]:
    lines = ["runs (oldest first):"]
    for run in reversed(instance.get_runs()):
        tags = {
            k: v
            for k, v in run.tags.items()
            if k.startswith(("dagster/partition", "dagster/asset_partition", "intelligence/", "dagster/priority"))
        }
        assets = sorted(key.to_user_string() for key in run.asset_selection or [])
        lines.append(f"  {run.run_id[:8]} {run.status.value:<9} {run.job_name} assets={assets} tags={tags}")
        if run.status == dg.DagsterRunStatus.FAILURE:
            for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)[:3]:
                error = record.dagster_event.step_failure_data.error
                lines.append(f"      step {record.step_key} failed: {(error.message if error else '?')[:400].strip()}")
    return lines


def _diagnostics(instance: dg.DagsterInstance, log_path: Path, store: LocalArtifactStore) -> str:
    lines = _runs_report(instance)
    lines.append(f"dynamic partitions 'symbol': {instance.get_dynamic_partitions('symbol')}")
    prefixes = [artifact_prefix(key, symbol) for key in (BARS, FEATURES) for symbol in ("SIGNAL", "FLAT")]
    for prefix in [
        *prefixes,
        artifact_prefix(MODEL_LEADERBOARD),
        artifact_prefix(MODEL_REGISTRY),
        artifact_prefix(PREDICTIONS, "SIGNAL"),
    ]:
        try:
            state = f"current {ArtifactHandle.current(store, prefix).fingerprint[:12]}"
        except ArtifactStoreError as error:
            state = f"none ({type(error).__name__})"
        lines.append(f"  store {prefix}: {state}; latest failure: {latest_failure(store, prefix)}")
    lines.append("daemon log (tail):")
    lines.append(log_path.read_text(errors="replace")[-6000:] if log_path.exists() else "(no log)")
    return "\n".join(lines)


def _error_chain(error) -> str:
    """A step failure's message and its causes': a single-partition step's own error is the cause
    of Dagster's "Error occurred while executing op" wrapper; a ranged step raises its own."""
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return " <- ".join(messages)


def _leaderboard_metadata(instance: dg.DagsterInstance) -> dict | None:
    event = instance.get_latest_materialization_event(MODEL_LEADERBOARD)
    return None if event is None else event.asset_materialization.metadata


def test_daemon_carries_a_healthy_new_symbol_to_predictions_and_reports_a_broken_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = fresh_home(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # dagster.yaml places storage under it
    universe_path = write_small_universe(
        tmp_path / "universe",
        families={"linear": {"params": {}}},
        automation={
            "bars_sensor_interval_seconds": 5,
            "automation_sensor_interval_seconds": AUTOMATION_INTERVAL_SECONDS,
        },
    )
    # The symbols' bars arrive while the platform runs (below), as a new symbol's do.
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    os.replace(tmp_path / "universe" / "bars" / "SIGNAL.parquet", incoming / "SIGNAL.parquet")
    constant_price_bars().write_parquet(incoming / "FLAT.parquet")
    config = yaml.safe_load(universe_path.read_text())
    config["symbols"] = ["SIGNAL", "FLAT"]  # NOISE.parquet stays on disk and is ignored
    universe_path.write_text(yaml.safe_dump(config, sort_keys=False))
    environment = home_environment(home, universe_path)
    log_path = tmp_path / "daemon.log"
    store = LocalArtifactStore(home / "artifacts")
    started = time.monotonic()
    with (
        running_daemon(home, environment, log_path) as daemon,
        dg.DagsterInstance.from_config(str(home)) as instance,
    ):

        def explain(what: str) -> str:
            return f"{what} (after {time.monotonic() - started:.0f}s)\n{_diagnostics(instance, log_path, store)}"

        # Once declarative automation has evaluated the graph, the two bars files arrive.
        while FIRST_AUTOMATION_TICK not in log_path.read_text(errors="replace"):
            assert daemon.poll() is None and time.monotonic() < started + 180, explain(
                "the automation sensor never ticked"
            )
            time.sleep(2)
        for symbol in ("SIGNAL", "FLAT"):
            os.replace(incoming / f"{symbol}.parquet", universe_path.parent / "bars" / f"{symbol}.parquet")

        settled_since = None
        deadline = started + DEADLINE_SECONDS
        while time.monotonic() < deadline and daemon.poll() is None:
            assert "Error loading repository location" not in log_path.read_text(errors="replace"), explain(
                "the daemon cannot load the code location"
            )
            predictions = _stored(store, artifact_prefix(PREDICTIONS, "SIGNAL"))
            in_flight = instance.get_runs(filters=dg.RunsFilter(statuses=list(IN_FLIGHT)))
            if predictions is None or in_flight:
                settled_since = None
            else:
                settled_since = settled_since or time.monotonic()
                if time.monotonic() - settled_since >= SETTLED_SECONDS:
                    break
            time.sleep(3)
        elapsed = time.monotonic() - started
        print(f"\nchain settled after {elapsed:.0f}s")
        print("\n".join(_runs_report(instance)))

        assert daemon.poll() is None, explain(f"dagster-daemon exited with {daemon.returncode}")
        assert settled_since is not None, explain(
            f"predictions/SIGNAL did not appear, or runs kept going, within {DEADLINE_SECONDS}s"
        )

        # The healthy symbol went all the way, with no hand-made run.
        predictions = read_value(store, artifact_prefix(PREDICTIONS, "SIGNAL"))
        assert predictions.height > 0, explain(f"predictions/SIGNAL is empty: {predictions}")
        registry = read_value(store, artifact_prefix(MODEL_REGISTRY))
        champions = registry.filter((pl.col("symbol") == "SIGNAL") & pl.col("champion_version").is_not_null())
        assert champions.height >= 1, explain(f"no SIGNAL champion in the registry:\n{registry}")
        assert set(predictions["target"]) == set(champions["target"]), explain(
            f"predictions serve {set(predictions['target'])}, champions {champions}"
        )
        assert (
            registry.filter(pl.col("symbol") == "FLAT").filter(pl.col("champion_version").is_not_null()).height == 0
        ), explain(f"FLAT has a champion:\n{registry}")
        leaderboard = read_value(store, artifact_prefix(MODEL_LEADERBOARD))
        assert leaderboard.filter(pl.col("symbol") == "SIGNAL").height == 2, explain(
            f"leaderboard lacks SIGNAL's two cells:\n{leaderboard}"
        )
        assert leaderboard.filter(pl.col("symbol") == "FLAT").height == 0, explain(
            f"leaderboard lists FLAT models:\n{leaderboard}"
        )
        assert set(instance.get_dynamic_partitions("symbol")) == {"SIGNAL", "FLAT"}, explain(
            "symbols not registered by the sensor"
        )
        runs = instance.get_runs()
        assert all(run.tags.get("intelligence/trigger") in ("new_bars", "automation") for run in runs), explain(
            "a run came from elsewhere than the sensors"
        )

        # The broken symbol failed in features, stays failed, and says why.
        assert read_value(store, artifact_prefix(BARS, "FLAT")).height == 1600, explain("FLAT's bars were not stored")
        failure = latest_failure(store, artifact_prefix(FEATURES, "FLAT"))
        assert failure is not None and "no usable feature" in failure["error"], explain(
            f"features/FLAT failure record: {failure}"
        )
        failed_run = instance.get_run_by_id(failure["run_id"])
        assert failed_run is not None and failed_run.status == dg.DagsterRunStatus.FAILURE, explain(
            f"the run {failure['run_id']} that recorded FLAT's failure did not fail"
        )
        with pytest.raises(ArtifactStoreError):
            ArtifactHandle.current(store, artifact_prefix(FEATURES, "FLAT"))
        flat_feature_runs = [
            run
            for run in runs
            if run.tags.get("dagster/partition") == "FLAT" and FEATURES in (run.asset_selection or set())
        ]
        assert not any(run.status == dg.DagsterRunStatus.SUCCESS for run in flat_feature_runs), explain(
            "a FLAT features run succeeded"
        )

        metadata = _leaderboard_metadata(instance)
        assert metadata is not None, explain("model_leaderboard was never materialized")
        missing = [record.data for record in metadata["missing"].value.records]
        assert metadata["missing_models"].value == 2, explain(
            f"missing_models is {metadata['missing_models'].value}, expected FLAT's 2 cells; missing:\n{missing}"
        )
        flat_rows = [row for row in missing if row["symbol"] == "FLAT"]
        assert {row["target"] for row in flat_rows} == {"y_up_1b", "y_volatility_5b"}, explain(
            f"leaderboard metadata does not report FLAT's cells:\n{missing}"
        )
        assert all(
            row["failed_asset"] == "features"
            and "no usable feature" in row["reason"]
            and row["run_id"] == failure["run_id"]
            for row in flat_rows
        ), explain(f"FLAT's reason:\n{missing}")
        assert not any(row["symbol"] == "SIGNAL" for row in missing), explain(f"SIGNAL reported missing:\n{missing}")

        # No help needed means no spurious failure either: the only failed step of any run is
        # `features`, failing for FLAT alone.
        for run in runs:
            if run.status != dg.DagsterRunStatus.FAILURE:
                continue
            failures = {
                record.step_key: record.dagster_event.step_failure_data.error
                for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
            }
            messages = {step: _error_chain(error) for step, error in failures.items()}
            assert (
                set(messages) == {"features"}
                and "FLAT:" in messages["features"]
                and "SIGNAL:" not in messages["features"]
            ), explain(f"run {run.run_id} failed for another reason than FLAT's features: {messages}")
        # Predictions follow the registry only: no run selects them before model_registry first
        # materialized (such a run fails loading its `model_registry` input on a universe whose
        # symbols are all healthy; here FLAT's failed features step would hide that).
        registry_records = instance.fetch_materializations(MODEL_REGISTRY, limit=1, ascending=True).records
        first_registry = registry_records[0].timestamp
        early = [
            record.dagster_run.run_id[:8]
            for record in instance.get_run_records()
            if PREDICTIONS in (record.dagster_run.asset_selection or set())
            and record.create_timestamp.timestamp() < first_registry
        ]
        assert not early, explain(f"runs {early} selected predictions before model_registry first materialized")
