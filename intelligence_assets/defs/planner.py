"""Which partitions need a run: the fingerprint cache, consulted before launching anything.

Every asset partition's fingerprint follows from code versions, config and the data versions of
its inputs (see defs/assets/caching.py), so the whole graph's fingerprints can be computed from the
stored pointers without running a step. A partition whose fingerprint is already current in the
store is fresh; one that differs, or is missing, or sits below a partition that needs a run,
needs a run. Launching only those runs is what makes a no-change rerun cost seconds instead of a
Dagster run per partition; inside each run the cache still decides, step by step.

Uses the same config functions as the assets, so the planner and the assets cannot disagree
(tested: after a full run every planned fingerprint equals the stored one).
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import dagster as dg

from intelligence_assets.defs.assets.caching import fingerprint_of, input_versions
from intelligence_assets.defs.assets.leaderboard import MODEL_LEADERBOARD, leaderboard_config, model_input_name
from intelligence_assets.defs.assets.predictions import PREDICTIONS, predictions_config, symbol_champions
from intelligence_assets.defs.assets.registry import MODEL_REGISTRY
from intelligence_assets.defs.assets.market_data import BARS, bars_config, features_config, read_symbol_bars
from intelligence_assets.defs.assets.models import model_config, model_key
from intelligence_assets.defs.assets.target_analysis import FEATURE_SETS, FEATURES, LABELS, TARGET_RANKINGS, labels_config, ranking_config, selection_config
from intelligence_assets.store.fingerprints import table_fingerprint
from intelligence_assets.defs.partitions import cell_key, cell_of
from intelligence_assets.store.artifact_store import ArtifactStore, ArtifactStoreError
from intelligence_assets.store.artifacts import MANIFEST_FILE, ArtifactHandle, find_intact_manifest, read_manifest
from intelligence_assets.store.bars_source import BarsSource, LocalBarsSource
from intelligence_assets.config.universe import Universe



@dataclass
class Plan:
    """Asset partitions that need a run, and how many are fresh."""

    stale: set[tuple[str, str | None]] = field(default_factory=set)
    fresh: set[tuple[str, str | None]] = field(default_factory=set)
    # Bars per symbol: the runner starts the biggest symbols' runs first, so the pool ends level.
    bars_rows: dict[str, int] = field(default_factory=dict)
    # Symbol -> why its bars file cannot be read: its runs will fail, the others' will not.
    unreadable_bars: dict[str, str] = field(default_factory=dict)
    # (asset, partition) -> what is wrong with a stored artifact that would otherwise be reused.
    damaged: dict[tuple[str, str | None], str] = field(default_factory=dict)

    def needs_run(self, asset: str, partition: str | None = None) -> bool:
        return (asset, partition) in self.stale

    def partitions(self, assets: list[str]) -> list[str | None]:
        """Partitions in which any of `assets` needs a run, in a stable order."""
        keys = {partition for asset, partition in self.stale if asset in assets}
        return sorted(keys, key=lambda key: key or "")


class _Planner:
    def __init__(self, universe: Universe, store: ArtifactStore, code_versions: Mapping[dg.AssetKey, str]) -> None:
        self.universe = universe
        self.store = store
        self.code_versions = code_versions
        self.plan = Plan()

    def visit(self, asset: dg.AssetKey, partition: str | None, prefix: str, config: object, inputs: Mapping | None) -> ArtifactHandle | None:
        """The partition's current handle when fresh; None (and marked stale) otherwise.
        `inputs` None means an input itself needs a run."""
        name = asset.to_user_string()
        handle = None
        if inputs is not None:
            expected = fingerprint_of(self.code_versions[asset] or "", config, partition, input_versions(inputs))
            try:
                current = ArtifactHandle.current(self.store, prefix)
                committed = self.store.exists(f"{prefix}/{current.fingerprint}/{MANIFEST_FILE}")
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


def _all_present(inputs: Mapping) -> Mapping | None:
    for value in inputs.values():
        if value is None or (isinstance(value, Mapping) and any(v is None for v in value.values())):
            return None
    return inputs


def plan_runs(
    universe: Universe, store: ArtifactStore, code_versions: Mapping[dg.AssetKey, str], symbols: list[str], bars_source: BarsSource | None = None
) -> Plan:
    """`symbols`: the registered `symbol` partitions (what the leaderboard reads over);
    `bars_source`: where raw bars are read (default: the universe's bars directory)."""
    bars_source = bars_source or LocalBarsSource(universe.bars_directory)
    planner = _Planner(universe, store, code_versions)
    visit = planner.visit
    families = list(universe.model_families)
    models: dict[str, dict[str, ArtifactHandle | None]] = {model_input_name(f): {} for f in families}
    features_by_symbol: dict[str, ArtifactHandle | None] = {}

    for symbol in symbols:
        try:
            table = read_symbol_bars(bars_source, symbol)
        except (OSError, ValueError) as error:
            planner.plan.unreadable_bars[symbol] = str(error)
            table = None
        planner.plan.bars_rows[symbol] = 0 if table is None else table.height
        content = None if table is None else table_fingerprint(table)
        bars = visit(BARS, symbol, f"bars/{symbol}", bars_config(universe, content), None if table is None else {})
        features = visit(FEATURES, symbol, f"features/{symbol}", features_config(universe), _all_present({"bars": bars}))
        features_by_symbol[symbol] = features
        for target in universe.target_names:
            cell = cell_key(symbol, target)
            labels = visit(LABELS, cell, f"labels/{symbol}/{target}", labels_config(universe, target), _all_present({"bars": bars}))
            rankings = visit(
                TARGET_RANKINGS, cell, f"target_rankings/{symbol}/{target}", ranking_config(universe, target),
                _all_present({"features": features, "labels": labels}),
            )
            selection = visit(
                FEATURE_SETS, cell, f"feature_sets/{symbol}/{target}", selection_config(universe, target),
                _all_present({"features": features, "labels": labels, "target_rankings": rankings}),
            )
            for family in families:
                key = model_key(family)
                models[model_input_name(family)][cell] = visit(
                    key, cell, f"{'/'.join(key.path)}/{symbol}/{target}", model_config(universe, family, symbol, target),
                    _all_present({"features": features, "labels": labels, "feature_sets": selection}),
                )

    leaderboard = visit(MODEL_LEADERBOARD, None, "model_leaderboard", leaderboard_config(universe), _all_present(models))
    # The registry's state lives in MLflow, and only model_registry materializations (promotion,
    # rollback) move its aliases: it needs a run when the leaderboard does, or when it never ran.
    # Predictions are judged against the registry table it last stored; after a registry run,
    # plan again to see which predictions its result leaves stale.
    table = None
    if leaderboard is not None:
        try:
            registry = ArtifactHandle.current(store, "model_registry")
            # A new code version of the registry step (its table changed shape) needs a run too.
            if read_manifest(store, "model_registry", registry.fingerprint).provenance.get("code_version") == code_versions[MODEL_REGISTRY]:
                table = registry.load()
        except ArtifactStoreError:  # never run, or unreadable: its run will say so
            pass
    (planner.plan.fresh if table is not None else planner.plan.stale).add((MODEL_REGISTRY.to_user_string(), None))
    for symbol in symbols:
        if table is None or features_by_symbol[symbol] is None:
            visit(PREDICTIONS, symbol, f"predictions/{symbol}", None, None)
            continue
        champions = symbol_champions(table, symbol)
        visit(PREDICTIONS, symbol, f"predictions/{symbol}", predictions_config(champions), {"features": features_by_symbol[symbol]})
    return planner.plan


def cells_in_range(symbols: list[str], target_names: list[str], start: str, end: str) -> list[str]:
    """The symbol x target keys of a range: the rectangle between its corners, each dimension in
    its own order (`symbols` in the partitions' order), as Dagster reads a multi-partition range."""
    (first_symbol, first_target), (last_symbol, last_target) = cell_of(start), cell_of(end)
    in_symbols = symbols[symbols.index(first_symbol) : symbols.index(last_symbol) + 1]
    in_targets = target_names[target_names.index(first_target) : target_names.index(last_target) + 1]
    return [cell_key(symbol, target) for symbol in in_symbols for target in in_targets]


def partition_ranges(ordered_keys: list[str], stale: Collection[str], max_per_run: int) -> list[tuple[str, str]]:
    """What Dagster's multi-run BackfillPolicy launches: contiguous runs of stale keys (in the
    partitions' own order), cut into chunks of at most `max_per_run`."""
    stale_set = stale if isinstance(stale, (set, frozenset)) else set(stale)
    ranges: list[tuple[str, str]] = []
    chunk: list[str] = []
    for key in ordered_keys:
        if key in stale_set and len(chunk) < max_per_run:
            chunk.append(key)
            continue
        if chunk:
            ranges.append((chunk[0], chunk[-1]))
        chunk = [key] if key in stale_set else []
    if chunk:
        ranges.append((chunk[0], chunk[-1]))
    return ranges


def training_ranges(symbols: list[str], target_names: list[str], stale_cells: list[str], max_per_run: int, bars_rows: dict[str, int]) -> list[tuple[str, str]]:
    """The training stage (symbol x target) as ranged runs, cut as Dagster's multi-run
    BackfillPolicy cuts a backfill of a two-dimensional subset: grouped by whichever dimension
    has fewer stale keys (symbol on a tie), each group's contiguous stale keys in chunks of at
    most `max_per_run`. `symbols` in the partitions' own order. Grouped by symbol, the biggest
    symbols (most bars) go first: a pool hands runs out in order, so the long ones start early."""
    stale = set(stale_cells)
    stale_symbols = {cell_of(cell)[0] for cell in stale}
    stale_targets = {cell_of(cell)[1] for cell in stale}
    ranges: list[tuple[str, str]] = []
    if len(stale_symbols) <= len(stale_targets):
        for symbol in sorted(symbols, key=lambda s: -bars_rows.get(s, 0)):
            ranges += partition_ranges([cell_key(symbol, target) for target in target_names], stale, max_per_run)
    else:
        for target in target_names:
            ranges += partition_ranges([cell_key(symbol, target) for symbol in symbols], stale, max_per_run)
    return ranges


def code_versions_of(assets: list[dg.AssetsDefinition]) -> dict[dg.AssetKey, str]:
    return {key: version or "" for asset in assets for key, version in asset.code_versions_by_key.items()}
