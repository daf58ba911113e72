import math
import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.metrics import log_loss as sklearn_log_loss

from intelligence_assets.ml.metrics import (
    accuracy,
    backtest_sharpe,
    evaluate,
    finite_or_none,
    fold_score,
    information_coefficient,
    log_loss,
    positions_from_predictions,
    rank_information_coefficient,
    roc_auc,
    strategy_returns,
)


def test_roc_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _trial in range(30):
        n = int(rng.integers(5, 400))
        y = rng.integers(0, 2, n)
        if y.min() == y.max():
            continue
        # Rounded scores create many ties, which is where naive rank AUCs go wrong.
        scores = np.round(rng.normal(size=n) + 0.5 * y, decimals=int(rng.integers(0, 3)))
        assert roc_auc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)


def test_roc_auc_extremes_and_degenerate_inputs():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert roc_auc(y, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert roc_auc(y, np.full(4, 0.3)) == 0.5
    assert math.isnan(roc_auc(np.ones(5), np.arange(5.0)))


def test_accuracy_and_log_loss_match_sklearn():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    probabilities = rng.uniform(0, 1, 300)
    probabilities[:3] = [0.0, 1.0, 0.5]
    assert accuracy(y, probabilities) == pytest.approx(accuracy_score(y, probabilities > 0.5))
    clipped = np.clip(probabilities, 1e-15, 1 - 1e-15)
    assert log_loss(y, probabilities) == pytest.approx(sklearn_log_loss(y, clipped, labels=[0, 1]))
    assert np.isfinite(log_loss(np.array([1, 0]), np.array([0.0, 1.0])))


def test_information_coefficients_match_scipy():
    rng = np.random.default_rng(3)
    truth = rng.normal(size=500)
    prediction = np.round(0.3 * truth + rng.normal(size=500), 1)
    assert information_coefficient(truth, prediction) == pytest.approx(stats.pearsonr(truth, prediction)[0], abs=1e-12)
    assert rank_information_coefficient(truth, prediction) == pytest.approx(
        stats.spearmanr(truth, prediction)[0], abs=1e-12
    )
    assert math.isnan(information_coefficient(truth, np.ones(500)))
    assert math.isnan(rank_information_coefficient(np.ones(500), prediction))


CORRELATIONS = [information_coefficient, rank_information_coefficient]


@pytest.mark.parametrize(
    ("metric", "y_true", "y_pred"),
    [
        *[(metric, [], []) for metric in [roc_auc, accuracy, log_loss, *CORRELATIONS]],
        (roc_auc, [0, 0, 0], [0.1, 0.5, 0.9]),  # one class: no positive-negative pair to order
        (roc_auc, [1, 1], [0.1, 0.9]),
        (roc_auc, [0, 1, 1], [0.1, float("nan"), 0.9]),
        (log_loss, [0, 1], [0.2, float("nan")]),
        *[(metric, [0.5], [0.3]) for metric in CORRELATIONS],  # one row
        *[(metric, [0.1, 0.2, 0.3], [0.4, 0.4, 0.4]) for metric in CORRELATIONS],  # constant prediction
        *[(metric, [0.2, 0.2, 0.2], [0.1, 0.5, 0.9]) for metric in CORRELATIONS],  # constant outcome
        *[(metric, [0.1, 0.2, 0.3], [0.1, float("inf"), 0.9]) for metric in CORRELATIONS],
    ],
)
def test_degenerate_inputs_score_nan_without_raising_or_warning(metric, y_true, y_pred):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn's and SciPy's warnings on such input would be noise
        assert math.isnan(metric(np.array(y_true), np.array(y_pred, dtype=float)))


def test_finite_or_none_keeps_finite_numbers_and_their_text_only():
    assert finite_or_none(0.25) == 0.25 and finite_or_none(np.float32(0.5)) == 0.5 and finite_or_none(3) == 3.0
    assert finite_or_none("0.125") == 0.125  # as MLflow tags hold scores
    for undefined in [None, float("nan"), float("inf"), -np.inf, "nan", "", "n/a", True, np.bool_(False), [1.0]]:
        assert finite_or_none(undefined) is None, undefined


def test_backtest_sharpe_on_a_known_series():
    positions = np.array([1.0, 1.0, -1.0, -1.0])
    returns = np.array([0.01, 0.02, -0.01, 0.03])
    pnl = np.array([0.01, 0.02, 0.01, -0.03])
    expected = pnl.mean() / pnl.std(ddof=1) * math.sqrt(252)
    assert backtest_sharpe(positions, returns, bars_per_year=252) == pytest.approx(expected)


def test_cost_reduces_sharpe_and_is_charged_per_unit_of_turnover():
    rng = np.random.default_rng(4)
    returns = rng.normal(0.001, 0.01, 1000)
    positions = np.sign(returns + rng.normal(0, 0.01, 1000))  # noisy foresight: positive Sharpe
    free = backtest_sharpe(positions, returns, 252)
    costly = backtest_sharpe(positions, returns, 252, cost_per_trade=0.001)
    assert free > 0
    assert costly < free
    pnl = strategy_returns(np.array([1.0, 1.0, -1.0, 0.0]), np.array([0.0, 0.0, 0.0, 0.0]), cost_per_trade=0.5)
    assert np.allclose(pnl, [-0.5, 0.0, -1.0, -0.5])


def test_backtest_sharpe_is_zero_without_variance_and_ignores_missing_returns():
    assert backtest_sharpe(np.zeros(10), np.linspace(-1, 1, 10), 252) == 0.0
    assert backtest_sharpe(np.ones(1), np.ones(1), 252) == 0.0
    with_gap = backtest_sharpe(np.ones(4), np.array([0.01, -0.02, 0.03, np.nan]), 252)
    assert np.isfinite(with_gap)


def test_positions_from_predictions_rules():
    p = np.array([0.2, 0.5, 0.7])
    assert np.array_equal(positions_from_predictions("direction", "classification", p, 0.5), [-1, -1, 1])
    assert np.array_equal(positions_from_predictions("barrier", "classification", p, 0.4, side="peak"), [0, 1, 1])
    assert np.array_equal(positions_from_predictions("barrier", "classification", p, 0.4, side="valley"), [0, -1, -1])
    assert np.array_equal(
        positions_from_predictions("forward_return", "regression", np.array([-0.1, 0.0, 0.2]), 0.0), [-1, 0, 1]
    )
    assert positions_from_predictions("forward_volatility", "regression", p, 0.0) is None
    with pytest.raises(ValueError):
        positions_from_predictions("barrier", "classification", p, 0.4)
    with pytest.raises(ValueError):
        positions_from_predictions("momentum", "classification", p, 0.4)


def test_evaluate_and_fold_score_keys():
    y = np.array([0, 1, 0, 1])
    p = np.array([0.2, 0.9, 0.4, 0.6])
    assert set(evaluate("classification", y, p)) == {"auc", "accuracy", "log_loss"}
    assert evaluate("classification", y, p)["auc"] == 1.0
    assert fold_score("classification", y, p) == 0.5
    truth = np.array([0.1, -0.2, 0.3, 0.0])
    assert set(evaluate("regression", truth, truth * 2)) == {"ic", "rank_ic"}
    assert fold_score("regression", truth, truth * 2) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        evaluate("ranking", y, p)
