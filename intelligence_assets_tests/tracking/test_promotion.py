"""The promotion rule and rollback, on registry facts."""

from __future__ import annotations

import pytest

from intelligence_assets.tracking.names import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION
from intelligence_assets.tracking.promotion import (
    AliasDecision,
    Candidate,
    PromotionSettings,
    decide_aliases,
    retire,
    roll_back,
)

SETTINGS = PromotionSettings(min_improvement=0.01, min_test_rows=100, challenger_within=0.02)


def candidate(
    version: str,
    score: float,
    family: str = "lightgbm",
    eligible: bool = True,
    test_rows: int = 500,
    rolled_back: bool = False,
) -> Candidate:
    return Candidate(
        version=version, family=family, score=score, test_rows=test_rows, eligible=eligible, rolled_back=rolled_back
    )


def aliases_of(decision: AliasDecision) -> dict[str, str]:
    wanted = {
        CHAMPION: decision.champion,
        PREVIOUS_CHAMPION: decision.previous_champion,
        CHALLENGER: decision.challenger,
    }
    return {alias: version for alias, version in wanted.items() if version is not None}


def test_first_champion_is_the_best_qualified_version() -> None:
    decision = decide_aliases([candidate("1", 0.55, "linear"), candidate("2", 0.58)], {}, None, SETTINGS)
    assert (decision.champion, decision.previous_champion, decision.action) == ("2", None, "promoted")
    assert decision.challenger is None  # 0.55 is more than 0.02 below 0.58


def test_a_new_model_must_beat_the_champion_by_the_minimum_improvement() -> None:
    current = {CHAMPION: "1"}
    kept = decide_aliases([candidate("1", 0.60), candidate("2", 0.605, "xgboost")], current, 0.60, SETTINGS)
    assert (kept.champion, kept.action) == ("1", "kept")
    assert kept.challenger == "2"  # within 0.02 of the champion
    promoted = decide_aliases([candidate("1", 0.60), candidate("2", 0.611, "xgboost")], current, 0.60, SETTINGS)
    assert (promoted.champion, promoted.previous_champion, promoted.action) == ("2", "1", "promoted")
    assert promoted.challenger == "1"


def test_a_champion_no_longer_on_the_leaderboard_is_compared_by_its_recorded_score() -> None:
    # The champion (v1) was retrained since; only the retrained v3 is a candidate now.
    decision = decide_aliases([candidate("3", 0.605)], {CHAMPION: "1"}, 0.60, SETTINGS)
    assert decision.champion == "1"


def test_ineligible_short_or_rolled_back_versions_never_hold_an_alias() -> None:
    candidates = [
        candidate("1", 0.70, eligible=False),  # leakage suspect or no better than no skill
        candidate("2", 0.69, test_rows=50),  # too few held-out rows
        candidate("3", 0.68, rolled_back=True),
        candidate("4", 0.55, "linear"),
    ]
    decision = decide_aliases(candidates, {}, None, SETTINGS)
    assert (decision.champion, decision.challenger) == ("4", None)
    assert decide_aliases(candidates[:3], {}, None, SETTINGS).action == "no champion"


def test_promotion_is_idempotent() -> None:
    candidates = [candidate("1", 0.60), candidate("2", 0.64, "xgboost"), candidate("3", 0.63, "linear")]
    state: dict[str, str] = {CHAMPION: "1"}
    scores = {"1": 0.60, "2": 0.64, "3": 0.63}
    first = decide_aliases(candidates, state, scores[state[CHAMPION]], SETTINGS)
    state = aliases_of(first)
    assert state == {CHAMPION: "2", PREVIOUS_CHAMPION: "1", CHALLENGER: "3"}
    second = decide_aliases(candidates, state, scores[state[CHAMPION]], SETTINGS)
    assert aliases_of(second) == state and second.action == "kept"


def test_rollback_restores_the_previous_champion_and_needs_one() -> None:
    decision = roll_back({CHAMPION: "2", PREVIOUS_CHAMPION: "1", CHALLENGER: "3"}, "live drawdown")
    assert (decision.champion, decision.previous_champion, decision.challenger, decision.action) == (
        "1",
        None,
        "3",
        "rolled back",
    )
    assert "live drawdown" in decision.reason
    with pytest.raises(ValueError, match="previous-champion"):
        roll_back({CHAMPION: "2"}, "no way back")


def test_a_champion_keeps_its_alias_when_its_cell_has_no_qualified_model_now() -> None:
    # E.g. new bars pushed the target below the ranking bar: nothing trained, nothing demoted.
    decision = decide_aliases([], {CHAMPION: "3", PREVIOUS_CHAMPION: "1"}, 0.6, SETTINGS)
    assert (decision.champion, decision.previous_champion, decision.action) == ("3", "1", "kept")


def test_the_challenger_is_measured_against_the_leading_champions_score_else_its_recorded_one() -> None:
    # v1 leads the leaderboard at 0.57 (recorded 0.60 when promoted): 0.555 is within 0.02 of 0.57.
    leading = decide_aliases([candidate("1", 0.57), candidate("2", 0.555)], {CHAMPION: "1"}, 0.60, SETTINGS)
    assert (leading.champion, leading.action, leading.challenger) == ("1", "kept", "2")
    # v1 is off the leaderboard and nothing beats its recorded 0.70: no runner-up is within 0.02 of it.
    off = decide_aliases([candidate("3", 0.60), candidate("2", 0.59)], {CHAMPION: "1"}, 0.70, SETTINGS)
    assert (off.champion, off.action, off.challenger) == ("1", "kept", None)


def test_a_retired_champion_is_replaced_by_the_best_other_version_without_the_margin() -> None:
    current = {CHAMPION: "2", PREVIOUS_CHAMPION: "4", CHALLENGER: "3"}
    candidates = [candidate("2", 0.70), candidate("1", 0.60), candidate("3", 0.59, "linear")]
    decision = retire(candidates, current, SETTINGS, "its model is no longer current")
    assert aliases_of(decision) == {CHAMPION: "1", PREVIOUS_CHAMPION: "4", CHALLENGER: "3"}
    assert decision.action == "retired"
    assert decision.reason == (
        "v2 retired (its model is no longer current); lightgbm v1 (0.6000) is the best qualified current version"
    )
    nobody = retire([candidate("2", 0.70)], {CHAMPION: "2", PREVIOUS_CHAMPION: "2"}, SETTINGS, "symbol left")
    assert (nobody.champion, nobody.previous_champion, nobody.challenger) == (None, None, None)
    assert nobody.reason == "v2 retired (symbol left); no version qualifies, so the cell has no champion"
