"""Partitions: `symbol` (dynamic: grows as symbols are added) x `target` (static, from the universe)."""

from __future__ import annotations

import warnings

import dagster as dg

from intelligence_assets.config.universe import Universe

SYMBOL_DIMENSION = "symbol"
TARGET_DIMENSION = "target"

symbol_partitions = dg.DynamicPartitionsDefinition(name=SYMBOL_DIMENSION)

# The run tags of a ranged run: what Dagster's BackfillPolicy sets (a backfill, the retrain
# schedule), and what `make demo` sets for the same rectangles of partitions.
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

# Maps a symbol partition to every symbol x target partition of that symbol, and back. Dagster
# marks this mapping beta and warns in every process that loads the definitions (three times per
# `make demo`); we depend on it knowingly, and tests through the whole graph guard its behaviour.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*MultiToSingleDimensionPartitionMapping")
    by_symbol = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=SYMBOL_DIMENSION)


def symbol_target_partitions(universe: Universe) -> dg.MultiPartitionsDefinition:
    return dg.MultiPartitionsDefinition(
        {
            SYMBOL_DIMENSION: symbol_partitions,
            TARGET_DIMENSION: dg.StaticPartitionsDefinition(universe.target_names),
        }
    )


def cell_key(symbol: str, target: str) -> str:
    """The symbol x target partition key as Dagster writes it (the inverse of `cell_of`)."""
    return f"{symbol}|{target}"


def cell_of(partition_key: str | dg.MultiPartitionKey) -> tuple[str, str]:
    """(symbol, target) of a symbol x target partition key. Dagster writes a multi-partition key
    as its dimensions' keys in the order of the dimension names: "AAPL|y_up_1b"."""
    if isinstance(partition_key, dg.MultiPartitionKey):
        dimensions = partition_key.keys_by_dimension
        return dimensions[SYMBOL_DIMENSION], dimensions[TARGET_DIMENSION]
    symbol, target = str(partition_key).split("|")
    return symbol, target


def register_symbols(instance: dg.DagsterInstance, symbols: list[str]) -> list[str]:
    """Add symbols missing from the dynamic partitions; returns those added."""
    existing = set(instance.get_dynamic_partitions(SYMBOL_DIMENSION))
    missing = [s for s in symbols if s not in existing]
    if missing:
        instance.add_dynamic_partitions(SYMBOL_DIMENSION, missing)
    return missing


def remove_symbols_not_in(instance: dg.DagsterInstance, symbols: list[str]) -> list[str]:
    """Delete the `symbol` partitions of symbols no longer listed (their stored artifacts and
    MLflow history stay); returns those removed."""
    removed = [symbol for symbol in instance.get_dynamic_partitions(SYMBOL_DIMENSION) if symbol not in set(symbols)]
    for symbol in removed:
        instance.delete_dynamic_partition(SYMBOL_DIMENSION, symbol)
    return removed
