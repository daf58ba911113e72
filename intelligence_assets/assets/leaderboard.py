"""`model_leaderboard`: every model's held-out metrics, and per symbol x target the candidate
for promotion: the best model that may serve at all. Whether it replaces the serving champion
is the registry's decision (`model_registry`)."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl

from intelligence_assets.assets.caching import Computed, materialize_cached
from intelligence_assets.assets.metadata import markdown_table
from intelligence_assets.assets.models import model_key
from intelligence_assets.automation.conditions import FOLLOWS_UPSTREAM
from intelligence_assets.ml.metrics import model_is_eligible
from intelligence_assets.ml.trained_model import TrainedModel
from intelligence_assets.resources.artifact_store_resource import ArtifactStoreResource
from intelligence_assets.resources.artifacts import ArtifactHandle
from intelligence_assets.universe import Universe

MODEL_LEADERBOARD = dg.AssetKey("model_leaderboard")
METRIC_COLUMNS = ["auc", "accuracy", "log_loss", "ic", "rank_ic", "sharpe"]
LEADERBOARD_SCHEMA = {
    "symbol": pl.String, "target": pl.String, "family": pl.String, "task": pl.String, "trained": pl.Boolean,
    "metric": pl.String, "score": pl.Float64, **{name: pl.Float64 for name in METRIC_COLUMNS},
    "majority_accuracy": pl.Float64, "buy_and_hold_sharpe": pl.Float64,
    "test_rows": pl.Int64, "test_start": pl.String, "test_end": pl.String, "leakage_suspect": pl.Boolean,
    "eligible": pl.Boolean, "candidate": pl.Boolean, "reason": pl.String, "model_fingerprint": pl.String,
}


def model_input_name(family: str) -> str:
    return f"models_{family}"


def leaderboard_rows(
    models_by_family: dict[str, dict[str, TrainedModel]], universe: Universe, fingerprints: dict[str, dict[str, str]] | None = None
) -> list[dict[str, Any]]:
    """`fingerprints` (family -> partition -> model fingerprint) pins each row to the exact model
    it ranks, so predictions serve that model even if the family is retrained later."""
    rows = []
    for family, by_partition in sorted(models_by_family.items()):
        for partition, trained_model in by_partition.items():
            summary = trained_model.summary
            task = summary["task"]
            metric = universe.leaderboard.classification_metric if task == "classification" else universe.leaderboard.regression_metric
            metrics = summary.get("metrics", {})
            score = metrics.get(metric)
            rows.append(
                {
                    "symbol": summary["symbol"], "target": summary["target"], "family": family, "task": task,
                    "trained": trained_model.trained, "metric": metric, "score": score,
                    **{name: metrics.get(name) for name in METRIC_COLUMNS},
                    # Baselines on the same held-out rows: always predicting the training
                    # majority class, and holding the instrument long throughout.
                    "majority_accuracy": summary.get("baseline", {}).get("majority_accuracy"),
                    "buy_and_hold_sharpe": summary.get("baseline", {}).get("buy_and_hold_sharpe"),
                    "test_rows": summary.get("test_rows"), "test_start": summary.get("test_start"), "test_end": summary.get("test_end"),
                    "leakage_suspect": bool(summary.get("leakage_suspect", False)), "eligible": False, "candidate": False,
                    "reason": summary.get("reason", ""),
                    "model_fingerprint": (fingerprints or {}).get(family, {}).get(partition),
                }
            )
    # Eligible: trained, trusted by the leakage sentinel, and better than no skill on the held-out
    # period. The candidate is the best eligible model of its cell; a cell with none has none.
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        row["eligible"] = model_is_eligible(row["trained"], row["leakage_suspect"], row["metric"], row["score"], row["majority_accuracy"])
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


def leaderboard_config(universe: Universe) -> dict[str, Any]:
    return {"leaderboard": universe.leaderboard, "families": list(universe.model_families)}


def build_leaderboard_asset(universe: Universe) -> dg.AssetsDefinition:
    families = list(universe.model_families)
    model_ins = {model_input_name(f): dg.AssetIn(model_key(f)) for f in families}

    @dg.asset(
        key=MODEL_LEADERBOARD,
        automation_condition=FOLLOWS_UPSTREAM,
        ins=model_ins,
        group_name="results",
        code_version="1",
        kinds={"polars"},
        description="Every model's held-out metrics; per symbol x target the candidate for promotion (best eligible model by the configured metric).",
    )
    def model_leaderboard(
        context: dg.AssetExecutionContext, artifact_store: ArtifactStoreResource, **models: dict[str, ArtifactHandle]
    ) -> Iterator[dg.Output]:
        def compute() -> Computed:
            loaded = {name.removeprefix("models_"): {key: handle.load() for key, handle in handles.items()} for name, handles in models.items()}
            fingerprints = {name.removeprefix("models_"): {key: handle.fingerprint for key, handle in handles.items()} for name, handles in models.items()}
            table = pl.DataFrame(leaderboard_rows(loaded, universe, fingerprints), schema=LEADERBOARD_SCHEMA).sort(
                ["symbol", "target", "score"], descending=[False, False, True], nulls_last=True
            )
            candidates = table.filter(pl.col("candidate"))
            gated = table.filter(~pl.col("trained")).select("symbol", "target", "reason").unique().sort("symbol", "target")
            without_skill = cells_without_candidate(table)
            context.log.info(
                f"leaderboard: {table.height} models, {candidates.height} candidates, {gated.height} gated cells, "
                f"{without_skill.height} trained cells where no model beats no-skill on held-out data"
            )
            return Computed(
                table,
                metadata={
                    "models": table.height,
                    "trained": int(table["trained"].sum()),
                    "candidates": markdown_table(candidates.to_dicts(), ["symbol", "target", "family", "metric", "score", "sharpe", "buy_and_hold_sharpe", "test_rows"]),
                    "gated": markdown_table(gated.to_dicts(), ["symbol", "target", "reason"]),
                    "no_model_beats_no_skill": markdown_table(without_skill.to_dicts(), ["symbol", "target", "best_score"]),
                    "leakage_suspects": int(table["leakage_suspect"].sum()),
                },
            )

        yield from materialize_cached(context, artifact_store.store(), models, leaderboard_config(universe), compute)

    return model_leaderboard
