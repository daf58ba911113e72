"""The planner reads the asset graph: an asset added to the graph, with its fingerprint config
declared beside it, is planned with no edit in the planner, through the graph's topology, inputs
and partition mappings."""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from intelligence_assets.config.universe import load_universe
from intelligence_assets.definitions import build_assets
from intelligence_assets.defs.asset_plans import ASSET_PLANS
from intelligence_assets.defs.assets.caching import Computed, materialize_cached
from intelligence_assets.defs.assets.market_data import BARS, FEATURES
from intelligence_assets.defs.assets.planning import PlanningContext, plans
from intelligence_assets.defs.assets.target_analysis import LABELS
from intelligence_assets.defs.partitions import by_symbol, cell_key, symbol_partitions, symbol_target_partitions
from intelligence_assets.defs.planner import plan_runs
from intelligence_assets.defs.resources.artifact_store import ArtifactStoreResource
from intelligence_assets.store.artifact_store import LocalArtifactStore
from intelligence_assets.store.artifacts import ArtifactHandle
from intelligence_assets_tests.conftest import write_small_universe
from intelligence_assets_tests.support.pipeline import local_resources

FEATURE_COUNTS = dg.AssetKey("feature_counts")
LABEL_COVERAGE = dg.AssetKey("label_coverage")
# A setting of the first new asset: changing it makes that asset stale, and what reads it.
SETTINGS = {"version": 1}


def feature_counts_config(symbol: str) -> dict:
    return {**SETTINGS, "symbol": symbol}


def label_coverage_config(target: str) -> dict:
    return {"target": target}


# The only thing the planner needs to know of the new assets, declared beside them.
@plans(FEATURE_COUNTS)
def planned_feature_counts_config(context: PlanningContext) -> dict:
    return feature_counts_config(context.symbol)


@plans(LABEL_COVERAGE)
def planned_label_coverage_config(context: PlanningContext) -> dict:
    return label_coverage_config(context.target)


NEW_ASSET_PLANS = ASSET_PLANS.adding(planned_feature_counts_config, planned_label_coverage_config)


def new_assets(universe) -> list[dg.AssetsDefinition]:
    """Two assets the planner has never heard of: one per symbol over `features`, and one per
    symbol x target over `labels` and (through the symbol mapping) the first new asset."""

    @dg.asset(
        key=FEATURE_COUNTS, ins={"features": dg.AssetIn(FEATURES)}, partitions_def=symbol_partitions, code_version="1"
    )
    def feature_counts(
        context: dg.AssetExecutionContext, artifact_store: ArtifactStoreResource, features: ArtifactHandle
    ) -> Iterator[dg.Output]:
        def compute() -> Computed:
            return Computed({"columns": len(features.load().columns)})

        yield from materialize_cached(
            context,
            artifact_store.store(),
            {"features": features},
            feature_counts_config(context.partition_key),
            compute,
        )

    @dg.asset(
        key=LABEL_COVERAGE,
        ins={"labels": dg.AssetIn(LABELS), "feature_counts": dg.AssetIn(FEATURE_COUNTS, partition_mapping=by_symbol)},
        partitions_def=symbol_target_partitions(universe),
        code_version="1",
    )
    def label_coverage(
        context: dg.AssetExecutionContext,
        artifact_store: ArtifactStoreResource,
        labels: ArtifactHandle,
        feature_counts: ArtifactHandle,
    ) -> Iterator[dg.Output]:
        target = context.partition_key.keys_by_dimension["target"]

        def compute() -> Computed:
            return Computed({"rows": labels.load().height, "columns": feature_counts.load()["columns"]})

        inputs = {"labels": labels, "feature_counts": feature_counts}
        yield from materialize_cached(context, artifact_store.store(), inputs, label_coverage_config(target), compute)

    return [feature_counts, label_coverage]


