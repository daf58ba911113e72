"""`predictions` (per symbol): each registry champion's scores, from its held-out test start to
the newest bar, with the model loaded from MLflow by alias (`models:/<name>@champion`)."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl

from intelligence_assets.cells.predictions import (
    ChampionPredictions,
    cells_the_registry_has_not_seen,
    predict_champions,
    symbol_champions,
)
from intelligence_assets.config.universe import Universe
from intelligence_assets.defs.assets.caching import Computed, PartitionWork, input_for, materialize_partitions
from intelligence_assets.defs.assets.market_data import FEATURES
from intelligence_assets.defs.assets.metadata import table_metadata
from intelligence_assets.defs.assets.planning import PlanningContext, plans
from intelligence_assets.defs.assets.registry import MODEL_REGISTRY
from intelligence_assets.defs.automation.conditions import follows_only
from intelligence_assets.defs.partitions import symbol_partitions
from intelligence_assets.defs.resources.artifact_store import ArtifactStoreResource
from intelligence_assets.defs.resources.io_manager import HANDLE_OR_RANGE
from intelligence_assets.defs.resources.mlflow_tracking import MlflowTrackingResource
from intelligence_assets.store.artifacts import ArtifactHandle, HandleOrRange

PREDICTIONS = dg.AssetKey("predictions")


class RegistryBehindError(RuntimeError):
    """The registry has not seen a symbol's current models yet: no predictions from it."""


def predictions_config(champions: pl.DataFrame) -> dict[str, Any]:
    return {
        "champions": champions.select(
            "target", "registered_model", "champion_version", "champion_fingerprint", "champion_test_start"
        ).to_dicts()
    }


# The registry's table is read through the config (this symbol's champions only), not hashed as
# an input: another symbol's new champion leaves this symbol's predictions as they are.
# The registry is hashed whole: Dagster versions it as one table, so a predictions partition is
# stale (in its UI and in the plan alike) whenever the registry changed, not only its symbol's rows.
@plans(PREDICTIONS, hashed_inputs=["features", "model_registry"])
def planned_predictions_config(context: PlanningContext) -> dict[str, Any]:
    return predictions_config(symbol_champions(context.load("model_registry"), context.symbol))


def predictions_metadata(champions: pl.DataFrame, predicted: ChampionPredictions) -> dict[str, Any]:
    return {
        "rows": predicted.table.height,
        "targets": champions.height,
        "models": table_metadata(
            champions.to_dicts(), ["target", "champion_family", "champion_version", "champion_uri"]
        ),
        "latest": table_metadata(
            predicted.latest.with_columns(pl.col("timestamp").cast(pl.String)).to_dicts(),
            ["target", "family", "model_version", "timestamp", "prediction"],
        ),
    }


def build_predictions_asset(universe: Universe) -> dg.AssetsDefinition:
    # Its inputs are what it reads: the registry names the serving models, so a retrain that
    # promotes nothing leaves predictions fresh (no lineage-only edge to every model partition:
    # Dagster would call them stale where nothing they read changed).
    @dg.asset(
        key=PREDICTIONS,
        # After the registry only: it has then seen the models (of a new symbol too).
        automation_condition=follows_only(MODEL_REGISTRY, [MODEL_REGISTRY, FEATURES]),
        ins={
            "model_registry": dg.AssetIn(MODEL_REGISTRY),
            "features": dg.AssetIn(FEATURES, dagster_type=HANDLE_OR_RANGE),
        },
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
                # Opened on the first partition computed: a run of cache hits needs no tracker.
                tracker = mlflow_tracking.tracker()
                predicted = predict_champions(champions, symbol_features.load(), tracker, log=context.log.debug)
                return Computed(predicted.table, metadata=predictions_metadata(champions, predicted))

            inputs = {"features": symbol_features, "model_registry": model_registry}
            return PartitionWork(inputs, predictions_config(champions), compute)

        yield from materialize_partitions(context, artifact_store.store(), work_for)

    return predictions
