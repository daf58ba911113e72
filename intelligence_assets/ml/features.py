"""Feature matrix from OHLCV bars, as polars expressions. No feature at row t uses any bar after t.

Every window is counted in bars (daily or intraday alike). Each feature is a causal expression:
rolling windows end at the current row, shifts are positive (towards the past) and exponential
averages are recursive (`adjust=False`), so the value at row t is a function of rows 0..t only
and does not change when later bars are appended. Non-finite results (division by a zero range,
a zero volume spread, ...) become null; warm-up rows are null.

Shared definitions (used by `targets` and `synthetic` too, so every module agrees):
  * true range: max(high - low, |high - previous close|, |low - previous close|), null on the
    first bar (no previous close);
  * ATR(n): the simple rolling mean of the true range over the last n bars (not Wilder's
    smoothing: a finite window keeps hand-checks easy and forgets the series start);
  * close location: (close - low) / (high - low), 0.5 when high == low.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from intelligence_assets.ml.bars import require_bars_schema

FeatureGroup = Literal["returns", "volatility", "momentum", "moving_averages", "volume", "range"]
ALL_GROUPS: tuple[FeatureGroup, ...] = ("returns", "volatility", "momentum", "moving_averages", "volume", "range")


class FeatureSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    groups: list[FeatureGroup] = Field(default_factory=lambda: list(ALL_GROUPS), min_length=1)
    return_windows: list[int] = Field(default_factory=lambda: [1, 2, 5, 10, 21, 63])
    volatility_windows: list[int] = Field(default_factory=lambda: [5, 21, 63])
    moving_average_windows: list[int] = Field(default_factory=lambda: [10, 21, 50, 200])
    volume_windows: list[int] = Field(default_factory=lambda: [21, 63])


# Windows the settings do not expose: conventional values, fixed so names stay stable.
ATR_WINDOW = 14
PARKINSON_WINDOW = 21
RSI_WINDOW = 14
MACD_FAST_SPAN, MACD_SLOW_SPAN, MACD_SIGNAL_SPAN = 12, 26, 9
EXTREME_WINDOWS = (21, 63)
VOLUME_RATIO_WINDOWS = (5, 21)
RANGE_Z_WINDOW = 21

# A rolling spread this small relative to its level is a flat window: a z-score there is noise.
_FLAT_SPREAD = 1e-9


# ---------------------------------------------------------------- shared expressions


def finite_or_null(expr: pl.Expr) -> pl.Expr:
    """NaN and +-inf become null (null stays null)."""
    return pl.when(expr.is_finite()).then(expr).otherwise(None)


def log_return(window: int = 1, close: str = "close") -> pl.Expr:
    """log(close[t] / close[t - window])."""
    return (pl.col(close) / pl.col(close).shift(window)).log()


def true_range(high: str = "high", low: str = "low", close: str = "close") -> pl.Expr:
    """max(high - low, |high - close[t-1]|, |low - close[t-1]|); null on the first bar."""
    previous_close = pl.col(close).shift(1)
    true_range_value = pl.max_horizontal(
        pl.col(high) - pl.col(low),
        (pl.col(high) - previous_close).abs(),
        (pl.col(low) - previous_close).abs(),
    )
    return pl.when(previous_close.is_not_null()).then(true_range_value).otherwise(None)


def average_true_range(window: int = ATR_WINDOW, high: str = "high", low: str = "low", close: str = "close") -> pl.Expr:
    """ATR in price units: simple rolling mean of the true range over the last `window` bars."""
    return true_range(high, low, close).rolling_mean(window, min_samples=window)


def close_location(open_: str = "open", high: str = "high", low: str = "low", close: str = "close") -> pl.Expr:
    """(close - low) / (high - low) in [0, 1]; 0.5 when high == low. `open_` is unused but keeps
    the signature uniform with the other bar expressions."""
    spread = pl.col(high) - pl.col(low)
    location = ((pl.col(close) - pl.col(low)) / spread).clip(0.0, 1.0)
    return pl.when(spread > 0).then(location).otherwise(pl.lit(0.5))


def exponential_mean(expr: pl.Expr, span: int) -> pl.Expr:
    """Recursive EMA (adjust=False): ema[t] = a * x[t] + (1 - a) * ema[t-1], a = 2 / (span + 1).
    The recursion makes the value at t independent of how many bars follow; the first `span`
    values are null so early estimates that still lean on the seed are not used."""
    return expr.ewm_mean(span=span, adjust=False, min_samples=span)


def _wilder_mean(expr: pl.Expr, window: int) -> pl.Expr:
    return expr.ewm_mean(alpha=1.0 / window, adjust=False, min_samples=window)


def _z_score(expr: pl.Expr, window: int) -> pl.Expr:
    mean = expr.rolling_mean(window, min_samples=window)
    spread = expr.rolling_std(window, min_samples=window)
    flat = spread <= _FLAT_SPREAD * (mean.abs() + 1.0)
    return pl.when(flat).then(None).otherwise((expr - mean) / spread)


# ---------------------------------------------------------------- feature definitions

# Intermediate columns, computed once before the features select from them.
_LOG_RETURN_1 = "__log_return_1"
_LOG_VOLUME = "__log_volume"
_RANGE = "__range"


def _intermediates() -> list[pl.Expr]:
    return [
        log_return(1).alias(_LOG_RETURN_1),
        # log1p keeps zero-volume bars (common in index data) finite.
        pl.col("volume").log1p().alias(_LOG_VOLUME),
        ((pl.col("high") - pl.col("low")) / pl.col("close")).alias(_RANGE),
    ]


def _returns(settings: FeatureSettings) -> dict[str, pl.Expr]:
    return {f"ret_{window}": log_return(window) for window in _unique(settings.return_windows)}


def _volatility(settings: FeatureSettings) -> dict[str, pl.Expr]:
    returns = pl.col(_LOG_RETURN_1)
    windows = _unique(settings.volatility_windows)
    features = {f"vol_{window}": returns.rolling_std(window, min_samples=window) for window in windows}
    features[f"atr_{ATR_WINDOW}"] = average_true_range(ATR_WINDOW) / pl.col("close")
    squared_log_range = (pl.col("high") / pl.col("low")).log().pow(2)
    features[f"parkinson_{PARKINSON_WINDOW}"] = (
        squared_log_range.rolling_mean(PARKINSON_WINDOW, min_samples=PARKINSON_WINDOW).clip(lower_bound=0.0)
        / (4.0 * math.log(2.0))
    ).sqrt()
    if len(windows) >= 2:
        short, long = sorted(windows)[:2]
        features[f"vol_ratio_{short}_{long}"] = returns.rolling_std(short, min_samples=short) / returns.rolling_std(
            long, min_samples=long
        )
    return features


def _momentum(settings: FeatureSettings) -> dict[str, pl.Expr]:
    change = pl.col("close").diff()
    average_gain = _wilder_mean(change.clip(lower_bound=0.0), RSI_WINDOW)
    average_loss = _wilder_mean((-change).clip(lower_bound=0.0), RSI_WINDOW)
    total_move = average_gain + average_loss
    # RSI in [0, 1]; a perfectly flat stretch has no direction, hence the neutral 0.5.
    rsi = pl.when(total_move > 0).then(average_gain / total_move).otherwise(pl.when(total_move.is_not_null()).then(0.5))
    macd_line = exponential_mean(pl.col("close"), MACD_FAST_SPAN) - exponential_mean(pl.col("close"), MACD_SLOW_SPAN)
    signal_line = exponential_mean(macd_line, MACD_SIGNAL_SPAN)
    features = {
        f"rsi_{RSI_WINDOW}": rsi,
        "macd": macd_line / pl.col("close"),
        "macd_signal_gap": (macd_line - signal_line) / pl.col("close"),
    }
    for window in EXTREME_WINDOWS:
        features[f"high_gap_{window}"] = pl.col("close") / pl.col("high").rolling_max(window, min_samples=window) - 1.0
        features[f"low_gap_{window}"] = pl.col("close") / pl.col("low").rolling_min(window, min_samples=window) - 1.0
    return features


def _moving_averages(settings: FeatureSettings) -> dict[str, pl.Expr]:
    windows = _unique(settings.moving_average_windows)

    def simple_mean(window: int) -> pl.Expr:
        return pl.col("close").rolling_mean(window, min_samples=window)

    features = {f"ma_gap_{window}": pl.col("close") / simple_mean(window) - 1.0 for window in windows}
    if len(windows) >= 2:
        fast = min(windows)
        # The classic 10/50 pair: the slow average is the shortest one at least 5x the fast.
        slow = min((window for window in windows if window >= 5 * fast), default=max(windows))
        features[f"ma_cross_{fast}_{slow}"] = simple_mean(fast) / simple_mean(slow) - 1.0
    return features


def _volume(settings: FeatureSettings) -> dict[str, pl.Expr]:
    windows = _unique(settings.volume_windows)
    features = {f"volume_z_{window}": _z_score(pl.col(_LOG_VOLUME), window) for window in windows}
    short, long = VOLUME_RATIO_WINDOWS
    features[f"volume_ratio_{short}_{long}"] = pl.col("volume").rolling_mean(short, min_samples=short) / pl.col(
        "volume"
    ).rolling_mean(long, min_samples=long)
    if windows:
        # Volume-weighted direction: a big move on heavy volume counts more than on light volume.
        features["signed_volume"] = pl.col(_LOG_RETURN_1) * features[f"volume_z_{min(windows)}"]
    return features


def _range(settings: FeatureSettings) -> dict[str, pl.Expr]:
    body_top = pl.max_horizontal("open", "close")
    body_bottom = pl.min_horizontal("open", "close")
    return {
        "range": pl.col(_RANGE),
        f"range_z_{RANGE_Z_WINDOW}": _z_score(pl.col(_RANGE), RANGE_Z_WINDOW),
        "gap": pl.col("open") / pl.col("close").shift(1) - 1.0,
        "close_location": close_location(),
        "upper_shadow": (pl.col("high") - body_top) / pl.col("close"),
        "lower_shadow": (body_bottom - pl.col("low")) / pl.col("close"),
    }


_GROUP_BUILDERS = {
    "returns": _returns,
    "volatility": _volatility,
    "momentum": _momentum,
    "moving_averages": _moving_averages,
    "volume": _volume,
    "range": _range,
}


def _unique(windows: list[int]) -> list[int]:
    return list(dict.fromkeys(windows))


def _check_settings(settings: FeatureSettings) -> None:
    for field_name, minimum in (
        ("return_windows", 1),
        ("volatility_windows", 2),
        ("moving_average_windows", 1),
        ("volume_windows", 2),
    ):
        bad = [window for window in getattr(settings, field_name) if window < minimum]
        if bad:
            raise ValueError(f"FeatureSettings.{field_name} must all be >= {minimum}, got {bad}")


def _feature_expressions(settings: FeatureSettings) -> dict[str, tuple[FeatureGroup, pl.Expr]]:
    _check_settings(settings)
    expressions: dict[str, tuple[FeatureGroup, pl.Expr]] = {}
    for group in ALL_GROUPS:  # fixed order, whatever order the settings list groups in
        if group in settings.groups:
            for name, expr in _GROUP_BUILDERS[group](settings).items():
                expressions[name] = (group, expr)
    return expressions


# ---------------------------------------------------------------- public API


def feature_names(settings: FeatureSettings) -> list[str]:
    """Feature columns `build_features` returns for `settings`, in column order."""
    return list(_feature_expressions(settings))


def features_by_group(settings: FeatureSettings) -> dict[FeatureGroup, list[str]]:
    """Feature names per selected group, in column order."""
    grouped: dict[FeatureGroup, list[str]] = {}
    for name, (group, _) in _feature_expressions(settings).items():
        grouped.setdefault(group, []).append(name)
    return grouped


def build_features(bars: pl.DataFrame, settings: FeatureSettings) -> pl.DataFrame:
    """`timestamp` plus one Float64 column per feature (null during warm-up, never inf/NaN).

    `bars` must have the bars schema (see `intelligence_assets.ml.bars`) with strictly increasing
    timestamps; otherwise ValueError naming the column.
    """
    require_bars_schema(bars)
    expressions = _feature_expressions(settings)
    return (
        bars.lazy()
        .with_columns(_intermediates())
        .select(
            pl.col("timestamp"),
            *(finite_or_null(expr.cast(pl.Float64)).alias(name) for name, (_, expr) in expressions.items()),
        )
        .collect()
    )


@dataclass(frozen=True)
class UsableFeatures:
    """A symbol's feature matrix without the columns it cannot learn from, and why each went."""

    table: pl.DataFrame
    dropped: dict[str, str]

    @property
    def names(self) -> list[str]:
        return [column for column in self.table.columns if column != "timestamp"]

    @property
    def complete_rows(self) -> int:
        return self.table.drop_nulls().height


