"""A symbol's bars checked and its features built, on synthetic bars, without Dagster."""

from __future__ import annotations

import polars as pl
import pytest

from intelligence_assets.cells.market_data import (
    CheckedBars,
    bars_per_year_or_none,
    check_bars,
    minimum_usable_rows,
    symbol_features,
)
from intelligence_assets.config.universe import Universe
from intelligence_assets.ml.features import TooFewUsableRowsError
from intelligence_assets.ml.splits import minimum_rows
from intelligence_assets_tests.cells.conftest import SymbolData


def test_clean_bars_pass_every_check_and_are_described(small_universe: Universe, planted: SymbolData):
    checked = check_bars(small_universe, "SIGNAL", planted.bars)
    assert checked.checks and checked.failed == []
    assert checked.spacing == "1d"
    assert checked.bars_per_year == pytest.approx(365.25, rel=0.01)  # synthetic bars come every calendar day
    assert checked.last_close == planted.bars["close"][-1]


def test_a_negative_low_fails_its_named_check(small_universe: Universe, planted: SymbolData):
    broken = planted.bars.with_columns(
        pl.when(pl.int_range(pl.len()) == 300).then(-1.0).otherwise(pl.col("low")).alias("low")
    )
    checked = check_bars(small_universe, "SIGNAL", broken)
    assert [check.name for check in checked.failed] == ["prices_positive"]
    assert checked.failed[0].failing_rows == 1


def test_bars_too_broken_to_annualise_say_so_with_none(small_universe: Universe, planted: SymbolData):
    one_bar = planted.bars.head(1)
    assert bars_per_year_or_none(small_universe, "SIGNAL", one_bar["timestamp"]) is None
    checked = check_bars(small_universe, "SIGNAL", one_bar)
    assert checked.bars_per_year is None and "minimum_history" in [check.name for check in checked.failed]
    assert CheckedBars(planted.bars.clear(), [], "unknown", None).last_close is None


def test_features_fill_the_longest_targets_splits(small_universe: Universe, planted: SymbolData):
    lines: list[str] = []
    usable = symbol_features(small_universe, "SIGNAL", planted.bars, warn=lines.append)
    assert lines == [] and usable.dropped == {}
    assert usable.table.height == planted.bars.height
    assert usable.complete_rows >= minimum_usable_rows(small_universe)
    # The five-bar volatility label needs more rows than the next bar's direction.
    assert minimum_usable_rows(small_universe) == minimum_rows(5, small_universe.split)


def test_unusable_features_are_named_before_too_few_rows_fail_the_symbol(small_universe: Universe, planted: SymbolData):
    no_volume = planted.bars.with_columns(pl.lit(0.0).alias("volume"))
    lines: list[str] = []
    usable = symbol_features(small_universe, "SIGNAL", no_volume, warn=lines.append)
    assert usable.dropped and not set(usable.dropped) & set(usable.names)
    assert len(lines) == 1 and lines[0].startswith(f"SIGNAL: {len(usable.dropped)} features dropped as unusable: ")

    lines.clear()
    short = no_volume.head(minimum_usable_rows(small_universe))  # the warm-up leaves too few complete rows
    with pytest.raises(TooFewUsableRowsError, match="SIGNAL: .* complete rows"):
        symbol_features(small_universe, "SIGNAL", short, warn=lines.append)
    assert len(lines) == 1 and "dropped as unusable" in lines[0]
