from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from intelligence_assets.ml.bars import BARS_SCHEMA
from intelligence_assets.ml.synthetic import synthetic_bars
from intelligence_assets.ml.targets import (
    BarrierTarget,
    DirectionTarget,
    ForwardReturnTarget,
    ForwardVolatilityTarget,
    build_labels,
    label_horizon,
)

# Eight hand-made bars; the true ranges and ATR(2) below were worked out by hand.
OPEN = [100.0, 100.0, 102.0, 101.0, 105.0, 101.0, 107.0, 108.0]
HIGH = [101.0, 103.0, 102.5, 106.0, 105.5, 104.5, 109.0, 108.5]
LOW = [99.0, 99.0, 100.0, 100.5, 100.0, 100.5, 106.5, 106.0]
CLOSE = [100.0, 102.0, 101.0, 105.0, 101.0, 104.0, 108.0, 107.0]
# True range: [-, 4, 2.5, 5.5, 5.5, 4, 5 (gap from 104 to a 106.5 low), 2.5]
# ATR(2):     [-, -, 3.25, 4, 5.5, 4.75, 4.5, 3.75]


def _tiny_bars(start: datetime = datetime(2001, 3, 1, tzinfo=UTC), step: timedelta = timedelta(days=1)) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "timestamp": [start + i * step for i in range(len(CLOSE))],
            "open": OPEN,
            "high": HIGH,
            "low": LOW,
            "close": CLOSE,
            "volume": [1000.0] * len(CLOSE),
        },
        schema=BARS_SCHEMA,
    )


SPECS = [
    DirectionTarget(name="up_3", horizon=3),
    BarrierTarget(name="peak_5", horizon=5, side="peak", atr_multiple=1.0),
    BarrierTarget(name="valley_4", horizon=4, side="valley", atr_multiple=0.7, atr_window=10),
    ForwardReturnTarget(name="return_3", horizon=3),
    ForwardVolatilityTarget(name="volatility_4", horizon=4),
]
SPEC_IDS = [spec.name for spec in SPECS]


def test_direction_by_hand():
    labels = build_labels(_tiny_bars(), DirectionTarget(name="up_2", horizon=2))
    assert labels.columns == ["timestamp", "label", "forward_return_1"]
    assert labels.schema["label"] == pl.Int8
    # close[t+2] > close[t]; the tie at t=2 (101 vs 101) is not "up".
    assert labels["label"].to_list() == [1, 1, 0, 0, 1, 1, None, None]


def test_barrier_peak_by_hand():
    labels = build_labels(
        _tiny_bars(), BarrierTarget(name="peak", horizon=2, side="peak", atr_multiple=1.0, atr_window=2)
    )
    assert labels.schema["label"] == pl.Int8
    # max(high[t+1..t+2]) >= close[t] + ATR[t]:
    # t=2: 106 >= 104.25 -> 1; t=3: 105.5 >= 109 -> 0; t=4: 109 >= 106.5 -> 1; t=5: 109 >= 108.75 -> 1.
    assert labels["label"].to_list() == [None, None, 1, 0, 1, 1, None, None]


def test_barrier_valley_by_hand():
    labels = build_labels(
        _tiny_bars(), BarrierTarget(name="valley", horizon=2, side="valley", atr_multiple=0.5, atr_window=2)
    )
    # min(low[t+1..t+2]) <= close[t] - 0.5 * ATR[t]:
    # t=2: 100 <= 99.375 -> 0; t=3: 100 <= 103 -> 1; t=4: 100.5 <= 98.25 -> 0; t=5: 106 <= 101.625 -> 0.
    assert labels["label"].to_list() == [None, None, 0, 1, 0, 0, None, None]


def test_barrier_touching_exactly_counts():
    # ATR(2) at t=2 is 3.25; a multiple that puts the barrier exactly on high[3] = 106 must count.
    multiple = (106.0 - 101.0) / 3.25
    labels = build_labels(
        _tiny_bars(), BarrierTarget(name="peak", horizon=1, side="peak", atr_multiple=multiple, atr_window=2)
    )
    assert labels["label"][2] == 1
    labels = build_labels(
        _tiny_bars(), BarrierTarget(name="peak", horizon=1, side="peak", atr_multiple=multiple * 1.001, atr_window=2)
    )
    assert labels["label"][2] == 0


