"""Deterministic synthetic OHLCV bars with an optional planted signal, for tests.

Each bar's log return is an opening gap plus an open-to-close body; wicks extend beyond the body.
All magnitudes are independent draws with constant scale (about `BAR_VOLATILITY` per bar), so
volatility is constant and forward-volatility targets are unpredictable by construction.

The planted signal: the *sign* of bar t+1's opening gap is +1 with probability
    p = clip(0.5 + signal_strength * SIGNAL_SCALE * (close_location[t] - 0.5), 0, 1),
where close_location is computed with `features.close_location` (the same expression the model
sees). Only the sign depends on the past, never the size, so |return| and hence every volatility
target stays independent of the features, while next-bar direction (and next-bar return) becomes
predictable from close_location. With signal_strength=0 the bars are a pure random walk (the
same random draws are used, so only the planted signs differ between strengths).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from intelligence_assets.ml.bars import BARS_SCHEMA
from intelligence_assets.ml.features import close_location

PLANTED_FEATURE = "close_location"
PLANTED_TARGET_KIND = "direction"
PLANTED_HORIZON = 1

BAR_VOLATILITY = 0.01
# Share of each bar's return variance that sits in the opening gap (which carries the signal).
GAP_VARIANCE_SHARE = 0.5
# Mean of each wick (log scale) relative to BAR_VOLATILITY.
WICK_SCALE = 0.3
# With signal_strength=1, p runs from 0.05 to 0.95 across close_location's range: next-bar direction
# AUC of close_location is then about 0.66 (a quick LightGBM on all default features reaches about
# 0.64 out of sample on 3000 bars); at strength 0 it is 0.5 up to sampling noise.
SIGNAL_SCALE = 0.9
START_PRICE = 100.0
LOG_VOLUME_MEAN, LOG_VOLUME_STD = 13.8, 0.25

DEFAULT_START = datetime(2000, 1, 3, tzinfo=UTC)


def synthetic_bars(
    n_bars: int = 3000,
    seed: int = 0,
    signal_strength: float = 0.0,
    start: datetime = DEFAULT_START,
    bar_interval: timedelta = timedelta(days=1),
) -> pl.DataFrame:
    """Bars in the bars schema; the same arguments always give the identical frame.

    `start` without a time zone is taken as UTC. `bar_interval` spaces the timestamps (e.g.
    `timedelta(minutes=5)` for intraday bars); the prices do not depend on it.
    """
    if n_bars < 1:
        raise ValueError(f"n_bars must be >= 1, got {n_bars}")
    if signal_strength < 0:
        raise ValueError(f"signal_strength must be >= 0, got {signal_strength}")
    if bar_interval <= timedelta(0):
        raise ValueError(f"bar_interval must be positive, got {bar_interval}")

    rng = np.random.default_rng(seed)
    body = rng.normal(0.0, BAR_VOLATILITY * np.sqrt(1.0 - GAP_VARIANCE_SHARE), n_bars)
    gap_size = np.abs(rng.normal(0.0, BAR_VOLATILITY * np.sqrt(GAP_VARIANCE_SHARE), n_bars))
    upper_wick = rng.exponential(WICK_SCALE * BAR_VOLATILITY, n_bars)
    lower_wick = rng.exponential(WICK_SCALE * BAR_VOLATILITY, n_bars)
    sign_draw = rng.random(n_bars)
    volume = np.exp(rng.normal(LOG_VOLUME_MEAN, LOG_VOLUME_STD, n_bars))

    # close_location is scale-free and ignores the gap, so it can be read off bars with open = 1
    # before the gaps (which depend on it) are drawn.
    location = _close_location_of_unit_bars(body, upper_wick, lower_wick)
    up_probability = np.clip(0.5 + signal_strength * SIGNAL_SCALE * (location - 0.5), 0.0, 1.0)
    # Bar t+1's gap sign follows bar t's close location; the first bar has no predecessor.
    gap_up_probability = np.concatenate(([0.5], up_probability[:-1]))
    gap = np.where(sign_draw < gap_up_probability, gap_size, -gap_size)

    log_close = np.log(START_PRICE) + np.cumsum(gap + body)
    close = np.exp(log_close)
    open_ = np.exp(log_close - body)
    # Multiplying by exp(wick) >= 1 (or dividing) keeps high >= max(open, close) and
    # low <= min(open, close) exactly in floating point.
    high = np.maximum(open_, close) * np.exp(upper_wick)
    low = np.minimum(open_, close) * np.exp(-lower_wick)

    return pl.DataFrame(
        {
            "timestamp": _timestamps(n_bars, start, bar_interval),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
        },
        schema=BARS_SCHEMA,
    )


def _close_location_of_unit_bars(body: np.ndarray, upper_wick: np.ndarray, lower_wick: np.ndarray) -> np.ndarray:
    close = np.exp(body)
    unit_bars = pl.DataFrame(
        {
            "open": np.ones_like(close),
            "high": np.maximum(1.0, close) * np.exp(upper_wick),
            "low": np.minimum(1.0, close) * np.exp(-lower_wick),
            "close": close,
        }
    )
    return unit_bars.select(close_location()).to_series().to_numpy()


def _timestamps(n_bars: int, start: datetime, bar_interval: timedelta) -> pl.Series:
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    start_utc = start.astimezone(UTC).replace(tzinfo=None)
    interval_microseconds = bar_interval // timedelta(microseconds=1)
    naive = np.datetime64(start_utc, "us") + np.arange(n_bars, dtype=np.int64) * np.timedelta64(
        interval_microseconds, "us"
    )
    return pl.Series("timestamp", naive).dt.replace_time_zone("UTC")
