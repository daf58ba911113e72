"""Series with the shapes real universes bring, made in the tests (no data is downloaded):
hourly FX that trades 24x5 with weekend bars closed, 5-minute index bars whose volume is always
zero, a daily series with a years-long hole, a constant price, empty and header-only files."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import polars as pl

from intelligence_assets.ml.bars import BARS_SCHEMA
from intelligence_assets.ml.synthetic import synthetic_bars


def _on(timestamps: pl.Series, seed: int, signal_strength: float = 0.0) -> pl.DataFrame:
    bars = synthetic_bars(n_bars=timestamps.len(), seed=seed, signal_strength=signal_strength)
    return bars.with_columns(timestamps.alias("timestamp"))


def hourly_fx_bars(start: date = date(2019, 1, 7), bars: int = 3000, seed: int = 11) -> pl.DataFrame:
    """24x5: Sunday 22:00 UTC to Friday 22:00 UTC, no bars over the weekend."""
    hours = pl.datetime_range(
        datetime.combine(start, time()),
        datetime.combine(start, time()) + timedelta(hours=bars * 2),
        "1h",
        eager=True,
        time_zone="UTC",
    )
    weekday, hour = hours.dt.weekday(), hours.dt.hour()
    trading = ~((weekday == 6) | ((weekday == 7) & (hour < 22)) | ((weekday == 5) & (hour >= 22)))
    return _on(hours.filter(trading).head(bars), seed)


def five_minute_zero_volume_bars(
    start: date = date(2022, 1, 3), bars: int = 2400, seed: int = 12, signal_strength: float = 1.0
) -> pl.DataFrame:
    """A 6.5-hour session on weekdays (14:30-21:00 UTC) in 5-minute bars, volume always 0, as
    index quotes come."""
    minutes = pl.datetime_range(
        datetime.combine(start, time()),
        datetime.combine(start, time()) + timedelta(days=bars // 40 + 10),
        "5m",
        eager=True,
        time_zone="UTC",
    )
    session = (minutes.dt.weekday() <= 5) & (minutes.dt.time() >= time(14, 30)) & (minutes.dt.time() < time(21, 0))
    return _on(minutes.filter(session).head(bars), seed, signal_strength).with_columns(pl.lit(0.0).alias("volume"))


def daily_bars_with_hole(bars: int = 3000, hole_years: int = 10, seed: int = 13) -> pl.DataFrame:
    """Weekday daily bars with `hole_years` of bars missing in the middle."""
    days = pl.date_range(date(1990, 1, 1), date(2040, 1, 1), "1d", eager=True)
    weekdays = days.filter(days.dt.weekday() <= 5).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    first, second = (
        weekdays.head(bars // 2),
        weekdays.filter(weekdays > weekdays[bars // 2] + timedelta(days=365 * hole_years)).head(bars - bars // 2),
    )
    return _on(pl.concat([first, second]), seed)


def constant_price_bars(bars: int = 1600) -> pl.DataFrame:
    days = pl.datetime_range(
        datetime(2010, 1, 4, tzinfo=UTC),
        datetime(2010, 1, 4, tzinfo=UTC) + timedelta(days=bars - 1),
        "1d",
        eager=True,
    )
    return pl.DataFrame(
        {
            "timestamp": days,
            **{column: [100.0] * bars for column in ("open", "high", "low", "close")},
            "volume": [1000.0] * bars,
        }
    )


def write_empty_file(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def write_header_only_file(path: Path) -> Path:
    pl.DataFrame(schema=BARS_SCHEMA).write_parquet(path)
    return path