def test_forward_return_and_forward_return_1_by_hand():
    labels = build_labels(_tiny_bars(), ForwardReturnTarget(name="return_2", horizon=2))
    assert labels.schema["label"] == pl.Float64
    expected = [
        math.log(101 / 100),
        math.log(105 / 102),
        0.0,
        math.log(104 / 105),
        math.log(108 / 101),
        math.log(107 / 104),
    ]
    assert labels["label"].to_list()[:6] == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert labels["label"].to_list()[6:] == [None, None]
    expected_next = [
        math.log(102 / 100),
        math.log(101 / 102),
        math.log(105 / 101),
        math.log(101 / 105),
        math.log(104 / 101),
        math.log(108 / 104),
        math.log(107 / 108),
    ]
    assert labels["forward_return_1"].to_list()[:7] == pytest.approx(expected_next, rel=1e-12)
    assert labels["forward_return_1"][7] is None


def test_forward_volatility_by_hand():
    labels = build_labels(_tiny_bars(), ForwardVolatilityTarget(name="volatility_2", horizon=2))
    assert labels.schema["label"] == pl.Float64
    r = [None] + [math.log(CLOSE[i] / CLOSE[i - 1]) for i in range(1, len(CLOSE))]
    expected = [math.sqrt((r[t + 1] ** 2 + r[t + 2] ** 2) / 2) for t in range(6)]
    assert labels["label"].to_list()[:6] == pytest.approx(expected, rel=1e-12)
    assert labels["label"].to_list()[6:] == [None, None]


