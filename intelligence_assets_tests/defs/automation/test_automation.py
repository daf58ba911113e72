"""Schedules, sensors and declarative automation through Dagster's test APIs, on real instances
with real stores: cursors, exact run requests, restarts, decay thresholds, alerts, pools."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from intelligence_assets.config.universe import load_universe
from intelligence_assets.definitions import build_assets, build_definitions
from intelligence_assets.defs.assets.market_data import BARS
from intelligence_assets.defs.assets.models import model_key
from intelligence_assets.defs.assets.registry import MODEL_REGISTRY
from intelligence_assets.defs.assets.target_analysis import FEATURE_SETS, TARGET_RANKINGS
from intelligence_assets.defs.automation.alerts import alerts_table
from intelligence_assets.defs.partitions import RANGE_END_TAG, RANGE_START_TAG
from intelligence_assets.defs.pools import configure_pools
from intelligence_assets.defs.resources.deployment import Deployment
from intelligence_assets.ml.synthetic import synthetic_bars
from intelligence_assets.store.artifact_store import LocalArtifactStore
from intelligence_assets.store.artifacts import read_value
from intelligence_assets.store.keys import artifact_prefix
from intelligence_assets_tests.conftest import write_small_universe
from intelligence_assets_tests.support.pipeline import MaterializedUniverse

LINEAR_ONLY = {"linear": {"params": {}}}
LINEAR = model_key("linear").to_user_string()
ORDER = [
    "bars",
    "features",
    "labels",
    "target_rankings",
    "feature_sets",
    "models",
    "model_leaderboard",
    "model_registry",
    "predictions",
]


def definitions_for(universe_path: Path, artifacts: Path) -> tuple[dg.Definitions, dict]:
    universe = load_universe(universe_path)
    deployment = Deployment(artifact_root=artifacts)
    return build_definitions(universe, deployment), deployment.resources(universe)


def evaluate_sensor(
    defs: dg.Definitions, name: str, instance: dg.DagsterInstance, cursor: str | None
) -> dg.SensorResult | dg.SkipReason:
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, sensor_name=name, resources=defs.resources
    ) as context:
        return defs.resolve_sensor_def(name)(context)


def requested(result: dg.SensorResult) -> set[tuple[str | None, str | None]]:
    return {(request.job_name, request.partition_key) for request in result.run_requests or []}


def materialize(
    universe_path: Path, resources: dict, instance: dg.DagsterInstance, assets: list[str], partition: str | None
) -> None:
    universe = load_universe(universe_path)
    result = dg.materialize(
        build_assets(universe),
        selection=dg.AssetSelection.assets(*assets),
        partition_key=partition,
        instance=instance,
        resources=resources,
    )
    assert result.success


def append_bars(path: Path, extra: pl.DataFrame) -> None:
    """Continue a bars file with `extra` (rescaled to start at the last close, one bar a day later)."""
    bars = pl.read_parquet(path)
    scale = bars["close"][-1] / extra["open"][0]
    start = bars["timestamp"][-1]
    extra = extra.with_columns(
        *[(pl.col(column) * scale) for column in ("open", "high", "low", "close")],
        pl.Series(
            "timestamp", [start + timedelta(days=i + 1) for i in range(extra.height)], dtype=bars["timestamp"].dtype
        ),
    ).select(bars.columns)
    pl.concat([bars, extra]).write_parquet(path)


# -- new bars ------------------------------------------------------------------------------------


def test_new_bars_sensor_registers_new_symbols_once_and_requests_exactly_their_partitions(tmp_path: Path) -> None:
    path = write_small_universe(tmp_path, families=LINEAR_ONLY)
    config = yaml.safe_load(path.read_text())
    config["symbols"] = ["SIGNAL", "NOISE", "LATER"]  # LATER has no file yet
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    defs, resources = definitions_for(path, tmp_path / "artifacts")
    with dg.instance_for_test() as instance:
        first = evaluate_sensor(defs, "new_bars", instance, None)
        assert {r.partition_key for r in first.run_requests} == {"SIGNAL", "NOISE"}
        assert all(r.asset_selection == [BARS] for r in first.run_requests)
        assert all(r.tags["dagster/priority"] == "10" for r in first.run_requests)
        assert [sorted(r.partition_keys) for r in first.dynamic_partitions_requests] == [["NOISE", "SIGNAL"]]
        instance.add_dynamic_partitions("symbol", ["NOISE", "SIGNAL"])  # what the daemon does with the request
        for symbol in ("SIGNAL", "NOISE"):
            materialize(path, resources, instance, ["bars"], symbol)

        # Nothing changed: nothing requested, with the cursor or without it (a restart).
        again = evaluate_sensor(defs, "new_bars", instance, first.cursor)
        assert not again.run_requests and not again.dynamic_partitions_requests
        restarted = evaluate_sensor(defs, "new_bars", instance, None)
        assert not restarted.run_requests and not restarted.dynamic_partitions_requests

        # A new symbol's file: registered once, exactly its bars requested.
        synthetic_bars(n_bars=800, seed=7, signal_strength=0.0).write_parquet(tmp_path / "bars" / "LATER.parquet")
        synthetic_bars(n_bars=800, seed=8, signal_strength=0.0).write_parquet(
            tmp_path / "bars" / "NOT_IN_UNIVERSE.parquet"
        )
        new = evaluate_sensor(defs, "new_bars", instance, again.cursor)
        assert requested(new) == {(None, "LATER")}
        assert [r.partition_keys for r in new.dynamic_partitions_requests] == [["LATER"]]
        instance.add_dynamic_partitions("symbol", ["LATER"])
        materialize(path, resources, instance, ["bars"], "LATER")
        after = evaluate_sensor(defs, "new_bars", instance, new.cursor)
        assert not after.run_requests and not after.dynamic_partitions_requests

        # New bars for one symbol: exactly that symbol.
        append_bars(tmp_path / "bars" / "NOISE.parquet", synthetic_bars(n_bars=20, seed=9))
        changed = evaluate_sensor(defs, "new_bars", instance, after.cursor)
        assert requested(changed) == {(None, "NOISE")}
        # The run key is the content: a second sensor losing its cursor asks for the same run.
        lost = evaluate_sensor(defs, "new_bars", instance, None)
        assert {r.run_key for r in lost.run_requests} == {r.run_key for r in changed.run_requests}


def test_new_bars_sensor_follows_universe_yaml_each_tick_and_remembers_only_what_it_acted_on(
    tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    path = write_small_universe(tmp_path, families=LINEAR_ONLY)
    config = yaml.safe_load(path.read_text())
    config["symbols"] = ["SIGNAL"]  # NOISE.parquet is there, its symbol not yet
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    defs, _ = definitions_for(path, tmp_path / "artifacts")  # loaded once, as a running code location is
    with dg.instance_for_test() as instance:
        first = evaluate_sensor(defs, "new_bars", instance, None)
        assert requested(first) == {(None, "SIGNAL")}
        instance.add_dynamic_partitions("symbol", ["SIGNAL"])

        # The symbol is added to universe.yaml after its file arrived; no reload.
        config["symbols"] = ["SIGNAL", "NOISE", "HOLLOW"]
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        pl.DataFrame(
            schema={
                "timestamp": pl.Datetime("us", "UTC"),
                **dict.fromkeys(("open", "high", "low", "close", "volume"), pl.Float64),
            }
        ).write_parquet(tmp_path / "bars" / "HOLLOW.parquet")
        added = evaluate_sensor(defs, "new_bars", instance, first.cursor)
        assert requested(added) == {(None, "NOISE")}  # HOLLOW's file has 0 rows: not registered, not requested
        assert [sorted(r.partition_keys) for r in added.dynamic_partitions_requests] == [["NOISE"]]
        instance.add_dynamic_partitions("symbol", ["NOISE"])
        # The unreadable file is not retried until it changes.
        quiet = evaluate_sensor(defs, "new_bars", instance, added.cursor)
        assert not quiet.run_requests and not quiet.dynamic_partitions_requests
        synthetic_bars(n_bars=800, seed=5).write_parquet(tmp_path / "bars" / "HOLLOW.parquet")
        fixed = evaluate_sensor(defs, "new_bars", instance, quiet.cursor)
        assert requested(fixed) == {(None, "HOLLOW")}
        instance.add_dynamic_partitions("symbol", ["HOLLOW"])

        # A symbol removed from universe.yaml: its partition goes, leaderboard and registry run.
        config["symbols"] = ["SIGNAL", "HOLLOW"]
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        removed = evaluate_sensor(defs, "new_bars", instance, fixed.cursor)
        assert [(type(r).__name__, list(r.partition_keys)) for r in removed.dynamic_partitions_requests] == [
            ("DeleteDynamicPartitionsRequest", ["NOISE"])
        ]
        assert [sorted(key.to_user_string() for key in r.asset_selection) for r in removed.run_requests] == [
            ["model_leaderboard", "model_registry"]
        ]

        # New targets reshape the graph: the sensor says a reload is needed.
        config["targets"] = [*config["targets"], {"name": "y_up_5b", "kind": "direction", "horizon": 5}]
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        capfd.readouterr()
        evaluate_sensor(defs, "new_bars", instance, removed.cursor)
        assert "changed ['targets']: reload the code location" in "".join(capfd.readouterr())

        # A broken universe.yaml changes nothing.
        path.write_text("symbols: [SIGNAL\n")
        assert isinstance(evaluate_sensor(defs, "new_bars", instance, removed.cursor), dg.SkipReason)


# -- a materialized graph: schedule, automation, decay -------------------------------------------


@pytest.fixture(scope="module")
def materialized(tmp_path_factory: pytest.TempPathFactory):
    with MaterializedUniverse.built(
        tmp_path_factory.mktemp("graph"),
        lambda folder: write_small_universe(
            folder,
            families=LINEAR_ONLY,
            automation={"decay_window_rows": 250, "decay_min_rows": 30, "decay_max_skill_loss": 0.5},
        ),
    ) as universe:
        yield universe


@pytest.fixture
def graph(materialized: MaterializedUniverse):
    with materialized.restored() as (instance, resources):
        path = materialized.universe_path
        defs, _ = definitions_for(path, materialized.artifacts)
        yield path, defs, resources, instance, LocalArtifactStore(materialized.artifacts)


def evaluate_schedule(defs: dg.Definitions, instance: dg.DagsterInstance, resources: dict, when: datetime):
    schedule = defs.resolve_schedule_def("periodic_retrain")
    with dg.build_schedule_context(
        instance=instance, scheduled_execution_time=when, resources=resources, repository_def=defs.get_repository_def()
    ) as context:
        return schedule.evaluate_tick(context)


def test_retrain_schedule_requests_only_stale_or_old_model_partitions(graph) -> None:
    path, defs, resources, instance, _ = graph
    now = datetime.now(UTC)
    fresh = evaluate_schedule(defs, instance, resources, now)
    assert not fresh.run_requests and "current" in fresh.skip_message
    # Eight days later every model is older than the 7-day limit.
    later = evaluate_schedule(defs, instance, resources, now + timedelta(days=8))
    # One ranged run per symbol over both targets, as a backfill of these cells would run.
    assert {ranged(r) for r in later.run_requests} == {
        ("SIGNAL|y_up_1b", "SIGNAL|y_volatility_5b"),
        ("NOISE|y_up_1b", "NOISE|y_volatility_5b"),
    }
    assert all(
        r.partition_key is None and r.tags["intelligence/reason"].startswith("model 8.") for r in later.run_requests
    )
    # New bars for NOISE: today, exactly NOISE's partitions are stale.
    append_bars(path.parent / "bars" / "NOISE.parquet", synthetic_bars(n_bars=20, seed=9))
    stale = evaluate_schedule(defs, instance, resources, now)
    assert [ranged(r) for r in stale.run_requests] == [("NOISE|y_up_1b", "NOISE|y_volatility_5b")]
    assert {r.tags["intelligence/reason"] for r in stale.run_requests} == {"stale"}
    # The request runs as the daemon launches it: the schedule's job with the request's tags.
    request = later.run_requests[0]
    result = defs.resolve_job_def("training_job").execute_in_process(
        instance=instance, tags=request.tags, resources=resources
    )
    symbol = ranged(request)[0].split("|")[0]
    materialized = {
        (event.asset_key.to_user_string(), event.partition) for event in result.get_asset_materialization_events()
    }
    assert {
        (asset, f"{symbol}|{target}")
        for asset in ("labels", "target_rankings", "feature_sets", LINEAR)
        for target in ("y_up_1b", "y_volatility_5b")
    } == materialized


def ranged(request: dg.RunRequest) -> tuple[str, str]:
    return request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]


def test_new_bars_flow_downstream_by_automation_without_recomputing_fresh_partitions(graph) -> None:
    path, defs, resources, instance, _ = graph
    universe = load_universe(path)
    assets = build_assets(universe)
    # Settle: nothing is requested on a fully materialized graph.
    settled = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert settled.total_requested == 0
    append_bars(path.parent / "bars" / "NOISE.parquet", synthetic_bars(n_bars=20, seed=9))
    materialize(path, resources, instance, ["bars"], "NOISE")

    cursor, waves = settled.cursor, []
    for _ in range(8):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        cursor = result.cursor
        wave = {
            key.to_user_string(): sorted(str(p) for p in result.get_requested_partitions(key) if p is not None)
            or [None]
            for key in defs.resolve_asset_graph().get_all_asset_keys()
            if result.get_num_requested(key)
        }
        if not wave:
            break
        waves.append(wave)
        for asset, partitions in sorted(wave.items(), key=lambda item: ORDER.index(item[0].split("/")[0])):
            for partition in partitions:
                key = (
                    dg.MultiPartitionKey(dict(zip(("symbol", "target"), partition.split("|"), strict=False)))
                    if partition and "|" in partition
                    else partition
                )
                run = dg.materialize(
                    assets,
                    selection=dg.AssetSelection.assets(dg.AssetKey.from_user_string(asset)),
                    partition_key=key,
                    instance=instance,
                    resources=resources,
                )
                assert run.success
    assert waves, "the new bars triggered nothing"
    requested_all = {
        (asset, partition) for wave in waves for asset, partitions in wave.items() for partition in partitions
    }
    symbols_touched = {partition.split("|")[0] for _, partition in requested_all if partition}
    # Only NOISE's partitions, then the unpartitioned leaderboard and registry, then predictions.
    assert symbols_touched <= {"NOISE"} | ({"SIGNAL"} if ("predictions", "SIGNAL") in requested_all else set())
    assert {
        ("features", "NOISE"),
        ("model_leaderboard", None),
        ("model_registry", None),
        ("predictions", "NOISE"),
    } <= requested_all
    assert (LINEAR, "NOISE|y_volatility_5b") in requested_all
    assert not any(partition and partition.startswith("SIGNAL|") for _, partition in requested_all)
    # It settles (no loops): the last evaluation requested nothing, after three waves — the symbol's
    # chain, then leaderboard and registry, then predictions that read the new registry table.
    assert len(waves) == 3
    assert set(waves[1]) == {"model_leaderboard", "model_registry"}


def test_champion_decay_triggers_only_past_the_threshold(graph) -> None:
    path, defs, resources, instance, store = graph
    registry = read_value(store, artifact_prefix(MODEL_REGISTRY))
    signal = registry.filter((pl.col("symbol") == "SIGNAL") & (pl.col("target") == "y_up_1b")).row(0, named=True)
    assert signal["champion_version"] and signal["champion_score"] > 0.6, (
        "precondition: the planted signal has a champion"
    )

    def refresh_signal(extra: pl.DataFrame) -> dg.SensorResult:
        append_bars(path.parent / "bars" / "SIGNAL.parquet", extra)
        materialize(path, resources, instance, ["bars", "features"], "SIGNAL")
        materialize(path, resources, instance, ["labels"], "SIGNAL|y_up_1b")
        materialize(path, resources, instance, ["predictions"], "SIGNAL")
        return evaluate_sensor(defs, "champion_decay", instance, None)

    # 300 more bars that carry the planted signal: the champion holds.
    holds = refresh_signal(synthetic_bars(n_bars=300, seed=1234, signal_strength=1.0))
    assert not holds.run_requests
    # 300 bars of pure noise after that: the champion's live AUC falls to ~0.5, past the threshold.
    decayed = refresh_signal(synthetic_bars(n_bars=300, seed=4321, signal_strength=0.0))
    assert requested(decayed) == {("training_job", "SIGNAL|y_up_1b"), ("registry_job", None)}
    reassess = next(r for r in decayed.run_requests if r.job_name == "registry_job")
    assert reassess.run_config["ops"]["model_registry"]["config"]["reassess"] == ["SIGNAL|y_up_1b"]
    assert all(r.tags["intelligence/trigger"] == "champion_decay" for r in decayed.run_requests)
    # Same evidence again: the cursor (and the run keys) keep it from being requested twice.
    again = evaluate_sensor(defs, "champion_decay", instance, decayed.cursor)
    assert not again.run_requests
    assert {r.run_key for r in evaluate_sensor(defs, "champion_decay", instance, None).run_requests} == {
        r.run_key for r in decayed.run_requests
    }


# -- alerts, pools, priorities -------------------------------------------------------------------


def test_a_failed_run_becomes_one_alert(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_small_universe(tmp_path, families=LINEAR_ONLY)
    defs, resources = definitions_for(path, tmp_path / "artifacts")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("symbol", ["GHOST"])
        failed = dg.materialize(
            build_assets(load_universe(path)),
            selection=dg.AssetSelection.assets("bars"),
            partition_key="GHOST",
            instance=instance,
            resources=resources,
            raise_on_error=False,
        )
        assert not failed.success
        failure_event = failed.get_run_failure_event()
        sensor = defs.resolve_sensor_def("run_failure_alerts")
        with (
            dg.build_run_status_sensor_context(
                sensor_name="run_failure_alerts",
                dagster_event=failure_event,
                dagster_instance=instance,
                dagster_run=instance.get_run_by_id(failed.run_id),
                resources={"alert_notifier": resources["alert_notifier"]},
            ).for_run_failure() as context,
            caplog.at_level(logging.ERROR, logger="intelligence_assets.alerts"),
        ):
            sensor(context)
            sensor(context)  # the same failure seen twice
        alerts = alerts_table(LocalArtifactStore(tmp_path / "artifacts"))
        assert alerts.height == 1 and alerts["run_id"][0] == failed.run_id and alerts["kind"][0] == "run_failure"
        logged = [
            json.loads(record.getMessage()) for record in caplog.records if record.name == "intelligence_assets.alerts"
        ]
        assert logged and logged[0]["run_id"] == failed.run_id and "bars" in logged[0]["summary"]


def test_gpu_and_cpu_pools_and_their_limits(small_universe, tmp_path: Path) -> None:
    assets = {key: asset for asset in build_assets(small_universe) for key in asset.keys}
    assert assets[model_key("torch_mlp")].op.pool == "gpu"
    cpu_bound = [*(model_key(family) for family in ("lightgbm", "xgboost", "linear")), TARGET_RANKINGS, FEATURE_SETS]
    assert {assets[key].op.pool for key in cpu_bound} == {"cpu"}
    with dg.instance_for_test() as instance:
        limits = configure_pools(instance, small_universe.automation)
        assert limits == {"gpu": 1, "cpu": 2, "search": 1}
        assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 1
        assert instance.event_log_storage.get_concurrency_info("cpu").slot_count == 2
        assert instance.event_log_storage.get_concurrency_info("search").slot_count == 1
