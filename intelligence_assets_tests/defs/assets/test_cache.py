"""Cache-aware rematerialization: exactly the partitions whose inputs, config or code changed
are recomputed; everything else is answered by the artifact store."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from intelligence_assets.config.code_revision import code_revision
from intelligence_assets.config.universe import load_universe
from intelligence_assets.definitions import build_assets
from intelligence_assets.defs.assets.market_data import FEATURES
from intelligence_assets.defs.assets.models import model_key
from intelligence_assets.defs.assets.registry import MODEL_REGISTRY
from intelligence_assets.defs.planner import plan_runs
from intelligence_assets.defs.resources.mlflow_tracking import MlflowTrackingResource
from intelligence_assets.ml.families import load_family
from intelligence_assets.ml.synthetic import synthetic_bars
from intelligence_assets.store.artifact_store import LocalArtifactStore
from intelligence_assets.store.artifacts import TABLE_FILE, ArtifactHandle, read_value
from intelligence_assets.store.keys import artifact_prefix, file_key, pointer_key
from intelligence_assets_tests.conftest import write_small_universe
from intelligence_assets_tests.support.pipeline import (
    MaterializedUniverse,
    cache_outcomes,
    materialize_everything,
)

# xgboost too: ranking and selection use lightgbm and linear, so bumping either recomputes the
# rankings; a family they do not use shows the narrowest recompute set.
FAMILIES = {
    "linear": {"params": {}},
    "lightgbm": {"params": {"num_boost_round": 60}},
    "xgboost": {"params": {"num_boost_round": 30}},
}
TARGETS = ("y_up_1b", "y_volatility_5b")
PER_SYMBOL_TARGET = [
    "labels",
    "target_rankings",
    "feature_sets",
    *(model_key(family).to_user_string() for family in FAMILIES),
]


def misses(outcomes: dict) -> set[tuple[str, str | None]]:
    return {key for key, outcome in outcomes.items() if outcome == "miss"}


def champions_of(store: LocalArtifactStore) -> pl.DataFrame:
    """The registry's champion per cell (after the promotion rule), as model_registry stored it."""
    return read_value(store, artifact_prefix(MODEL_REGISTRY)).select(
        "symbol", "target", "champion_version", "champion_family"
    )


def symbols_whose_champions_changed(before: pl.DataFrame, after: pl.DataFrame) -> set[str]:
    changed = before.join(after, on=["symbol", "target"], how="full", coalesce=True, suffix="_after").filter(
        pl.col("champion_version").ne_missing(pl.col("champion_version_after"))
    )
    return set(changed["symbol"])


@pytest.fixture(scope="module")
def materialized(tmp_path_factory: pytest.TempPathFactory):
    with MaterializedUniverse.built(
        tmp_path_factory.mktemp("warm"), lambda folder: write_small_universe(folder, families=FAMILIES)
    ) as universe:
        yield universe


@pytest.fixture
def warm(materialized: MaterializedUniverse):
    """A universe materialized once (cold), with the instance and store kept for a rerun."""
    cold = materialized.cold
    assert cold and set(cold.values()) == {"miss", "recomputed"}  # the registry step always recomputes
    with materialized.restored() as (instance, resources):
        yield materialized.universe_path, instance, resources, LocalArtifactStore(materialized.artifacts)


def serving_observations(instance: dg.DagsterInstance) -> Counter[tuple[str, str]]:
    """How many `serving` observations each model partition has, by (family, partition)."""
    found: Counter[tuple[str, str]] = Counter()
    for family in FAMILIES:
        records = instance.fetch_observations(dg.AssetRecordsFilter(asset_key=model_key(family)), limit=1000).records
        found.update((family, record.partition_key) for record in records)
    return found


def serving_of(store: LocalArtifactStore, symbol: str, target: str) -> tuple:
    """What a cell's serving observations say, as model_registry stored it: its champion, or why none."""
    registry = read_value(store, artifact_prefix(MODEL_REGISTRY))
    cell = registry.filter((pl.col("symbol") == symbol) & (pl.col("target") == target)).row(0, named=True)
    if cell["champion_version"] is None:
        return (None, cell["reason"])
    return (cell["champion_version"], cell["champion_family"], cell["champion_fingerprint"])


def registry_version(store) -> str:
    return store.get_json(pointer_key(artifact_prefix(MODEL_REGISTRY)))["data_version"]


def plan_for(universe_path: Path, store, assets: list | None = None):
    universe = load_universe(universe_path)
    return plan_runs(universe, store, assets or build_assets(universe), universe.symbols)


def assert_plan_covers_exactly(plan, recomputed: set, universe_path: Path) -> None:
    """The plan runs every partition that turned out to need computing; beyond those, only the
    registry step (its state is in MLflow: it runs whenever the leaderboard does) and predictions
    it cannot judge before the leaderboard and the registry are rebuilt."""
    assert recomputed <= plan.stale
    symbols = load_universe(universe_path).symbols
    assert plan.stale - recomputed <= {("predictions", symbol) for symbol in symbols} | {("model_registry", None)}


