"""Target ranking: how predictable is a target, under purged walk-forward CV with quick models.

Each walk-forward fold fits a small LightGBM and the linear family on the fold's training rows
(early-stopped on its validation slice) and scores predictions on the fold's test rows:
AUC - 0.5 for classification, Pearson IC for regression, so 0 means no skill for both. A
model's score is the mean over folds (folds whose score is undefined, e.g. a single-class test
window, are left out of the mean); its stability is the share of *all* folds with a score
above 0 (an undefined fold is no evidence of skill). The model with the higher score decides.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from intelligence_assets.ml.families import load_family
from intelligence_assets.ml.metrics import finite_or_none
from intelligence_assets.ml.walk_forward import WalkForwardProblem

RANKING_MODELS = ("lightgbm", "linear")
# Bump when ranking changes in a way that neither the families' versions nor the parameters below
# show (folds, scoring, the verdict): part of `target_rankings`' code version.
RANKING_CODE_VERSION = "1"
# The quick models' parameters fixed in code. Configured ones (`quick_lightgbm_rounds`) reach the
# cache fingerprint as config; these reach it through the code version (`ranking_code_version`).
QUICK_MODEL_PARAMS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "lightgbm": MappingProxyType({"num_leaves": 7, "learning_rate": 0.1, "min_data_in_leaf": 50}),
        "linear": MappingProxyType({}),
    }
)


class RankingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_auc_lift: float = Field(default=0.01, ge=0.0, le=0.5, description="Classification bar: mean fold AUC - 0.5.")
    min_ic: float = Field(default=0.03, ge=0.0, le=1.0, description="Regression bar: mean fold IC.")
    min_stability: float = Field(default=0.6, ge=0.0, le=1.0, description="Share of folds whose score is > 0.")
    quick_lightgbm_rounds: int = Field(default=60, ge=5, le=2000)


@dataclass
class TargetRanking:
    task: str
    score: float  # best model's mean fold score (AUC - 0.5, or IC)
    stability: float  # that model's share of folds with score > 0
    best_model: str  # "lightgbm" or "linear"
    fold_scores: dict[str, list[float]] = field(default_factory=dict)  # model -> per-fold score
    passed: bool = False
    bar: float = 0.0
    reason: str = ""  # human-readable pass/fail explanation with the numbers
    model_scores: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> {score, stability}

    def to_dict(self) -> dict:
        raw = asdict(self)
        raw["score"] = finite_or_none(self.score)
        raw["stability"] = finite_or_none(self.stability)
        raw["bar"] = finite_or_none(self.bar)
        raw["passed"] = bool(self.passed)
        raw["fold_scores"] = {
            model: [finite_or_none(score) for score in scores] for model, scores in self.fold_scores.items()
        }
        raw["model_scores"] = {
            model: {key: finite_or_none(value) for key, value in summary.items()}
            for model, summary in self.model_scores.items()
        }
        return raw


def quick_model_params(model: str, settings: RankingSettings) -> dict:
    """Small, fast models: ranking asks whether there is signal, not how much can be squeezed out."""
    fixed = dict(QUICK_MODEL_PARAMS.get(model, {}))
    if model == "lightgbm":
        return {"num_boost_round": settings.quick_lightgbm_rounds, **fixed}
    return fixed


def derived_code_version(base: str, family_versions: Mapping[str, str], fixed_params: Mapping[str, Any]) -> str:
    """The code version of an asset that fits models of its own: `base`, each family's version and
    a short hash of the model parameters fixed in code (none: no hash), e.g.
    `1.lightgbm-1.linear-1.3f2a9c1e`. Bumping a family or editing a parameter changes it, without
    anyone remembering to bump `base`."""
    parts = [base, *(f"{name}-{version}" for name, version in sorted(family_versions.items()))]
    if fixed_params:
        parts.append(hashlib.sha256(json.dumps(fixed_params, sort_keys=True, default=dict).encode()).hexdigest()[:8])
    return ".".join(parts)


def ranking_code_version(
    base: str = RANKING_CODE_VERSION,
    family_versions: Mapping[str, str] | None = None,
    fixed_params: Mapping[str, Any] = QUICK_MODEL_PARAMS,
) -> str:
    """`target_rankings`' code version; the arguments default to what `rank_target` uses."""
    if family_versions is None:
        family_versions = {model: load_family(model).version for model in RANKING_MODELS}
    return derived_code_version(base, family_versions, fixed_params)


def summarise_fold_scores(scores: list[float]) -> tuple[float, float]:
    """(mean of the defined fold scores, share of all folds with score > 0)."""
    values = np.asarray(scores, dtype=np.float64)
    finite = values[np.isfinite(values)]
    mean = float(finite.mean()) if finite.size else float("nan")
    stability = float(np.sum(finite > 0) / values.size) if values.size else 0.0
    return mean, stability


def rank_target(problem: WalkForwardProblem, settings: RankingSettings) -> TargetRanking:
    """Score quick LightGBM and linear models on the problem's folds; the better model's score decides."""
    folds = problem.folds()
    fold_scores: dict[str, list[float]] = {model: [] for model in RANKING_MODELS}
    for model in RANKING_MODELS:
        family = load_family(model)
        params = quick_model_params(model, settings)
        for fold in folds:
            if not problem.learnable(fold):
                fold_scores[model].append(float("nan"))
                continue
            fold_scores[model].append(problem.test_score(problem.fit(family, params, fold), fold))

    model_scores = {}
    for model, scores in fold_scores.items():
        mean, stability = summarise_fold_scores(scores)
        model_scores[model] = {"score": mean, "stability": stability}
    # An undefined score ranks below every defined one; ties go to the first listed model.
    best_model = max(RANKING_MODELS, key=lambda model: _sortable(model_scores[model]["score"]))
    score = model_scores[best_model]["score"]
    stability = model_scores[best_model]["stability"]
    bar = settings.min_auc_lift if problem.task == "classification" else settings.min_ic
    passed, reason = _verdict(score, stability, bar, best_model, fold_scores[best_model], settings.min_stability)
    return TargetRanking(
        task=problem.task,
        score=score,
        stability=stability,
        best_model=best_model,
        fold_scores=fold_scores,
        passed=passed,
        bar=bar,
        reason=reason,
        model_scores=model_scores,
    )


def _sortable(score: float) -> float:
    return score if math.isfinite(score) else -math.inf


def _verdict(
    score: float, stability: float, bar: float, best_model: str, scores: list[float], min_stability: float
) -> tuple[bool, str]:
    positive_folds = sum(1 for value in scores if math.isfinite(value) and value > 0)
    folds = len(scores)
    if not math.isfinite(score):
        return (
            False,
            f"no defined fold score for any model (single-class or constant test windows in all {folds} folds)",
        )
    score_ok = score >= bar
    stable_ok = stability >= min_stability
    if score_ok and stable_ok:
        return (
            True,
            f"passed: score {score:.4f} ({best_model}) >= bar {bar:.4f}, stable in {positive_folds}/{folds} folds",
        )
    problems = []
    if not score_ok:
        problems.append(f"score {score:.4f} ({best_model}) below bar {bar:.4f}")
    if not stable_ok:
        problems.append(
            f"positive in only {positive_folds}/{folds} folds (stability {stability:.2f} < {min_stability:.2f})"
        )
    return False, "; ".join(problems)
