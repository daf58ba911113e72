import json

import numpy as np
import pytest

from intelligence_assets.ml.selection import FeatureSelection, SelectionSettings, select_features
from intelligence_assets.ml.splits import SplitSettings
from intelligence_assets.ml.walk_forward import WalkForwardProblem

SPLIT = SplitSettings(folds=4, embargo=5, min_train_rows=200)
ROWS, FEATURES = 2500, 20
NAMES = [f"feature_{column:02d}" for column in range(FEATURES)]
INFORMATIVE = ["feature_03", "feature_07", "feature_12"]


def _planted_classification(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(ROWS, FEATURES))
    y = (1.0 * x[:, 3] + 0.8 * x[:, 7] - 0.6 * x[:, 12] + rng.normal(size=ROWS) > 0).astype(float)
    return x, y


@pytest.fixture(scope="module")
def planted_selection() -> FeatureSelection:
    x, y = _planted_classification(seed=1)
    return select_features(
        WalkForwardProblem(x, y, NAMES, "classification", 3, SPLIT, seed=0), SelectionSettings(min_features=3)
    )


def test_planted_features_are_selected_and_rank_on_top(planted_selection):
    assert planted_selection.selected[:3] == INFORMATIVE  # in order of planted strength
    rows = {row["feature"]: row for row in planted_selection.importances}
    for name in INFORMATIVE:
        assert rows[name]["selected_by"] == "permutation"
        assert rows[name]["stability"] == 1.0
        assert rows[name]["permutation_mean"] > 0.02
    weakest_planted_gain = min(rows[name]["gain_mean"] for name in INFORMATIVE)
    assert all(row["gain_mean"] < weakest_planted_gain for name, row in rows.items() if name not in INFORMATIVE)


def test_noise_features_are_mostly_not_selected(planted_selection):
    noise_selected = [name for name in planted_selection.selected if name not in INFORMATIVE]
    assert len(noise_selected) <= (FEATURES - len(INFORMATIVE)) // 3, noise_selected


def test_importance_rows_are_complete_and_ordered(planted_selection):
    rows = planted_selection.importances
    assert sorted(row["feature"] for row in rows) == NAMES
    means = [row["permutation_mean"] for row in rows]
    assert means == sorted(means, reverse=True)
    for row in rows:
        assert row["selected"] == (row["feature"] in planted_selection.selected)
        assert 0.0 <= row["stability"] <= 1.0
        assert row["permutation_std"] >= 0.0
    assert abs(sum(row["gain_mean"] for row in rows) - 1.0) < 1e-9  # per-fold gains sum to 1
    json.dumps(planted_selection.to_dict(), allow_nan=False)


def test_selection_is_deterministic_for_a_fixed_seed(planted_selection):
    x, y = _planted_classification(seed=1)
    again = select_features(
        WalkForwardProblem(x, y, NAMES, "classification", 3, SPLIT, seed=0), SelectionSettings(min_features=3)
    )
    assert again.to_dict() == planted_selection.to_dict()


def test_pure_noise_falls_back_to_gain_and_respects_caps():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(ROWS, 8))
    y = rng.normal(size=ROWS)
    names = NAMES[:8]
    selection = select_features(
        WalkForwardProblem(x, y, names, "regression", 1, SPLIT, seed=0),
        SelectionSettings(min_features=4, max_features=6),
    )
    assert 4 <= len(selection.selected) <= 6
    by_name = {row["feature"]: row for row in selection.importances}
    fallback = [name for name in selection.selected if by_name[name]["selected_by"] == "gain_fallback"]
    assert fallback, "pure noise should need the gain fallback to reach min_features"
    # The fallback takes the highest-gain features among those not already kept.
    not_kept = [row for row in selection.importances if row["selected_by"] != "permutation"]
    top_gain = sorted(not_kept, key=lambda row: -row["gain_mean"])[: len(fallback)]
    assert {row["feature"] for row in top_gain} == set(fallback)


def test_planted_regression_signal_is_selected():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(ROWS, 10))
    y = 0.5 * x[:, 2] + 0.4 * np.abs(x[:, 6]) + rng.normal(size=ROWS)
    names = NAMES[:10]
    selection = select_features(
        WalkForwardProblem(x, y, names, "regression", 1, SPLIT, seed=0),
        SelectionSettings(min_features=1, max_features=2),
    )
    assert selection.selected == ["feature_02", "feature_06"]
