"""`model_registry`: the MLflow registry's aliases per symbol x target, after the promotion rule
(or a rollback) has been applied; one row per cell.

The registry is state outside the artifact store, so this asset always runs (one small run) and
its data version hashes its result: `predictions` recompute only when the registry changed.
A rollback is this asset run with `rollback` config (`registry_job`, or
`python -m intelligence_assets.cli.rollback`), so every alias move is a materialization with its
reason in the UI and in lineage.
"""

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from intelligence_assets.cells.registry import RegistryUpdate, require_reason, update_registry
from intelligence_assets.config.universe import Universe
from intelligence_assets.defs.assets.caching import Computed, materialize_uncached, stored_metadata_values
from intelligence_assets.defs.assets.leaderboard import MODEL_LEADERBOARD
from intelligence_assets.defs.assets.metadata import table_metadata
from intelligence_assets.defs.assets.models import model_key
from intelligence_assets.defs.assets.planning import always_computed
from intelligence_assets.defs.automation.conditions import FOLLOWS_UPSTREAM
from intelligence_assets.defs.partitions import SYMBOL_DIMENSION, cell_key
from intelligence_assets.defs.resources.artifact_store import ArtifactStoreResource
from intelligence_assets.defs.resources.mlflow_tracking import MlflowTrackingResource
from intelligence_assets.store.artifact_store import ArtifactStoreError
from intelligence_assets.store.artifacts import ArtifactHandle, read_manifest
from intelligence_assets.store.keys import artifact_prefix
from intelligence_assets.tracking import names
from intelligence_assets.tracking.links import UiLinks
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
            leaderboard = model_leaderboard.load()
            update = update_registry(
                tracker,
                artifact_store.store(),
                leaderboard,
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
            previous = previous_registry(context, artifact_store, leaderboard["family"].unique().to_list())
            observations = list(serving_observations(update, leaderboard, tracker.links, previous))
            for observation in observations:
                context.log_event(observation)
            context.log.info(
                f"serving: {len(observations)} of {leaderboard.height} model partitions observed "
                "(the others' latest serving observation still holds)"
            )
            return Computed(
                update.table,
                metadata=registry_metadata(update, config, tracker, leaderboard_notes),
                # Its data version is who serves, all its readers use: a pass that moves no champion
                # (a retrain that promotes nothing, a challenger replaced) is no new registry.
                state=update.table.select("symbol", "target", "registered_model", pl.col("^champion_.*$")),
            )

        run_config: dict[str, Any] = {
            "promotion": universe.promotion,
            "rollback": config.rollback,
            "reason": config.reason,
            "reassess": config.reassess,
        }
        yield from materialize_uncached(
            context, artifact_store.store(), run_config, compute, inputs={"model_leaderboard": model_leaderboard}
        )

    return model_registry


# One row per cell and alias (champion, previous-champion, challenger): sortable and filterable in
# the UI, each with its MLflow version and the Dagster partition of the model behind it.
ALIAS_COLUMNS = [
    "symbol",
    "target",
    "alias",
    "family",
    "version",
    "metric",
    "score",
    "fingerprint",
    "mlflow_version",
    "dagster_model",
    "action",
    "reason",
]
# The registry table's column prefix of each alias.
ROLES = {"champion": names.CHAMPION, "previous_champion": names.PREVIOUS_CHAMPION, "challenger": names.CHALLENGER}


def model_page(links: UiLinks, family: str, partition: str) -> str:
    """The Dagster page of a family's model of one cell."""
    return links.dagster_partition(model_key(family).to_user_string(), partition)


def alias_rows(update: RegistryUpdate, links: UiLinks) -> list[dict[str, Any]]:
    rows = []
    for cell in update.table.iter_rows(named=True):
        for role, alias in ROLES.items():
            version = cell[f"{role}_version"]
            if version is None and role != "champion":
                continue
            family = cell[f"{role}_family"]
            partition = cell_key(cell["symbol"], cell["target"])
            name = cell["registered_model"]
            rows.append(
                {
                    "symbol": cell["symbol"],
                    "target": cell["target"],
                    "alias": alias if version else "none",
                    "family": family,
                    "version": version,
                    "metric": cell["metric"],
                    "score": cell[f"{role}_score"],
                    "fingerprint": cell[f"{role}_fingerprint"],
                    "mlflow_version": links.mlflow_model_version(name, version) if version else None,
                    "dagster_model": model_page(links, family, partition) if family else None,
                    "action": cell["action"] if role == "champion" else None,
                    "reason": cell["reason"] if role == "champion" else None,
                }
            )
    return rows


def previous_registry(
    context: dg.AssetExecutionContext, artifact_store: ArtifactStoreResource, families: Iterable[str]
) -> pl.DataFrame | None:
    """The registry table whose answers the latest `serving` observation of every model partition
    of `families` gives: the one this instance's latest `model_registry` materialization stored.
    None when there is none, it is no longer in the store, or a model partition was observed
    after it (a run that died after observing, or one whose materialization is not logged yet):
    then every partition is observed again."""
    latest = context.instance.fetch_materializations(MODEL_REGISTRY, limit=1).records
    if not latest or latest[0].asset_materialization is None:
        return None
    for family in families:
        since = dg.AssetRecordsFilter(asset_key=model_key(family), after_storage_id=latest[0].storage_id)
        observed_since = context.instance.fetch_observations(since, limit=1).records
        if observed_since:
            return None
    fingerprint = latest[0].asset_materialization.metadata.get("fingerprint")
    if fingerprint is None:
        return None
    try:
        return ArtifactHandle(
            artifact_store.store(), artifact_prefix(MODEL_REGISTRY), str(fingerprint.value), ""
        ).load()
    except ArtifactStoreError:
        return None


def serving_metadata(cell: dict[str, Any], fingerprint: str, links: UiLinks) -> dict[str, Any]:
    """A model partition's `serving` observation: whether the model `fingerprint` serves its
    cell (`cell`: the cell's registry row), and links to the one that does."""
    partition = cell_key(cell["symbol"], cell["target"])
    family, version = cell["champion_family"], cell["champion_version"]
    if version is None:
        serving = f"no: {cell['registered_model']} has no champion ({cell['reason']})"
    elif cell["champion_fingerprint"] == fingerprint:
        serving = f"yes: this model is {cell['registered_model']} v{version}, the champion"
    else:
        serving = f"no: the champion is {family} v{version} (fingerprint {cell['champion_fingerprint']})"
    metadata: dict[str, Any] = {"serving": serving, "fingerprint": fingerprint}
    if version is not None:
        metadata["champion_model"] = dg.MetadataValue.url(model_page(links, family, partition))
        metadata["champion_mlflow"] = dg.MetadataValue.url(
            links.mlflow_model_version(cell["registered_model"], version)
        )
    return metadata


def serving_observations(
    update: RegistryUpdate, leaderboard: pl.DataFrame, links: UiLinks, previous: pl.DataFrame | None
) -> Iterator[dg.AssetObservation]:
    """On each model partition's page, whether its current model is the one serving its cell, and
    a link to the one that is: a partition shows its newest model, which may be a challenger.

    Only where it differs from what the `previous` registry table said of the same model: an
    observation is an event written to the instance, and a pass over 12,500 cells that moved
    nothing would write 12,500 copies of what every partition already shows."""
    cells = {(row["symbol"], row["target"]): row for row in update.table.iter_rows(named=True)}
    before = {} if previous is None else {(row["symbol"], row["target"]): row for row in previous.iter_rows(named=True)}
    for model in leaderboard.iter_rows(named=True):
        key, fingerprint = (model["symbol"], model["target"]), model["model_fingerprint"]
        cell = cells.get(key)
        if cell is None:
            continue
        metadata = serving_metadata(cell, fingerprint, links)
        earlier = before.get(key)
        if (
            earlier is not None
            and fingerprint in (earlier.get("model_fingerprints") or "").split(",")
            and serving_metadata(earlier, fingerprint, links) == metadata
        ):
            continue
        yield dg.AssetObservation(asset_key=model_key(model["family"]), partition=cell_key(*key), metadata=metadata)


def registry_metadata(
    update: RegistryUpdate, config: ModelRegistryConfig, tracker: ModelTracker, leaderboard_notes: dict[str, Any]
) -> dict[str, Any]:
    """What the UI shows of a registry pass: who serves each cell (and who would next), the alias
    moves and the request that made them."""
    return {
        "aliases": table_metadata(alias_rows(update, tracker.links), ALIAS_COLUMNS),
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
        **{name: value for name, value in stored_metadata_values(leaderboard_notes).items() if name == "missing"},
    }
