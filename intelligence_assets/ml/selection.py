"""Feature selection per target: gain and permutation importance on held-out folds.

Per walk-forward fold, a LightGBM model is fitted (early-stopped on the fold's validation
slice). Two importances are measured per feature:
  * gain: LightGBM's total split gain, normalised to sum 1 within the fold (in-sample: it says
    what the model used, not whether that generalises);
  * permutation: the drop in the fold's test score (AUC - 0.5, or IC) when the feature's test
    column is shuffled, averaged over `permutation_repeats` shuffles (out-of-sample: it says
    whether the feature carries signal the model can use on unseen bars).
A feature is kept when its mean permutation importance is > 0, it is positive in at least
`min_stability` of the folds, and its mean is at least `min_permutation_t` standard errors
above zero (standard error = across-fold std (ddof 1) / sqrt(folds)). The last gate matters:
a pure-noise column's mean permutation importance is positive half the time, and with few
folds the stability rule alone lets about half of the noise through. Kept features are ranked by mean permutation
importance and capped at `max_features`. When fewer than `min_features` qualify, the list is filled up by
mean gain so downstream models always get a usable input set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from intelligence_assets.ml.families import load_family
from intelligence_assets.ml.metrics import finite_or_none, fold_score
from intelligence_assets.ml.ranking import derived_code_version
from intelligence_assets.ml.walk_forward import WalkForwardProblem

SELECTED_BY_PERMUTATION = "permutation"
SELECTED_BY_GAIN_FALLBACK = "gain_fallback"
# Bump when selection changes in a way the LightGBM family's version does not show (importances,
# the keep rules): part of `feature_sets`' code version.
SELECTION_CODE_VERSION = "1"


def selection_code_version(base: str = SELECTION_CODE_VERSION, lightgbm_version: str | None = None) -> str:
    """`feature_sets`' code version: `base` and the version of the LightGBM family that
    `select_features` fits (default: the real one). It fixes no parameter in code: its one,
    `lightgbm_rounds`, is config and reaches the cache fingerprint as such."""
    return derived_code_version(base, {"lightgbm": lightgbm_version or load_family("lightgbm").version}, {})


class SelectionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_features: int = Field(default=15, ge=1)
    min_features: int = Field(default=5, ge=1)
    min_stability: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Share of folds where a kept feature's permutation importance is > 0."
    )
    permutation_repeats: int = Field(default=3, ge=1, le=50)
    lightgbm_rounds: int = Field(default=100, ge=5, le=5000)
    min_permutation_t: float = Field(
        default=2.0,
        ge=0.0,
        description=(
            "Kept features' mean permutation importance / its across-fold standard error must reach this (0 disables)."
        ),
    )

    @model_validator(mode="after")
    def _minimum_within_maximum(self) -> SelectionSettings:
        # select_features would quietly take max_features as the minimum too: a contradiction in
        # the file is a mistake to report, not to settle.
        if self.min_features > self.max_features:
            raise ValueError(f"min_features ({self.min_features}) must not exceed max_features ({self.max_features})")
        return self


@dataclass
class FeatureSelection:
    selected: list[str]  # in descending mean permutation importance
    importances: list[
        dict
    ]  # one row per feature: feature, gain_mean, permutation_mean, permutation_std, stability, selected
    # Rows also carry `permutation_t` and `selected_by` ("permutation", "gain_fallback" or None); they are ordered by
    # descending permutation_mean (undefined last). permutation_std is the spread across folds.

    def to_dict(self) -> dict:
        rows = []
        for row in self.importances:
            rows.append(
                {key: (finite_or_none(value) if isinstance(value, float) else value) for key, value in row.items()}
            )
        return {"selected": list(self.selected), "importances": rows}


def permutation_importance(
    model, x_test: np.ndarray, y_test: np.ndarray, task: str, repeats: int, rng: np.random.Generator
) -> np.ndarray:
    """Mean drop in fold score per column when that column is shuffled; NaN if the score is undefined."""
    baseline = fold_score(task, y_test, model.predict(x_test))
    importances = np.full(x_test.shape[1], np.nan)
    if not math.isfinite(baseline):
        return importances
    shuffled = x_test.copy()
    for column in range(x_test.shape[1]):
        drops = []
        for _ in range(repeats):
            shuffled[:, column] = rng.permutation(x_test[:, column])
            drops.append(baseline - fold_score(task, y_test, model.predict(shuffled)))
        shuffled[:, column] = x_test[:, column]
        # A constant prediction after shuffling makes IC undefined: the feature carried everything.
        finite = [drop for drop in drops if math.isfinite(drop)]
        importances[column] = float(np.mean(finite)) if finite else baseline
    return importances


def normalised_gain(model, n_features: int) -> np.ndarray:
    gain = model.feature_importance()
    if gain is None:
        return np.full(n_features, np.nan)
    gain = np.asarray(gain, dtype=np.float64)
    total = gain.sum()
    return gain / total if total > 0 else np.zeros(n_features)


def select_features(problem: WalkForwardProblem, settings: SelectionSettings) -> FeatureSelection:
    """Rank the problem's features by out-of-sample permutation importance on its walk-forward folds."""
    x, y, task = problem.x, problem.y, problem.task
    n_features = problem.feature_count
    family = load_family("lightgbm")
    params = {"num_boost_round": settings.lightgbm_rounds}
    rng = np.random.default_rng(problem.seed)
    gains, permutations = [], []
    for fold in problem.folds():
        if not problem.learnable(fold):
            continue
        model = problem.fit(family, params, fold)
        gains.append(normalised_gain(model, n_features))
        permutations.append(
            permutation_importance(model, x[fold.test], y[fold.test], task, settings.permutation_repeats, rng)
        )

    gain_by_fold = np.array(gains).reshape(-1, n_features)
    permutation_by_fold = np.array(permutations).reshape(-1, n_features)
    gain_mean = _nanmean_columns(gain_by_fold)
    permutation_mean = _nanmean_columns(permutation_by_fold)
    permutation_std = _nanstd_columns(permutation_by_fold)
    permutation_t = _t_statistics(permutation_by_fold)
    # An undefined fold (NaN) is no evidence of importance: it counts in the denominator only.
    stability = (permutation_by_fold > 0).sum(axis=0) / max(permutation_by_fold.shape[0], 1)

    qualifies = (
        np.isfinite(permutation_mean)
        & (permutation_mean > 0)
        & (stability >= settings.min_stability)
        & (permutation_t >= settings.min_permutation_t)
    )
    by_permutation = sorted(
        (int(column) for column in np.flatnonzero(qualifies)), key=lambda column: (-permutation_mean[column], column)
    )
    chosen = by_permutation[: settings.max_features]
    selected_by = dict.fromkeys(chosen, SELECTED_BY_PERMUTATION)
    wanted = min(settings.min_features, settings.max_features, n_features)
    if len(chosen) < wanted:
        remaining = [column for column in range(n_features) if column not in selected_by]
        remaining.sort(key=lambda column: (-_sortable(gain_mean[column]), column))
        for column in remaining[: wanted - len(chosen)]:
            chosen.append(column)
            selected_by[column] = SELECTED_BY_GAIN_FALLBACK

    feature_names = problem.feature_names
    order = sorted(range(n_features), key=lambda column: (-_sortable(permutation_mean[column]), column))
    importances = [
        {
            "feature": feature_names[column],
            "gain_mean": float(gain_mean[column]),
            "permutation_mean": float(permutation_mean[column]),
            "permutation_std": float(permutation_std[column]),
            "permutation_t": float(permutation_t[column]),
            "stability": float(stability[column]),
            "selected": column in selected_by,
            "selected_by": selected_by.get(column),
        }
        for column in order
    ]
    return FeatureSelection(selected=[feature_names[column] for column in chosen], importances=importances)


