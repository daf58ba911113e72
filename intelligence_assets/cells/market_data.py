"""A symbol's bars checked and its feature matrix built, without Dagster: what `bars` and
`features` do for each partition."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from intelligence_assets.cells import Log, ignore
from intelligence_assets.config.universe import Universe
from intelligence_assets.ml.bars import BarsCheck, describe_spacing, validate_bars
from intelligence_assets.ml.features import UsableFeatures, build_features, drop_unusable_features, require_enough_rows
from intelligence_assets.ml.splits import minimum_rows
from intelligence_assets.ml.targets import label_horizon


def bars_per_year_or_none(universe: Universe, symbol: str, timestamps: pl.Series) -> float | None:
    """For metadata of bars that may fail their checks (a single bar, null timestamps)."""
    try:
        return universe.bars_per_year(symbol, timestamps)
    except ValueError:
        return None


@dataclass(frozen=True)
class CheckedBars:
    """A symbol's bars and the outcome of every data-quality check on them."""

    table: pl.DataFrame
    checks: list[BarsCheck]  # in `validate_bars`' order
    spacing: str  # the median spacing between bars, e.g. "1d"
    bars_per_year: float | None  # None where the bars are too broken to tell

    @property
    def failed(self) -> list[BarsCheck]:
        return [check for check in self.checks if not check.passed]

    @property
    def last_close(self) -> float | None:
        return float(self.table["close"][-1]) if self.table.height else None


def check_bars(universe: Universe, symbol: str, table: pl.DataFrame) -> CheckedBars:
    """Run the universe's data-quality checks on a symbol's bars and describe their spacing."""
    settings = universe.bars
    checks = validate_bars(table, min_history=settings.min_history, gaps=settings.gap_settings)
    return CheckedBars(
        table,
        checks,
        describe_spacing(table["timestamp"]),
        bars_per_year_or_none(universe, symbol, table["timestamp"]),
    )


def minimum_usable_rows(universe: Universe) -> int:
    """Complete feature rows a symbol needs so every target's walk-forward splits can be cut."""
    return max(minimum_rows(label_horizon(spec), universe.split) for spec in universe.targets)


def symbol_features(universe: Universe, symbol: str, bars: pl.DataFrame, warn: Log = ignore) -> UsableFeatures:
    """The symbol's feature matrix without the columns no model can learn from; `warn` names
    those. Raises TooFewUsableRowsError when what is left cannot fill every target's splits."""
    usable = drop_unusable_features(build_features(bars, universe.features))
    if usable.dropped:
        # Before the row count may fail the partition: the dropped columns are often why.
        warn(
            f"{symbol}: {len(usable.dropped)} features dropped as unusable: "
            + "; ".join(f"{name} ({why})" for name, why in usable.dropped.items())
        )
    require_enough_rows(usable, minimum_usable_rows(universe), symbol)
    return usable
