"""Target specs and label construction.

A label at row t only looks at bars t+1 .. t+horizon (its *label window*); rows whose window
runs past the end of the series get a null label. Horizons are in bars, never calendar days.
"""

from __future__ import annotations

from typing import Annotated, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from intelligence_assets.ml.bars import require_bars_schema
from intelligence_assets.ml.features import average_true_range, log_return

# Partition keys may not contain these (Dagster multi-partition key syntax).
FORBIDDEN_KEY_CHARACTERS = set("|,[] ")


class _TargetSpecBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Unique target name; becomes the `target` partition key.")
    horizon: int = Field(gt=0, le=2000, description="Label window length in bars.")

    @field_validator("name")
    @classmethod
    def _valid_partition_key(cls, value: str) -> str:
        bad = FORBIDDEN_KEY_CHARACTERS.intersection(value)
        if not value or bad:
            raise ValueError(
                f"target name {value!r} must be non-empty and contain none of "
                f"{sorted(bad or FORBIDDEN_KEY_CHARACTERS)!r}"
            )
        return value

    @property
    def task(self) -> Literal["classification", "regression"]:
        raise NotImplementedError

    @property
    def tradable(self) -> bool:
        """Whether a prediction maps to a long/short position on the instrument (for the backtest)."""
        return True


class DirectionTarget(_TargetSpecBase):
    """1 if close[t+horizon] > close[t], else 0."""

    kind: Literal["direction"] = "direction"

    @property
    def task(self) -> Literal["classification"]:
        return "classification"


class BarrierTarget(_TargetSpecBase):
    """Will price peak (valley) within `horizon` bars by `atr_multiple` x ATR(atr_window)?

    peak:   1 if max(high[t+1..t+h]) >= close[t] + atr_multiple * ATR[t]
    valley: 1 if min(low[t+1..t+h])  <= close[t] - atr_multiple * ATR[t]
    """

    kind: Literal["barrier"] = "barrier"
    side: Literal["peak", "valley"]
    atr_multiple: float = Field(gt=0, le=50)
    atr_window: int = Field(default=14, gt=1, le=500)

    @property
    def task(self) -> Literal["classification"]:
        return "classification"


class ForwardReturnTarget(_TargetSpecBase):
    """log(close[t+horizon] / close[t])."""

    kind: Literal["forward_return"] = "forward_return"

    @property
    def task(self) -> Literal["regression"]:
        return "regression"


class ForwardVolatilityTarget(_TargetSpecBase):
    """Realised volatility over the next `horizon` bars: sqrt(mean(r[t+1..t+h]^2)), r = log returns."""

    kind: Literal["forward_volatility"] = "forward_volatility"

    @property
    def task(self) -> Literal["regression"]:
        return "regression"

    @property
    def tradable(self) -> bool:
        return False


TargetSpec = Annotated[
    DirectionTarget | BarrierTarget | ForwardReturnTarget | ForwardVolatilityTarget,
    Field(discriminator="kind"),
]


def build_labels(bars: pl.DataFrame, spec: TargetSpec) -> pl.DataFrame:
    """Labels for every bar: columns `timestamp`, `label` (Int8 for classification, Float64 for
    regression; null where the label window runs past the series end) and `forward_return_1`
    (log return from bar t to t+1, null at the end; the backtest's per-bar PnL basis).

    `bars` has columns timestamp, open, high, low, close, volume sorted by timestamp (the bars
    schema; otherwise ValueError naming the column). Barrier targets use ATR as defined in
    `features.average_true_range` (simple rolling mean of the true range, in price units) at row
    t, so rows without a full ATR window get a null label too.
    """
    require_bars_schema(bars)
    label_dtype = pl.Int8 if spec.task == "classification" else pl.Float64
    return bars.select(
        pl.col("timestamp"),
        label_expression(spec).cast(label_dtype).alias("label"),
        forward_log_return(1).alias("forward_return_1"),
    )


def label_horizon(spec: TargetSpec) -> int:
    """How many bars after row t the label at t looks at (its label window is t+1 .. t+horizon);
    the purge distance for splits."""
    return spec.horizon


def label_expression(spec: TargetSpec) -> pl.Expr:
    """The label as a polars expression over bars columns (null where the window is incomplete).
    Classification labels are Boolean here; `build_labels` casts them to Int8."""
    horizon = spec.horizon
    if isinstance(spec, DirectionTarget):
        return pl.col("close").shift(-horizon) > pl.col("close")
    if isinstance(spec, BarrierTarget):
        barrier_distance = spec.atr_multiple * average_true_range(spec.atr_window)
        if spec.side == "peak":
            return forward_window_max("high", horizon) >= pl.col("close") + barrier_distance
        return forward_window_min("low", horizon) <= pl.col("close") - barrier_distance
    if isinstance(spec, ForwardReturnTarget):
        return forward_log_return(horizon)
    if isinstance(spec, ForwardVolatilityTarget):
        return forward_realised_volatility(horizon)
    raise TypeError(f"unknown target spec {type(spec).__name__}")


def forward_log_return(horizon: int, close: str = "close") -> pl.Expr:
    """log(close[t + horizon] / close[t]); null for the last `horizon` rows."""
    return (pl.col(close).shift(-horizon) / pl.col(close)).log()


def forward_window_max(column: str, horizon: int) -> pl.Expr:
    """max(column[t+1 .. t+horizon]); null when the window runs past the end.
    The trailing rolling max at row t+horizon covers exactly rows t+1 .. t+horizon."""
    return pl.col(column).rolling_max(horizon, min_samples=horizon).shift(-horizon)


def forward_window_min(column: str, horizon: int) -> pl.Expr:
    """min(column[t+1 .. t+horizon]); null when the window runs past the end."""
    return pl.col(column).rolling_min(horizon, min_samples=horizon).shift(-horizon)


def forward_realised_volatility(horizon: int, close: str = "close") -> pl.Expr:
    """sqrt(mean(r[t+1 .. t+horizon]^2)) with r[i] = log(close[i] / close[i-1]); null when the
    window runs past the end. r[t+1] uses close[t], which is known at t."""
    squared = log_return(1, close).pow(2)
    # clip: a sliding-sum mean can drift a hair below zero after large values leave the window.
    return squared.rolling_mean(horizon, min_samples=horizon).shift(-horizon).clip(lower_bound=0.0).sqrt()
