"""OHLCV bars: the schema every ML module expects, its data-quality checks, and parquet reading.

Bars schema: `timestamp` Datetime("us", "UTC"), `open`, `high`, `low`, `close`, `volume` Float64,
sorted ascending by timestamp. Bars may be daily or intraday; nothing here assumes a calendar.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

import numpy as np
import polars as pl

TIMESTAMP_DTYPE = pl.Datetime("us", "UTC")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
VALUE_COLUMNS: tuple[str, ...] = (*PRICE_COLUMNS, "volume")
BARS_SCHEMA: dict[str, pl.DataType] = {
    "timestamp": TIMESTAMP_DTYPE,
    **{column: pl.Float64() for column in VALUE_COLUMNS},
}

# How many offending rows a failure detail names; enough to locate the problem, short enough to read.
_EXAMPLES_IN_DETAIL = 3

# What each check asserts, in `validate_bars`' order: the one text shown where a check is
# defined and with each of its results. A placeholder stands for a setting: a result fills in its
# value, a definition (which runs before any data) the setting's name.
BARS_CHECK_DESCRIPTIONS: dict[str, str] = {
    "schema": (
        "columns timestamp (Datetime us UTC) and open, high, low, close, volume (Float64) are present with those dtypes"
    ),
    "timestamps_unique_increasing": "timestamps are non-null and strictly increasing (sorted, no duplicates)",
    "prices_positive": "open, high, low, close > 0 and volume >= 0 (null/NaN/inf are left to finite_values)",
    "ohlc_consistent": (
        "high >= max(open, close), low <= min(open, close) and high >= low"
        " (rows with non-finite prices are left to finite_values)"
    ),
    "finite_values": "open, high, low, close, volume contain no null, NaN or inf",
    "minimum_history": "at least {min_history} bars",
    "no_long_gaps": (
        "no gap between bars skips {max_trading_days} or more trading days of the symbol's own schedule"
        " (weekends, nights and single holidays do not count)"
    ),
}


@dataclass(frozen=True)
class BarsCheck:
    """Outcome of one named data-quality check. `failing_rows` is 0 for checks about the frame as
    a whole (`schema`, `minimum_history`)."""

    name: str
    passed: bool
    description: str
    detail: str
    failing_rows: int

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "passed": self.passed,
            "description": self.description,
            "detail": self.detail,
            "failing_rows": self.failing_rows,
        }


def schema_problems(bars: pl.DataFrame) -> list[str]:
    """One message per missing column or wrong dtype, each naming its column; empty when the
    frame has the exact bars schema."""
    problems = []
    for column, dtype in BARS_SCHEMA.items():
        if column not in bars.columns:
            problems.append(f"missing column {column!r}")
        elif bars.schema[column] != dtype:
            problems.append(f"column {column!r} has dtype {bars.schema[column]}, expected {dtype}")
    return problems


def require_bars_schema(bars: pl.DataFrame) -> None:
    """Raise ValueError naming the offending columns unless `bars` has the exact bars schema and
    strictly increasing timestamps (every windowed computation counts bars, so order matters)."""
    problems = schema_problems(bars)
    if problems:
        raise ValueError("bars do not match the bars schema: " + "; ".join(problems))
    timestamps = bars["timestamp"]
    if timestamps.null_count() > 0:
        raise ValueError("column 'timestamp' contains nulls")
    if bars.height > 1 and not (timestamps.slice(1) > timestamps.head(bars.height - 1)).all():
        raise ValueError("column 'timestamp' must be strictly increasing (sort and de-duplicate the bars)")


def normalize_bars(bars: pl.DataFrame) -> pl.DataFrame:
    """Cast the bar columns to the bars schema and sort by timestamp.

    Numeric columns (integers included) become Float64; naive timestamps are taken as UTC, aware
    ones are converted to UTC, dates become midnight UTC. Other columns pass through unchanged.
    Raises ValueError naming a column that is missing or cannot be cast.
    """
    missing = [column for column in BARS_SCHEMA if column not in bars.columns]
    if missing:
        other_case = [found for found in bars.columns if found.lower() in missing]
        hint = f" (found {other_case!r}: names are case-sensitive, rename them to lower case)" if other_case else ""
        raise ValueError(f"bars lack column(s) {missing!r}{hint}")
    timestamp_dtype = bars.schema["timestamp"]
    if isinstance(timestamp_dtype, pl.Datetime):
        if timestamp_dtype.time_zone is None:
            timestamp = pl.col("timestamp").dt.cast_time_unit("us").dt.replace_time_zone("UTC")
        else:
            timestamp = pl.col("timestamp").dt.cast_time_unit("us").dt.convert_time_zone("UTC")
    elif timestamp_dtype == pl.Date:
        timestamp = pl.col("timestamp").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    else:
        raise ValueError(f"column 'timestamp' has dtype {timestamp_dtype}, expected a datetime or date")
    casts = [timestamp.alias("timestamp")]
    for column in VALUE_COLUMNS:
        dtype = bars.schema[column]
        if not dtype.is_numeric():
            raise ValueError(f"column {column!r} has dtype {dtype}, expected a numeric dtype")
        casts.append(pl.col(column).cast(pl.Float64))
    return bars.with_columns(casts).sort("timestamp")


class BarsFileError(ValueError):
    """A bars file that cannot be used at all: unreadable, wrong schema, or no rows."""


def read_bars_parquet(source: str | Path | IO[bytes], name: str | None = None) -> pl.DataFrame:
    """Read bars from a parquet file or buffer: normalised (see `normalize_bars`), only the bars
    columns. `name` names a buffer in errors.

    Raises BarsFileError naming the file when it is empty (0 rows, header-only included), cannot
    be read as parquet or lacks the bars columns.
    """
    path = name or (str(source) if isinstance(source, (str, Path)) else "<buffer>")
    if isinstance(source, (str, Path)) and Path(source).is_file() and Path(source).stat().st_size == 0:
        raise BarsFileError(f"0 rows: bars file {str(path)!r} is empty (0 bytes)")
    try:
        frame = pl.read_parquet(source)
    except Exception as error:  # polars raises several exception types for unreadable files
        raise BarsFileError(f"cannot read bars parquet file {str(path)!r}: {error}") from error
    if frame.height == 0:
        raise BarsFileError(f"0 rows in bars file {str(path)!r} (columns {frame.columns})")
    try:
        return normalize_bars(frame).select(list(BARS_SCHEMA))
    except ValueError as error:
        raise BarsFileError(f"bars parquet file {str(path)!r} has a wrong schema: {error}") from error


@dataclass(frozen=True)
class GapSettings:
    """A gap between two bars is *long* when the trading time it skips adds up to at least
    `max_trading_days` of the symbol's trading days. Trading time is counted on the symbol's own
    weekly schedule, learnt from its timestamps (the slots of the week in which it usually has
    bars), so nights, weekends and holidays skip none or little while a stretch of missing data
    skips its full length, for 5-minute index bars, 24x7 crypto and daily stocks alike. Bars a
    day or more apart (weekly, monthly) have no intraday schedule: a gap there is long when it
    skips at least `max_trading_days` bars."""

    max_trading_days: float = 5.0


# A slot of the week belongs to the schedule when the series has a bar in it in at least this
# share of its weeks: low enough for slots that daylight saving time moves by an hour twice a year.
_SCHEDULED_SHARE_OF_WEEKS = 0.25
_SECONDS_PER_WEEK = 7 * 86_400
# 1970-01-05, the first Monday of the epoch: slots of the week count from Monday 00:00 UTC.
_FIRST_MONDAY = 4 * 86_400


@dataclass(frozen=True)
class LongGap:
    start: datetime
    end: datetime
    trading_days: float

    @property
    def days(self) -> float:
        return (self.end - self.start).total_seconds() / 86_400

    def describe(self) -> str:
        return (
            f"{self.start.isoformat()} -> {self.end.isoformat()} ({self.days:.1f} days, "
            f"about {self.trading_days:.1f} trading days of bars missing)"
        )


def _epoch_seconds(timestamps: pl.Series) -> np.ndarray:
    return timestamps.drop_nulls().sort().dt.epoch("us").to_numpy().astype(np.int64) // 1_000_000


def _spacings_seconds(timestamps: pl.Series) -> np.ndarray:
    return np.diff(_epoch_seconds(timestamps)).astype(np.float64)


def _missing_trading_days(seconds: np.ndarray) -> np.ndarray:
    """For each gap between consecutive bars (`seconds` sorted), the trading days of the series'
    own weekly schedule that lie strictly between the two bars' slots."""
    spacings = np.diff(seconds)
    median = float(np.median(spacings))
    if median >= 86_400 * 1.5 or median <= 0:
        # Weekly or coarser: each missing bar counts as a trading day.
        return np.maximum(np.round(spacings / max(median, 1.0)) - 1, 0)
    width = max(int(median), 1)
    slots_per_week = -(-_SECONDS_PER_WEEK // width)
    slot = (seconds - _FIRST_MONDAY) // width  # global slot index of each bar
    week, position = np.divmod(slot, slots_per_week)
    weeks_with_bars = max(len(np.unique(week)), 1)
    weeks_per_position = np.bincount(
        np.unique(week * slots_per_week + position) % slots_per_week, minlength=slots_per_week
    )
    scheduled = weeks_per_position >= _SCHEDULED_SHARE_OF_WEEKS * weeks_with_bars
    if not scheduled.any():
        scheduled = weeks_per_position > 0
    before = np.concatenate([[0], np.cumsum(scheduled)])  # scheduled slots before each position

    def scheduled_before(index: np.ndarray) -> np.ndarray:
        whole_weeks, rest = np.divmod(index, slots_per_week)
        return whole_weeks * before[-1] + before[rest]

    skipped = np.maximum(scheduled_before(slot[1:]) - scheduled_before(slot[:-1] + 1), 0)
    # A trading day's worth of slots: the typical count of scheduled slots on a weekday that trades.
    weekday_of_position = (np.arange(slots_per_week) * width // 86_400) % 7
    per_weekday = np.bincount(weekday_of_position[scheduled], minlength=7)
    slots_per_day = float(np.median(per_weekday[per_weekday > 0]))
    return skipped / slots_per_day


def long_gaps(timestamps: pl.Series, settings: GapSettings) -> list[LongGap]:
    """Every gap between consecutive bars that is long by `settings`, in time order."""
    ordered = timestamps.drop_nulls().sort()
    seconds = _epoch_seconds(ordered)
    if seconds.size < 3:
        return []
    missing = _missing_trading_days(seconds)
    return [
        LongGap(ordered[int(i)], ordered[int(i) + 1], float(missing[i]))
        for i in np.flatnonzero(missing >= settings.max_trading_days)
    ]


SECONDS_PER_YEAR = 365.25 * 86_400


def infer_bars_per_year(timestamps: pl.Series, settings: GapSettings) -> float:
    """Bars per calendar year as the series itself trades: bars counted over the time they span,
    long gaps (missing data, not a market's rhythm) left out. About 252 for daily stock bars,
    6,240 for hourly FX trading 24x5, 19,656 for 5-minute bars of a 6.5-hour session."""
    ordered = timestamps.drop_nulls().sort()
    spacings = _spacings_seconds(ordered)
    gaps = long_gaps(ordered, settings)
    covered = float(spacings.sum()) - sum(gap.days * 86_400 for gap in gaps)
    if spacings.size == 0 or covered <= 0:
        raise ValueError(
            f"cannot infer bars per year from {ordered.len()} timestamp(s): at least two distinct timestamps are needed"
        )
    return round((spacings.size - len(gaps)) / (covered / SECONDS_PER_YEAR), 1)


def describe_spacing(timestamps: pl.Series) -> str:
    """The median spacing between bars in the largest whole unit: "1d", "1h", "5m", "30s"."""
    spacings = _spacings_seconds(timestamps)
    if spacings.size == 0:
        return "unknown"
    seconds = float(np.median(spacings))
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g}{unit}"
    return f"{seconds:.3g}s"


def validate_bars(bars: pl.DataFrame, min_history: int, gaps: GapSettings = GapSettings()) -> list[BarsCheck]:
    """Run every data-quality check; one `BarsCheck` per check, in a fixed order:
    schema, timestamps_unique_increasing, prices_positive, ohlc_consistent, finite_values,
    minimum_history, no_long_gaps. Value checks run on whatever usable columns exist, so one
    broken column does not hide problems in the others."""
    return [
        _check_schema(bars),
        _check_timestamps(bars),
        _check_prices_positive(bars),
        _check_ohlc_consistent(bars),
        _check_finite_values(bars),
        _check_minimum_history(bars, min_history),
        _check_long_gaps(bars, gaps),
    ]


def _passed(name: str, description: str) -> BarsCheck:
    return BarsCheck(name=name, passed=True, description=description, detail="", failing_rows=0)


def _failed(name: str, description: str, detail: str, failing_rows: int) -> BarsCheck:
    return BarsCheck(name=name, passed=False, description=description, detail=detail, failing_rows=failing_rows)


def _numeric_columns_missing(bars: pl.DataFrame, columns: tuple[str, ...]) -> list[str]:
    return [column for column in columns if column not in bars.columns or not bars.schema[column].is_numeric()]


def _has_timestamp(bars: pl.DataFrame) -> bool:
    return "timestamp" in bars.columns and isinstance(bars.schema["timestamp"], (pl.Datetime, pl.Date))


def _describe_rows(bars: pl.DataFrame, mask: pl.Series, what: str, columns: tuple[str, ...]) -> str:
    """E.g. "3 rows with high < close, first at 2001-03-02 00:00:00+00:00 (high=9.5, close=10.0), ..."."""
    count = int(mask.sum())
    offending = bars.filter(mask).head(_EXAMPLES_IN_DETAIL)
    examples = []
    for row in offending.iter_rows(named=True):
        where = f"at {row['timestamp']}" if "timestamp" in row else "at row ?"
        values = ", ".join(f"{column}={row[column]}" for column in columns if column in row)
        examples.append(f"{where} ({values})" if values else where)
    noun = "row" if count == 1 else "rows"
    return f"{count} {noun} with {what}, first " + "; ".join(examples)


def _row_index_frame(bars: pl.DataFrame) -> pl.DataFrame:
    """`bars` with a row number, so a detail can locate rows even without usable timestamps."""
    frame = bars.with_row_index("row")
    if not _has_timestamp(bars):
        frame = frame.with_columns(pl.col("row").alias("timestamp"))
    return frame


def _check_schema(bars: pl.DataFrame) -> BarsCheck:
    name = "schema"
    description = BARS_CHECK_DESCRIPTIONS[name]
    problems = schema_problems(bars)
    if problems:
        return _failed(name, description, "; ".join(problems), 0)
    return _passed(name, description)


def _check_timestamps(bars: pl.DataFrame) -> BarsCheck:
    name = "timestamps_unique_increasing"
    description = BARS_CHECK_DESCRIPTIONS[name]
    if not _has_timestamp(bars):
        return _failed(name, description, "not checked: column 'timestamp' is missing or not a datetime", 0)
    # Against the latest earlier timestamp, not just the previous row, so every row that is out
    # of place (or repeats an earlier time) is counted, not only where the order first breaks.
    frame = _row_index_frame(bars).with_columns(
        pl.col("timestamp").cum_max().shift(1).alias("latest_earlier_timestamp")
    )
    null_mask = frame["timestamp"].is_null()
    not_after = (frame["timestamp"] <= frame["latest_earlier_timestamp"]).fill_null(False)
    details = []
    if null_mask.any():
        # Where they were in the file is lost: reading sorts the bars by time, nulls first.
        nulls = int(null_mask.sum())
        details.append(f"{nulls} {'row' if nulls == 1 else 'rows'} with a null timestamp")
    if not_after.any():
        details.append(
            _describe_rows(
                frame, not_after, "a timestamp not after every earlier one", ("row", "latest_earlier_timestamp")
            )
        )
    failing = int((null_mask | not_after).sum())
    if failing:
        return _failed(name, description, "; ".join(details), failing)
    return _passed(name, description)


def _check_value_columns(
    bars: pl.DataFrame, name: str, bad_rows: Callable[[str, pl.Series], tuple[pl.Series, str]]
) -> BarsCheck:
    """Check `name` column by column: `bad_rows(column, values as Float64)` gives the failing
    rows and what is wrong with them. Missing or non-numeric columns are named, not checked."""
    description = BARS_CHECK_DESCRIPTIONS[name]
    unusable = _numeric_columns_missing(bars, VALUE_COLUMNS)
    frame = _row_index_frame(bars)
    details = []
    failing_mask = pl.Series("failing", [False] * bars.height)
    for column in VALUE_COLUMNS:
        if column in unusable:
            continue
        bad, what = bad_rows(column, frame[column].cast(pl.Float64))
        if bad.any():
            details.append(_describe_rows(frame, bad, what, (column,)))
            failing_mask = failing_mask | bad
    if unusable:
        details.append(f"not checked: column(s) {unusable!r} missing or not numeric")
    failing = int(failing_mask.sum())
    if details:
        return _failed(name, description, "; ".join(details), failing)
    return _passed(name, description)


def _check_prices_positive(bars: pl.DataFrame) -> BarsCheck:
    def not_positive(column: str, values: pl.Series) -> tuple[pl.Series, str]:
        finite = values.is_finite().fill_null(False)
        if column == "volume":
            return finite & (values < 0), f"{column} < 0"
        return finite & (values <= 0), f"{column} <= 0"

    return _check_value_columns(bars, "prices_positive", not_positive)


def _check_ohlc_consistent(bars: pl.DataFrame) -> BarsCheck:
    name = "ohlc_consistent"
    description = BARS_CHECK_DESCRIPTIONS[name]
    unusable = _numeric_columns_missing(bars, PRICE_COLUMNS)
    if unusable:
        return _failed(name, description, f"not checked: column(s) {unusable!r} missing or not numeric", 0)
    frame = _row_index_frame(bars).with_columns(pl.col(column).cast(pl.Float64) for column in PRICE_COLUMNS)
    finite = frame.select(
        pl.all_horizontal(pl.col(column).is_finite() for column in PRICE_COLUMNS).fill_null(False)
    ).to_series()
    high, low, open_, close = frame["high"], frame["low"], frame["open"], frame["close"]
    violations = [
        ("high < open", finite & (high < open_), ("high", "open")),
        ("high < close", finite & (high < close), ("high", "close")),
        ("low > open", finite & (low > open_), ("low", "open")),
        ("low > close", finite & (low > close), ("low", "close")),
        ("high < low", finite & (high < low), ("high", "low")),
    ]
    details = []
    failing_mask = pl.Series("failing", [False] * bars.height)
    for what, mask, columns in violations:
        if mask.any():
            details.append(_describe_rows(frame, mask, what, columns))
            failing_mask = failing_mask | mask
    failing = int(failing_mask.sum())
    if failing:
        return _failed(name, description, "; ".join(details), failing)
    return _passed(name, description)


def _check_finite_values(bars: pl.DataFrame) -> BarsCheck:
    def not_finite(column: str, values: pl.Series) -> tuple[pl.Series, str]:
        return ~values.is_finite().fill_null(False), f"a null/NaN/inf {column}"

    return _check_value_columns(bars, "finite_values", not_finite)


def _check_minimum_history(bars: pl.DataFrame, min_history: int) -> BarsCheck:
    name = "minimum_history"
    description = BARS_CHECK_DESCRIPTIONS[name].format(min_history=min_history)
    if bars.height < min_history:
        return _failed(name, description, f"{bars.height} bars, {min_history - bars.height} short of {min_history}", 0)
    return _passed(name, description)


def _check_long_gaps(bars: pl.DataFrame, settings: GapSettings) -> BarsCheck:
    name = "no_long_gaps"
    description = BARS_CHECK_DESCRIPTIONS[name].format(max_trading_days=f"{settings.max_trading_days:g}")
    if not _has_timestamp(bars):
        return _failed(name, description, "not checked: column 'timestamp' is missing or not a datetime", 0)
    gaps = long_gaps(
        bars["timestamp"].cast(TIMESTAMP_DTYPE) if bars.schema["timestamp"] == pl.Date else bars["timestamp"], settings
    )
    if not gaps:
        return _passed(name, description)
    shown = "; ".join(gap.describe() for gap in gaps[:_EXAMPLES_IN_DETAIL])
    more = f" and {len(gaps) - _EXAMPLES_IN_DETAIL} more" if len(gaps) > _EXAMPLES_IN_DETAIL else ""
    median = describe_spacing(bars["timestamp"])
    noun = "gap" if len(gaps) == 1 else "gaps"
    return _failed(name, description, f"{len(gaps)} long {noun} (median spacing {median}): {shown}{more}", len(gaps))
