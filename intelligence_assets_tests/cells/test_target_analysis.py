"""A cell's labels, ranking and feature selection on synthetic bars with a planted signal, without Dagster."""

from __future__ import annotations

import json
import math

import polars as pl
import pytest

from intelligence_assets.cells.target_analysis import (
    CellFeatureSet,
    RankedCell,
    TargetCell,
    label_cell,
    rank_cell,
    select_cell_features,
)
from intelligence_assets.config.universe import Universe
from intelligence_assets.ml.synthetic import PLANTED_FEATURE
from intelligence_assets_tests.cells.conftest import DIRECTION, VOLATILITY, SymbolData


def not_read() -> pl.DataFrame:
    raise AssertionError("a gated cell must not read its features or labels")


@pytest.fixture(scope="module")
def ranked(small_universe: Universe, planted: SymbolData) -> RankedCell:
    cell = TargetCell(small_universe, "SIGNAL", DIRECTION)
    return rank_cell(cell, planted.features, planted.labels[DIRECTION])


@pytest.fixture(scope="module")
def selected(small_universe: Universe, planted: SymbolData, ranked: RankedCell) -> CellFeatureSet:
    cell = TargetCell(small_universe, "SIGNAL", DIRECTION)
    return select_cell_features(cell, ranked.value, lambda: planted.features, lambda: planted.labels[DIRECTION])


def test_labels_end_where_the_label_window_runs_past_the_last_bar(small_universe: Universe, planted: SymbolData):
    direction = label_cell(TargetCell(small_universe, "SIGNAL", DIRECTION), planted.bars)
    assert direction.table.height == planted.bars.height
    assert direction.labelled.height == planted.bars.height - 1  # the next bar's direction: none after the last
    assert direction.labelled["timestamp"].max() < planted.bars["timestamp"].max()
    assert set(direction.balance) == {"positive_rate"} and 0.4 < direction.balance["positive_rate"] < 0.6

    volatility = label_cell(TargetCell(small_universe, "SIGNAL", VOLATILITY), planted.bars)
    assert volatility.labelled.height == planted.bars.height - 5
    assert set(volatility.balance) == {"label_mean", "label_std"}
    assert volatility.balance["label_mean"] > 0 and volatility.balance["label_std"] > 0


def test_a_planted_signal_passes_ranking_and_the_stored_value_is_strict_json(ranked: RankedCell):
    assert ranked.ranking.passed, ranked.ranking.reason
    value = ranked.value
    assert (value["symbol"], value["target"], value["task"]) == ("SIGNAL", DIRECTION, "classification")
    # Rows with a label and every feature: the bars less the features' warm-up and the last bar.
    assert 0 < value["rows"] == ranked.rows < 1600
    assert value["passed"] is True and value["reason"] == ranked.ranking.reason
    json.dumps(value, allow_nan=False)


def test_fold_scores_are_tabled_one_row_per_model_one_column_per_fold(small_universe: Universe, ranked: RankedCell):
    folds = small_universe.split.folds
    assert ranked.fold_score_columns == ["model", *(f"fold_{number}" for number in range(1, folds + 1))]
    rows = {row["model"]: row for row in ranked.fold_score_rows}
    assert set(rows) == set(ranked.ranking.fold_scores)
    for model, scores in ranked.ranking.fold_scores.items():
        assert [rows[model][f"fold_{number}"] for number in range(1, folds + 1)] == [
            None if math.isnan(score) else score for score in scores
        ]


def test_selection_keeps_the_planted_feature_and_orders_importances(selected: CellFeatureSet):
    assert not selected.gated and selected.reason == ""
    assert PLANTED_FEATURE in selected.selected
    assert selected.candidates > len(selected.selected)
    value = selected.value
    assert (value["symbol"], value["target"], value["gated"]) == ("SIGNAL", DIRECTION, False)
    assert value["selected"] == selected.selected
    assert len(value["importances"]) == selected.candidates
    json.dumps(value, allow_nan=False)
    importance = [row["permutation_mean"] or 0.0 for row in selected.importance_rows]
    assert importance == sorted(importance, reverse=True)
    assert selected.importance_rows[0]["feature"] == PLANTED_FEATURE


def test_a_gated_cell_selects_nothing_says_why_and_reads_no_data(small_universe: Universe):
    cell = TargetCell(small_universe, "NOISE", DIRECTION)
    ranking = {"passed": False, "reason": "score 0.0010 (linear) below bar 0.0100", "score": 0.001}
    gated = select_cell_features(cell, ranking, not_read, not_read)
    assert gated.gated and gated.selected == [] and gated.importance_rows == []
    assert gated.reason == "not trained: score 0.0010 (linear) below bar 0.0100"
    assert gated.ranking_score == 0.001
    assert gated.value == {
        "symbol": "NOISE",
        "target": DIRECTION,
        "gated": True,
        "reason": gated.reason,
        "selected": [],
        "importances": [],
    }


def test_ranking_and_selection_judge_the_same_rows_and_folds(small_universe: Universe, planted: SymbolData):
    cell = TargetCell(small_universe, "SIGNAL", VOLATILITY)
    problem = cell.problem(planted.features, planted.labels[VOLATILITY])
    again = cell.problem(planted.features, planted.labels[VOLATILITY])
    assert (problem.task, problem.label_horizon, problem.seed) == ("regression", 5, small_universe.seed)
    assert problem.feature_names == [column for column in planted.features.columns if column != "timestamp"]
    for fold, same in zip(problem.folds(), again.folds(), strict=True):
        assert (fold.train == same.train).all() and (fold.test == same.test).all()
