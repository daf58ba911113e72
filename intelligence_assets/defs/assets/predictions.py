"""`predictions` (per symbol): each registry champion's scores, from its held-out test start to
the newest bar, with the model loaded from MLflow by alias (`models:/<name>@champion`)."""

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import dagster as dg
import polars as pl

from intelligence_assets.config.universe import Universe
from intelligence_assets.defs.assets.caching import Computed, PartitionWork, input_for, materialize_partitions
from intelligence_assets.defs.assets.market_data import FEATURES
from intelligence_assets.defs.assets.metadata import markdown_table
from intelligence_assets.defs.assets.models import model_key
from intelligence_assets.defs.assets.planning import PlanningContext, plans
from intelligence_assets.defs.assets.registry import MODEL_REGISTRY
from intelligence_assets.defs.automation.conditions import follows_only
from intelligence_assets.defs.partitions import by_symbol, cell_key, symbol_partitions
from intelligence_assets.defs.resources.artifact_store import ArtifactStoreResource
from intelligence_assets.defs.resources.io_manager import HANDLE_OR_RANGE
from intelligence_assets.defs.resources.mlflow_tracking import MlflowTrackingResource
from intelligence_assets.ml.dataset import build_inference_matrix, utc_timestamps
from intelligence_assets.store.artifact_store import ArtifactStore, ArtifactStoreError
from intelligence_assets.store.artifacts import ArtifactHandle, HandleOrRange
from intelligence_assets.store.keys import artifact_prefix
from intelligence_assets.tracking import names
from intelligence_assets.tracking.flavours import pyfunc_predict

PREDICTIONS = dg.AssetKey("predictions")


class RegistryBehindError(RuntimeError):
    """The registry has not seen a symbol's current models yet: no predictions from it."""


PREDICTIONS_SCHEMA = {
    "timestamp": pl.Datetime("us", "UTC"),
    "target": pl.String,
    "family": pl.String,
    "model_version": pl.String,
    "prediction": pl.Float64,
}


def symbol_champions(registry: pl.DataFrame, symbol: str) -> pl.DataFrame:
    """This symbol's cells that have a champion. Reading the small registry table first lets the
    predictions' fingerprint depend on this symbol's champions only."""
    return registry.filter((pl.col("symbol") == symbol) & pl.col("champion_version").is_not_null()).sort("target")


def cells_the_registry_has_not_seen(
    store: ArtifactStore, registry: pl.DataFrame, symbol: str, families: list[str], targets: list[str]
) -> list[str]:
    """This symbol's cells whose models now current in the store are not the ones the registry
    last decided from: predicting now would serve champions chosen without them (for a new
    symbol, none at all)."""
    seen = (
        {
            (row["target"]): set(filter(None, (row["model_fingerprints"] or "").split(",")))
            for row in registry.filter(pl.col("symbol") == symbol).iter_rows(named=True)
        }
        if "model_fingerprints" in registry.columns
        else {}
    )
    behind = []
    for target in targets:
        current = set()
        for family in families:
            try:
                current.add(
                    ArtifactHandle.current(store, artifact_prefix(model_key(family), symbol, target)).fingerprint
                )
            except ArtifactStoreError:  # never trained, failed or blocked: the registry cannot have seen it either
                continue
        if current and current != seen.get(target, set()):
            behind.append(cell_key(symbol, target))
    return behind


def predictions_config(champions: pl.DataFrame) -> dict[str, Any]:
    return {
        "champions": champions.select(
            "target", "registered_model", "champion_version", "champion_fingerprint", "champion_test_start"
        ).to_dicts()
    }


# The registry's table is read through the config (this symbol's champions only), not hashed as
# an input: another symbol's new champion leaves this symbol's predictions as they are.
@plans(PREDICTIONS, hashed_inputs=["features"])
def planned_predictions_config(context: PlanningContext) -> dict[str, Any]:
    return predictions_config(symbol_champions(context.load("model_registry"), context.symbol))