def test_plan_after_a_full_run_launches_nothing(warm) -> None:
    universe_path, _, _, store = warm
    plan = plan_for(universe_path, store)
    # Same fingerprints as the assets computed: the planner and the assets agree everywhere.
    assert plan.stale == set()
    assert len(plan.fresh) == 2 + 2 + 2 * 2 * len(PER_SYMBOL_TARGET) + 1 + 1 + 2


def test_rerun_with_nothing_changed_recomputes_nothing(warm) -> None:
    universe_path, instance, resources, store = warm
    model = artifact_prefix(model_key("lightgbm"), "SIGNAL", "y_up_1b")
    before = ArtifactHandle.current(store, model).fingerprint
    observed = serving_observations(instance)
    rerun = materialize_everything(load_universe(universe_path), instance, resources)
    assert misses(rerun) == set()
    assert len(rerun) == 2 + 2 + 2 * 2 * len(PER_SYMBOL_TARGET) + 1 + 1 + 2
    assert rerun[("model_registry", None)] == "recomputed"
    # Every model partition says whether it serves, once: a pass that changed nothing adds nothing.
    assert len(observed) == 2 * 2 * len(FAMILIES) and set(observed.values()) == {1}
    assert serving_observations(instance) == observed
    # An observation after the registry's last materialization (a run that died after observing):
    # what the partitions show is no longer known, so the next pass observes every one again.
    instance.report_runless_asset_event(
        dg.AssetObservation(model_key("linear"), partition="SIGNAL|y_up_1b", metadata={"serving": "from a dead run"})
    )
    materialize_everything(load_universe(universe_path), instance, resources)
    again = serving_observations(instance) - observed
    assert again[("linear", "SIGNAL|y_up_1b")] == 2 and sum(again.values()) == len(observed) + 1
    assert ArtifactHandle.current(store, model).fingerprint == before
    # The UI still shows the stored numbers, marked as a hit.
    record = instance.fetch_materializations(model_key("lightgbm"), limit=1).records[0]
    assert record.asset_materialization.metadata["cache"].value == "hit"
    # Which code computed it: the commit the computing run recorded (this checkout's, here).
    assert record.asset_materialization.metadata["code_commit"].value == code_revision().describe()
    assert code_revision().commit is not None


def test_new_bars_for_one_symbol_recompute_exactly_that_symbol(warm) -> None:
    universe_path, instance, resources, store = warm
    # 30 new bars appended to NOISE (same seed: the old bars are an exact prefix).
    synthetic_bars(n_bars=1630, seed=101, signal_strength=0.0).write_parquet(
        universe_path.parent / "bars" / "NOISE.parquet"
    )
    plan = plan_for(universe_path, store)
    registry_before = registry_version(store)
    serving_before = {target: serving_of(store, "SIGNAL", target) for target in TARGETS}
    observed = serving_observations(instance)
    rerun = materialize_everything(load_universe(universe_path), instance, resources)
    assert_plan_covers_exactly(plan, misses(rerun), universe_path)
    expected = {("bars", "NOISE"), ("features", "NOISE"), ("model_leaderboard", None), ("predictions", "NOISE")}
    expected |= {(asset, f"NOISE|{target}") for asset in PER_SYMBOL_TARGET for target in TARGETS}
    # Another symbol's predictions read the registry whole: they recompute only if a champion moved.
    if registry_version(store) != registry_before:
        expected.add(("predictions", "SIGNAL"))
    assert misses(rerun) == expected
    # NOISE's retrained models are observed anew; SIGNAL's only where what serves its cell changed.
    moved = [target for target in TARGETS if serving_of(store, "SIGNAL", target) != serving_before[target]]
    observed_again = set(serving_observations(instance) - observed)
    expected_observed = {(family, f"NOISE|{target}") for family in FAMILIES for target in TARGETS}
    expected_observed |= {(family, f"SIGNAL|{target}") for family in FAMILIES for target in moved}
    assert observed_again == expected_observed


def test_changed_target_spec_recomputes_exactly_that_target(warm) -> None:
    universe_path, instance, resources, store = warm
    config = yaml.safe_load(universe_path.read_text())
    registry_before = registry_version(store)
    config["targets"][1]["horizon"] = 7  # y_volatility_5b: a new spec under the same name
    universe_path.write_text(yaml.safe_dump(config, sort_keys=False))
    plan = plan_for(universe_path, store)
    rerun = materialize_everything(load_universe(universe_path), instance, resources)
    assert_plan_covers_exactly(plan, misses(rerun), universe_path)
    changed = {(asset, f"{symbol}|y_volatility_5b") for asset in PER_SYMBOL_TARGET for symbol in ("SIGNAL", "NOISE")}
    # Predictions read the registry whole (as Dagster versions it): all recompute if a champion moved.
    moved = registry_version(store) != registry_before
    expected = changed | {("model_leaderboard", None)} | {("predictions", s) for s in ("SIGNAL", "NOISE") if moved}
    assert misses(rerun) == expected


