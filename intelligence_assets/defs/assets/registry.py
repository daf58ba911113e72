"""`model_registry`: the MLflow registry's aliases per symbol x target, after the promotion rule
(or a rollback) has been applied; one row per cell.

The registry is state outside the artifact store, so this asset always runs (one small run) and
its data version hashes its result: `predictions` recompute only when a champion changed.
A rollback is this asset run with `rollback` config (`registry_job`, or
`python -m intelligence_assets.cli.rollback`), so every alias move is a materialization with its
reason in the UI and in lineage.
"""

import math
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from intelligence_assets.defs.assets.caching import Computed, materialize_uncached
from intelligence_assets.defs.assets.leaderboard import MODEL_LEADERBOARD
from intelligence_assets.defs.assets.metadata import markdown_table
from intelligence_assets.defs.automation.conditions import FOLLOWS_UPSTREAM
from intelligence_assets.defs.resources.artifact_store import ArtifactStoreResource
from intelligence_assets.store.artifact_store import ArtifactStore, ArtifactStoreError
from intelligence_assets.store.artifacts import POINTER_FILE, ArtifactHandle, read_manifest
from intelligence_assets.defs.resources.mlflow_tracking import MlflowTrackingResource
from intelligence_assets.tracking import names
from intelligence_assets.defs.partitions import SYMBOL_DIMENSION
from intelligence_assets.tracking.promotion import AliasDecision, Candidate, decide_aliases, retire, roll_back
from intelligence_assets.tracking.tracker import ModelTracker
from intelligence_assets.config.universe import Universe

MODEL_REGISTRY = dg.AssetKey("model_registry")
REGISTRY_SCHEMA = {
    "symbol": pl.String, "target": pl.String, "registered_model": pl.String, "metric": pl.String,
    "champion_version": pl.String, "champion_family": pl.String, "champion_fingerprint": pl.String,
    "champion_score": pl.Float64, "champion_test_start": pl.String, "champion_test_end": pl.String, "champion_uri": pl.String,
    "previous_champion_version": pl.String, "challenger_version": pl.String, "action": pl.String, "reason": pl.String,
    # Every model of the cell the registry decided from: `predictions` refuses a registry that
    # has not yet seen the models now current in the store.
    "model_fingerprints": pl.String,
}


def trained_on_replaced_bars(store: ArtifactStore, tags: dict[str, str], symbol: str, target: str) -> str | None:
    """Why a version was trained on bars the symbol no longer has, or None: read through the
    model's and its features' provenance. Bars that failed a blocking check replace nothing yet
    (no model can be trained on them), so the last good champion keeps serving meanwhile."""
    try:
        pointer = store.get_json(f"bars/{symbol}/{POINTER_FILE}")
        manifest = read_manifest(store, f"models/{tags[names.FAMILY_TAG]}/{symbol}/{target}", tags[names.FINGERPRINT_TAG])
        features = read_manifest(store, f"features/{symbol}", manifest.provenance["inputs"]["features"])
        trained_on = features.provenance["inputs"]["bars"]
    except (ArtifactStoreError, KeyError):  # no provenance to judge by: the promotion rule decides
        return None
    if pointer.get("blocked_by") or trained_on == pointer.get("data_version"):
        return None
    return f"trained on bars {trained_on[:12]}, but {symbol}'s bars are now {str(pointer.get('data_version'))[:12]}"


def current_models_of(leaderboard: pl.DataFrame, symbol: str, target: str) -> set[str]:
    return set(leaderboard.filter((pl.col("symbol") == symbol) & (pl.col("target") == target))["model_fingerprint"].drop_nulls())


def champions_of_removed_symbols(tracker: ModelTracker, symbols: set[str]) -> list[tuple[str, str, str]]:
    """(registered model, symbol, target) of every champion whose symbol is no longer a `symbol`
    partition (removed from the universe); read from the registered models' tags."""
    found, token = [], None
    while True:
        page = tracker.call(
            "listing registered models",
            lambda: tracker.client.search_registered_models(filter_string=f"name LIKE '{names.REGISTERED_MODEL_PREFIX}.%'", max_results=1000, page_token=token),
        )
        for model in page:
            symbol, target = model.tags.get(names.SYMBOL_TAG), model.tags.get(names.TARGET_TAG)
            if symbol and symbol not in symbols and names.CHAMPION in (model.aliases or {}):
                found.append((model.name, symbol, target))
        token = page.token
        if not token:
            return sorted(found)


