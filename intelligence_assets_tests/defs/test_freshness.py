"""One truth about freshness: what `make demo`'s planner would run and what Dagster's staleness
(asked through its GraphQL API, as the UI asks) say of every partition, after a cold run, a
rerun that changes nothing, new bars and a model family's version bump.

Dagster's staleness is direct: a partition is STALE when its own code version changed or an input
it read has a newer version, MISSING when never materialized. The plan is transitive: it also holds
everything downstream that will need a run once those have run. So they agree when (1) every
partition Dagster calls STALE or MISSING is in the plan, (2) every partition of the plan is one of
those or downstream of one, and (3) the plan's partitions whose inputs are all current (what runs
first) are all among them.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from dagster._core.test_utils import in_process_test_workspace
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster_graphql.test.utils import execute_dagster_graphql

from intelligence_assets.config.universe import load_universe
from intelligence_assets.definitions import TRAINING_SELECTION, build_assets
from intelligence_assets.defs.assets.leaderboard import build_leaderboard_checks
from intelligence_assets.defs.assets.market_data import BARS
from intelligence_assets.defs.partitions import register_symbols
from intelligence_assets.defs.planner import plan_runs
from intelligence_assets.ml.families import load_family
from intelligence_assets.ml.synthetic import synthetic_bars
from intelligence_assets.store.artifact_store import LocalArtifactStore
from intelligence_assets_tests.conftest import write_small_universe
from intelligence_assets_tests.support.pipeline import local_resources, materialize_everything

LOCATION = LoadableTargetOrigin(module_name="intelligence_assets_tests.support.freshness_location", attribute="defs")
NODES = "query { assetNodes { assetKey { path } isPartitioned partitionKeys } }"
BY_PARTITION = """
query Status($path: [String!]!, $partitions: [String!]) {
  assetNodeOrError(assetKey: {path: $path}) { ... on AssetNode { staleStatusByPartition(partitions: $partitions) } }
}
"""
UNPARTITIONED = """
query Status($path: [String!]!) { assetNodeOrError(assetKey: {path: $path}) { ... on AssetNode { staleStatus } } }
"""

Partition = tuple[str, str | None]


def dagster_view(instance: dg.DagsterInstance, assets: set[str]) -> dict[Partition, str]:
    """FRESH, STALE or MISSING for every partition of `assets`, from the GraphQL API."""
    statuses: dict[Partition, str] = {}
    with in_process_test_workspace(instance, LOCATION) as context:
        nodes = execute_dagster_graphql(context, NODES).data["assetNodes"]
        for node in nodes:
            asset = "/".join(node["assetKey"]["path"])
            if asset not in assets:
                continue
            path = node["assetKey"]["path"]
            if node["isPartitioned"]:
                variables = {"path": path, "partitions": node["partitionKeys"]}
                answer = execute_dagster_graphql(context, BY_PARTITION, variables).data["assetNodeOrError"]
                keys = [(asset, key) for key in node["partitionKeys"]]
                statuses.update(zip(keys, answer["staleStatusByPartition"], strict=True))
            else:
                answer = execute_dagster_graphql(context, UNPARTITIONED, {"path": path}).data["assetNodeOrError"]
                statuses[(asset, None)] = answer["staleStatus"]
    return statuses


class PlanView:
    """The plan of `make demo` with, for each partition it would run, the planned partitions it reads."""

    def __init__(self, tmp_path: Path, instance: dg.DagsterInstance) -> None:
        universe = load_universe(tmp_path / "universe.yaml")
        assets = build_assets(universe)
        plan = plan_runs(
            universe,
            LocalArtifactStore(tmp_path / "artifacts"),
            assets,
            list(instance.get_dynamic_partitions("symbol")),
        )
        graph = dg.Definitions(assets=assets, resources=local_resources(tmp_path / "artifacts", universe))
        graph = graph.resolve_asset_graph()
        self.stale: set[Partition] = set(plan.stale)
        self.assets = {asset for asset, _ in plan.stale | plan.fresh}
        self.reads: dict[Partition, set[Partition]] = {}
        for asset, partition in self.stale:
            key = dg.AssetKey.from_user_string(asset)
            reads = set()
            for parent in graph.get(key).parent_keys:
                parents: list[str | None] = [None]
                if graph.get(parent).is_partitioned:
                    with dg.partition_loading_context(dynamic_partitions_store=instance):
                        mapped = graph.get_parent_partition_keys_for_child(partition, parent, key)
                    parents = list(mapped.partitions_subset.get_partition_keys())
                reads |= {(parent.to_user_string(), p) for p in parents}
            self.reads[(asset, partition)] = reads

    @property
    def first(self) -> set[Partition]:
        """What runs first: the plan's partitions none of whose inputs is in the plan."""
        return {partition for partition in self.stale if not self.reads[partition] & self.stale}

    def explained_by(self, not_fresh: set[Partition]) -> set[Partition]:
        """The plan's partitions that are in `not_fresh` or read, transitively, one that is."""
        explained = self.stale & not_fresh
        grew = True
        while grew:
            more = {partition for partition in self.stale - explained if self.reads[partition] & explained}
            explained |= more
            grew = bool(more)
        return explained


