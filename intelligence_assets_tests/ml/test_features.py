from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from intelligence_assets.ml.bars import read_bars_parquet
from intelligence_assets.ml.features import (
    ALL_GROUPS,
    FeatureSettings,
    build_features,
    feature_names,
    features_by_group,
)
from intelligence_assets.ml.synthetic import synthetic_bars

REAL_BARS = Path(__file__).resolve().parents[2] / "data" / "bars" / "SP500.parquet"
DEFAULT = FeatureSettings()


def _bar_sources() -> list:
    sources = [pytest.param("synthetic", id="synthetic")]
    if REAL_BARS.exists():
        sources.append(pytest.param("real", id="SP500"))
    return sources


@pytest.fixture(scope="module")
def synthetic() -> pl.DataFrame:
    return synthetic_bars(n_bars=1200, seed=7, signal_strength=1.0)


def _load(source: str, synthetic: pl.DataFrame) -> pl.DataFrame:
    return synthetic if source == "synthetic" else read_bars_parquet(REAL_BARS)


def _assert_same_values(prefix: pl.DataFrame, full: pl.DataFrame) -> None:
    assert prefix.columns == full.columns
    assert prefix["timestamp"].equals(full["timestamp"])
    for name in prefix.columns[1:]:
        a, b = prefix[name], full[name]
        assert a.is_null().equals(b.is_null()), f"{name}: null pattern differs"
        a_values, b_values = a.drop_nulls().to_numpy(), b.drop_nulls().to_numpy()
        tolerance = 1e-12 * np.maximum(1.0, np.abs(b_values))
        assert np.all(np.abs(a_values - b_values) <= tolerance), f"{name}: prefix values differ from full-series values"


def test_default_settings_give_at_least_25_float_features(synthetic):
    features = build_features(synthetic, DEFAULT)
    names = feature_names(DEFAULT)
    assert len(names) >= 25
    assert len(set(names)) == len(names)
    assert features.columns == ["timestamp", *names]
    assert features.height == synthetic.height
    assert features.schema["timestamp"] == synthetic.schema["timestamp"]
    assert all(features.schema[name] == pl.Float64 for name in names)
    grouped = features_by_group(DEFAULT)
    assert set(grouped) == set(ALL_GROUPS)
    assert sorted(n for group in grouped.values() for n in group) == sorted(names)
    for expected in (
        "ret_1",
        "vol_5",
        "atr_14",
        "parkinson_21",
        "vol_ratio_5_21",
        "rsi_14",
        "macd",
        "macd_signal_gap",
        "high_gap_21",
        "low_gap_63",
        "ma_gap_10",
        "ma_cross_10_50",
        "volume_z_21",
        "volume_ratio_5_21",
        "signed_volume",
        "range",
        "range_z_21",
        "gap",
        "close_location",
        "upper_shadow",
        "lower_shadow",
    ):
        assert expected in names


@pytest.mark.parametrize("source", _bar_sources())
def test_no_inf_or_nan(source, synthetic):
    features = build_features(_load(source, synthetic), DEFAULT)
    values = features.drop("timestamp").to_numpy().astype(float)
    present = values[~np.isnan(values)]  # nulls come back as NaN from to_numpy
    assert np.isfinite(present).all()
    nan_counts = features.select(pl.col(pl.Float64).is_nan().sum()).row(0)
    assert sum(nan_counts) == 0


