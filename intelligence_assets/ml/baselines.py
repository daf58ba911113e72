"""Naive references a model must beat on its held-out rows, and calibration of probabilities.

Each baseline sees exactly what a model sees (the development rows to fit, the test rows to
predict) and returns scores in the model's units: probabilities for classification, values for
regression, so the same metrics and the same backtest apply.
"""

from __future__ import annotations

import numpy as np

from intelligence_assets.ml.families.linear import FAMILY as LinearFamily


def majority_class_scores(y_train: np.ndarray, n_test: int) -> np.ndarray:
    """The training majority class for every test row (AUC 0.5 by construction)."""
    return np.full(n_test, float(np.mean(y_train) > 0.5))


def last_return_sign_scores(last_return: np.ndarray, task: str) -> np.ndarray:
    """Up if the last bar's return was positive: 1/0 for classification, the sign for regression."""
    last_return = np.nan_to_num(np.asarray(last_return, dtype=np.float64))
    return (last_return > 0).astype(np.float64) if task == "classification" else np.sign(last_return)


def linear_on_all_features(
    task: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int
) -> np.ndarray:
    """Logistic regression (classification) or ridge regression (regression) on every feature,
    not only the selected ones: the `linear` family, fitted on the development rows (its last
    15% as the validation slice, as the families do)."""
    cut = int(len(y_train) * 0.85)
    model = LinearFamily(task, {}, seed).fit(x_train[:cut], y_train[:cut], x_train[cut:], y_train[cut:])
    return model.predict(x_test)


def calibration_bins(y_true: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> list[tuple[float, float, int]]:
    """(mean predicted probability, observed frequency, rows) per equal-width probability bin
    that holds any rows."""
    y_true = np.asarray(y_true, dtype=np.float64)
    probabilities = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0)
    index = np.minimum((probabilities * bins).astype(int), bins - 1)
    result = []
    for b in range(bins):
        rows = index == b
        if rows.any():
            result.append((float(probabilities[rows].mean()), float(y_true[rows].mean()), int(rows.sum())))
    return result
