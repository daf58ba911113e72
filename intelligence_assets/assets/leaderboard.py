"""`model_leaderboard` (every model's held-out metrics, champion per symbol x target) and
`predictions` (per symbol: the champions' scores from the held-out period to the newest bar)."""

import math
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import dagster as dg
import polars as pl

from intelligence_assets.assets.caching import Computed, materialize_cached
from intelligence_assets.assets.metadata import markdown_table, utc_timestamps
from intelligence_assets.assets.models import model_key
from intelligence_assets.assets.target_analysis import FEATURES
from intelligence_assets.ml.dataset import build_inference_matrix
from intelligence_assets.ml.trained_model import TrainedModel
from intelligence_assets.partitions import by_symbol, symbol_partitions
from intelligence_assets.resources.artifact_store import ArtifactStore
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
    "champion": pl.Boolean, "reason": pl.String, "model_fingerprint": pl.String,
}


def model_input_name(family: str) -> str:
    return f"models_{family}"


def no_skill_score(row: dict[str, Any]) -> float:
    """What a model without skill scores on the same held-out rows."""
    if row["metric"] == "auc":
        return 0.5
    if row["metric"] == "accuracy":
        return row["majority_accuracy"] if row["majority_accuracy"] is not None else 0.5
    return 0.0  # ic, rank_ic, sharpe


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
                    "leakage_suspect": bool(summary.get("leakage_suspect", False)), "champion": False,
                    "reason": summary.get("reason", ""),
                    "model_fingerprint": (fingerprints or {}).get(family, {}).get(partition),
                }
            )
    # Champion: best score per symbol x target among trained models the leakage sentinel trusts
    # that beat no skill on the held-out period; a cell where none does has no champion.
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        if not row["trained"] or row["leakage_suspect"] or row["score"] is None or math.isnan(row["score"]):
            continue
        if row["score"] <= no_skill_score(row):
            continue
        cell = (row["symbol"], row["target"])
        if cell not in best or row["score"] > best[cell]["score"]:
            best[cell] = row
    for row in best.values():
        row["champion"] = True
    return rows


def cells_without_champion(table: pl.DataFrame) -> pl.DataFrame:
    """Trained symbol x target cells where no model beat no skill on the held-out period."""
    return (
        table.filter(pl.col("trained"))
        .group_by("symbol", "target")
        .agg(pl.col("champion").any().alias("has_champion"), pl.col("score").max().alias("best_score"))
        .filter(~pl.col("has_champion"))
        .sort("symbol", "target")
    )


def leaderboard_config(universe: Universe) -> dict[str, Any]:
    return {"leaderboard": universe.leaderboard, "families": list(universe.model_families)}


def symbol_champions(leaderboard: pl.DataFrame, store: ArtifactStore, symbol: str) -> tuple[pl.DataFrame, dict[str, ArtifactHandle]]:
    """This symbol's champion rows and handles on exactly the model versions the leaderboard
    ranked. The leaderboard is small; reading it first lets the predictions' fingerprint depend
    on this symbol's champions only, so another symbol's retrain does not invalidate them."""
    champions = leaderboard.filter(pl.col("champion") & (pl.col("symbol") == symbol)).sort("target")
    handles: dict[str, ArtifactHandle] = {}
    for champion in champions.iter_rows(named=True):
        prefix = f"{'/'.join(model_key(champion['family']).path)}/{symbol}/{champion['target']}"
        fingerprint = champion["model_fingerprint"]
        handles[champion["target"]] = ArtifactHandle(store, prefix, fingerprint, fingerprint)
    return champions, handles


def predictions_config(champions: pl.DataFrame) -> dict[str, Any]:
    return {"champions": champions.select("target", "family", "test_start").to_dicts()}


