"""`bars` and `features`, one partition per symbol."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl

from intelligence_assets.config.universe import Universe
from intelligence_assets.defs.assets.caching import (
    Computed,
    PartitionWork,
    input_for,
    materialize_cached,
    materialize_partitions,
)
from intelligence_assets.defs.assets.metadata import date_range
from intelligence_assets.defs.assets.planning import NeedsRun, PlanningContext, plans
from intelligence_assets.defs.automation.conditions import FOLLOWS_UPSTREAM
from intelligence_assets.defs.checks import bars_check_results, bars_check_specs
from intelligence_assets.defs.partitions import symbol_partitions
from intelligence_assets.defs.resources.artifact_store import ArtifactStoreResource
from intelligence_assets.defs.resources.bars_source import BarsSourceResource
from intelligence_assets.defs.resources.io_manager import HANDLE_OR_RANGE
from intelligence_assets.ml.bars import BarsFileError, describe_spacing, validate_bars
from intelligence_assets.ml.features import build_features, drop_unusable_features, require_enough_rows
from intelligence_assets.ml.splits import minimum_rows
from intelligence_assets.ml.targets import label_horizon
from intelligence_assets.store.artifacts import HandleOrRange
from intelligence_assets.store.bars_source import BarsSource
from intelligence_assets.store.fingerprints import table_fingerprint

BARS = dg.AssetKey("bars")
FEATURES = dg.AssetKey("features")


def read_symbol_bars(source: BarsSource, symbol: str) -> pl.DataFrame:
    """The symbol's bars; BarsFileError or FileNotFoundError naming the symbol and the file.

    The symbol need not be in the universe this process loaded: the `symbol` partitions, which
    the new-bars sensor keeps in step with universe.yaml, say which symbols exist."""
    try:
        return source.read(symbol)
    except BarsFileError as error:
        raise BarsFileError(f"bars of {symbol}: {error}") from None


def bars_per_year_or_none(universe: Universe, symbol: str, timestamps: pl.Series) -> float | None:
    """For metadata of bars that may fail their checks (a single bar, null timestamps)."""
    try:
        return universe.bars_per_year(symbol, timestamps)
    except ValueError:
        return None


def annualisation_config(universe: Universe, symbol: str) -> dict[str, Any]:
    """What a symbol's bars per year depends on: only its own setting, or how it is inferred, so
    changing one symbol's frequency recomputes that symbol's models only."""
    explicit = universe.bars.bars_per_year.get(symbol)
    if explicit is not None:
        return {"bars_per_year": explicit}
    return {
        "bars_per_year": "inferred",
        "max_gap_days": universe.bars.max_gap_days,
        "max_gap_spacings": universe.bars.max_gap_spacings,
    }


def bars_config(universe: Universe, content_hash: str) -> dict[str, Any]:
    bars = universe.bars
    return {
        "content_hash": content_hash,
        "min_history": bars.min_history,
        "gaps": {"max_days": bars.max_gap_days, "max_spacings": bars.max_gap_spacings, "block": bars.gaps_block},
    }


def features_config(universe: Universe) -> Any:
    # The row minimum is a gate, not part of the result: a target's new horizon must not
    # recompute every symbol's features.
    return {"features": universe.features}


@plans(BARS)
def planned_bars_config(context: PlanningContext) -> dict[str, Any]:
    # The bars' content hash is in their config, so the planner reads each symbol's bars once.
    try:
        table = read_symbol_bars(context.bars_source, context.symbol)
    except (OSError, ValueError) as error:
        context.record_rows(0)
        raise NeedsRun(str(error)) from error
    context.record_rows(table.height)
    return bars_config(context.universe, table_fingerprint(table))


@plans(FEATURES)
def planned_features_config(context: PlanningContext) -> Any:
    return features_config(context.universe)


def minimum_usable_rows(universe: Universe) -> int:
    """Complete feature rows a symbol needs so every target's walk-forward splits can be cut."""
    return max(minimum_rows(label_horizon(spec), universe.split) for spec in universe.targets)


