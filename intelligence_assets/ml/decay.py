"""Champion decay: does a model still have the skill it showed on its held-out period?

Skill is a score above no skill (AUC - 0.5, IC - 0). A champion has decayed when, on enough
labelled rows after its held-out period, its skill has fallen below a fraction of its held-out
skill, or below none at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from intelligence_assets.ml.metrics import (
    accuracy,
    information_coefficient,
    no_skill_score,
    rank_information_coefficient,
    roc_auc,
)


def realised_score(metric: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if metric == "auc":
        return roc_auc(y_true, y_pred)
    if metric == "accuracy":
        return accuracy(y_true, y_pred)
    if metric == "ic":
        return information_coefficient(y_true, y_pred)
    if metric == "rank_ic":
        return rank_information_coefficient(y_true, y_pred)
    raise ValueError(f"decay cannot be judged by metric {metric!r}; expected auc, accuracy, ic or rank_ic")


@dataclass(frozen=True)
class DecayVerdict:
    decayed: bool
    rows: int
    recent_score: float | None
    heldout_score: float
    threshold: float | None  # the recent score below which the champion counts as decayed
    reason: str


def assess_decay(
    metric: str, heldout_score: float, y_true: np.ndarray, y_pred: np.ndarray, min_rows: int, max_skill_loss: float
) -> DecayVerdict:
    rows = int(np.asarray(y_true).size)
    if rows < min_rows:
        return DecayVerdict(
            False,
            rows,
            None,
            heldout_score,
            None,
            f"only {rows} labelled rows after the held-out period (need {min_rows})",
        )
    no_skill = no_skill_score(metric)
    recent = realised_score(metric, y_true, y_pred)
    threshold = no_skill + (1.0 - max_skill_loss) * max(heldout_score - no_skill, 0.0)
    if math.isnan(recent):
        return DecayVerdict(
            False, rows, None, heldout_score, threshold, f"{metric} undefined on the last {rows} rows (one class only)"
        )
    decayed = recent < threshold
    verb = "decayed" if decayed else "holds"
    return DecayVerdict(
        decayed,
        rows,
        recent,
        heldout_score,
        threshold,
        f"{verb}: {metric} {recent:.4f} on the last {rows} labelled rows vs {heldout_score:.4f} held out (threshold "
        f"{threshold:.4f})",
    )