def build_leaderboard_assets(universe: Universe) -> list[dg.AssetsDefinition]:
    families = list(universe.model_families)
    model_ins = {model_input_name(f): dg.AssetIn(model_key(f)) for f in families}

    @dg.asset(
        key=MODEL_LEADERBOARD,
        ins=model_ins,
        group_name="results",
        code_version="1",
        kinds={"polars"},
        description="Every model's held-out metrics; the champion per symbol x target by the configured metric.",
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
            champions = table.filter(pl.col("champion"))
            gated = table.filter(~pl.col("trained")).select("symbol", "target", "reason").unique().sort("symbol", "target")
            without_skill = cells_without_champion(table)
            context.log.info(
                f"leaderboard: {table.height} models, {champions.height} champions, {gated.height} gated cells, "
                f"{without_skill.height} trained cells where no model beats no-skill on held-out data"
            )
            return Computed(
                table,
                metadata={
                    "models": table.height,
                    "trained": int(table["trained"].sum()),
                    "champions": markdown_table(champions.to_dicts(), ["symbol", "target", "family", "metric", "score", "sharpe", "buy_and_hold_sharpe", "test_rows"]),
                    "gated": markdown_table(gated.to_dicts(), ["symbol", "target", "reason"]),
                    "no_model_beats_no_skill": markdown_table(without_skill.to_dicts(), ["symbol", "target", "best_score"]),
                    "leakage_suspects": int(table["leakage_suspect"].sum()),
                },
            )

        yield from materialize_cached(context, artifact_store.store(), models, leaderboard_config(universe), compute)

    prediction_ins = {"model_leaderboard": dg.AssetIn(MODEL_LEADERBOARD), "features": dg.AssetIn(FEATURES)}
    # Lineage to this symbol's models; which model versions to load comes from the leaderboard.
    model_deps = [dg.AssetDep(model_key(f), partition_mapping=by_symbol) for f in families]

    @dg.asset(
        ins=prediction_ins,
        deps=model_deps,
        partitions_def=symbol_partitions,
        group_name="results",
        code_version="1",
        kinds={"polars"},
        description="Champion scores per target for one symbol, from each champion's held-out test start to the newest bar.",
    )
    def predictions(
        context: dg.AssetExecutionContext,
        artifact_store: ArtifactStoreResource,
        model_leaderboard: ArtifactHandle,
        features: ArtifactHandle,
    ) -> Iterator[dg.Output]:
        symbol = context.partition_key
        champions, champion_models = symbol_champions(model_leaderboard.load(), model_leaderboard.store, symbol)

        def compute() -> Computed:
            feature_table = features.load()
            frames = []
            for champion in champions.iter_rows(named=True):
                trained_model = champion_models[champion["target"]].load()
                timestamps, x = build_inference_matrix(feature_table, trained_model.feature_names)
                frame = pl.DataFrame({"timestamp": utc_timestamps(timestamps), "prediction": trained_model.predict(x)}).with_columns(
                    pl.lit(champion["target"]).alias("target"), pl.lit(champion["family"]).alias("family"), pl.lit(champion["task"]).alias("task")
                )
                frames.append(frame.filter(pl.col("timestamp") >= datetime.fromisoformat(champion["test_start"])))
            table = (
                pl.concat(frames).select("timestamp", "target", "family", "task", "prediction").sort("target", "timestamp")
                if frames
                else pl.DataFrame(schema={"timestamp": pl.Datetime("us", "UTC"), "target": pl.String, "family": pl.String, "task": pl.String, "prediction": pl.Float64})
            )
            latest = table.group_by("target", "family").agg(pl.col("timestamp").last(), pl.col("prediction").last()).sort("target")
            return Computed(
                table,
                metadata={
                    "rows": table.height,
                    "targets": champions.height,
                    "latest": markdown_table(latest.with_columns(pl.col("timestamp").cast(pl.String)).to_dicts(), ["target", "family", "timestamp", "prediction"]),
                },
            )

        inputs = {"features": features, "champions": champion_models}
        yield from materialize_cached(context, artifact_store.store(), inputs, predictions_config(champions), compute)

    return [model_leaderboard, predictions]
