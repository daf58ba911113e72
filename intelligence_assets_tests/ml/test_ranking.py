import json
import math

import numpy as np
import pytest

from intelligence_assets.ml.families import load_family
from intelligence_assets.ml.ranking import (
    QUICK_MODEL_PARAMS,
    RankingSettings,
    TargetRanking,
    WalkForwardProblem,
    quick_model_params,
    rank_target,
    ranking_code_version,
)
from intelligence_assets.ml.selection import selection_code_version
from intelligence_assets.ml.splits import SplitSettings

SPLIT = SplitSettings(folds=4, embargo=5, min_train_rows=200)
ROWS, FEATURES = 2000, 20


def problem(x: np.ndarray, y: np.ndarray, task: str, seed: int) -> WalkForwardProblem:
    """Labels 5 bars ahead, cut by SPLIT; ranking does not look at the names."""
    return WalkForwardProblem(x, y, [f"feature_{column}" for column in range(x.shape[1])], task, 5, SPLIT, seed)


def _noise_rankings(task: str, count: int, settings: RankingSettings) -> list[TargetRanking]:
    """Features that *would* predict the label, but the label is shuffled: no signal survives."""
    rankings = []
    for seed in range(count):
        rng = np.random.default_rng(100 + seed)
        x = rng.normal(size=(ROWS, FEATURES))
        signal = x[:, 0] + x[:, 1] * x[:, 2] + rng.normal(size=ROWS)
        y = rng.permutation((signal > 0).astype(float) if task == "classification" else signal)
        rankings.append(rank_target(problem(x, y, task, seed), settings))
    return rankings


def test_a_problem_needs_one_row_per_label_and_one_name_per_column():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(300, 4)), rng.normal(size=300)
    names = ["a", "b", "c", "d"]
    WalkForwardProblem(x, y, names, "regression", 5, SPLIT, seed=0)
    with pytest.raises(ValueError, match="one column per name"):
        WalkForwardProblem(x, y, names[:3], "regression", 5, SPLIT, seed=0)
    with pytest.raises(ValueError, match="one row per label"):
        WalkForwardProblem(x, y[:-1], names, "regression", 5, SPLIT, seed=0)
    with pytest.raises(ValueError):
        WalkForwardProblem(x[:, 0], y, names[:1], "regression", 5, SPLIT, seed=0)


def test_a_fold_whose_history_holds_one_class_has_no_score():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(ROWS, FEATURES))
    y = (x[:, 0] + rng.normal(size=ROWS) > 0).astype(float)
    first_fold = problem(x, y, "classification", 0).folds()[0]
    y[: first_fold.train.max() + 1] = 0.0  # the rare event never happened before the first test window
    rare = problem(x, y, "classification", 0)
    assert [rare.learnable(fold) for fold in rare.folds()] == [False, True, True, True]
    # The same rows as regression targets are learnable: only a classifier needs both classes.
    assert all(problem(x, y, "regression", 0).learnable(fold) for fold in rare.folds())
    ranking = rank_target(rare, RankingSettings())
    for scores in ranking.fold_scores.values():
        assert math.isnan(scores[0]) and all(math.isfinite(score) for score in scores[1:])
    assert ranking.stability <= 0.75  # an undefined fold is no evidence of skill


# The default bars (AUC lift 0.01, IC 0.03) are lax at this sample size: with ~320 test rows
# per fold the fold-mean AUC of noise has a std of ~0.016 (IC ~0.03) and the best of two models
# is biased upwards, so roughly a third of noise targets clear them (measured over 30 seeds).
# The guard therefore checks the unbiased mean and bars several noise standard deviations out.
NOISE_CLASSIFICATION_BAR = RankingSettings(min_auc_lift=0.05)
NOISE_REGRESSION_BAR = RankingSettings(min_ic=0.1)


@pytest.fixture(scope="module")
def noise_classification_rankings() -> list[TargetRanking]:
    return _noise_rankings("classification", 8, NOISE_CLASSIFICATION_BAR)


def test_leakage_guard_shuffled_labels_score_chance(noise_classification_rankings):
    lightgbm_auc = np.mean(
        [ranking.model_scores["lightgbm"]["score"] + 0.5 for ranking in noise_classification_rankings]
    )
    best_model_auc = np.mean([ranking.score + 0.5 for ranking in noise_classification_rankings])
    # The LightGBM mean is the unbiased check; the best-of-two mean is selected upward by construction.
    assert abs(lightgbm_auc - 0.5) < 0.03, (
        f"mean fold AUC on noise {lightgbm_auc:.4f} (best model {best_model_auc:.4f})"
    )
    assert abs(best_model_auc - 0.5) < 0.03, f"mean best-model fold AUC on noise {best_model_auc:.4f}"


def test_leakage_guard_noise_fails_the_bar(noise_classification_rankings):
    assert not any(ranking.passed for ranking in noise_classification_rankings), [
        r.reason for r in noise_classification_rankings
    ]
    for ranking in noise_classification_rankings:
        assert "below bar 0.0500" in ranking.reason


def test_leakage_guard_regression_noise():
    rankings = _noise_rankings("regression", 8, NOISE_REGRESSION_BAR)
    lightgbm_ic = np.mean([ranking.model_scores["lightgbm"]["score"] for ranking in rankings])
    best_model_ic = np.mean([ranking.score for ranking in rankings])
    assert abs(lightgbm_ic) < 0.03, f"mean fold IC on noise {lightgbm_ic:.4f} (best model {best_model_ic:.4f})"
    assert not any(ranking.passed for ranking in rankings), [ranking.reason for ranking in rankings]


