"""The problem target ranking and feature selection share: a labelled series in time order, cut
into purged, embargoed walk-forward folds (`ml/splits.py`), with one way to fit and score a model
family on a fold."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from intelligence_assets.ml.dataset import Dataset
from intelligence_assets.ml.families.base import ModelFamily
from intelligence_assets.ml.metrics import fold_score
from intelligence_assets.ml.splits import Fold, SplitSettings, walk_forward_folds


# Frozen, compared by identity: fields are numpy arrays, whose `==` is element-wise.
@dataclass(frozen=True, eq=False)
class WalkForwardProblem:
    """A labelled series in time order and how walk-forward CV cuts it: what target ranking and
    feature selection both fit their models on and score them by. Built once per symbol x
    target, so both judge the same rows, folds and seed."""

    x: np.ndarray  # (rows, features), rows in time order
    y: np.ndarray  # (rows,), one label per row
    feature_names: Sequence[str]  # one per column of x
    task: str  # "classification" or "regression"
    label_horizon: int  # bars a label looks ahead: what the folds purge and embargo by
    split: SplitSettings
    seed: int

    def __post_init__(self) -> None:
        x, y = np.asarray(self.x), np.asarray(self.y)
        if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[1] != len(self.feature_names):
            raise ValueError(
                f"x {x.shape} must have one row per label (y {y.shape}) and one column per name "
                f"({len(self.feature_names)})"
            )
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "feature_names", list(self.feature_names))

    @classmethod
    def from_dataset(
        cls, dataset: Dataset, task: str, label_horizon: int, split: SplitSettings, seed: int
    ) -> WalkForwardProblem:
        return cls(dataset.x, dataset.y, dataset.feature_names, task, label_horizon, split, seed)

    @property
    def feature_count(self) -> int:
        return self.x.shape[1]

    def folds(self) -> list[Fold]:
        """The walk-forward folds over the development period; ValueError when the series is too short."""
        return walk_forward_folds(self.x.shape[0], self.label_horizon, self.split)

    def learnable(self, fold: Fold) -> bool:
        """False when a classification fold's history holds one class: a rare event absent from it
        leaves nothing to learn, so the fold has no score."""
        return self.task != "classification" or np.unique(self.y[fold.train]).size >= 2

    def fit(self, family: type[ModelFamily], params: dict[str, Any], fold: Fold) -> ModelFamily:
        """`family` fitted on the fold's training rows, early-stopped on its validation slice."""
        return family(self.task, params, self.seed).fit(
            self.x[fold.train], self.y[fold.train], self.x[fold.validation], self.y[fold.validation]
        )

    def test_score(self, model: ModelFamily, fold: Fold) -> float:
        """The model's score on the fold's test rows: AUC - 0.5, or IC; NaN where undefined."""
        return fold_score(self.task, self.y[fold.test], model.predict(self.x[fold.test]))
