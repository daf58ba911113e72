"""The target analysis of one symbol x target, without Dagster: its labels, how predictable the
target is (ranking) and which features its models train on (selection). What `labels`,
`target_rankings` and `feature_sets` do for each partition."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from intelligence_assets.config.universe import Universe
from intelligence_assets.ml.dataset import build_dataset
from intelligence_assets.ml.metrics import finite_or_none
from intelligence_assets.ml.ranking import TargetRanking, rank_target
from intelligence_assets.ml.selection import FeatureSelection, select_features
from intelligence_assets.ml.targets import build_labels, label_horizon
from intelligence_assets.ml.walk_forward import WalkForwardProblem


@dataclass(frozen=True)
class TargetCell:
    """One symbol x target, and the universe that says how to label, rank and select for it."""

    universe: Universe
    symbol: str
    target: str

    @property
    def spec(self) -> Any:
        """The target's spec (task, kind, horizon) from the universe."""
        return self.universe.target(self.target)

    def problem(self, features: pl.DataFrame, labels: pl.DataFrame) -> WalkForwardProblem:
        """Every feature aligned with the cell's labels, cut as the universe's splits say."""
        spec, universe = self.spec, self.universe
        dataset = build_dataset(features, labels)
        return WalkForwardProblem.from_dataset(dataset, spec.task, label_horizon(spec), universe.split, universe.seed)


@dataclass(frozen=True)
class CellLabels:
    """A cell's label table and what its labels look like."""

    table: pl.DataFrame  # every bar; the label is null where its window runs past the last bar
    labelled: pl.DataFrame  # the bars with a label
    balance: dict[str, float | None]  # positive_rate (classification), or label_mean and label_std


def label_cell(cell: TargetCell, bars: pl.DataFrame) -> CellLabels:
    """The cell's target column, built from its spec."""
    table = build_labels(bars, cell.spec)
    labelled = table.filter(pl.col("label").is_not_null())
    label = labelled["label"]
    balance = (
        {"positive_rate": finite_or_none(label.mean())}
        if cell.spec.task == "classification"
        else {"label_mean": finite_or_none(label.mean()), "label_std": finite_or_none(label.std())}
    )
    return CellLabels(table, labelled, balance)


@dataclass(frozen=True)
class RankedCell:
    """A cell's ranking and the rows it was judged on."""

    cell: TargetCell
    ranking: TargetRanking
    rows: int

    @property
    def value(self) -> dict[str, Any]:
        """What `target_rankings` stores: the cell, then the ranking as strict JSON."""
        cell = self.cell
        return {
            "symbol": cell.symbol,
            "target": cell.target,
            "task": cell.spec.task,
            "rows": self.rows,
            **self.ranking.to_dict(),
        }

    @property
    def fold_score_columns(self) -> list[str]:
        """`model`, then one column per fold of the model with the most folds."""
        folds = max((len(scores) for scores in self.ranking.fold_scores.values()), default=0)
        return ["model", *(f"fold_{number}" for number in range(1, folds + 1))]

    @property
    def fold_score_rows(self) -> list[dict[str, Any]]:
        """One row per model: its score in each fold, None where undefined."""
        return [
            {"model": model, **{f"fold_{i + 1}": finite_or_none(score) for i, score in enumerate(scores)}}
            for model, scores in self.ranking.fold_scores.items()
        ]


def rank_cell(cell: TargetCell, features: pl.DataFrame, labels: pl.DataFrame) -> RankedCell:
    """How predictable the cell's target is from every feature (see `rank_target`)."""
    problem = cell.problem(features, labels)
    return RankedCell(cell, rank_target(problem, cell.universe.ranking), len(problem.y))


@dataclass(frozen=True)
class CellFeatureSet:
    """The features a cell's models train on, or why it has none: ranking gated the target."""

    cell: TargetCell
    selection: FeatureSelection | None  # None when gated
    reason: str  # why nothing was selected; empty when something was
    candidates: int  # the features selection chose from; 0 when gated
    ranking_score: float | None  # the ranking's score, as `target_rankings` stored it

    @property
    def gated(self) -> bool:
        return self.selection is None

    @property
    def selected(self) -> list[str]:
        """The selected features, the most important first."""
        return list(self.selection.selected) if self.selection else []

    @property
    def value(self) -> dict[str, Any]:
        """What `feature_sets` stores, and what `models/<family>` reads (see `train_cell`)."""
        chosen = self.selection.to_dict() if self.selection else {"selected": [], "importances": []}
        cell = self.cell
        return {"symbol": cell.symbol, "target": cell.target, "gated": self.gated, "reason": self.reason, **chosen}

    @property
    def importance_rows(self) -> list[dict[str, Any]]:
        """Every feature's importances, the most important by permutation first (undefined counts as 0)."""
        rows = self.selection.to_dict()["importances"] if self.selection else []
        return sorted(rows, key=lambda row: -(row.get("permutation_mean") or 0.0))


def select_cell_features(
    cell: TargetCell,
    ranking: Mapping[str, Any],
    features: Callable[[], pl.DataFrame],
    labels: Callable[[], pl.DataFrame],
) -> CellFeatureSet:
    """The features selected for the cell (see `select_features`), or none when its ranking
    (`target_rankings`' value) did not pass. `features` and `labels` load the symbol's feature
    table and the cell's labels; a gated cell is decided from `ranking` alone, so neither is
    called for it."""
    if not ranking["passed"]:
        return CellFeatureSet(cell, None, f"not trained: {ranking['reason']}", 0, ranking.get("score"))
    problem = cell.problem(features(), labels())
    selection = select_features(problem, cell.universe.selection)
    return CellFeatureSet(cell, selection, "", problem.feature_count, ranking.get("score"))