def test_planted_linear_signal_passes():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(ROWS, FEATURES))
    y = (0.6 * x[:, 3] - 0.6 * x[:, 11] + rng.normal(size=ROWS) > 0).astype(float)
    ranking = rank_target(problem(x, y, "classification", 0), RankingSettings())
    assert ranking.passed, ranking.reason
    assert ranking.score > 0.05
    assert ranking.stability == 1.0
    assert ranking.reason.startswith("passed: score ")
    assert ranking.bar == RankingSettings().min_auc_lift
    assert len(ranking.fold_scores["lightgbm"]) == len(ranking.fold_scores["linear"]) == SPLIT.folds


def test_planted_interaction_is_found_by_lightgbm_not_linear():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(ROWS, FEATURES))
    y = (x[:, 4] * x[:, 9] + 0.5 * rng.normal(size=ROWS) > 0).astype(float)
    ranking = rank_target(problem(x, y, "classification", 0), RankingSettings())
    assert ranking.best_model == "lightgbm"
    assert ranking.passed and ranking.score > 0.05, ranking.reason
    assert abs(ranking.model_scores["linear"]["score"]) < 0.05


def test_planted_regression_signal_passes_and_is_deterministic():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(ROWS, FEATURES))
    y = 0.4 * x[:, 0] + 0.3 * np.tanh(x[:, 5]) + rng.normal(size=ROWS)
    first = rank_target(problem(x, y, "regression", 3), RankingSettings())
    second = rank_target(problem(x, y, "regression", 3), RankingSettings())
    assert first.passed and first.score > 0.05, first.reason
    assert first.bar == RankingSettings().min_ic
    assert first.fold_scores == second.fold_scores
    assert first.to_dict() == second.to_dict()


def test_to_dict_is_strict_json_without_nan():
    ranking = TargetRanking(
        task="classification",
        score=float("nan"),
        stability=0.0,
        best_model="lightgbm",
        fold_scores={"lightgbm": [float("nan"), 0.1], "linear": [0.0, -0.1]},
        passed=False,
        bar=0.01,
        reason="no defined fold score",
        model_scores={"lightgbm": {"score": float("nan"), "stability": 0.0}},
    )
    encoded = json.dumps(ranking.to_dict(), allow_nan=False)
    decoded = json.loads(encoded)
    assert decoded["score"] is None
    assert decoded["fold_scores"]["lightgbm"] == [None, 0.1]
    assert decoded["model_scores"]["lightgbm"]["score"] is None


def test_failure_reason_names_the_numbers():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(ROWS, FEATURES))
    y = (0.6 * x[:, 3] + rng.normal(size=ROWS) > 0).astype(float)
    strict = RankingSettings(min_auc_lift=0.45)
    ranking = rank_target(problem(x, y, "classification", 0), strict)
    assert not ranking.passed
    assert f"below bar {0.45:.4f}" in ranking.reason
    assert f"{ranking.score:.4f}" in ranking.reason
    assert not math.isnan(ranking.score)


def test_ranking_code_version_changes_with_its_fixed_params_family_versions_and_base():
    current = ranking_code_version()
    assert current == ranking_code_version()  # deterministic: same code, same version
    real_versions = {model: load_family(model).version for model in ("lightgbm", "linear")}
    assert ranking_code_version(family_versions=real_versions) == current
    lightgbm_params = {**QUICK_MODEL_PARAMS["lightgbm"], "num_leaves": QUICK_MODEL_PARAMS["lightgbm"]["num_leaves"] + 1}
    assert ranking_code_version(fixed_params={**QUICK_MODEL_PARAMS, "lightgbm": lightgbm_params}) != current
    assert ranking_code_version(fixed_params={**QUICK_MODEL_PARAMS, "linear": {"alpha": 1.0}}) != current
    assert ranking_code_version(family_versions={**real_versions, "linear": real_versions["linear"] + "1"}) != current
    assert (
        ranking_code_version(family_versions={**real_versions, "lightgbm": real_versions["lightgbm"] + "1"}) != current
    )
    assert ranking_code_version(base="2") != current


def test_the_hashed_quick_model_params_are_the_ones_ranking_passes():
    settings = RankingSettings(quick_lightgbm_rounds=25)
    assert quick_model_params("lightgbm", settings) == {"num_boost_round": 25, **QUICK_MODEL_PARAMS["lightgbm"]}
    assert quick_model_params("linear", settings) == dict(QUICK_MODEL_PARAMS["linear"])


def test_selection_code_version_changes_with_the_lightgbm_family_version_and_base():
    current = selection_code_version()
    lightgbm = load_family("lightgbm").version
    assert selection_code_version(lightgbm_version=lightgbm) == current
    assert selection_code_version(lightgbm_version=lightgbm + "1") != current
    assert selection_code_version(base="2") != current


def test_target_analysis_assets_carry_the_derived_code_versions(small_universe):
    from intelligence_assets.definitions import build_assets
    from intelligence_assets.defs.assets.target_analysis import FEATURE_SETS, TARGET_RANKINGS

    code_versions = {
        key: version for asset in build_assets(small_universe) for key, version in asset.code_versions_by_key.items()
    }
    assert code_versions[TARGET_RANKINGS] == ranking_code_version()
    assert code_versions[FEATURE_SETS] == selection_code_version()
