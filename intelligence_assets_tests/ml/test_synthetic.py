from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from intelligence_assets.ml.bars import BARS_SCHEMA, validate_bars
from intelligence_assets.ml.features import FeatureSettings, build_features, feature_names
from intelligence_assets.ml.synthetic import (
    PLANTED_FEATURE,
    PLANTED_HORIZON,
    PLANTED_TARGET_KIND,
    synthetic_bars,
)
from intelligence_assets.ml.targets import DirectionTarget, ForwardVolatilityTarget, build_labels


def _planted_pairs(bars: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(close_location[t] as features.py computes it, next-bar direction label at t), complete rows."""
    features = build_features(bars, FeatureSettings(groups=["range"]))
    labels = build_labels(bars, DirectionTarget(name="planted", horizon=PLANTED_HORIZON))
    joined = features.join(labels, on="timestamp").drop_nulls(["label", PLANTED_FEATURE])
    return joined[PLANTED_FEATURE].to_numpy(), joined["label"].to_numpy()


def test_same_seed_gives_identical_frame_and_different_seed_differs():
    first = synthetic_bars(n_bars=500, seed=42, signal_strength=1.0)
    again = synthetic_bars(n_bars=500, seed=42, signal_strength=1.0)
    other = synthetic_bars(n_bars=500, seed=43, signal_strength=1.0)
    assert first.equals(again)
    assert not first.drop("timestamp").equals(other.drop("timestamp"))
    assert not np.allclose(first["close"].to_numpy(), other["close"].to_numpy())


def test_schema_length_and_timestamps():
    bars = synthetic_bars(n_bars=100, seed=1)
    assert dict(bars.schema) == BARS_SCHEMA
    assert bars.height == 100
    assert bars["timestamp"][0] == datetime(2000, 1, 3, tzinfo=UTC)
    assert (bars["timestamp"].diff().drop_nulls() == timedelta(days=1)).all()
    intraday = synthetic_bars(n_bars=100, seed=1, start=datetime(2024, 5, 1, 13, 30), bar_interval=timedelta(minutes=5))
    assert intraday["timestamp"][0] == datetime(2024, 5, 1, 13, 30, tzinfo=UTC)  # naive start taken as UTC
    assert (intraday["timestamp"].diff().drop_nulls() == timedelta(minutes=5)).all()
    assert intraday.drop("timestamp").equals(bars.drop("timestamp"))  # prices do not depend on the clock
    with pytest.raises(ValueError):
        synthetic_bars(n_bars=0)
    with pytest.raises(ValueError):
        synthetic_bars(signal_strength=-1.0)


@pytest.mark.parametrize(("seed", "strength"), [(0, 0.0), (1, 1.0), (2, 3.0)])
def test_bars_pass_every_data_quality_check(seed, strength):
    bars = synthetic_bars(n_bars=3000, seed=seed, signal_strength=strength)
    failed = [check for check in validate_bars(bars, min_history=3000) if not check.passed]
    assert failed == []
    assert (bars["volume"] > 0).all()


def test_volatility_is_about_one_percent_per_bar_and_constant():
    bars = synthetic_bars(n_bars=6000, seed=5, signal_strength=1.0)
    returns = np.diff(np.log(bars["close"].to_numpy()))
    assert 0.009 < returns.std() < 0.011
    halves = [returns[:3000].std(), returns[3000:].std()]
    assert abs(halves[0] - halves[1]) < 0.0005


def test_planted_signal_is_visible_in_close_location():
    assert PLANTED_FEATURE in feature_names(FeatureSettings())
    assert (PLANTED_TARGET_KIND, PLANTED_HORIZON) == ("direction", 1)
    planted_aucs = []
    null_aucs = []
    for seed in (0, 1, 2):
        location, up = _planted_pairs(synthetic_bars(n_bars=3000, seed=seed, signal_strength=1.0))
        planted_aucs.append(roc_auc_score(up, location))
        location, up = _planted_pairs(synthetic_bars(n_bars=3000, seed=seed, signal_strength=0.0))
        null_aucs.append(roc_auc_score(up, location))
    # Designed for about 0.66; the sampling standard deviation on 3000 bars is about 0.01.
    assert all(0.62 < auc < 0.70 for auc in planted_aucs), planted_aucs
    assert all(abs(auc - 0.5) < 0.03 for auc in null_aucs), null_aucs


def test_signal_strength_orders_the_effect():
    aucs = []
    for strength in (0.0, 0.3, 1.0):
        location, up = _planted_pairs(synthetic_bars(n_bars=5000, seed=9, signal_strength=strength))
        aucs.append(roc_auc_score(up, location))
    assert aucs[0] < aucs[1] < aucs[2]


def test_plant_moves_only_the_sign_not_the_bar_shape():
    # Same seed: bar bodies and wicks are shared, so close_location itself is unchanged by the plant.
    weak = build_features(synthetic_bars(n_bars=800, seed=3, signal_strength=0.0), FeatureSettings(groups=["range"]))
    strong = build_features(synthetic_bars(n_bars=800, seed=3, signal_strength=1.0), FeatureSettings(groups=["range"]))
    assert np.allclose(weak[PLANTED_FEATURE].to_numpy(), strong[PLANTED_FEATURE].to_numpy(), rtol=0, atol=1e-9)


def test_forward_volatility_is_not_predictable_from_the_planted_feature():
    bars = synthetic_bars(n_bars=20000, seed=4, signal_strength=1.0)
    features = build_features(bars, FeatureSettings(groups=["range"]))
    for horizon in (1, 5):
        labels = build_labels(bars, ForwardVolatilityTarget(name="volatility", horizon=horizon))
        joined = features.join(labels, on="timestamp").drop_nulls(["label"])
        location, volatility = joined[PLANTED_FEATURE].to_numpy(), joined["label"].to_numpy()
        # Distance from the middle catches a U-shaped dependence too: a plain mean shift of the
        # planted size, r = 1.2 * sigma * (location - 0.5) + noise, gives rho ~ 0.065 at horizon 1.
        # Sampling noise on 20000 bars is ~0.007.
        for statistic in (location, np.abs(location - 0.5)):
            correlation = spearmanr(statistic, volatility).statistic
            assert abs(correlation) < 0.03, (horizon, correlation)
