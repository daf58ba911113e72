"""Model metrics: scikit-learn, SciPy and NumPy calls behind one rule for degenerate inputs.

Classification predictions are probabilities of class 1. Degenerate inputs do not raise: a
score that is undefined for them is float('nan') — every metric on empty input, `roc_auc`
when `y_true` holds only one class, `information_coefficient` and
`rank_information_coefficient` when either input is constant (zero variance) or has fewer than
two rows, and `roc_auc`, `log_loss` and both coefficients when an input holds NaN or an
infinity. Constant *predictions* with both classes present give AUC 0.5 (every pair is a tie),
as scikit-learn does. Callers that average scores over folds should use nan-aware means.
"""

from __future__ import annotations

import math

import numpy as np

# SciPy and scikit-learn are imported inside the functions that use them: importing them takes
# about a second and a half, which every process loading the Dagster definitions (they import
# this module) would pay before doing anything.

# Probabilities are clipped to [EPSILON, 1 - EPSILON] so a confident miss costs a large but
# finite log loss (scikit-learn's historical clip; it now clips only at float64's resolution).
LOG_LOSS_EPSILON = 1e-15

TRADABLE_KINDS = ("direction", "barrier", "forward_return")
BARRIER_SIDES = ("peak", "valley")

_UNDEFINED = float("nan")


def finite_or_none(value: object) -> float | None:
    """`value` as a float when it is a finite number or the text of one (MLflow tags hold scores
    as text), else None: NaN, infinities, booleans, None and anything else. JSON and MLflow
    have no NaN, so this is how an undefined score is written."""
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _vector(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).ravel()


def _varies(values: np.ndarray) -> bool:
    """Whether a correlation with `values` is defined: two or more finite values, not all equal."""
    return values.size >= 2 and bool(np.isfinite(values).all()) and bool(values.min() != values.max())


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half); NaN when `y_true` holds a single class.

    The Mann-Whitney statistic on SciPy's average ranks: equal to scikit-learn's roc_auc_score
    (tested) at about a thirtieth of its cost, which counts because permutation importance
    scores every shuffled column of every fold."""
    y_true = np.asarray(y_true).ravel().astype(bool)
    y_score = _vector(y_score)
    positives = int(y_true.sum())
    negatives = y_true.size - positives
    if positives == 0 or negatives == 0 or not np.isfinite(y_score).all():
        return _UNDEFINED
    from scipy.stats import rankdata

    positive_rank_sum = rankdata(y_score)[y_true].sum()
    return float((positive_rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def accuracy(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> float:
    """Share of rows where (probability > threshold) equals the label."""
    y_true = np.asarray(y_true).ravel().astype(bool)
    if y_true.size == 0:
        return _UNDEFINED
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(y_true, _vector(y_prob) > threshold))


def log_loss(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Mean binary cross-entropy with probabilities clipped to [LOG_LOSS_EPSILON, 1 - LOG_LOSS_EPSILON]."""
    y_true = _vector(y_true)
    y_prob = _vector(y_prob)
    if y_true.size == 0 or not np.isfinite(y_prob).all():
        return _UNDEFINED
    from sklearn.metrics import log_loss as binary_cross_entropy

    clipped = np.clip(y_prob, LOG_LOSS_EPSILON, 1.0 - LOG_LOSS_EPSILON)
    # `labels`: a fold whose rows hold one class is still scored against both.
    return float(binary_cross_entropy(y_true, clipped, labels=[0, 1]))


def information_coefficient(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Pearson correlation of predictions with outcomes; NaN if either is constant.

    NumPy's rather than SciPy's pearsonr, which also computes a p-value at about eight times
    the cost: permutation importance scores every shuffled column of every fold."""
    y_true, y_pred = _vector(y_true), _vector(y_pred)
    if not (_varies(y_true) and _varies(y_pred)):
        return _UNDEFINED
    return float(np.corrcoef(y_true, y_pred)[0, 1])


def rank_information_coefficient(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Spearman correlation (Pearson on average ranks); NaN if either is constant."""
    y_true, y_pred = _vector(y_true), _vector(y_pred)
    if not (_varies(y_true) and _varies(y_pred)):
        return _UNDEFINED
    from scipy.stats import spearmanr

    return float(spearmanr(y_true, y_pred).statistic)


def strategy_returns(positions: np.ndarray, next_bar_returns: np.ndarray, cost_per_trade: float = 0.0) -> np.ndarray:
    """Per-bar PnL: positions[t] * next_bar_returns[t] - cost_per_trade * |positions[t] - positions[t-1]|.

    The book starts flat, so opening the first position is charged. Non-finite returns (the
    series' last bar has no next bar) count as zero PnL for that bar.
    """
    positions = np.asarray(positions, dtype=np.float64).ravel()
    next_bar_returns = np.asarray(next_bar_returns, dtype=np.float64).ravel()
    if positions.shape != next_bar_returns.shape:
        raise ValueError(
            f"positions ({positions.size}) and next_bar_returns ({next_bar_returns.size}) differ in length"
        )
    gross = positions * np.where(np.isfinite(next_bar_returns), next_bar_returns, 0.0)
    turnover = np.abs(np.diff(positions, prepend=0.0))
    return gross - cost_per_trade * turnover


def backtest_sharpe(
    positions: np.ndarray, next_bar_returns: np.ndarray, bars_per_year: float, cost_per_trade: float = 0.0
) -> float:
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
    raise ValueError(
        f"unknown target kind {spec_kind!r} (task {task!r}); expected one of {TRADABLE_KINDS + ('forward_volatility',)}"
    )


def evaluate(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """{auc, accuracy, log_loss} for classification, {ic, rank_ic} for regression (NaN where undefined)."""
    if task == "classification":
        return {
            "auc": roc_auc(y_true, y_pred),
            "accuracy": accuracy(y_true, y_pred),
            "log_loss": log_loss(y_true, y_pred),
        }
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


def model_is_eligible(
    trained: bool, leakage_suspect: bool, metric: str, score: float | None, majority_accuracy: float | None
) -> bool:
    """May a model serve at all: trained, trusted by the leakage sentinel, and better than no
    skill on its held-out rows."""
    if not trained or leakage_suspect or score is None or math.isnan(score):
        return False
    return score > no_skill_score(metric, majority_accuracy)