def build_predictions_asset(universe: Universe) -> dg.AssetsDefinition:
    # Lineage to this symbol's models; which versions serve comes from the registry.
    model_deps = [dg.AssetDep(model_key(family), partition_mapping=by_symbol) for family in universe.model_families]

    @dg.asset(
        key=PREDICTIONS,
        # After the registry only: it has then seen the models (of a new symbol too).
        automation_condition=follows_only(MODEL_REGISTRY, [MODEL_REGISTRY, FEATURES]),
        ins={
            "model_registry": dg.AssetIn(MODEL_REGISTRY),
            "features": dg.AssetIn(FEATURES, dagster_type=HANDLE_OR_RANGE),
        },
        deps=model_deps,
        partitions_def=symbol_partitions,
        # No checks; loading each champion is the work: a backfill runs in chunks, not a run each.
        backfill_policy=dg.BackfillPolicy.multi_run(universe.automation.backfill_partitions_per_run),
        group_name="results",
        code_version="2",
        kinds={"polars", "mlflow"},
        description=(
            "Champion scores per target for one symbol, from each champion's held-out test start to the newest bar; "
            "models loaded from MLflow by alias."
        ),
    )
    def predictions(
        context: dg.AssetExecutionContext,
        artifact_store: ArtifactStoreResource,
        mlflow_tracking: MlflowTrackingResource,
        model_registry: ArtifactHandle,
        features: HandleOrRange,
    ) -> Iterator[dg.Output]:
        registry = model_registry.load()
        tracker = mlflow_tracking.tracker()
        store = artifact_store.store()

        def work_for(symbol: str) -> PartitionWork:
            behind = cells_the_registry_has_not_seen(
                store, registry, symbol, list(universe.model_families), universe.target_names
            )
            if behind:
                raise RegistryBehindError(
                    f"model_registry has not yet decided from the current models of {behind}: materialize "
                    "model_leaderboard and "
                    f"model_registry, then predictions {symbol}"
                )
            champions = symbol_champions(registry, symbol)
            symbol_features = input_for(features, symbol)

            def compute() -> Computed:
                feature_table = symbol_features.load()
                frames = []
                for champion in champions.iter_rows(named=True):
                    uri = champion["champion_uri"]
                    version = tracker.version_by_alias(champion["registered_model"], names.CHAMPION)
                    if version is None or str(version.version) != champion["champion_version"]:
                        found = "nothing" if version is None else f"version {version.version}"
                        raise RuntimeError(
                            f"{uri} resolves to {found}, but model_registry recorded version "
                            f"{champion['champion_version']}: "
                            "the alias moved outside model_registry; materialize model_registry, then predictions"
                        )
                    model = tracker.load_model(version)
                    feature_names = model.metadata.get_input_schema().input_names()
                    timestamps, x = build_inference_matrix(feature_table, feature_names)
                    frame = pl.DataFrame(
                        {"timestamp": utc_timestamps(timestamps), "prediction": pyfunc_predict(model, feature_names, x)}
                    ).with_columns(
                        pl.lit(champion["target"]).alias("target"),
                        pl.lit(champion["champion_family"]).alias("family"),
                        pl.lit(champion["champion_version"]).alias("model_version"),
                    )
                    frames.append(
                        frame.filter(pl.col("timestamp") >= datetime.fromisoformat(champion["champion_test_start"]))
                    )
                    context.log.info(
                        f"{symbol} {champion['target']}: {uri} (v{version.version}, {champion['champion_family']}) "
                        f"scored {frame.height} bars"
                    )
                table = (
                    pl.concat(frames).select(list(PREDICTIONS_SCHEMA)).sort("target", "timestamp")
                    if frames
                    else pl.DataFrame(schema=PREDICTIONS_SCHEMA)
                )
                latest = (
                    table.group_by("target", "family", "model_version")
                    .agg(pl.col("timestamp").last(), pl.col("prediction").last())
                    .sort("target")
                )
                return Computed(
                    table,
                    metadata={
                        "rows": table.height,
                        "targets": champions.height,
                        "models": markdown_table(
                            champions.to_dicts(), ["target", "champion_family", "champion_version", "champion_uri"]
                        ),
                        "latest": markdown_table(
                            latest.with_columns(pl.col("timestamp").cast(pl.String)).to_dicts(),
                            ["target", "family", "model_version", "timestamp", "prediction"],
                        ),
                    },
                )

            return PartitionWork({"features": symbol_features}, predictions_config(champions), compute)

        yield from materialize_partitions(context, artifact_store.store(), work_for)

    return predictions
