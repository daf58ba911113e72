"""Fit one model family on the held-out split and score it on the final test period.

The family is fitted on the development period (`held_out_split`: training rows plus the
purged, embargoed validation slice for early stopping) and scored once on the held-out test
rows: the task's metrics, a long/short backtest Sharpe for tradable targets, and a naive
baseline on the same rows so a model's numbers can be read against doing nothing clever.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from intelligence_assets.ml.families import ModelFamily, load_family
from intelligence_assets.ml.metrics import (
    accuracy,
    backtest_sharpe,
    evaluate,
    finite_or_none,
    positions_from_predictions,
)
from intelligence_assets.ml.splits import SplitSettings, held_out_split, walk_forward_folds


@dataclass
class TrainingResult:
    model: ModelFamily
    metrics: dict[str, float | None]  # evaluate(...) on the test rows, plus `sharpe` (None when not tradable)
    baseline: dict[str, Any]  # naive reference numbers on the same test rows
    test_predictions: np.ndarray
    test_index: np.ndarray  # row positions of the test period
    training_curve: list[float]
    best_iteration: int | None
    seconds: float  # wall time of the fit alone
    train_rows: int = 0
    validation_rows: int = 0
    test_rows: int = 0
    test_start_row: int = 0
    test_end_row: int = 0  # inclusive
    train_base_rate: float | None = None  # classification: share of 1s in the fitted rows
    test_base_rate: float | None = None
    fold_metrics: list[dict[str, float | None]] = field(
        default_factory=list
    )  # per walk-forward fold, when cross-validated

    def to_dict(self) -> dict:
        """JSON-ready summary (no model, no arrays); NaN becomes None."""
        return {
            "metrics": {key: finite_or_none(value) for key, value in self.metrics.items()},
            "baseline": {
                key: (finite_or_none(value) if isinstance(value, float) else value)
                for key, value in self.baseline.items()
            },
            "training_curve": [finite_or_none(value) for value in self.training_curve],
            "best_iteration": self.best_iteration,
            "seconds": finite_or_none(self.seconds),
            "train_rows": self.train_rows,
            "validation_rows": self.validation_rows,
            "test_rows": self.test_rows,
            "test_start_row": self.test_start_row,
            "test_end_row": self.test_end_row,
            "train_base_rate": finite_or_none(self.train_base_rate),
            "test_base_rate": finite_or_none(self.test_base_rate),
            "fold_metrics": [{key: finite_or_none(value) for key, value in fold.items()} for fold in self.fold_metrics],
        }


def train_and_evaluate(
    family_name: str,
    params: dict,
    x: np.ndarray,
    y: np.ndarray,
    forward_return_1: np.ndarray,
    task: str,
    spec_kind: str,
    label_horizon: int,
    split: SplitSettings,
    seed: int,
    bars_per_year: float,
    cost_per_trade: float = 0.0,
    side: str | None = None,
    cross_validate: bool = False,
) -> TrainingResult:
    """Fit `family_name` on the development period and evaluate it on the held-out test rows.

    `forward_return_1[t]` is the log return from bar t to t+1 (the PnL of a position held at
    t). `side` ("peak"/"valley") is required when `spec_kind` is "barrier". The backtest's
    neutral prediction is the training base rate (classification) or 0 (regression).
    `cross_validate` also fits the family on each walk-forward fold of the development period
    and scores it on that fold's test block (`fold_metrics`): how stable the score is over time.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    forward_return_1 = np.asarray(forward_return_1, dtype=np.float64)
    if x.ndim != 2 or not (x.shape[0] == y.shape[0] == forward_return_1.shape[0]):
        raise ValueError(
            f"x {x.shape}, y {y.shape} and forward_return_1 {forward_return_1.shape} must have one row per bar"
        )
    fold = held_out_split(x.shape[0], label_horizon, split)

    model = load_family(family_name)(task, params, seed)
    started = time.perf_counter()
    model.fit(x[fold.train], y[fold.train], x[fold.validation], y[fold.validation])
    seconds = time.perf_counter() - started

    y_test = y[fold.test]
    test_predictions = model.predict(x[fold.test])
    metrics: dict[str, float | None] = dict(evaluate(task, y_test, test_predictions))

    classification = task == "classification"
    train_base_rate = float(np.mean(y[fold.train])) if classification else None
    test_base_rate = float(np.mean(y_test)) if classification else None
    reference = train_base_rate if classification else 0.0
    positions = positions_from_predictions(spec_kind, task, test_predictions, reference, side=side)
    test_returns = forward_return_1[fold.test]
    metrics["sharpe"] = (
        None if positions is None else backtest_sharpe(positions, test_returns, bars_per_year, cost_per_trade)
    )

    fold_metrics = []
    if cross_validate:
        for fold_number, walk_forward in enumerate(walk_forward_folds(x.shape[0], label_horizon, split), start=1):
            fold_model = load_family(family_name)(task, params, seed)
            fold_model.fit(
                x[walk_forward.train], y[walk_forward.train], x[walk_forward.validation], y[walk_forward.validation]
            )
            scores: dict[str, float | None] = dict(
                evaluate(task, y[walk_forward.test], fold_model.predict(x[walk_forward.test]))
            )
            fold_metrics.append({"fold": float(fold_number), "test_rows": float(walk_forward.test.size), **scores})

    baseline = naive_baseline(task, y[fold.train], y_test, spec_kind, test_returns, bars_per_year, cost_per_trade)
    return TrainingResult(
        model=model,
        metrics=metrics,
        baseline=baseline,
        test_predictions=test_predictions,
        test_index=fold.test,
        training_curve=list(model.training_curve),
        best_iteration=model.best_iteration,
        seconds=seconds,
        train_rows=int(fold.train.size),
        validation_rows=int(fold.validation.size),
        test_rows=int(fold.test.size),
        test_start_row=int(fold.test[0]),
        test_end_row=int(fold.test[-1]),
        train_base_rate=train_base_rate,
        test_base_rate=test_base_rate,
        fold_metrics=fold_metrics,
    )


def naive_baseline(
    task: str,
    y_train: np.ndarray,
    y_test: np.ndarray,
    spec_kind: str,
    test_returns: np.ndarray,
    bars_per_year: float,
    cost_per_trade: float,
) -> dict[str, Any]:
    """What predicting the training set's typical label would score on the test rows.

    Classification: the majority class of the training rows (its accuracy; a constant score has
    AUC 0.5 by construction, so none is reported). Regression: the training mean (a constant
    has no IC). Tradable targets also get the buy-and-hold Sharpe over the test rows.
    """
    y_train = np.asarray(y_train, dtype=np.float64)
    y_test = np.asarray(y_test, dtype=np.float64)
    baseline: dict[str, Any]
    if task == "classification":
        train_rate = float(np.mean(y_train))
        majority_class = int(train_rate > 0.5)
        baseline = {
            "majority_class": majority_class,
            "majority_accuracy": accuracy(y_test, np.full(y_test.size, float(majority_class))),
            "train_base_rate": train_rate,
            "test_base_rate": float(np.mean(y_test)),
        }
    else:
        baseline = {"train_mean": float(np.mean(y_train)), "test_mean": float(np.mean(y_test))}
    tradable = spec_kind != "forward_volatility"
    baseline["buy_and_hold_sharpe"] = (
        backtest_sharpe(np.ones(test_returns.size), test_returns, bars_per_year, cost_per_trade) if tradable else None
    )
    return baseline
