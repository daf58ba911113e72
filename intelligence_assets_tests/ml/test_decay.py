"""Champion decay on realised scores."""

from __future__ import annotations

import numpy as np
import pytest

from intelligence_assets.ml.decay import assess_decay


def test_a_model_that_keeps_its_skill_holds_and_one_that_lost_it_has_decayed() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 400).astype(float)
    skilled = y * 0.3 + rng.uniform(size=400)  # AUC about 0.75
    random = rng.uniform(size=400)  # AUC about 0.5
    holds = assess_decay("auc", 0.74, y, skilled, min_rows=30, max_skill_loss=0.5)
    assert not holds.decayed and holds.recent_score > 0.7
    decayed = assess_decay("auc", 0.74, y, random, min_rows=30, max_skill_loss=0.5)
    assert decayed.decayed and decayed.threshold == pytest.approx(0.5 + 0.5 * 0.24)
    assert "decayed" in decayed.reason


def test_regression_skill_is_judged_by_ic_and_few_rows_are_not_judged() -> None:
    rng = np.random.default_rng(5)
    y = rng.normal(size=200)
    anti = -y + rng.normal(size=200)
    assert assess_decay("rank_ic", 0.3, y, anti, min_rows=30, max_skill_loss=0.5).decayed
    early = assess_decay("rank_ic", 0.3, y[:10], anti[:10], min_rows=30, max_skill_loss=0.5)
    assert not early.decayed and early.recent_score is None and "only 10" in early.reason
    with pytest.raises(ValueError, match="sharpe"):
        assess_decay("sharpe", 1.0, y, anti, min_rows=30, max_skill_loss=0.5)
