"""The ML core end to end (features -> labels -> splits -> ranking / selection / training),
checked against the two facts an honest pipeline must get right: shuffled labels score at
chance, and a planted signal is found where it was planted."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from intelligence_assets.config.universe import DEFAULT_UNIVERSE_PATH, load_universe
from intelligence_assets.ml.bars import read_bars_parquet
from intelligence_assets.ml.dataset import build_dataset
from intelligence_assets.ml.features import FeatureSettings, build_features
from intelligence_assets.ml.ranking import RankingSettings, rank_target
from intelligence_assets.ml.selection import SelectionSettings, select_features
from intelligence_assets.ml.splits import SplitSettings
from intelligence_assets.ml.synthetic import PLANTED_FEATURE, synthetic_bars
from intelligence_assets.ml.targets import (
    BarrierTarget,
    DirectionTarget,
    ForwardVolatilityTarget,
    build_labels,
    label_horizon,
)
from intelligence_assets.ml.training import train_and_evaluate
from intelligence_assets.ml.walk_forward import WalkForwardProblem

SPLIT = SplitSettings(folds=4, embargo=5, test_fraction=0.2, min_train_rows=200)


def test_shuffled_labels_score_at_chance_over_the_real_bundled_partitions() -> None:
    universe = load_universe(DEFAULT_UNIVERSE_PATH)
    spec = DirectionTarget(name="y_up_1b", horizon=1)
    rng = np.random.default_rng(11)
    aucs = []
    for symbol in universe.symbols:
        bars = read_bars_parquet(universe.bars_directory / f"{symbol}.parquet")
        labels = build_labels(bars, spec)
        known = labels["label"].is_not_null().to_numpy()
        shuffled = labels["label"].to_numpy().astype(float)
        shuffled[known] = rng.permutation(shuffled[known])
        labels = labels.with_columns(pl.Series("label", shuffled).fill_nan(None).cast(pl.Int8))
        dataset = build_dataset(build_features(bars, FeatureSettings()), labels)
        result = train_and_evaluate(
            "lightgbm",
            {"num_boost_round": 100},
            dataset.x,
            dataset.y,
            dataset.forward_return_1,
            task="classification",
            spec_kind="direction",
            label_horizon=1,
            split=SPLIT,
            seed=5,
            bars_per_year=252,
        )
        aucs.append(result.metrics["auc"])
    assert abs(float(np.mean(aucs)) - 0.5) <= 0.03, aucs


def test_planted_target_ranks_first_and_planted_feature_is_selected() -> None:
    bars = synthetic_bars(n_bars=3000, seed=21, signal_strength=1.0)
    features = build_features(bars, FeatureSettings())
    targets = [
        DirectionTarget(name="planted_up_1b", horizon=1),
        DirectionTarget(name="up_5b", horizon=5),
        BarrierTarget(name="peak_5b", side="peak", horizon=5, atr_multiple=1.0),
        ForwardVolatilityTarget(name="volatility_5b", horizon=5),
    ]
    rankings = {}
    for spec in targets:
        dataset = build_dataset(features, build_labels(bars, spec))
        problem = WalkForwardProblem.from_dataset(dataset, spec.task, label_horizon(spec), SPLIT, seed=1)
        rankings[spec.name] = rank_target(problem, RankingSettings())
    ordered = sorted(rankings, key=lambda name: rankings[name].score, reverse=True)
    assert ordered[0] == "planted_up_1b", {n: r.score for n, r in rankings.items()}
    assert rankings["planted_up_1b"].passed
    assert not rankings["volatility_5b"].passed, rankings["volatility_5b"].reason

    planted = targets[0]
    dataset = build_dataset(features, build_labels(bars, planted))
    problem = WalkForwardProblem.from_dataset(dataset, planted.task, 1, SPLIT, seed=1)
    selection = select_features(problem, SelectionSettings())
    assert PLANTED_FEATURE in selection.selected[:3], selection.selected


@pytest.mark.parametrize("family", ["linear", "lightgbm"])
def test_planted_signal_survives_to_the_held_out_period(family: str) -> None:
    bars = synthetic_bars(n_bars=3000, seed=22, signal_strength=1.0)
    spec = DirectionTarget(name="planted_up_1b", horizon=1)
    dataset = build_dataset(
        build_features(bars, FeatureSettings()), build_labels(bars, spec), [PLANTED_FEATURE, "ret_1", "vol_21"]
    )
    result = train_and_evaluate(
        family,
        {},
        dataset.x,
        dataset.y,
        dataset.forward_return_1,
        task="classification",
        spec_kind="direction",
        label_horizon=1,
        split=SPLIT,
        seed=5,
        bars_per_year=252,
    )
    assert result.metrics["auc"] > 0.58
    assert result.metrics["sharpe"] > 1.0  # the planted edge pays in the long/short backtest