@pytest.fixture
def graph(tmp_path: Path):
    universe_path = write_small_universe(tmp_path, families={"linear": {"params": {}}})
    universe = load_universe(universe_path)
    assets = [*build_assets(universe), *new_assets(universe)]
    resources = local_resources(tmp_path / "artifacts", universe)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("symbol", universe.symbols)
        yield universe, assets, instance, resources, LocalArtifactStore(tmp_path / "artifacts")


def materialize(
    assets: list,
    keys: list[dg.AssetKey],
    partition: str | dg.MultiPartitionKey,
    instance: dg.DagsterInstance,
    resources: dict,
) -> None:
    result = dg.materialize(
        assets,
        selection=dg.AssetSelection.assets(*keys),
        partition_key=partition,
        instance=instance,
        resources=resources,
    )
    assert result.success


def test_an_asset_added_to_the_graph_is_planned_without_editing_the_planner(
    graph, monkeypatch: pytest.MonkeyPatch
) -> None:
    universe, assets, instance, resources, store = graph
    cells = [
        dg.MultiPartitionKey({"symbol": symbol, "target": target})
        for symbol in universe.symbols
        for target in universe.target_names
    ]
    new_partitions = {("feature_counts", symbol) for symbol in universe.symbols} | {
        ("label_coverage", str(cell)) for cell in cells
    }

    plan = plan_runs(universe, store, assets, universe.symbols, declarations=NEW_ASSET_PLANS)
    assert new_partitions <= plan.stale  # nothing stored yet: every partition of the new assets needs a run

    for symbol in universe.symbols:
        materialize(assets, [BARS, FEATURES], symbol, instance, resources)
    for cell in cells:
        materialize(assets, [LABELS], cell, instance, resources)
    plan = plan_runs(universe, store, assets, universe.symbols, declarations=NEW_ASSET_PLANS)
    # Their inputs are current, they are not: exactly their partitions (and what lies below the
    # training stage, never run here) need a run.
    assert new_partitions <= plan.stale
    assert {("features", symbol) for symbol in universe.symbols} | {
        ("labels", str(cell)) for cell in cells
    } <= plan.fresh

    for symbol in universe.symbols:
        materialize(assets, [FEATURE_COUNTS], symbol, instance, resources)
    for cell in cells:
        materialize(assets, [LABEL_COVERAGE], cell, instance, resources)
    # The planner computed the fingerprints the assets stored, from the graph's inputs and
    # partition mappings and the declared config.
    plan = plan_runs(universe, store, assets, universe.symbols, declarations=NEW_ASSET_PLANS)
    assert new_partitions <= plan.fresh and not new_partitions & plan.stale

    # A new setting of the first new asset: it needs a run, and so does every partition that
    # reads it through the symbol mapping; their other inputs do not.
    monkeypatch.setitem(SETTINGS, "version", 2)
    plan = plan_runs(universe, store, assets, universe.symbols, declarations=NEW_ASSET_PLANS)
    assert new_partitions <= plan.stale
    assert {("features", symbol) for symbol in universe.symbols} | {
        ("labels", str(cell)) for cell in cells
    } <= plan.fresh
    assert plan.needs_run("label_coverage", cell_key(universe.symbols[0], universe.target_names[0]))


def test_an_asset_reading_an_asset_that_is_not_planned_is_refused(tmp_path: Path) -> None:
    universe = load_universe(write_small_universe(tmp_path, families={"linear": {"params": {}}}))
    unplanned = dg.AssetKey("unplanned_source")

    @dg.asset(key=unplanned)
    def unplanned_source() -> None: ...

    @dg.asset(key=dg.AssetKey("reads_unplanned"), ins={"source": dg.AssetIn(unplanned)})
    def reads_unplanned(source: ArtifactHandle) -> None: ...

    with pytest.raises(ValueError, match="reads unplanned_source .* which is not planned"):
        plan_runs(
            universe,
            LocalArtifactStore(tmp_path / "artifacts"),
            [*build_assets(universe), unplanned_source, reads_unplanned],
            universe.symbols,
            declarations=ASSET_PLANS.adding(plans(reads_unplanned.key)(lambda context: {})),
        )