def _sortable(value: float) -> float:
    return float(value) if math.isfinite(value) else -math.inf


def _nanmean_columns(values: np.ndarray) -> np.ndarray:
    counts = np.isfinite(values).sum(axis=0)
    sums = np.where(np.isfinite(values), values, 0.0).sum(axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _t_statistics(values: np.ndarray) -> np.ndarray:
    """Per column: mean / (std (ddof 1) / sqrt(n)) over the defined folds. With fewer than two
    defined folds the spread is unknown, so the gate cannot apply: +inf (or NaN if none)."""
    t_values = np.full(values.shape[1], np.nan)
    for column in range(values.shape[1]):
        defined = values[:, column][np.isfinite(values[:, column])]
        if defined.size == 0:
            continue
        if defined.size == 1:
            t_values[column] = math.inf
            continue
        spread = float(np.std(defined, ddof=1))
        mean = float(defined.mean())
        if spread > 0:
            t_values[column] = mean / (spread / math.sqrt(defined.size))
        else:
            # Identical importances in every fold: as certain as it gets, in the mean's direction.
            t_values[column] = math.copysign(math.inf, mean) if mean != 0 else 0.0
    return t_values


def _nanstd_columns(values: np.ndarray) -> np.ndarray:
    mean = _nanmean_columns(values)
    counts = np.isfinite(values).sum(axis=0)
    squared = np.where(np.isfinite(values), (values - mean) ** 2, 0.0).sum(axis=0)
    return np.where(counts > 0, np.sqrt(squared / np.maximum(counts, 1)), np.nan)
