"""The leaderboard, without Dagster: every model's held-out metrics side by side and, per symbol x
target, the candidate for promotion (the best model that may serve at all). What
`model_leaderboard` computes from the models' summaries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from intelligence_assets.config.universe import Universe
from intelligence_assets.ml.metrics import model_is_eligible
from intelligence_assets.store.artifact_store import ArtifactNotFoundError, ArtifactStore
from intelligence_assets.store.keys import MODELS, artifact_prefix, pointer_key

METRIC_COLUMNS = ["auc", "accuracy", "log_loss", "ic", "rank_ic", "sharpe"]
LEADERBOARD_SCHEMA = {
    "symbol": pl.String,
    "target": pl.String,
    "family": pl.String,
    "task": pl.String,
    "trained": pl.Boolean,
    "metric": pl.String,
    "score": pl.Float64,
    **dict.fromkeys(METRIC_COLUMNS, pl.Float64),
    "majority_accuracy": pl.Float64,
    "buy_and_hold_sharpe": pl.Float64,
    "test_rows": pl.Int64,
    "test_start": pl.String,
    "test_end": pl.String,
    "leakage_suspect": pl.Boolean,
    "eligible": pl.Boolean,
    "candidate": pl.Boolean,
    "reason": pl.String,
    "bars_per_year": pl.Float64,
    "bar_spacing": pl.String,
    "model_fingerprint": pl.String,
}


def leaderboard_rows(
    summaries_by_family: dict[str, dict[str, dict[str, Any]]],
    universe: Universe,
    fingerprints: dict[str, dict[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """One row per model from its summary (family -> partition -> summary.json). `fingerprints`
    (family -> partition -> model fingerprint) pins each row to the exact model it ranks, so
    predictions serve that model even if the family is retrained later."""
    rows = []
    for family, by_partition in sorted(summaries_by_family.items()):
        for partition, summary in by_partition.items():
            task = summary["task"]
            metric = (
                universe.leaderboard.classification_metric
                if task == "classification"
                else universe.leaderboard.regression_metric
            )
            metrics = summary.get("metrics", {})
            score = metrics.get(metric)
            rows.append(
                {
                    "symbol": summary["symbol"],
                    "target": summary["target"],
                    "family": family,
                    "task": task,
                    "trained": bool(summary.get("trained")),
                    "metric": metric,
                    "score": score,
                    **{name: metrics.get(name) for name in METRIC_COLUMNS},
                    # Baselines on the same held-out rows: always predicting the training
                    # majority class, and holding the instrument long throughout.
                    "majority_accuracy": summary.get("baseline", {}).get("majority_accuracy"),
                    "buy_and_hold_sharpe": summary.get("baseline", {}).get("buy_and_hold_sharpe"),
                    "test_rows": summary.get("test_rows"),
                    "test_start": summary.get("test_start"),
                    "test_end": summary.get("test_end"),
                    "leakage_suspect": bool(summary.get("leakage_suspect", False)),
                    "eligible": False,
                    "candidate": False,
                    "reason": summary.get("reason", ""),
                    "bars_per_year": summary.get("bars_per_year"),
                    "bar_spacing": summary.get("bar_spacing"),
                    "model_fingerprint": (fingerprints or {}).get(family, {}).get(partition),
                }
            )
    # Eligible: trained, trusted by the leakage sentinel, and better than no skill on the held-out
    # period. The candidate is the best eligible model of its cell; a cell with none has none.
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        row["eligible"] = model_is_eligible(
            row["trained"], row["leakage_suspect"], row["metric"], row["score"], row["majority_accuracy"]
        )
        if not row["eligible"]:
            continue
        cell = (row["symbol"], row["target"])
        if cell not in best or row["score"] > best[cell]["score"]:
            best[cell] = row
    for row in best.values():
        row["candidate"] = True
    return rows


def cells_without_candidate(table: pl.DataFrame) -> pl.DataFrame:
    """Trained symbol x target cells where no model beat no skill on the held-out period."""
    return (
        table.filter(pl.col("trained"))
        .group_by("symbol", "target")
        .agg(pl.col("candidate").any().alias("has_candidate"), pl.col("score").max().alias("best_score"))
        .filter(~pl.col("has_candidate"))
        .sort("symbol", "target")
    )


@dataclass(frozen=True)
class Leaderboard:
    """Every model ranked within its cell, and the views of it a reader looks at first."""

    table: pl.DataFrame  # `LEADERBOARD_SCHEMA`, by symbol and target, the best score first
    candidates: pl.DataFrame  # the candidate of each cell that has one
    gated: pl.DataFrame  # symbol, target, reason: the cells ranking gated, where no model was trained
    without_skill: pl.DataFrame  # trained cells where no model beat no skill (see `cells_without_candidate`)

    @classmethod
    def of(cls, table: pl.DataFrame) -> Leaderboard:
        """The views of a leaderboard table, e.g. `model_leaderboard`'s value read back from the store."""
        untrained = table.filter(~pl.col("trained"))
        return cls(
            table,
            candidates=table.filter(pl.col("candidate")),
            gated=untrained.select("symbol", "target", "reason").unique().sort("symbol", "target"),
            without_skill=cells_without_candidate(table),
        )


def rank_models(
    summaries_by_family: dict[str, dict[str, dict[str, Any]]],
    universe: Universe,
    fingerprints: dict[str, dict[str, str]] | None = None,
) -> Leaderboard:
    """The leaderboard of the models whose summaries are given (see `leaderboard_rows`)."""
    table = pl.DataFrame(leaderboard_rows(summaries_by_family, universe, fingerprints), schema=LEADERBOARD_SCHEMA)
    return Leaderboard.of(table.sort(["symbol", "target", "score"], descending=[False, False, True], nulls_last=True))


def models_changed_since(
    store: ArtifactStore, leaderboard: pl.DataFrame, cells: list[tuple[str, str, str]]
) -> list[str]:
    """The models the leaderboard no longer describes: each (symbol, target, family) of `cells`
    whose current model is not the one the leaderboard ranked (retrained, or new since), named
    `models/<family> <symbol>|<target>` with what changed. Dagster stops judging an unpartitioned
    asset's staleness over 100 upstream partitions; the leaderboard judges its own inputs."""
    ranked = {
        (row["symbol"], row["target"], row["family"]): row["model_fingerprint"]
        for row in leaderboard.iter_rows(named=True)
    }
    changed = []
    for symbol, target, family in cells:
        try:
            current = store.get_json(pointer_key(artifact_prefix([MODELS, family], symbol, target)))["fingerprint"]
        except ArtifactNotFoundError:
            continue  # never trained, or failed: `missing` says so
        read = ranked.get((symbol, target, family))
        if read != current:
            what = "new since" if read is None else f"retrained ({read} ranked, {current} current)"
            changed.append(f"{MODELS}/{family} {symbol}|{target}: {what}")
    return changed
