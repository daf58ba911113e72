"""Naive baselines and calibration bins, on arrays with known answers."""

from __future__ import annotations

import numpy as np

from intelligence_assets.ml.baselines import (
    calibration_bins,
    last_return_sign_scores,
    linear_on_all_features,
    majority_class_scores,
)
from intelligence_assets.ml.metrics import roc_auc


def test_majority_class_is_the_training_majority() -> None:
    assert majority_class_scores(np.array([1, 1, 0]), 4).tolist() == [1.0] * 4
    assert majority_class_scores(np.array([0, 0, 1]), 2).tolist() == [0.0, 0.0]


def test_last_return_sign() -> None:
    returns = np.array([0.01, -0.02, 0.0, np.nan])
    assert last_return_sign_scores(returns, "classification").tolist() == [1.0, 0.0, 0.0, 0.0]
    assert last_return_sign_scores(returns, "regression").tolist() == [1.0, -1.0, 0.0, 0.0]


def test_linear_on_all_features_learns_a_planted_signal_and_not_noise() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3000, 6))
    y = (x[:, 2] + 0.5 * rng.standard_normal(3000) > 0).astype(float)
    scores = linear_on_all_features("classification", x[:2000], y[:2000], x[2000:], seed=1)
    assert roc_auc(y[2000:], scores) > 0.85
    noise = (rng.standard_normal(3000) > 0).astype(float)
    assert (
        abs(
            roc_auc(noise[2000:], linear_on_all_features("classification", x[:2000], noise[:2000], x[2000:], seed=1))
            - 0.5
        )
        < 0.05
    )


def test_calibration_bins_report_mean_prediction_and_observed_frequency() -> None:
    y = np.array([0, 1, 1, 1, 0, 0])
    p = np.array([0.05, 0.05, 0.95, 0.95, 0.55, 1.0])
    assert calibration_bins(y, p, bins=10) == [(0.05, 0.5, 2), (0.55, 0.0, 1), (0.9666666666666667, 2 / 3, 3)]