@pytest.mark.parametrize("source", _bar_sources())
def test_no_look_ahead_prefix_equals_full_series(source, synthetic):
    bars = _load(source, synthetic)
    full = build_features(bars, DEFAULT)
    for length in (1, 2, 15, 64, 201, 250, bars.height // 2, bars.height - 1):
        prefix = build_features(bars.head(length), DEFAULT)
        _assert_same_values(prefix, full.head(length))


def test_no_look_ahead_changing_later_bars_leaves_earlier_features(synthetic):
    cut = 700
    rng = np.random.default_rng(1)
    factor = np.concatenate([np.ones(cut + 1), rng.uniform(0.5, 2.0, synthetic.height - cut - 1)])
    changed = synthetic.with_columns(
        *(pl.col(column) * factor for column in ("open", "high", "low", "close")),
        pl.col("volume") * factor**2,
    )
    original = build_features(synthetic, DEFAULT)
    modified = build_features(changed, DEFAULT)
    _assert_same_values(modified.head(cut + 1), original.head(cut + 1))
    # The change must actually reach the features after the cut, or this test proves nothing.
    assert not modified["ret_1"].slice(cut + 1).equals(original["ret_1"].slice(cut + 1))


def test_warm_up_nulls_only_at_the_start(synthetic):
    features = build_features(synthetic, DEFAULT)
    for name in feature_names(DEFAULT):
        nulls = features[name].is_null().to_numpy()
        warm_up = int(nulls.sum())
        assert warm_up < 250, f"{name}: {warm_up} nulls"
        assert nulls[:warm_up].all() and not nulls[warm_up:].any(), f"{name}: nulls after warm-up"
    counts = {name: features[name].null_count() for name in feature_names(DEFAULT)}
    # Warm-up lengths follow from the windows: w bars back for returns, w-1 for rolling means.
    assert counts["ret_1"] == 1 and counts["ret_63"] == 63
    assert counts["ma_gap_200"] == 199 and counts["ma_gap_10"] == 9
    assert counts["vol_5"] == 5  # the first log return needs a previous close
    assert counts["atr_14"] == 14  # the first true range needs a previous close
    assert counts["close_location"] == 0 and counts["range"] == 0


def test_feature_values_match_independent_numpy_reference(synthetic):
    bars = synthetic.head(400)
    features = build_features(bars, DEFAULT)
    # o, h, l, c: the usual OHLC names, kept short to match the formulas.
    o, h, l, c, v = (bars[column].to_numpy() for column in ("open", "high", "low", "close", "volume"))  # noqa: E741
    t = 300
    log_returns = np.diff(np.log(c))  # log_returns[i - 1] = log(c[i] / c[i - 1])

    def value(name: str) -> float:
        return features[name][t]

    assert value("ret_5") == pytest.approx(np.log(c[t] / c[t - 5]), rel=1e-12)
    assert value("vol_21") == pytest.approx(np.std(log_returns[t - 21 : t], ddof=1), rel=1e-9)
    true_range = np.maximum.reduce([h[1:] - l[1:], np.abs(h[1:] - c[:-1]), np.abs(l[1:] - c[:-1])])  # for bars 1..
    assert value("atr_14") == pytest.approx(true_range[t - 14 : t].mean() / c[t], rel=1e-9)
    assert value("parkinson_21") == pytest.approx(
        np.sqrt(np.mean(np.log(h[t - 20 : t + 1] / l[t - 20 : t + 1]) ** 2) / (4 * np.log(2))), rel=1e-9
    )
    assert value("close_location") == pytest.approx((c[t] - l[t]) / (h[t] - l[t]), rel=1e-12)
    assert value("gap") == pytest.approx(o[t] / c[t - 1] - 1, rel=1e-9)
    assert value("upper_shadow") == pytest.approx((h[t] - max(o[t], c[t])) / c[t], rel=1e-9)
    assert value("lower_shadow") == pytest.approx((min(o[t], c[t]) - l[t]) / c[t], rel=1e-9)
    assert value("ma_gap_50") == pytest.approx(c[t] / c[t - 49 : t + 1].mean() - 1, rel=1e-9)
    assert value("ma_cross_10_50") == pytest.approx(c[t - 9 : t + 1].mean() / c[t - 49 : t + 1].mean() - 1, rel=1e-9)
    assert value("high_gap_21") == pytest.approx(c[t] / h[t - 20 : t + 1].max() - 1, rel=1e-12)
    assert value("low_gap_63") == pytest.approx(c[t] / l[t - 62 : t + 1].min() - 1, rel=1e-12)
    log_volume = np.log1p(v)
    window = log_volume[t - 20 : t + 1]
    assert value("volume_z_21") == pytest.approx((log_volume[t] - window.mean()) / window.std(ddof=1), rel=1e-9)
    assert value("volume_ratio_5_21") == pytest.approx(v[t - 4 : t + 1].mean() / v[t - 20 : t + 1].mean(), rel=1e-9)
    assert value("signed_volume") == pytest.approx(log_returns[t - 1] * value("volume_z_21"), rel=1e-12)

    # Recursive (adjust=False) averages, written out as explicit loops.
    def recursive_mean(x: np.ndarray, alpha: float) -> np.ndarray:
        out = np.empty_like(x)
        out[0] = x[0]
        for i in range(1, len(x)):
            out[i] = alpha * x[i] + (1 - alpha) * out[i - 1]
        return out

    change = np.diff(c)
    gain = recursive_mean(np.clip(change, 0, None), 1 / 14)
    loss = recursive_mean(np.clip(-change, 0, None), 1 / 14)
    assert value("rsi_14") == pytest.approx(gain[t - 1] / (gain[t - 1] + loss[t - 1]), rel=1e-9)
    macd_line = recursive_mean(c, 2 / 13) - recursive_mean(c, 2 / 27)
    signal = np.full_like(macd_line, np.nan)
    signal[25:] = recursive_mean(macd_line[25:], 2 / 10)  # the MACD line starts once the 26-span EMA has 26 values
    assert value("macd") == pytest.approx(macd_line[t] / c[t], rel=1e-9)
    assert value("macd_signal_gap") == pytest.approx((macd_line[t] - signal[t]) / c[t], rel=1e-9, abs=1e-15)
    assert features["rsi_14"].min() >= 0.0 and features["rsi_14"].max() <= 1.0


def test_flat_bars_and_zero_volume_give_nulls_not_inf():
    bars = synthetic_bars(n_bars=300, seed=3)
    flat = pl.Series([False] * 150 + [True] * 60 + [False] * 90)
    flat_price = 100.0
    bars = bars.with_columns(
        *(
            pl.when(flat).then(flat_price).otherwise(pl.col(column)).alias(column)
            for column in ("open", "high", "low", "close")
        ),
        pl.when(flat).then(0.0).otherwise(pl.col("volume")).alias("volume"),
    )
    features = build_features(bars, DEFAULT)
    inside = features.slice(180, 30)  # deep inside the flat stretch: every 21-bar window is flat
    assert (inside["close_location"] == 0.5).all()
    assert inside["range"].to_list() == [0.0] * 30
    assert inside["range_z_21"].null_count() == 30
    assert inside["volume_z_21"].null_count() == 30
    assert inside["volume_ratio_5_21"].null_count() == 30  # 0 / 0
    assert inside["vol_ratio_5_21"].null_count() == 30  # zero volatility on both windows
    # Wilder's averages decay together on a flat stretch, so the RSI holds its last value.
    assert inside["rsi_14"].null_count() == 0 and inside["rsi_14"].max() - inside["rsi_14"].min() < 1e-12
    values = features.drop("timestamp").to_numpy().astype(float)
    assert not np.isinf(values).any()
    assert sum(features.select(pl.col(pl.Float64).is_nan().sum()).row(0)) == 0


def test_group_selection_and_custom_windows():
    bars = synthetic_bars(n_bars=200, seed=2)
    settings = FeatureSettings(groups=["range", "returns"], return_windows=[1, 3])
    features = build_features(bars, settings)
    assert feature_names(settings) == [
        "ret_1",
        "ret_3",
        "range",
        "range_z_21",
        "gap",
        "close_location",
        "upper_shadow",
        "lower_shadow",
    ]
    assert features.columns == ["timestamp", *feature_names(settings)]
    volatility = FeatureSettings(groups=["volatility"], volatility_windows=[10, 3])
    assert "vol_ratio_3_10" in feature_names(volatility)
    with pytest.raises(ValueError, match="volatility_windows"):
        build_features(bars, FeatureSettings(volatility_windows=[1, 5]))


def test_intraday_bars_give_identical_features():
    daily = synthetic_bars(n_bars=300, seed=4)
    intraday = synthetic_bars(
        n_bars=300, seed=4, start=datetime(2024, 3, 1, 14, 30, tzinfo=UTC), bar_interval=timedelta(minutes=5)
    )
    daily_features, intraday_features = build_features(daily, DEFAULT), build_features(intraday, DEFAULT)
    assert intraday_features["timestamp"].equals(intraday["timestamp"])
    assert daily_features.drop("timestamp").equals(intraday_features.drop("timestamp"))


@pytest.mark.parametrize(
    ("mutate", "column"),
    [
        (lambda bars: bars.drop("volume"), "volume"),
        (lambda bars: bars.drop("timestamp"), "timestamp"),
        (lambda bars: bars.with_columns(pl.col("close").cast(pl.Int64)), "close"),
        (lambda bars: bars.with_columns(pl.col("high").cast(pl.Float32)), "high"),
        (lambda bars: bars.with_columns(pl.col("timestamp").dt.replace_time_zone(None)), "timestamp"),
        (lambda bars: bars.reverse(), "timestamp"),
        (lambda bars: pl.concat([bars.head(5), bars.slice(4)]), "timestamp"),
    ],
    ids=[
        "missing_volume",
        "missing_timestamp",
        "int_close",
        "float32_high",
        "naive_timestamp",
        "unsorted",
        "duplicate_timestamp",
    ],
)
def test_bad_input_names_the_column(mutate, column):
    bars = synthetic_bars(n_bars=50, seed=5)
    with pytest.raises(ValueError, match=f"'{column}'"):
        build_features(mutate(bars), DEFAULT)
