import json
import math

import numpy as np
import pytest

from intelligence_assets.ml.metrics import backtest_sharpe, positions_from_predictions
from intelligence_assets.ml.splits import SplitSettings, held_out_split
from intelligence_assets.ml.training import TrainingResult, train_and_evaluate

SPLIT = SplitSettings(folds=4, embargo=5, min_train_rows=200)
ROWS = 3000
BARS_PER_YEAR = 252 * 24


def _planted_returns(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features at bar t that partly predict the return from t to t+1."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(ROWS, 10))
    next_bar_return = 0.01 * (0.5 * x[:, 0] - 0.3 * x[:, 1]) + rng.normal(0.0, 0.01, ROWS)
    return x, next_bar_return


def _train(family: str, seed: int = 0, **overrides) -> TrainingResult:
    x, next_bar_return = _planted_returns(seed=5)
    arguments = {
        "family_name": family,
        "params": {},
        "x": x,
        "y": (next_bar_return > 0).astype(float),
        "forward_return_1": next_bar_return,
        "task": "classification",
        "spec_kind": "direction",
        "label_horizon": 1,
        "split": SPLIT,
        "seed": seed,
        "bars_per_year": BARS_PER_YEAR,
    }
    arguments.update(overrides)
    return train_and_evaluate(**arguments)


@pytest.fixture(scope="module")
def lightgbm_direction() -> TrainingResult:
    return _train("lightgbm")


def test_planted_signal_scores_on_the_held_out_period(lightgbm_direction):
    result = lightgbm_direction
    assert result.metrics["auc"] > 0.6
    assert set(result.metrics) == {"auc", "accuracy", "log_loss", "sharpe"}
    assert result.metrics["accuracy"] > result.baseline["majority_accuracy"]
    assert result.metrics["sharpe"] is not None and result.metrics["sharpe"] > 0
    assert result.best_iteration is not None and result.training_curve
    assert result.seconds > 0


def test_evaluates_exactly_the_held_out_rows(lightgbm_direction):
    result = lightgbm_direction
    expected = held_out_split(ROWS, 1, SPLIT)
    assert np.array_equal(result.test_index, expected.test)
    assert result.test_rows == expected.test.size == result.test_predictions.size
    assert result.train_rows == expected.train.size
    assert result.validation_rows == expected.validation.size
    assert (result.test_start_row, result.test_end_row) == (int(expected.test[0]), ROWS - 1)
    # Sharpe is the backtest of the test predictions against the training base rate.
    x, next_bar_return = _planted_returns(seed=5)
    y = (next_bar_return > 0).astype(float)
    assert result.train_base_rate == pytest.approx(y[expected.train].mean())
    assert result.test_base_rate == pytest.approx(y[expected.test].mean())
    positions = positions_from_predictions(
        "direction", "classification", result.test_predictions, result.train_base_rate
    )
    assert result.metrics["sharpe"] == pytest.approx(
        backtest_sharpe(positions, next_bar_return[expected.test], BARS_PER_YEAR)
    )


def test_to_dict_is_json_without_the_model(lightgbm_direction):
    encoded = lightgbm_direction.to_dict()
    assert "model" not in encoded
    decoded = json.loads(json.dumps(encoded, allow_nan=False))
    assert decoded["metrics"]["auc"] == pytest.approx(lightgbm_direction.metrics["auc"])
    assert decoded["baseline"]["majority_class"] in (0, 1)


def test_training_is_deterministic(lightgbm_direction):
    again = _train("lightgbm")
    assert np.array_equal(again.test_predictions, lightgbm_direction.test_predictions)
    assert again.metrics == lightgbm_direction.metrics


def test_trading_costs_lower_the_sharpe(lightgbm_direction):
    costly = _train("lightgbm", cost_per_trade=0.002)
    assert costly.metrics["sharpe"] < lightgbm_direction.metrics["sharpe"]


def test_volatility_target_is_not_traded():
    x, next_bar_return = _planted_returns(seed=6)
    volatility = np.abs(next_bar_return) + 0.001 * np.abs(x[:, 2])
    result = _train("linear", y=volatility, task="regression", spec_kind="forward_volatility")
    assert result.metrics["sharpe"] is None
    assert result.baseline["buy_and_hold_sharpe"] is None
    assert set(result.metrics) == {"ic", "rank_ic", "sharpe"}
    assert result.train_base_rate is None


def test_forward_return_regression_trades_the_sign():
    x, next_bar_return = _planted_returns(seed=5)
    result = _train("linear", y=next_bar_return, task="regression", spec_kind="forward_return")
    assert result.metrics["ic"] > 0.2
    assert result.metrics["sharpe"] > 0
    assert math.isfinite(result.baseline["buy_and_hold_sharpe"])


def test_barrier_target_needs_a_side():
    with pytest.raises(ValueError, match="side"):
        _train("linear", spec_kind="barrier")
    valley = _train("linear", spec_kind="barrier", side="valley")
    assert valley.metrics["sharpe"] is not None