class TooFewUsableRowsError(ValueError):
    """What is left of a symbol's features cannot fill the walk-forward splits."""


# A feature null on more than this share of a symbol's bars (volume features of an index whose
# volume is zero but for a few bars, or that starts reporting volume halfway) costs more complete
# rows than it can add: the longest window's warm-up stays far below it on any trainable series.
MAX_NULL_SHARE = 0.25


def drop_unusable_features(features: pl.DataFrame) -> UsableFeatures:
    """Drop every feature that is null on every bar (volume features of a series whose volume is
    always zero), takes one value on every bar where it is defined (anything computed from a
    constant price), or is null on more than MAX_NULL_SHARE of the bars: a model cannot learn
    from the first two, and any of them would otherwise leave few or no complete rows."""
    dropped: dict[str, str] = {}
    for column in features.columns:
        if column == "timestamp":
            continue
        values = features[column].drop_nulls()
        nulls = features.height - values.len()
        if values.len() == 0:
            dropped[column] = "null on every bar"
        elif values.n_unique() == 1:
            dropped[column] = f"constant ({values[0]:g}) on every bar where defined"
        elif nulls > MAX_NULL_SHARE * features.height:
            dropped[column] = f"null on {nulls} of {features.height} bars (more than {MAX_NULL_SHARE:.0%})"
    return UsableFeatures(features.drop(list(dropped)), dropped)


