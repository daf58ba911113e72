"""`bars` and `features`, one partition per symbol."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl

from intelligence_assets.cells.market_data import CheckedBars, check_bars, symbol_features
from intelligence_assets.config.universe import Universe
from intelligence_assets.defs.assets.caching import (
    Computed,
    PartitionWork,
    input_for,
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
from intelligence_assets.ml.bars import BarsFileError
from intelligence_assets.ml.features import UsableFeatures
from intelligence_assets.store import keys
from intelligence_assets.store.artifacts import HandleOrRange
from intelligence_assets.store.bars_source import BarsSource
from intelligence_assets.store.fingerprints import table_fingerprint

BARS = dg.AssetKey(keys.BARS)
FEATURES = dg.AssetKey(keys.FEATURES)


def read_symbol_bars(source: BarsSource, symbol: str) -> pl.DataFrame:
    """The symbol's bars; BarsFileError or FileNotFoundError naming the symbol and the file.

    The symbol need not be in the universe this process loaded: the `symbol` partitions, which
    the new-bars sensor keeps in step with universe.yaml, say which symbols exist."""
    try:
        return source.read(symbol)
    except BarsFileError as error:
        raise BarsFileError(f"bars of {symbol}: {error}") from None


def annualisation_config(universe: Universe, symbol: str) -> dict[str, Any]:
    """What a symbol's bars per year depends on: only its own setting, or how it is inferred, so
    changing one symbol's frequency recomputes that symbol's models only."""
    explicit = universe.bars.bars_per_year.get(symbol)
    if explicit is not None:
        return {"bars_per_year": explicit}
    return {
        "bars_per_year": "inferred",
        # The rule that leaves long gaps out of the count (GapSettings): trading days of the symbol's schedule.
        "max_gap_trading_days": universe.bars.max_gap_trading_days,
    }


def bars_config(universe: Universe, content_hash: str) -> dict[str, Any]:
    bars = universe.bars
    return {
        "content_hash": content_hash,
        "min_history": bars.min_history,
        "gaps": {"max_trading_days": bars.max_gap_trading_days, "block": bars.gaps_block},
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


def bars_metadata(checked: CheckedBars, path: str, content: str) -> dict[str, Any]:
    table = checked.table
    return {
        "rows": table.height,
        "bar_spacing": checked.spacing,
        "bars_per_year": checked.bars_per_year,
        **{f"{k}_timestamp": v for k, v in date_range(table).items()},
        "source": dg.MetadataValue.url(path) if path.startswith("http") else dg.MetadataValue.path(path),
        "content_hash": content,
        "last_close": checked.last_close,
        "failed_checks": ", ".join(check.name for check in checked.failed) or "none",
    }


def features_metadata(usable: UsableFeatures) -> dict[str, Any]:
    table = usable.table
    return {
        "rows": table.height,
        "complete_rows": usable.complete_rows,
        "feature_count": len(usable.names),
        "features": ", ".join(usable.names),
        "dropped_features": ", ".join(usable.dropped) or "none",
        "dropped_because": dg.MetadataValue.json(usable.dropped),
        **{f"{k}_timestamp": v for k, v in date_range(table).items()},
    }


def bars_backfill_policy(universe: Universe) -> dg.BackfillPolicy:
    """`bars` take partition ranges: a backfill of many symbols runs in chunks, not a run each.

    Unlike `features`' policy on purpose. Dagster puts a parent and its child in one backfill run
    only when their policies are equal, and in a shared run a symbol whose bars fail would skip
    the features step of every symbol in the run; in runs of their own, the backfill runs the
    features of the healthy symbols and none of the failed symbol's. Twice the chunk: a
    symbol's bars cost a file read and a few checks."""
    return dg.BackfillPolicy.multi_run(2 * universe.automation.backfill_partitions_per_run)


def build_market_data_assets(universe: Universe) -> list[dg.AssetsDefinition]:
    # A multi_asset of one asset, for `can_subset`: its checks are then optional outputs, so a
    # ranged run can report each symbol's checks as that partition's evaluations, and fail only
    # the symbols whose blocking checks fail (`materialize_partitions`). `@asset` cannot say so:
    # it makes every check a required output, which binds a run to one partition.
    @dg.multi_asset(
        name=BARS.to_python_identifier(),
        outs={
            BARS.to_python_identifier(): dg.AssetOut(
                key=BARS,
                group_name="market_data",
                code_version="1",
                kinds={"polars", "parquet"},
                description=(
                    "Validated OHLCV bars of one symbol, read from the bars store. Data version: content hash of the "
                    "bars."
                ),
            )
        },
        check_specs=bars_check_specs(BARS, symbol_partitions, universe.bars.gaps_block),
        can_subset=True,
        partitions_def=symbol_partitions,
        backfill_policy=bars_backfill_policy(universe),
    )
    def bars(
        context: dg.AssetExecutionContext, artifact_store: ArtifactStoreResource, bars_source: BarsSourceResource
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        source = bars_source.source()

        def work_for(symbol: str) -> PartitionWork:
            path = source.location(symbol)
            # Reading the source is cheap and is the only way to know whether it changed.
            table = read_symbol_bars(source, symbol)
            content = table_fingerprint(table)

            def compute() -> Computed:
                checked = check_bars(universe, symbol, table)
                for check in checked.failed:
                    context.log.error(f"bars of {symbol} fail check {check.name}: {check.detail}")
                if checked.failed:
                    context.log.error(
                        f"bars of {symbol} fail checks {[check.name for check in checked.failed]}; blocking ones "
                        f"stop everything downstream of {symbol}"
                    )
                context.log.debug(f"{symbol}: {table.height} bars from {path}, median spacing {checked.spacing}")
                return Computed(
                    table,
                    metadata=bars_metadata(checked, path, content),
                    checks=bars_check_results(BARS, checked.checks),
                )

            return PartitionWork({}, bars_config(universe, content), compute, data_version=content)

        yield from materialize_partitions(context, artifact_store.store(), work_for)

    @dg.asset(
        ins={"bars": dg.AssetIn(BARS, dagster_type=HANDLE_OR_RANGE)},
        automation_condition=FOLLOWS_UPSTREAM,
        partitions_def=symbol_partitions,
        # No checks and cheap steps: a backfill of many symbols runs in chunks, not a run each.
        backfill_policy=dg.BackfillPolicy.multi_run(universe.automation.backfill_partitions_per_run),
        group_name="market_data",
        code_version="3",
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
                usable = symbol_features(universe, symbol, symbol_bars.load(), warn=context.log.warning)
                context.log.debug(
                    f"{symbol}: {len(usable.names)} features over {usable.table.height} bars "
                    f"({usable.complete_rows} complete rows)"
                )
                return Computed(usable.table, metadata=features_metadata(usable))

            return PartitionWork({"bars": symbol_bars}, features_config(universe), compute)

        yield from materialize_partitions(context, artifact_store.store(), work_for)

    return [bars, features]
