"""`bars` and `features`, one partition per symbol."""
from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl

from intelligence_assets.assets.caching import Computed, PartitionWork, input_for, materialize_cached, materialize_partitions
from intelligence_assets.assets.metadata import date_range
from intelligence_assets.automation.conditions import FOLLOWS_UPSTREAM
from intelligence_assets.checks import bars_check_results, bars_check_specs
from intelligence_assets.fingerprints import table_fingerprint
from intelligence_assets.ml.bars import validate_bars
from intelligence_assets.ml.features import build_features
from intelligence_assets.partitions import symbol_partitions
from intelligence_assets.resources.artifact_store_resource import ArtifactStoreResource
from intelligence_assets.resources.artifacts import HandleOrRange
from intelligence_assets.resources.io_manager import HANDLE_OR_RANGE
from intelligence_assets.resources.bars_source import BarsSource, BarsSourceResource
from intelligence_assets.universe import Universe

BARS = dg.AssetKey("bars")


def read_symbol_bars(universe: Universe, source: BarsSource, symbol: str) -> pl.DataFrame:
    universe.require_symbol(symbol)
    return source.read(symbol)


def bars_config(universe: Universe, content_hash: str) -> dict[str, Any]:
    return {"content_hash": content_hash, "min_history": universe.bars.min_history}


def features_config(universe: Universe) -> Any:
    return universe.features


def build_market_data_assets(universe: Universe) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=BARS,
        partitions_def=symbol_partitions,
        group_name="market_data",
        code_version="1",
        kinds={"polars", "parquet"},
        check_specs=bars_check_specs(BARS, symbol_partitions),
        description="Validated OHLCV bars of one symbol, read from the bars store. Data version: content hash of the bars.",
    )
    def bars(context: dg.AssetExecutionContext, artifact_store: ArtifactStoreResource, bars_source: BarsSourceResource) -> Iterator[dg.Output | dg.AssetCheckResult]:
        symbol = context.partition_key
        source = bars_source.source()
        path = source.location(symbol)
        # Reading the source is cheap and is the only way to know whether it changed.
        table = read_symbol_bars(universe, source, symbol)
        content = table_fingerprint(table)

        def compute() -> Computed:
            checks = validate_bars(table, min_history=universe.bars.min_history)
            failed = [c.name for c in checks if not c.passed]
            if failed:
                context.log.error(f"bars for {symbol} fail checks {failed}; downstream assets are blocked")
            context.log.info(f"{symbol}: {table.height} bars from {path}")
            return Computed(
                table,
                metadata={
                    "rows": table.height,
                    **{f"{k}_timestamp": v for k, v in date_range(table).items()},
                    "source": dg.MetadataValue.url(path) if path.startswith("http") else dg.MetadataValue.path(path),
                    "content_hash": content,
                    "last_close": float(table["close"][-1]) if table.height else None,
                    "failed_checks": ", ".join(failed) or "none",
                },
                checks=bars_check_results(BARS, checks),
            )

        yield from materialize_cached(context, artifact_store.store(), {}, bars_config(universe, content), compute, data_version=content)

    @dg.asset(
        ins={"bars": dg.AssetIn(BARS, dagster_type=HANDLE_OR_RANGE)},
        automation_condition=FOLLOWS_UPSTREAM,
        partitions_def=symbol_partitions,
        # No checks and cheap steps: a backfill of many symbols runs in chunks, not a run each.
        backfill_policy=dg.BackfillPolicy.multi_run(universe.automation.backfill_partitions_per_run),
        group_name="market_data",
        code_version="1",
        kinds={"polars"},
        description="Feature matrix of one symbol: returns, volatility, momentum, moving-average gaps, volume and range features; none looks ahead.",
    )
    def features(context: dg.AssetExecutionContext, artifact_store: ArtifactStoreResource, bars: HandleOrRange) -> Iterator[dg.Output]:
        def work_for(symbol: str) -> PartitionWork:
            symbol_bars = input_for(bars, symbol)

            def compute() -> Computed:
                table = build_features(symbol_bars.load(), universe.features)
                names = [c for c in table.columns if c != "timestamp"]
                complete = table.drop_nulls().height
                context.log.info(f"{symbol}: {len(names)} features over {table.height} bars ({complete} complete rows)")
                return Computed(
                    table,
                    metadata={
                        "rows": table.height,
                        "complete_rows": complete,
                        "feature_count": len(names),
                        "features": ", ".join(names),
                        **{f"{k}_timestamp": v for k, v in date_range(table).items()},
                    },
                )

            return PartitionWork({"bars": symbol_bars}, features_config(universe), compute)

        yield from materialize_partitions(context, artifact_store.store(), work_for)

    return [bars, features]
