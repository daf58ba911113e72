"""Which partitions need a run: the fingerprint cache, consulted before launching anything.

Every asset partition's fingerprint follows from code versions, config and the data versions of
its inputs (see defs/assets/caching.py), so the whole graph's fingerprints can be computed from the
stored pointers without running a step. A partition whose fingerprint is already current in the
store is fresh; one that differs, or is missing, or sits below a partition that needs a run,
needs a run. Launching only those runs is what makes a no-change rerun cost seconds instead of a
Dagster run per partition; inside each run the cache still decides, step by step.

The planner reads the Definitions' asset graph: the assets in topological order, each asset's
inputs (not its lineage-only deps) and, through each input's partition mapping, which upstream
partitions a partition reads and whether it receives them as one handle or as a dict keyed by
partition, as the IO manager hands them. The one thing the graph does not say, the config an
asset's fingerprint hashes, each asset declares beside itself (`defs/assets/planning.py`, listed
in `defs/asset_plans.py`) with the same config functions it runs, so the planner and the assets
cannot disagree (tested: after a full run every planned fingerprint equals the stored one). An
asset without a declaration is not planned.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg

# Dagster's own graph of a list of assets: Definitions resolve theirs only with every resource.
from dagster._core.definitions.assets.graph.asset_graph import AssetGraph
from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph

from intelligence_assets.config.universe import Universe
from intelligence_assets.defs.asset_plans import ASSET_PLANS
from intelligence_assets.defs.assets.caching import CONTENT_INPUT, fingerprint_of, input_versions
from intelligence_assets.defs.assets.planning import AssetPlans, NeedsRun, PlanningContext
from intelligence_assets.defs.partitions import SYMBOL_DIMENSION
from intelligence_assets.defs.resources.io_manager import parse_partition_key, partition_parts
from intelligence_assets.store.artifact_store import ArtifactStore, ArtifactStoreError
from intelligence_assets.store.artifacts import ArtifactHandle, find_intact_manifest, read_manifest
from intelligence_assets.store.bars_source import BarsSource, LocalBarsSource
from intelligence_assets.store.keys import artifact_prefix, manifest_key

# An asset partition as the plan names it: (asset key as a string, partition key or None).
AssetPartition = tuple[str, str | None]


@dataclass
class Plan:
    """Asset partitions that need a run, and how many are fresh."""

    stale: set[AssetPartition] = field(default_factory=set)
    fresh: set[AssetPartition] = field(default_factory=set)
    # Asset -> partition -> rows, where judging a partition measured it (bars: per symbol). The
    # runner starts the biggest symbols' runs first, so the pool ends level.
    sizes: dict[str, dict[str | None, int]] = field(default_factory=dict)
    # Why a partition could not be judged without a run (its bars cannot be read): its runs
    # will fail, the others' will not.
    unjudged: dict[AssetPartition, str] = field(default_factory=dict)
    # What is wrong with a stored artifact that would otherwise be reused.
    damaged: dict[AssetPartition, str] = field(default_factory=dict)

    def needs_run(self, asset: str, partition: str | None = None) -> bool:
        return (asset, partition) in self.stale

    def partitions(self, assets: list[str]) -> list[str | None]:
        """Partitions in which any of `assets` needs a run, in a stable order."""
        keys = {partition for asset, partition in self.stale if asset in assets}
        return sorted(keys, key=lambda key: key or "")


class _PlannedPartitions:
    """The `symbol` partitions the plan judges, answered as an instance answers Dagster: the
    caller names them (registered, or about to be), so planning reads no instance."""

    def __init__(self, symbols: Sequence[str]) -> None:
        self.symbols = list(symbols)

    def _keys(self, partitions_def_name: str) -> list[str]:
        if partitions_def_name != SYMBOL_DIMENSION:
            raise ValueError(
                f"the planner knows the dynamic partitions {SYMBOL_DIMENSION!r} only, not {partitions_def_name!r}"
            )
        return self.symbols

    def get_dynamic_partitions(self, partitions_def_name: str) -> Sequence[str]:
        return self._keys(partitions_def_name)

    def has_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> bool:
        return partition_key in self._keys(partitions_def_name)

    def get_existing_dynamic_partitions(self, partitions_def_name: str, partition_keys: Sequence[str]) -> set[str]:
        return set(self._keys(partitions_def_name)) & set(partition_keys)

    def get_paginated_dynamic_partitions(
        self, partitions_def_name: str, limit: int, ascending: bool, cursor: str | None = None
    ):
        raise NotImplementedError("the planner lists dynamic partitions whole")

    def get_dynamic_partitions_definition_id(self, partitions_def_name: str) -> str:
        return hashlib.sha256("\n".join(self._keys(partitions_def_name)).encode()).hexdigest()


def asset_graph_of(assets: dg.Definitions | Sequence[dg.AssetsDefinition]) -> BaseAssetGraph:
    """The asset graph of Definitions, or of a list of assets (as `build_assets` returns)."""
    if isinstance(assets, dg.Definitions):
        return assets.resolve_asset_graph()
    return AssetGraph.from_assets(list(assets))


def _name(partition_key: str | None) -> str | None:
    """A partition key as the plan, the cache and Dagster's run tags write it ("AAPL|y_up_1b")."""
    return None if partition_key is None else str(partition_key)