def build_market_data_assets(universe: Universe) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=BARS,
        partitions_def=symbol_partitions,
        group_name="market_data",
        code_version="1",
        kinds={"polars", "parquet"},
        check_specs=bars_check_specs(BARS, symbol_partitions, universe.bars.gaps_block),
        description=(
            "Validated OHLCV bars of one symbol, read from the bars store. Data version: content hash of the bars."
        ),
    )
    def bars(
        context: dg.AssetExecutionContext, artifact_store: ArtifactStoreResource, bars_source: BarsSourceResource
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        symbol = context.partition_key
        source = bars_source.source()
        path = source.location(symbol)
        # Reading the source is cheap and is the only way to know whether it changed.
        table = read_symbol_bars(source, symbol)
        content = table_fingerprint(table)

        def compute() -> Computed:
            checks = validate_bars(table, min_history=universe.bars.min_history, gaps=universe.bars.gap_settings)
            failed = [c for c in checks if not c.passed]
            for check in failed:
                context.log.error(f"bars of {symbol} fail check {check.name}: {check.detail}")
            if failed:
                context.log.error(
                    f"bars of {symbol} fail checks {[c.name for c in failed]}; blocking ones stop everything "
                    f"downstream of {symbol}"
                )
            spacing = describe_spacing(table["timestamp"])
            context.log.info(f"{symbol}: {table.height} bars from {path}, median spacing {spacing}")
            return Computed(
                table,
                metadata={
                    "rows": table.height,
                    "bar_spacing": spacing,
                    "bars_per_year": bars_per_year_or_none(universe, symbol, table["timestamp"]),
                    **{f"{k}_timestamp": v for k, v in date_range(table).items()},
                    "source": dg.MetadataValue.url(path) if path.startswith("http") else dg.MetadataValue.path(path),
                    "content_hash": content,
                    "last_close": float(table["close"][-1]) if table.height else None,
                    "failed_checks": ", ".join(c.name for c in failed) or "none",
                },
                checks=bars_check_results(BARS, checks),
            )

        yield from materialize_cached(
            context, artifact_store.store(), {}, bars_config(universe, content), compute, data_version=content
        )

    @dg.asset(
        ins={"bars": dg.AssetIn(BARS, dagster_type=HANDLE_OR_RANGE)},
        automation_condition=FOLLOWS_UPSTREAM,
        partitions_def=symbol_partitions,
        # No checks and cheap steps: a backfill of many symbols runs in chunks, not a run each.
        backfill_policy=dg.BackfillPolicy.multi_run(universe.automation.backfill_partitions_per_run),
        group_name="market_data",
        code_version="2",
        kinds={"polars"},
        description=(
            "Feature matrix of one symbol: returns, volatility, momentum, moving-average gaps, volume and range "
            "features; none looks ahead."
        ),
    )
    def features(
        context: dg.AssetExecutionContext, artifact_store: ArtifactStoreResource, bars: HandleOrRange
    ) -> Iterator[dg.Output]:
        def work_for(symbol: str) -> PartitionWork:
            symbol_bars = input_for(bars, symbol)

            def compute() -> Computed:
                usable = drop_unusable_features(build_features(symbol_bars.load(), universe.features))
                if usable.dropped:
                    context.log.warning(
                        f"{symbol}: {len(usable.dropped)} features dropped as unusable: "
                        + "; ".join(f"{name} ({why})" for name, why in usable.dropped.items())
                    )
                require_enough_rows(usable, minimum_usable_rows(universe), symbol)
                table, names, complete = usable.table, usable.names, usable.complete_rows
                context.log.info(f"{symbol}: {len(names)} features over {table.height} bars ({complete} complete rows)")
                return Computed(
                    table,
                    metadata={
                        "rows": table.height,
                        "complete_rows": complete,
                        "feature_count": len(names),
                        "features": ", ".join(names),
                        "dropped_features": ", ".join(usable.dropped) or "none",
                        "dropped_because": dg.MetadataValue.json(usable.dropped),
                        **{f"{k}_timestamp": v for k, v in date_range(table).items()},
                    },
                )

            return PartitionWork({"bars": symbol_bars}, features_config(universe), compute)

        yield from materialize_partitions(context, artifact_store.store(), work_for)

    return [bars, features]