class ModelRegistryConfig(dg.Config):
    rollback: list[str] = Field(default_factory=list, description="Partitions `SYMBOL|target` whose champion goes back to previous-champion.")
    reason: str = Field(default="", description="Why (required with rollback); recorded on the rolled-back version and in this materialization.")
    reassess: list[str] = Field(default_factory=list, description="Partitions `SYMBOL|target` whose champion has decayed: its held-out score no longer counts, so the best qualified version takes over without the min_improvement margin.")


def _score(tags: dict[str, str]) -> float | None:
    try:
        value = float(tags.get(names.SCORE_TAG, ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


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


def apply_decision(tracker: ModelTracker, name: str, current: dict[str, str], decision: AliasDecision) -> list[str]:
    """Move only the aliases that differ; returns what changed."""
    wanted = {names.CHAMPION: decision.champion, names.PREVIOUS_CHAMPION: decision.previous_champion, names.CHALLENGER: decision.challenger}
    changes = []
    for alias, version in wanted.items():
        if current.get(alias) == version:
            continue
        if version is None:
            tracker.delete_alias(name, alias)
            changes.append(f"{alias} removed (was v{current[alias]})")
        else:
            tracker.set_alias(name, alias, version)
            changes.append(f"{alias} -> v{version}" + (f" (was v{current[alias]})" if alias in current else ""))
    return changes


def build_registry_asset(universe: Universe) -> dg.AssetsDefinition:
    @dg.asset(
        key=MODEL_REGISTRY,
        automation_condition=FOLLOWS_UPSTREAM,
        ins={"model_leaderboard": dg.AssetIn(MODEL_LEADERBOARD)},
        group_name="results",
        code_version="3",
        kinds={"mlflow"},
        description="MLflow registry aliases (champion, previous-champion, challenger) per symbol x target after the promotion rule or a rollback.",
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
        if rollback_cells and not config.reason.strip():
            raise ValueError("a rollback needs a reason (config `reason`): it is recorded on the rolled-back version")
        settings = universe.promotion

        def compute() -> Computed:
            tracker = mlflow_tracking.tracker()
            store = artifact_store.store()
            leaderboard = model_leaderboard.load()
            leaderboard_notes = read_manifest(model_leaderboard.store, model_leaderboard.prefix, model_leaderboard.fingerprint).metadata
            cells = leaderboard.select("symbol", "target").unique(maintain_order=True).rows()
            unknown = [cell for cell in rollback_cells if cell not in cells]
            if unknown:
                raise ValueError(f"rollback of {unknown}: no models on the leaderboard for these cells")
            rows, changes = [], []
            for name, symbol, target in champions_of_removed_symbols(tracker, set(context.instance.get_dynamic_partitions(SYMBOL_DIMENSION))):
                current = tracker.aliases(name)
                reason = f"{symbol} is no longer in the universe"
                decision = retire([], current, settings, reason)
                tracker.set_version_tag(name, current[names.CHAMPION], names.RETIRED_TAG, f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} run {context.run.run_id}: {reason}")
                moved = apply_decision(tracker, name, current, decision)
                changes.append(f"{name}: {decision.action}; " + ", ".join(moved))
                context.log.info(f"{name}: {decision.reason}; " + ", ".join(moved))
                rows.append({"symbol": symbol, "target": target, "registered_model": name, "action": "retired", "reason": decision.reason,
                             "previous_champion_version": decision.previous_champion})
            for symbol, target in cells:
                name = names.registered_model_name(symbol, target)
                rows_of_cell = leaderboard.filter((pl.col("symbol") == symbol) & (pl.col("target") == target) & pl.col("trained"))
                # Read even when the cell has no trained model now: an earlier champion keeps its alias.
                current = tracker.aliases(name)
                versions = tracker.versions(name) if current or rows_of_cell.height else []
                by_fingerprint = {v.tags.get(names.FINGERPRINT_TAG): v for v in versions}
                by_number = {str(v.version): v for v in versions}
                if (symbol, target) in rollback_cells:
                    decision = roll_back(current, config.reason)
                    rolled_back = current[names.CHAMPION]
                    tracker.set_version_tag(
                        name, rolled_back, names.ROLLED_BACK_TAG,
                        f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} run {context.run.run_id}: {config.reason}",
                    )
                else:
                    candidates = []
                    for row in rows_of_cell.iter_rows(named=True):
                        version = by_fingerprint.get(row["model_fingerprint"])
                        if version is None:
                            context.log.warning(f"{name}: {row['family']} model {row['model_fingerprint']} has no registry version; rematerialize models/{row['family']} {symbol}|{target}")
                            continue
                        stale = trained_on_replaced_bars(store, version.tags, symbol, target)
                        if stale:  # its retraining on the new bars failed or has not run yet
                            context.log.warning(f"{name}: {row['family']} v{version.version} is not a candidate: {stale}")
                            continue
                        candidates.append(Candidate(
                            version=str(version.version), family=row["family"], score=row["score"], test_rows=int(row["test_rows"] or 0),
                            eligible=bool(row["eligible"]), rolled_back=names.ROLLED_BACK_TAG in version.tags,
                        ))
                    champion = by_number.get(current.get(names.CHAMPION, ""))
                    replaced_bars = champion is not None and trained_on_replaced_bars(store, champion.tags, symbol, target)
                    if replaced_bars:
                        # However well it scored on the old bars, it must not keep serving once the
                        # symbol's bars changed: only models current for the new bars may.
                        decision = retire(candidates, current, settings, replaced_bars)
                        tracker.set_version_tag(
                            name, str(champion.version), names.RETIRED_TAG,
                            f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} run {context.run.run_id}: {replaced_bars}",
                        )
                    else:
                        # A decayed champion's held-out score no longer describes it.
                        recorded = _score(champion.tags) if champion and (symbol, target) not in reassess_cells else None
                        decision = decide_aliases(candidates, current, recorded, settings)
                moved = apply_decision(tracker, name, current, decision)
                if moved:
                    changes.append(f"{name}: {decision.action}; " + ", ".join(moved))
                    context.log.info(f"{name}: {decision.action} ({decision.reason}); " + ", ".join(moved))
                champion = by_number.get(decision.champion or "")
                rows.append({
                    "symbol": symbol, "target": target, "registered_model": name,
                    "metric": champion.tags.get(names.SCORE_METRIC_TAG) if champion else None,
                    "champion_version": decision.champion,
                    "champion_family": champion.tags.get(names.FAMILY_TAG) if champion else None,
                    "champion_fingerprint": champion.tags.get(names.FINGERPRINT_TAG) if champion else None,
                    "champion_score": _score(champion.tags) if champion else None,
                    "champion_test_start": champion.tags.get(names.TEST_START_TAG) if champion else None,
                    "champion_test_end": champion.tags.get(names.TEST_END_TAG) if champion else None,
                    "champion_uri": f"models:/{name}@{names.CHAMPION}" if decision.champion else None,
                    "previous_champion_version": decision.previous_champion, "challenger_version": decision.challenger,
                    "action": decision.action if moved or decision.action == "no champion" else "kept", "reason": decision.reason,
                    "model_fingerprints": ",".join(sorted(current_models_of(leaderboard, symbol, target))),
                })
            table = pl.DataFrame(rows, schema=REGISTRY_SCHEMA).sort("symbol", "target")
            champions = table.filter(pl.col("champion_version").is_not_null())
            context.log.info(f"registry: {champions.height} champions over {table.height} cells; {len(changes)} cells changed")
            return Computed(
                table,
                metadata={
                    "champions": markdown_table(champions.to_dicts(), ["symbol", "target", "champion_family", "champion_version", "metric", "champion_score", "challenger_version", "previous_champion_version"]),
                    "changes": dg.MetadataValue.md("\n".join(f"- {change}" for change in changes) or "none"),
                    "cells_changed": len(changes),
                    "rollback": ", ".join(config.rollback) or "none",
                    "rollback_reason": config.reason or "",
                    "reassessed": ", ".join(config.reassess) or "none",
                    "tracking_uri": tracker.tracking_uri if not tracker.tracking_uri.startswith("sqlite") else "embedded (sqlite)",
                    # The cells the registry could not decide for, as the leaderboard found them.
                    "missing_models": leaderboard_notes.get("missing_models", 0),
                    "missing": dg.MetadataValue.md(leaderboard_notes.get("missing", {}).get("__markdown__", "none")),
                },
            )

        run_config: dict[str, Any] = {"promotion": settings, "rollback": config.rollback, "reason": config.reason, "reassess": config.reassess}
        yield from materialize_uncached(context, artifact_store.store(), run_config, compute)

    return model_registry