def require_enough_rows(usable: UsableFeatures, minimum_rows: int, symbol: str) -> None:
    """Raise TooFewUsableRowsError naming the columns and row counts when `usable` cannot fill
    `minimum_rows` complete rows (the walk-forward splits' need for the longest label)."""
    if usable.names and usable.complete_rows >= minimum_rows:
        return
    dropped = "; ".join(f"{name}: {why}" for name, why in usable.dropped.items()) or "none"
    if not usable.names:
        reasons = sorted(set(usable.dropped.values()))
        examples = "; ".join(f"{name}: {why}" for name, why in list(usable.dropped.items())[:3])
        raise TooFewUsableRowsError(
            f"{symbol}: no usable feature left of {len(usable.dropped)}: each is null or constant on every bar, "
            f"or mostly null (e.g. {examples}; {len(reasons)} distinct reasons)"
        )
    null_counts = usable.table.drop("timestamp").null_count().row(0, named=True)
    sparsest = sorted(null_counts.items(), key=lambda item: -item[1])[:5]
    raise TooFewUsableRowsError(
        f"{symbol}: {usable.complete_rows} complete rows of {usable.table.height} bars, at least {minimum_rows} "
        "needed for the "
        "walk-forward splits; features with the most nulls: "
        f"{', '.join(f'{name} ({count} null)' for name, count in sparsest)}; "
        f"dropped as unusable: {dropped}"
    )