def _reference_labels(bars: pl.DataFrame, spec) -> list:
    """Straightforward per-row loops, independent of the polars implementation."""
    o, h, l, c = (bars[column].to_numpy() for column in ("open", "high", "low", "close"))  # noqa: E741 -- OHLC names
    n, horizon = len(c), spec.horizon
    true_range = [None] + [max(h[i] - l[i], abs(h[i] - c[i - 1]), abs(l[i] - c[i - 1])) for i in range(1, n)]
    out = []
    for t in range(n):
        if t + horizon >= n:
            out.append(None)
            continue
        window = range(t + 1, t + horizon + 1)
        if isinstance(spec, DirectionTarget):
            out.append(int(c[t + horizon] > c[t]))
        elif isinstance(spec, BarrierTarget):
            recent = true_range[max(0, t - spec.atr_window + 1) : t + 1]
            if len(recent) < spec.atr_window or any(value is None for value in recent):
                out.append(None)
                continue
            atr = sum(recent) / spec.atr_window
            if spec.side == "peak":
                out.append(int(max(h[i] for i in window) >= c[t] + spec.atr_multiple * atr))
            else:
                out.append(int(min(l[i] for i in window) <= c[t] - spec.atr_multiple * atr))
        elif isinstance(spec, ForwardReturnTarget):
            out.append(math.log(c[t + horizon] / c[t]))
        else:
            out.append(math.sqrt(sum(math.log(c[i] / c[i - 1]) ** 2 for i in window) / horizon))
    return out


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_matches_reference_loops_on_synthetic_bars(spec):
    bars = synthetic_bars(n_bars=400, seed=11, signal_strength=1.0)
    labels = build_labels(bars, spec)
    assert labels["timestamp"].equals(bars["timestamp"])
    expected = _reference_labels(bars, spec)
    actual = labels["label"].to_list()
    assert [value is None for value in actual] == [value is None for value in expected]
    present = [(a, e) for a, e in zip(actual, expected, strict=True) if e is not None]
    if spec.task == "classification":
        assert [a for a, _ in present] == [e for _, e in present]
        assert 0 < sum(a for a, _ in present) < len(present)  # both classes occur
    else:
        assert np.allclose([a for a, _ in present], [e for _, e in present], rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_last_horizon_labels_are_null(spec):
    bars = synthetic_bars(n_bars=300, seed=12)
    labels = build_labels(bars, spec)
    horizon = label_horizon(spec)
    assert horizon == spec.horizon
    tail = labels["label"].tail(horizon)
    assert tail.null_count() == horizon
    warm_up = spec.atr_window if isinstance(spec, BarrierTarget) else 0  # ATR needs atr_window true ranges
    body = labels["label"].slice(warm_up, labels.height - warm_up - horizon)
    assert body.null_count() == 0
    assert labels["forward_return_1"].null_count() == 1 and labels["forward_return_1"][-1] is None


def _with_bar(bars: pl.DataFrame, index: int, open_: float, high: float, low: float, close: float) -> pl.DataFrame:
    row = pl.int_range(pl.len()) == index
    return bars.with_columns(
        pl.when(row).then(pl.lit(value)).otherwise(pl.col(column)).alias(column)
        for column, value in (("open", open_), ("high", high), ("low", low), ("close", close))
    )


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_label_depends_only_on_its_window(spec):
    bars = synthetic_bars(n_bars=300, seed=13)
    t, horizon = 150, spec.horizon
    original = build_labels(bars, spec)["label"]

    # Bars after t + horizon change wildly: labels at rows <= t must not move.
    rng = np.random.default_rng(0)
    factor = np.concatenate([np.ones(t + horizon + 1), rng.uniform(0.3, 3.0, bars.height - t - horizon - 1)])
    later_changed = bars.with_columns(pl.col(column) * factor for column in ("open", "high", "low", "close"))
    after = build_labels(later_changed, spec)["label"]
    assert after.head(t + 1).equals(original.head(t + 1))
    assert not after.slice(t + horizon + 1).equals(original.slice(t + horizon + 1))  # the change was real

    # A bar inside the window changes: the label at t must follow.
    close_t = bars["close"][t]
    if isinstance(spec, DirectionTarget):
        up = build_labels(_with_bar(bars, t + horizon, close_t, close_t * 1.2, close_t, close_t * 1.1), spec)["label"][
            t
        ]
        down = build_labels(_with_bar(bars, t + horizon, close_t, close_t, close_t * 0.8, close_t * 0.9), spec)[
            "label"
        ][t]
        assert (up, down) == (1, 0)
    elif isinstance(spec, BarrierTarget) and spec.side == "peak":
        spike = build_labels(_with_bar(bars, t + 1, close_t, close_t * 1.5, close_t, close_t), spec)["label"][t]
        flat = bars.with_columns(
            pl.when(pl.int_range(pl.len()).is_between(t + 1, t + horizon)).then(close_t).otherwise(pl.col(c)).alias(c)
            for c in ("open", "high", "low", "close")
        )
        assert (spike, build_labels(flat, spec)["label"][t]) == (1, 0)
    elif isinstance(spec, BarrierTarget):
        crash = build_labels(_with_bar(bars, t + horizon, close_t, close_t, close_t * 0.5, close_t), spec)["label"][t]
        flat = bars.with_columns(
            pl.when(pl.int_range(pl.len()).is_between(t + 1, t + horizon)).then(close_t).otherwise(pl.col(c)).alias(c)
            for c in ("open", "high", "low", "close")
        )
        assert (crash, build_labels(flat, spec)["label"][t]) == (1, 0)
    else:
        changed_index = t + horizon if isinstance(spec, ForwardReturnTarget) else t + 1
        old_close = bars["close"][changed_index]
        changed = build_labels(
            _with_bar(bars, changed_index, old_close, old_close * 1.3, old_close, old_close * 1.25), spec
        )["label"][t]
        assert changed != pytest.approx(original[t], rel=1e-6)


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_intraday_bars_give_identical_labels(spec):
    daily = synthetic_bars(n_bars=250, seed=14)
    five_minute = synthetic_bars(
        n_bars=250, seed=14, start=datetime(2024, 3, 1, 14, 30, tzinfo=UTC), bar_interval=timedelta(minutes=5)
    )
    daily_labels, intraday_labels = build_labels(daily, spec), build_labels(five_minute, spec)
    assert intraday_labels["timestamp"].equals(five_minute["timestamp"])
    assert intraday_labels.drop("timestamp").equals(daily_labels.drop("timestamp"))


def test_intraday_tiny_frame_by_hand():
    labels = build_labels(
        _tiny_bars(datetime(2024, 1, 2, 9, 30, tzinfo=UTC), timedelta(minutes=5)),
        DirectionTarget(name="up_2", horizon=2),
    )
    assert labels["label"].to_list() == [1, 1, 0, 0, 1, 1, None, None]


def test_horizon_longer_than_series_gives_all_null():
    labels = build_labels(_tiny_bars(), ForwardReturnTarget(name="long", horizon=20))
    assert labels["label"].null_count() == len(CLOSE)


def test_bad_input_names_the_column():
    with pytest.raises(ValueError, match="'close'"):
        build_labels(_tiny_bars().drop("close"), DirectionTarget(name="up", horizon=1))
    with pytest.raises(ValueError, match="'low'"):
        build_labels(_tiny_bars().with_columns(pl.col("low").cast(pl.Int32)), DirectionTarget(name="up", horizon=1))


def test_target_name_validation_rejects_partition_key_characters():
    with pytest.raises(ValueError):
        DirectionTarget(name="up|1", horizon=1)
    assert DirectionTarget(name="up_1", horizon=1).task == "classification"
    assert ForwardVolatilityTarget(name="v", horizon=3).tradable is False
