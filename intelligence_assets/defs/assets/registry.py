"""`model_registry`: the MLflow registry's aliases per symbol x target, after the promotion rule
(or a rollback) has been applied; one row per cell.

The registry is state outside the artifact store, so this asset always runs (one small run) and
its data version hashes its result: `predictions` recompute only when a champion changed.
A rollback is this asset run with `rollback` config (`registry_job`, or
`python -m intelligence_assets.cli.rollback`), so every alias move is a materialization with its
reason in the UI and in lineage.
"""

from collections import Counter
from collections.abc import Iterator
from typing import Any

import dagster as dg
from pydantic import Field

from intelligence_assets.cells.registry import RegistryUpdate, require_reason, update_registry
from intelligence_assets.config.universe import Universe
from intelligence_assets.defs.assets.caching import Computed, materialize_uncached
from intelligence_assets.defs.assets.leaderboard import MODEL_LEADERBOARD
from intelligence_assets.defs.assets.metadata import markdown_table
from intelligence_assets.defs.assets.planning import always_computed
from intelligence_assets.defs.automation.conditions import FOLLOWS_UPSTREAM
from intelligence_assets.defs.partitions import SYMBOL_DIMENSION
from intelligence_assets.defs.resources.artifact_store import ArtifactStoreResource
from intelligence_assets.defs.resources.mlflow_tracking import MlflowTrackingResource
from intelligence_assets.store.artifacts import ArtifactHandle, read_manifest
from intelligence_assets.tracking.tracker import ModelTracker

MODEL_REGISTRY = dg.AssetKey("model_registry")
# Who serves each cell, in the UI's `champions` table and in `make demo`'s printout.
CHAMPION_COLUMNS = ["symbol", "target", "champion_family", "champion_version", "metric", "champion_score"]
# The registry's state lives in MLflow, and only model_registry materializations (promotion,
# rollback) move its aliases: it needs a run when the leaderboard does, when it never ran, or
# when its code changed (its table may have changed shape).
PLANNED_REGISTRY = always_computed(MODEL_REGISTRY)


class ModelRegistryConfig(dg.Config):
    rollback: list[str] = Field(
        default_factory=list, description="Partitions `SYMBOL|target` whose champion goes back to previous-champion."
    )
    reason: str = Field(
        default="",
        description="Why (required with rollback); recorded on the rolled-back version and in this materialization.",
    )
    reassess: list[str] = Field(
        default_factory=list,
        description="Partitions `SYMBOL|target` whose champion has decayed: its held-out score no longer counts, "
        "so the best qualified version takes over without the min_improvement margin.",
    )


def parse_cells(partitions: list[str], universe: Universe) -> list[tuple[str, str]]:
    cells = []
    for partition in partitions:
        symbol, separator, target = partition.partition("|")
        if not separator:
            raise ValueError(f"partition {partition!r} must read SYMBOL|target, e.g. SP500|y_up_5b")
        universe.require_symbol(symbol)
        universe.target(target)
        cells.append((symbol, target))
    return cells


def build_registry_asset(universe: Universe) -> dg.AssetsDefinition:
    @dg.asset(
        key=MODEL_REGISTRY,
        automation_condition=FOLLOWS_UPSTREAM,
        ins={"model_leaderboard": dg.AssetIn(MODEL_LEADERBOARD)},
        group_name="results",
        code_version="3",
        kinds={"mlflow"},
        description="MLflow registry aliases (champion, previous-champion, challenger) per symbol x target "
        "after the promotion rule or a rollback.",
    )
    def model_registry(
        context: dg.AssetExecutionContext,
        config: ModelRegistryConfig,
        artifact_store: ArtifactStoreResource,
        mlflow_tracking: MlflowTrackingResource,
        model_leaderboard: ArtifactHandle,
    ) -> Iterator[dg.Output]:
        rollback_cells = parse_cells(config.rollback, universe)
        reassess_cells = parse_cells(config.reassess, universe)
        require_reason(rollback_cells, config.reason)

        def compute() -> Computed:
            tracker = mlflow_tracking.tracker()
            update = update_registry(
                tracker,
                artifact_store.store(),
                model_leaderboard.load(),
                universe.promotion,
                symbols=context.instance.get_dynamic_partitions(SYMBOL_DIMENSION),
                run_id=context.run.run_id,
                rollback=rollback_cells,
                reason=config.reason,
                reassess=reassess_cells,
                log=context.log.info,
                warn=context.log.warning,
            )
            leaderboard_notes = read_manifest(
                model_leaderboard.store, model_leaderboard.prefix, model_leaderboard.fingerprint
            ).metadata
            return Computed(update.table, metadata=registry_metadata(update, config, tracker, leaderboard_notes))

        run_config: dict[str, Any] = {
            "promotion": universe.promotion,
            "rollback": config.rollback,
            "reason": config.reason,
            "reassess": config.reassess,
        }
        yield from materialize_uncached(context, artifact_store.store(), run_config, compute)

    return model_registry


def registry_metadata(
    update: RegistryUpdate, config: ModelRegistryConfig, tracker: ModelTracker, leaderboard_notes: dict[str, Any]
) -> dict[str, Any]:
    """What the UI shows of a registry pass: the champions, the alias moves and the request that made them."""
    return {
        "champions": markdown_table(
            update.champions.to_dicts(), [*CHAMPION_COLUMNS, "challenger_version", "previous_champion_version"]
        ),
        "changes": dg.MetadataValue.md("\n".join(f"- {change}" for change in update.changes) or "none"),
        "cells_changed": len(update.changes),
        # Cells by their champion's family ("none": no champion yet), for the metrics exporter.
        "champions_by_family": dg.MetadataValue.json(
            dict(Counter(row["champion_family"] or "none" for row in update.champions.iter_rows(named=True)))
        ),
        "rollback": ", ".join(config.rollback) or "none",
        "rollback_reason": config.reason or "",
        "reassessed": ", ".join(config.reassess) or "none",
        "tracking_uri": tracker.tracking_uri if not tracker.tracking_uri.startswith("sqlite") else "embedded (sqlite)",
        # The cells the registry could not decide for, as the leaderboard found them.
        "missing_models": leaderboard_notes.get("missing_models", 0),
        "missing": dg.MetadataValue.md(leaderboard_notes.get("missing", {}).get("__markdown__", "none")),
    }