def test_bumped_family_code_version_recomputes_that_family_and_dependents(
    warm, monkeypatch: pytest.MonkeyPatch
) -> None:
    universe_path, instance, resources, store = warm
    universe = load_universe(universe_path)
    champions_before = champions_of(store)
    monkeypatch.setattr(load_family("xgboost"), "version", "2")
    assets = build_assets(universe)
    plan = plan_for(universe_path, store, assets)
    rerun = materialize_everything(universe, instance, resources, assets=assets)
    assert_plan_covers_exactly(plan, misses(rerun), universe_path)
    family_partitions = {
        (model_key("xgboost").to_user_string(), f"{s}|{t}") for s in universe.symbols for t in universe.target_names
    }
    # Retrained xgboost models score what they scored before: not better by min_improvement, so
    # the registry keeps every champion and no predictions recompute.
    affected = symbols_whose_champions_changed(champions_before, champions_of(store))
    assert affected == set()
    expected = family_partitions | {("model_leaderboard", None)}
    assert misses(rerun) == expected


def test_corrupt_stored_artifact_is_detected_and_recomputed(warm) -> None:
    universe_path, instance, resources, store = warm
    prefix = artifact_prefix(FEATURES, "SIGNAL")
    handle = ArtifactHandle.current(store, prefix)
    store.put_bytes(file_key(prefix, handle.fingerprint, TABLE_FILE), b"PAR1 not really parquet")
    universe = load_universe(universe_path)
    result = dg.materialize(
        build_assets(universe),
        selection=dg.AssetSelection.assets("features"),
        partition_key="SIGNAL",
        instance=instance,
        resources=resources,
    )
    materialization = result.get_asset_materialization_events()[0].materialization
    assert materialization.metadata["cache"].value == "miss"  # never silently reused
    assert read_value(store, prefix).height > 0


def ranged_run(
    universe_path: Path, instance: dg.DagsterInstance, resources: dict, assets: list[str]
) -> dg.ExecuteInProcessResult:
    """One run over every symbol partition, as a BackfillPolicy chunk launches it."""
    universe = load_universe(universe_path)
    return dg.materialize(
        build_assets(universe),
        selection=dg.AssetSelection.assets(*assets),
        instance=instance,
        resources=resources,
        tags={
            "dagster/asset_partition_range_start": universe.symbols[0],
            "dagster/asset_partition_range_end": universe.symbols[-1],
        },
    )


def test_a_predictions_run_of_cache_hits_opens_no_tracker(warm, tmp_path: Path) -> None:
    """A hit reads the stored predictions, not the models: it needs no MLflow, so many such runs
    starting at once do not queue to open the store (and a tracker outage fails none of them)."""
    universe_path, instance, resources, _ = warm
    not_a_folder = tmp_path / "not-a-folder"
    not_a_folder.write_text("a file where the tracking store's folder would be")
    unusable = MlflowTrackingResource(tracking_uri=f"sqlite:///{not_a_folder / 'mlflow.db'}")
    with pytest.raises(OSError):
        unusable.tracker()
    result = ranged_run(universe_path, instance, {**resources, "mlflow_tracking": unusable}, ["predictions"])
    assert result.success
    symbols = load_universe(universe_path).symbols
    assert cache_outcomes(result) == {("predictions", symbol): "hit" for symbol in symbols}


def test_backfill_policy_run_over_many_partitions_matches_single_partition_runs(warm) -> None:
    universe_path, instance, resources, store = warm
    symbols = load_universe(universe_path).symbols
    assert len(symbols) > 1
    # Same fingerprints as the single-partition runs of the cold pass: every partition is a hit.
    result = ranged_run(universe_path, instance, resources, ["features", "predictions"])
    assert result.success
    assert cache_outcomes(result) == {
        (asset, symbol): "hit" for asset in ("features", "predictions") for symbol in symbols
    }

    # A feature setting changes: one run computes every symbol, each with its own metadata.
    config = yaml.safe_load(universe_path.read_text())
    config["features"] = {"return_windows": [1, 2, 5, 10]}
    universe_path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = ranged_run(universe_path, instance, resources, ["features"])
    assert result.success
    assert cache_outcomes(result) == {("features", symbol): "miss" for symbol in symbols}
    records = [
        event for event in result.get_asset_materialization_events() if "cache" in event.materialization.metadata
    ]
    assert len(records) == len(symbols)  # each partition's own record, after the range's
    for event in records:
        symbol = event.materialization.partition
        stored = read_value(store, artifact_prefix(FEATURES, symbol))
        assert event.materialization.metadata["rows"].value == stored.height
        assert (
            event.materialization.metadata["fingerprint"].value
            == ArtifactHandle.current(store, artifact_prefix(FEATURES, symbol)).fingerprint
        )
        assert "ret_21" not in stored.columns and "ret_10" in stored.columns
    plan = plan_for(universe_path, store)
    assert {("features", symbol) for symbol in symbols} <= plan.fresh
    assert {
        ("target_rankings", f"{symbol}|{target}")
        for symbol in symbols
        for target in load_universe(universe_path).target_names
    } <= plan.stale