def assert_agree(tmp_path: Path, instance: dg.DagsterInstance, moment: str) -> set[Partition]:
    plan = PlanView(tmp_path, instance)
    dagster = dagster_view(instance, plan.assets)
    not_fresh = {partition for partition, status in dagster.items() if status != "FRESH"}
    assert not_fresh <= plan.stale, (
        f"{moment}: STALE or MISSING in Dagster, current in the plan: {sorted(not_fresh - plan.stale, key=str)}"
    )
    assert plan.explained_by(not_fresh) == plan.stale, (
        f"{moment}: in the plan, but neither STALE nor MISSING in Dagster nor downstream of such: "
        f"{sorted(plan.stale - plan.explained_by(not_fresh), key=str)}"
    )
    assert plan.first <= not_fresh, (
        f"{moment}: runs first in the plan, FRESH in Dagster: {sorted(plan.first - not_fresh, key=str)}"
    )
    return plan.stale


def run_the_plan(tmp_path: Path, instance: dg.DagsterInstance, resources: dict, moment: str) -> None:
    """What `make demo` does: run what the plan says runs first, plan again, until nothing is left;
    the two views agree at every step on the way."""
    universe = load_universe(tmp_path / "universe.yaml")
    assets = build_assets(universe)
    partitions_of = {key: node.partitions_def for key, node in _nodes(assets, resources).items()}
    for step in range(12):
        assert_agree(tmp_path, instance, f"{moment}, step {step}")
        first = PlanView(tmp_path, instance).first
        if not first:
            return
        for asset, partition in sorted(first, key=str):
            key = dg.AssetKey.from_user_string(asset)
            partition_key = partition
            if isinstance(partitions_of[key], dg.MultiPartitionsDefinition) and partition is not None:
                symbol, target = partition.split("|")
                partition_key = dg.MultiPartitionKey({"symbol": symbol, "target": target})
            result = dg.materialize(
                assets, selection=[key], partition_key=partition_key, instance=instance, resources=resources
            )
            assert result.success, (asset, partition)
    raise AssertionError(f"{moment}: the plan did not empty in 12 steps")


def leaderboard_check(assets: list, instance: dg.DagsterInstance, resources: dict) -> dg.ExecuteInProcessResult:
    """The leaderboard's own staleness check, run on its own as from the UI."""
    checks = build_leaderboard_checks(load_universe())
    return dg.materialize(
        [*assets, *checks], selection=dg.AssetSelection.checks(*checks), instance=instance, resources=resources
    )


def _nodes(assets: list, resources: dict) -> dict:
    graph = dg.Definitions(assets=assets, resources=resources).resolve_asset_graph()
    return {node.key: node for node in graph.asset_nodes}


def test_the_plan_and_dagsters_staleness_agree_on_every_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_small_universe(tmp_path, families={"linear": {"params": {}}})
    monkeypatch.setenv("INTELLIGENCE_UNIVERSE", str(path))
    monkeypatch.setenv("INTELLIGENCE_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    universe = load_universe(path)
    resources = local_resources(tmp_path / "artifacts", universe)
    with dg.instance_for_test() as instance:
        register_symbols(instance, universe.symbols)

        materialize_everything(universe, instance, resources)
        assert assert_agree(tmp_path, instance, "after a cold run") == set()
        materialize_everything(universe, instance, resources)
        assert assert_agree(tmp_path, instance, "after a rerun that changed nothing") == set()

        # New bars for one symbol, taken in by its bars run (the new_bars sensor's run).
        more = synthetic_bars(n_bars=1650, seed=100, signal_strength=1.0)
        more.write_parquet(tmp_path / "bars" / "SIGNAL.parquet")
        assert dg.materialize(
            build_assets(universe), selection=[BARS], partition_key="SIGNAL", instance=instance, resources=resources
        ).success
        stale = assert_agree(tmp_path, instance, "after new bars")
        assert ("features", "SIGNAL") in stale and ("models/linear", "SIGNAL|y_up_1b") in stale
        # NOISE's predictions read the registry, which changes; nothing else of NOISE does.
        assert {asset for asset, partition in stale if partition and partition.startswith("NOISE")} <= {"predictions"}
        run_the_plan(tmp_path, instance, resources, "running the new bars through")

        # A family's version bump: every model of the family, and what reads them.
        family = load_family("linear")
        monkeypatch.setattr(family, "version", f"{family.version}.1")
        stale = assert_agree(tmp_path, instance, "after a family version bump")
        assert {asset for asset, _ in stale} >= {"models/linear", "model_leaderboard"}
        # One model retrained, the leaderboard not yet: it names that model as changed.
        retrained = dg.MultiPartitionKey({"symbol": "NOISE", "target": "y_up_1b"})
        assets = build_assets(load_universe(path))
        assert dg.materialize(
            assets, selection=TRAINING_SELECTION, partition_key=retrained, instance=instance, resources=resources
        ).success
        [check] = leaderboard_check(assets, instance, resources).get_asset_check_evaluations()
        assert not check.passed and check.metadata["models_changed"].value == 1
        assert check.metadata["changed"].value[0].startswith("models/linear NOISE|y_up_1b: retrained")
        run_the_plan(tmp_path, instance, resources, "running the bump through")
        [check] = leaderboard_check(assets, instance, resources).get_asset_check_evaluations()
        assert check.passed, check.description
    assert pl.read_parquet(tmp_path / "bars" / "SIGNAL.parquet").height == more.height
