from __future__ import annotations

from datetime import datetime

import polars as pl
import pytest

from intelligence_assets.ml.bars import (
    BARS_SCHEMA,
    BarsCheck,
    normalize_bars,
    read_bars_parquet,
    validate_bars,
)
from intelligence_assets.ml.synthetic import synthetic_bars

CHECK_NAMES = [
    "schema",
    "timestamps_unique_increasing",
    "prices_positive",
    "ohlc_consistent",
    "finite_values",
    "minimum_history",
    "no_long_gaps",
]


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return synthetic_bars(n_bars=120, seed=21)


def _set(bars: pl.DataFrame, column: str, rows: list[int], value) -> pl.DataFrame:
    index = pl.int_range(pl.len())
    return bars.with_columns(
        pl.when(index.is_in(rows))
        .then(pl.lit(value, dtype=bars.schema[column]))
        .otherwise(pl.col(column))
        .alias(column)
    )


def _by_name(checks: list[BarsCheck]) -> dict[str, BarsCheck]:
    return {check.name: check for check in checks}


def test_synthetic_bars_pass_every_check(bars):
    checks = validate_bars(bars, min_history=100)
    assert [check.name for check in checks] == CHECK_NAMES
    for check in checks:
        assert check.passed, check
        assert check.failing_rows == 0 and check.detail == ""
        assert check.description


# Each case breaks exactly one check; every other check must still pass.
VIOLATIONS = {
    "schema": (lambda b: b.with_columns(pl.col("volume").round().cast(pl.Int64)), 0, "'volume'"),
    "timestamps_unique_increasing": (lambda b: pl.concat([b.head(10), b.slice(9, 1), b.slice(10)]), 1, "2000-01-12"),
    "prices_positive": (
        lambda b: _set(
            _set(_set(_set(b, "low", [5, 40], -1.0), "open", [5, 40], 0.5), "close", [5, 40], 0.5), "high", [5, 40], 1.0
        ),
        2,
        "low <= 0",
    ),
    "ohlc_consistent": (lambda b: _set(b, "high", [3, 7, 8], 1.0), 3, "high < close"),
    "finite_values": (lambda b: _set(_set(b, "volume", [2], float("nan")), "close", [50], None), 2, "close"),
}


@pytest.mark.parametrize("name", list(VIOLATIONS))
def test_each_check_fails_on_its_violation_only(bars, name):
    mutate, failing_rows, in_detail = VIOLATIONS[name]
    checks = _by_name(validate_bars(mutate(bars), min_history=100))
    failed = checks.pop(name)
    assert not failed.passed
    assert failed.failing_rows == failing_rows
    assert in_detail in failed.detail
    for other in checks.values():
        assert other.passed, other


def test_minimum_history(bars):
    checks = _by_name(validate_bars(bars, min_history=121))
    assert not checks["minimum_history"].passed
    assert "120 bars" in checks["minimum_history"].detail
    assert all(check.passed for name, check in checks.items() if name != "minimum_history")
    assert _by_name(validate_bars(bars, min_history=120))["minimum_history"].passed


def test_detail_names_count_and_first_offending_timestamp(bars):
    broken = _set(bars, "high", [30, 31, 90], 1.0)
    check = _by_name(validate_bars(broken, min_history=1))["ohlc_consistent"]
    expected_first = bars["timestamp"][30]
    assert check.detail.startswith("3 rows with high < open")
    assert str(expected_first) in check.detail
    assert "high=1.0" in check.detail


def test_decreasing_and_duplicate_timestamps_are_counted(bars):
    shuffled = pl.concat([bars.slice(0, 20), bars.slice(25, 5), bars.slice(20, 5), bars.slice(30)])
    check = _by_name(validate_bars(shuffled, min_history=1))["timestamps_unique_increasing"]
    assert not check.passed and check.failing_rows == 5  # the five bars that come after later ones
    duplicated = pl.concat([bars.head(3), bars.head(3)])
    assert _by_name(validate_bars(duplicated, min_history=1))["timestamps_unique_increasing"].failing_rows == 3


def test_infinite_and_negative_volume(bars):
    checks = _by_name(validate_bars(_set(bars, "open", [4], float("inf")), min_history=1))
    assert not checks["finite_values"].passed and checks["finite_values"].failing_rows == 1
    assert checks["ohlc_consistent"].passed  # the inf row is left to finite_values
    checks = _by_name(validate_bars(_set(bars, "volume", [9], -5.0), min_history=1))
    assert not checks["prices_positive"].passed and "volume < 0" in checks["prices_positive"].detail


def test_missing_column_fails_schema_and_dependent_checks_without_crashing(bars):
    checks = _by_name(validate_bars(bars.drop("close"), min_history=1))
    assert not checks["schema"].passed and "'close'" in checks["schema"].detail
    assert not checks["ohlc_consistent"].passed and "not checked" in checks["ohlc_consistent"].detail
    assert checks["timestamps_unique_increasing"].passed


def test_read_bars_parquet_round_trip_and_normalisation(tmp_path, bars):
    path = tmp_path / "good.parquet"
    bars.write_parquet(path)
    assert read_bars_parquet(path).equals(bars)

    # Integer volume, naive nanosecond timestamps, reversed order and an extra column: all normalised.
    messy = bars.reverse().with_columns(
        pl.col("volume").round().cast(pl.Int64),
        pl.col("timestamp").dt.replace_time_zone(None).dt.cast_time_unit("ns"),
        pl.lit("X").alias("symbol"),
    )
    messy.write_parquet(tmp_path / "messy.parquet")
    read = read_bars_parquet(tmp_path / "messy.parquet")
    assert dict(read.schema) == BARS_SCHEMA
    assert read["timestamp"].equals(bars["timestamp"])
    assert read["volume"].to_list() == bars["volume"].round().to_list()


def test_corrupt_parquet_raises_value_error_naming_the_file(tmp_path):
    path = tmp_path / "corrupt_bars.parquet"
    path.write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(ValueError, match="corrupt_bars.parquet"):
        read_bars_parquet(path)
    with pytest.raises(ValueError, match="absent.parquet"):
        read_bars_parquet(tmp_path / "absent.parquet")


def test_wrong_schema_parquet_raises_value_error_naming_file_and_column(tmp_path, bars):
    path = tmp_path / "no_close.parquet"
    bars.drop("close").write_parquet(path)
    with pytest.raises(ValueError, match=r"no_close\.parquet.*'close'"):
        read_bars_parquet(path)
    path = tmp_path / "text_open.parquet"
    bars.with_columns(pl.col("open").cast(pl.String)).write_parquet(path)
    with pytest.raises(ValueError, match=r"text_open\.parquet.*'open'"):
        read_bars_parquet(path)


def test_normalize_bars_casts_and_sorts():
    frame = pl.DataFrame(
        {
            "timestamp": [datetime(2020, 1, 3), datetime(2020, 1, 2)],
            "open": [2, 1],
            "high": [3, 2],
            "low": [1, 1],
            "close": [2, 2],
            "volume": [10, 0],
        }
    )
    normalised = normalize_bars(frame)
    assert dict(normalised.schema) == BARS_SCHEMA
    assert normalised["open"].to_list() == [1.0, 2.0]
    assert str(normalised["timestamp"][0]) == "2020-01-02 00:00:00+00:00"
    assert all(check.passed for check in validate_bars(normalised, min_history=2))
    with pytest.raises(ValueError, match="'volume'"):
        normalize_bars(frame.drop("volume"))
