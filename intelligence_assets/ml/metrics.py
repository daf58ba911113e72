"""Model metrics. Classification predictions are probabilities of class 1.

Degenerate inputs do not raise: a score that is undefined for them is float('nan') —
`roc_auc` when `y_true` holds only one class, `information_coefficient` and
`rank_information_coefficient` when either input is constant (zero variance) or has fewer
than two rows. Constant *predictions* with both classes present give AUC 0.5 (every pair is a
tie), as scikit-learn does. Callers that average scores over folds should use nan-aware means.
"""
from __future__ import annotations

import math

import numpy as np

# Probabilities are clipped to [EPSILON, 1 - EPSILON] so a confident miss costs a large but
# finite log loss (the same clip scikit-learn used historically).
LOG_LOSS_EPSILON = 1e-15

TRADABLE_KINDS = ("direction", "barrier", "forward_return")
BARRIER_SIDES = ("peak", "valley")


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n; tied values share the mean of the ranks they span (scipy's 'average')."""
    values = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start index of each run of equal values, then each run's mean rank.
    run_starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    run_ends = np.r_[run_starts[1:], values.size]
    run_mean_ranks = (run_starts + run_ends + 1) / 2.0
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(run_mean_ranks, run_ends - run_starts)
    return ranks


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney rank statistic (ties count one half).
    NaN when `y_true` holds a single class."""
    y_true = np.asarray(y_true).ravel().astype(bool)
    y_score = np.asarray(y_score, dtype=np.float64).ravel()
    positives = int(y_true.sum())
    negatives = y_true.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = average_ranks(y_score)
    positive_rank_sum = ranks[y_true].sum()
    return float((positive_rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def accuracy(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> float:
    """Share of rows where (probability > threshold) equals the label."""
    y_true = np.asarray(y_true).ravel().astype(bool)
    y_prob = np.asarray(y_prob, dtype=np.float64).ravel()
    if y_true.size == 0:
        return float("nan")
    return float(np.mean((y_prob > threshold) == y_true))


def log_loss(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Mean binary cross-entropy with probabilities clipped to [1e-15, 1 - 1e-15]."""
    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    y_prob = np.clip(np.asarray(y_prob, dtype=np.float64).ravel(), LOG_LOSS_EPSILON, 1.0 - LOG_LOSS_EPSILON)
    if y_true.size == 0:
        return float("nan")
    return float(-np.mean(y_true * np.log(y_prob) + (1.0 - y_true) * np.log(1.0 - y_prob)))


def information_coefficient(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Pearson correlation of predictions with outcomes; NaN if either is constant."""
    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.float64).ravel()
    if y_true.size < 2:
        return float("nan")
    true_centered = y_true - y_true.mean()
    pred_centered = y_pred - y_pred.mean()
    denominator = np.sqrt(np.dot(true_centered, true_centered) * np.dot(pred_centered, pred_centered))
    if not np.isfinite(denominator) or denominator == 0.0:
        return float("nan")
    return float(np.clip(np.dot(true_centered, pred_centered) / denominator, -1.0, 1.0))


def rank_information_coefficient(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Spearman correlation (Pearson on average ranks); NaN if either is constant."""
    return information_coefficient(average_ranks(y_true), average_ranks(y_pred))


def strategy_returns(positions: np.ndarray, next_bar_returns: np.ndarray, cost_per_trade: float = 0.0) -> np.ndarray:
    """Per-bar PnL: positions[t] * next_bar_returns[t] - cost_per_trade * |positions[t] - positions[t-1]|.

    The book starts flat, so opening the first position is charged. Non-finite returns (the
    series' last bar has no next bar) count as zero PnL for that bar.
    """
    positions = np.asarray(positions, dtype=np.float64).ravel()
    next_bar_returns = np.asarray(next_bar_returns, dtype=np.float64).ravel()
    if positions.shape != next_bar_returns.shape:
        raise ValueError(f"positions ({positions.size}) and next_bar_returns ({next_bar_returns.size}) differ in length")
    gross = positions * np.where(np.isfinite(next_bar_returns), next_bar_returns, 0.0)
    turnover = np.abs(np.diff(positions, prepend=0.0))
    return gross - cost_per_trade * turnover


def backtest_sharpe(positions: np.ndarray, next_bar_returns: np.ndarray, bars_per_year: float, cost_per_trade: float = 0.0) -> float:
    """Annualised Sharpe ratio of `strategy_returns`: mean / std (ddof=1) * sqrt(bars_per_year).
    0.0 when there are fewer than two bars or the PnL has zero variance (e.g. always flat)."""
    pnl = strategy_returns(positions, next_bar_returns, cost_per_trade)
    if pnl.size < 2:
        return 0.0
    deviation = float(np.std(pnl, ddof=1))
    if not np.isfinite(deviation) or deviation == 0.0:
        return 0.0
    return float(np.mean(pnl) / deviation * np.sqrt(bars_per_year))


def positions_from_predictions(
    spec_kind: str, task: str, predictions: np.ndarray, reference: float, side: str | None = None
) -> np.ndarray | None:
    """Position per bar (+1 long, -1 short, 0 flat) implied by a target's predictions, or None
    when the target does not map to a trade (forward_volatility).

    `reference` is the neutral prediction: the training base rate (or 0.5) for classification,
    0 or the training median for regression. Rules:
      * direction:       +1 if p > reference else -1 (always in the market);
      * barrier, peak:   +1 if p > reference else 0 (long when an up-move is likelier than usual);
      * barrier, valley: -1 if p > reference else 0 (short when a down-move is likelier than usual);
      * forward_return:  sign(prediction - reference).
    `side` ("peak" or "valley") is required for barrier targets.
    """
    predictions = np.asarray(predictions, dtype=np.float64).ravel()
    if spec_kind == "forward_volatility":
        return None
    if spec_kind == "direction":
        return np.where(predictions > reference, 1.0, -1.0)
    if spec_kind == "barrier":
        if side == "peak":
            return np.where(predictions > reference, 1.0, 0.0)
        if side == "valley":
            return np.where(predictions > reference, -1.0, 0.0)
        raise ValueError(f"barrier targets need side in {BARRIER_SIDES}, got {side!r}")
    if spec_kind == "forward_return":
        return np.sign(predictions - reference)
    raise ValueError(f"unknown target kind {spec_kind!r} (task {task!r}); expected one of {TRADABLE_KINDS + ('forward_volatility',)}")


def evaluate(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """{auc, accuracy, log_loss} for classification, {ic, rank_ic} for regression (NaN where undefined)."""
    if task == "classification":
        return {"auc": roc_auc(y_true, y_pred), "accuracy": accuracy(y_true, y_pred), "log_loss": log_loss(y_true, y_pred)}
    if task == "regression":
        return {"ic": information_coefficient(y_true, y_pred), "rank_ic": rank_information_coefficient(y_true, y_pred)}
    raise ValueError(f"unknown task {task!r}; expected 'classification' or 'regression'")


def fold_score(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """One number per fold, higher is better, 0 means no skill: AUC - 0.5 or IC."""
    if task == "classification":
        return roc_auc(y_true, y_pred) - 0.5
    if task == "regression":
        return information_coefficient(y_true, y_pred)
    raise ValueError(f"unknown task {task!r}; expected 'classification' or 'regression'")


def no_skill_score(metric: str, majority_accuracy: float | None = None) -> float:
    """What a model without skill scores by `metric` on the same held-out rows: AUC 0.5, the
    majority class's accuracy, and 0 for IC, rank IC and Sharpe."""
    if metric == "auc":
        return 0.5
    if metric == "accuracy":
        return majority_accuracy if majority_accuracy is not None else 0.5
    return 0.0


def model_is_eligible(trained: bool, leakage_suspect: bool, metric: str, score: float | None, majority_accuracy: float | None) -> bool:
    """May a model serve at all: trained, trusted by the leakage sentinel, and better than no
    skill on its held-out rows."""
    if not trained or leakage_suspect or score is None or math.isnan(score):
        return False
    return score > no_skill_score(metric, majority_accuracy)
