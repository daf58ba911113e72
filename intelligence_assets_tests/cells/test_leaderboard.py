"""The leaderboard from models' summaries: ranking within a cell, the candidate, gated cells and
cells without skill, without Dagster."""

from __future__ import annotations

from typing import Any

import polars as pl

from intelligence_assets.cells.leaderboard import LEADERBOARD_SCHEMA, Leaderboard, rank_models
from intelligence_assets.config.universe import Universe


def summary(symbol: str, target: str, auc: float | None, **fields: Any) -> dict[str, Any]:
    trained = auc is not None
    return {
        "symbol": symbol,
        "target": target,
        "task": "classification",
        "trained": trained,
        "metrics": {"auc": auc} if trained else {},
        "baseline": {"majority_accuracy": 0.5} if trained else {},
        "reason": "" if trained else "not trained: score below bar",
        **fields,
    }


SUMMARIES = {
    "linear": {
        "A|up": summary("A", "up", 0.56),
        "B|up": summary("B", "up", 0.48),
        "C|up": summary("C", "up", None),
    },
    "lightgbm": {
        "A|up": summary("A", "up", 0.60),
        "B|up": summary("B", "up", 0.47),
        "C|up": summary("C", "up", None),
    },
    "xgboost": {"A|up": summary("A", "up", 0.70, leakage_suspect=True)},
}


def test_models_rank_best_first_within_their_cell_and_the_best_eligible_is_the_candidate(small_universe: Universe):
    board = rank_models(SUMMARIES, small_universe, {"lightgbm": {"A|up": "f" * 32}})
    assert board.table.schema == pl.Schema(LEADERBOARD_SCHEMA)
    cell_a = board.table.filter(pl.col("symbol") == "A")
    # The too-good xgboost model leads on score but the leakage sentinel distrusts it.
    assert cell_a["family"].to_list() == ["xgboost", "lightgbm", "linear"]
    assert board.candidates.select("symbol", "family", "model_fingerprint").rows() == [("A", "lightgbm", "f" * 32)]
    assert board.table.filter(pl.col("eligible"))["family"].to_list() == ["lightgbm", "linear"]
    # Untrained models (no score) come last in their cell.
    assert board.table["symbol"].to_list() == ["A", "A", "A", "B", "B", "C", "C"]


def test_gated_cells_and_cells_without_skill_are_listed_once(small_universe: Universe):
    board = rank_models(SUMMARIES, small_universe)
    assert board.gated.rows() == [("C", "up", "not trained: score below bar")]
    assert board.without_skill.select("symbol", "target", "best_score").rows() == [("B", "up", 0.48)]


def test_a_stored_leaderboard_gives_the_same_views(small_universe: Universe):
    board = rank_models(SUMMARIES, small_universe)
    again = Leaderboard.of(board.table)
    for view in ("candidates", "gated", "without_skill"):
        assert getattr(again, view).equals(getattr(board, view)), view


def test_no_models_make_an_empty_leaderboard_of_the_same_columns(small_universe: Universe):
    board = rank_models({}, small_universe)
    assert board.table.is_empty() and board.table.schema == pl.Schema(LEADERBOARD_SCHEMA)
    assert board.candidates.is_empty() and board.gated.is_empty() and board.without_skill.is_empty()