def _wants_mapping(
    assets_def: dg.AssetsDefinition, input_name: str, graph: BaseAssetGraph, asset: dg.AssetKey, upstream: dg.AssetKey
) -> bool:
    """Whether the asset receives this input as a dict of handles keyed by partition: as the IO
    manager decides (an unpartitioned asset over a partitioned input, or `as_mapping`)."""
    if graph.get(upstream).partitions_def is None:
        return False
    metadata = assets_def.node_def.input_def_named(input_name).metadata or {}
    return bool(metadata.get("as_mapping")) or graph.get(asset).partitions_def is None


class _Planner:
    def __init__(
        self, universe: Universe, store: ArtifactStore, bars_source: BarsSource, declarations: AssetPlans
    ) -> None:
        self.universe = universe
        self.declarations = declarations
        self.store = store
        self.bars_source = bars_source
        self.plan = Plan()
        # Asset -> partition -> its current handle when fresh, None when it needs a run.
        self.current: dict[dg.AssetKey, dict[str | None, ArtifactHandle | None]] = {}
        self.loaded: dict = {}
        # Assets share partitionings and mappings: each is read from Dagster once per plan.
        self._keys: dict[dg.PartitionsDefinition | None, dict[str | None, str | dg.MultiPartitionKey | None]] = {}
        self._partitions: dict[dg.PartitionsDefinition | None, dict[str | None, tuple[str, ...]]] = {}
        self._mapped: dict[tuple, dict[str | None, list[str | None]]] = {}

    def partitions(self, partitions_def: dg.PartitionsDefinition | None) -> dict[str | None, tuple[str, ...]]:
        """Every partition key of a partitioning, with its parts in the store's layout."""
        if partitions_def not in self._partitions:
            keys = [None] if partitions_def is None else partitions_def.get_partition_keys()
            self._keys[partitions_def] = {_name(key): parse_partition_key(partitions_def, key) for key in keys}
            self._partitions[partitions_def] = {
                name: partition_parts(key) for name, key in self._keys[partitions_def].items()
            }
        return self._partitions[partitions_def]

    def upstream_partitions(
        self, graph: BaseAssetGraph, asset: dg.AssetKey, upstream: dg.AssetKey
    ) -> dict[str | None, list[str | None]]:
        """partition of `asset` -> the partitions of `upstream` it reads, through the input's
        partition mapping in the graph."""
        asset_partitions = graph.get(asset).partitions_def
        upstream_partitions = graph.get(upstream).partitions_def
        mapping = graph.get_partition_mapping(asset, upstream)
        edge = (mapping, asset_partitions, upstream_partitions)
        try:
            hash(edge)
        except TypeError:  # a mapping that cannot be a dict key is mapped for each input anew
            return self._map(graph, asset, upstream, mapping, asset_partitions, upstream_partitions)
        if edge not in self._mapped:
            self._mapped[edge] = self._map(graph, asset, upstream, mapping, asset_partitions, upstream_partitions)
        return self._mapped[edge]

    def _map(
        self,
        graph: BaseAssetGraph,
        asset: dg.AssetKey,
        upstream: dg.AssetKey,
        mapping: dg.PartitionMapping,
        asset_partitions: dg.PartitionsDefinition | None,
        upstream_partitions: dg.PartitionsDefinition | None,
    ) -> dict[str | None, list[str | None]]:
        partitions = self.partitions(asset_partitions)
        if upstream_partitions is None:
            return {key: [None] for key in partitions}
        if asset_partitions is None:
            every = mapping.get_upstream_mapped_partitions_result_for_partitions(
                None, None, upstream_partitions
            ).partitions_subset
            return {None: [str(key) for key in every.get_partition_keys()]}
        # The two mappings of this graph, answered without building a Dagster subset per partition
        # (which costs more than judging the partition); any other mapping asks Dagster.
        if isinstance(mapping, dg.IdentityPartitionMapping):
            return {key: [key] for key in partitions}
        if isinstance(mapping, dg.MultiToSingleDimensionPartitionMapping) and isinstance(
            asset_partitions, dg.MultiPartitionsDefinition
        ):
            dimension = mapping.partition_dimension_name
            return {name: [key.keys_by_dimension[dimension]] for name, key in self._keys[asset_partitions].items()}
        return {
            key: [
                str(mapped)
                for mapped in graph.get_parent_partition_keys_for_child(
                    key, upstream, asset
                ).partitions_subset.get_partition_keys()
            ]
            for key in partitions
        }

    def judge(self, graph: BaseAssetGraph, asset: dg.AssetKey) -> None:
        planning = self.declarations.of(asset)
        assert planning is not None
        node = graph.get(asset)
        assets_def = node.assets_def
        code_version = assets_def.code_versions_by_key.get(asset) or ""
        # Lineage-only deps (`deps=`) are inputs of type Nothing: nothing is loaded, nothing hashed.
        inputs = {
            name: upstream
            for name, upstream in assets_def.keys_by_input_name.items()
            if not assets_def.node_def.input_def_named(name).dagster_type.is_nothing
        }
        for name, upstream in inputs.items():
            if upstream not in self.current:
                raise ValueError(
                    f"{asset.to_user_string()} reads {upstream.to_user_string()} (input {name}), which is not planned: "
                    "declare how it is planned beside it (defs/assets/planning.py) and list it in defs/asset_plans.py"
                )
        partitions = self.partitions(node.partitions_def)
        upstream_of = {name: self.upstream_partitions(graph, asset, upstream) for name, upstream in inputs.items()}
        mapped = {name: _wants_mapping(assets_def, name, graph, asset, upstream) for name, upstream in inputs.items()}
        judged = self.current.setdefault(asset, {})
        for partition, parts in partitions.items():
            handles: dict[str, ArtifactHandle | dict[str, ArtifactHandle]] | None = {}
            for name, upstream in inputs.items():
                upstream_handles = {
                    upstream_key: self.current[upstream].get(upstream_key)
                    for upstream_key in upstream_of[name][partition]
                }
                if any(handle is None for handle in upstream_handles.values()):
                    handles = None  # an input needs a run: so does this partition
                    break
                if mapped[name]:
                    handles[name] = upstream_handles
                elif len(upstream_handles) == 1:
                    handles[name] = next(iter(upstream_handles.values()))
                else:
                    raise ValueError(
                        f"{asset.to_user_string()} {partition}: input {name} reads {len(upstream_handles)} partitions; "
                        "mark it as_mapping"
                    )
            prefix = artifact_prefix(asset, *parts)
            if planning.fingerprint_config is None:
                judged[partition] = self.visit_always_computed(asset, partition, prefix, code_version, handles)
                continue
            expected = None
            if handles is not None:
                context = PlanningContext(
                    self.universe, asset, partition, handles, self.bars_source, self.loaded, self.plan.sizes
                )
                try:
                    config = planning.fingerprint_config(context)
                    hashed = (
                        handles
                        if planning.hashed_inputs is None
                        else {name: handles[name] for name in planning.hashed_inputs}
                    )
                    expected = fingerprint_of(code_version, config, partition, input_versions(hashed))
                except NeedsRun as reason:
                    self.plan.unjudged[(asset.to_user_string(), partition)] = str(reason)
            judged[partition] = self.visit(asset, partition, prefix, expected)

    def visit(
        self, asset: dg.AssetKey, partition: str | None, prefix: str, expected: str | None
    ) -> ArtifactHandle | None:
        """The partition's current handle when fresh; None (and marked stale) otherwise.
        `expected` None means its fingerprint cannot be known before a run."""
        name = asset.to_user_string()
        handle = None
        if expected is not None:
            try:
                current = ArtifactHandle.current(self.store, prefix)
                committed = self.store.exists(manifest_key(prefix, current.fingerprint))
            except ArtifactStoreError:  # missing, malformed or blocked: a run will say what is wrong
                current, committed = None, False
            if current is not None and committed and current.fingerprint == expected:
                # About to be reused: a corrupt or missing file makes its producer recompute, rather
                # than every run that reads it fail the same way.
                _, state = find_intact_manifest(self.store, prefix, current.fingerprint)
                if state == "intact":
                    handle = current
                else:
                    self.plan.damaged[(name, partition)] = state
        (self.plan.fresh if handle else self.plan.stale).add((name, partition))
        return handle

    def visit_always_computed(
        self, asset: dg.AssetKey, partition: str | None, prefix: str, code_version: str, inputs: Mapping | None
    ) -> ArtifactHandle | None:
        """An asset that computes on every run: current while its inputs are, its stored artifact
        read their current versions, and was made by its code version (a new one may store
        another shape)."""
        name = asset.to_user_string()
        handle = None
        if inputs is not None:
            try:
                current = ArtifactHandle.current(self.store, prefix)
                provenance = read_manifest(self.store, prefix, current.fingerprint).provenance
                read = {
                    name: version for name, version in provenance.get("inputs", {}).items() if name != CONTENT_INPUT
                }
                if provenance.get("code_version") == code_version and read == input_versions(inputs):
                    _, state = find_intact_manifest(self.store, prefix, current.fingerprint)
                    if state == "intact":
                        handle = current
                    else:
                        self.plan.damaged[(name, partition)] = state
            except ArtifactStoreError:  # never run, or unreadable: its run will say so
                pass
        (self.plan.fresh if handle else self.plan.stale).add((name, partition))
        return handle


def plan_runs(
    universe: Universe,
    store: ArtifactStore,
    assets: dg.Definitions | Sequence[dg.AssetsDefinition],
    symbols: list[str],
    bars_source: BarsSource | None = None,
    declarations: AssetPlans = ASSET_PLANS,
) -> Plan:
    """Judge every partition of every planned asset of `assets` (Definitions, or the list
    `build_assets` returns). `symbols`: the `symbol` partitions to judge (the registered ones,
    what the leaderboard reads over); `bars_source`: where raw bars are read (default: the
    universe's bars directory); `declarations`: the planned assets' declarations."""
    graph = asset_graph_of(assets)
    planner = _Planner(universe, store, bars_source or LocalBarsSource(universe.bars_directory), declarations)
    with dg.partition_loading_context(dynamic_partitions_store=_PlannedPartitions(symbols)):  # type: ignore[arg-type]
        for asset in graph.toposorted_asset_keys:
            if declarations.of(asset) is not None:
                planner.judge(graph, asset)
    return planner.plan
