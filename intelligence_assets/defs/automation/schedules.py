"""The retrain schedule: on the configured cron, runs for the model partitions that are stale (the
planner: inputs, code or config changed) or whose model is older than the configured age. Dagster
cuts them into ranged runs by the training assets' BackfillPolicy (one per symbol, or per target
and up to 100 symbols), as it cuts a backfill of the same cells: a schedule cannot launch a
backfill itself, so it asks the same code declarative automation uses."""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import dagster as dg

# Dagster's own cutting of asset partitions into runs by each asset's BackfillPolicy.
from dagster._core.definitions.automation_tick_evaluation_context import build_run_requests_with_backfill_policies
from dagster._core.definitions.events import AssetKeyPartitionKey

from intelligence_assets.config.universe import Universe
from intelligence_assets.defs.assets.hyperparameter_search import SEARCH_KEY_PREFIX
from intelligence_assets.defs.assets.models import model_key
from intelligence_assets.defs.automation.sensors import exploratory_tags, production_tags
from intelligence_assets.defs.partitions import RANGE_END_TAG, RANGE_START_TAG, SYMBOL_DIMENSION, cell_key
from intelligence_assets.defs.planner import asset_graph_of, plan_runs
from intelligence_assets.defs.resources.artifact_store import ArtifactStoreResource
from intelligence_assets.defs.resources.bars_source import BarsSourceResource
from intelligence_assets.store.artifact_store import ArtifactStore, ArtifactStoreError
from intelligence_assets.store.artifacts import ArtifactHandle, read_manifest
from intelligence_assets.store.keys import artifact_prefix

REASON_TAG = "intelligence/reason"


def model_age_days(store: ArtifactStore, prefix: str, now: datetime) -> float | None:
    """Days since the current model was computed (None when there is none)."""
    try:
        handle = ArtifactHandle.current(store, prefix)
        computed_at = datetime.fromisoformat(read_manifest(store, prefix, handle.fingerprint).provenance["computed_at"])
    except (ArtifactStoreError, KeyError, ValueError):
        return None
    return (now - computed_at).total_seconds() / 86400.0


def cells_to_retrain(
    universe: Universe,
    store: ArtifactStore,
    assets: Sequence[dg.AssetsDefinition],
    training_assets: Sequence[dg.AssetKey],
    symbols: list[str],
    bars_source: Any,
    now: datetime,
) -> dict[str, str]:
    """symbol|target -> why: stale by the planner in any of `training_assets`, or a model older
    than retrain_max_age_days."""
    plan = plan_runs(universe, store, assets, symbols, bars_source)
    reasons = {cell: "stale" for cell in plan.partitions([key.to_user_string() for key in training_assets]) if cell}
    for symbol in symbols:
        for target in universe.target_names:
            cell = cell_key(symbol, target)
            if cell in reasons:
                continue
            ages = [
                model_age_days(store, artifact_prefix(model_key(family), symbol, target), now)
                for family in universe.model_families
            ]
            oldest = max((age for age in ages if age is not None), default=None)
            if oldest is not None and oldest > universe.automation.retrain_max_age_days:
                reasons[cell] = f"model {oldest:.1f} days old"
    return dict(sorted(reasons.items()))


def ranged_run_requests(
    context: dg.ScheduleEvaluationContext,
    graph: Any,
    assets: Sequence[dg.AssetKey],
    reasons: dict[str, str],
    tags: dict[str, str],
    run_key_prefix: str,
    now: datetime,
) -> list[dg.RunRequest]:
    """Runs for `assets` over the cells in `reasons` (symbol|target -> why), cut into ranges by
    the assets' BackfillPolicy as a backfill of the same cells is cut; each run's
    `intelligence/reason` tag holds the distinct reasons of its cells."""
    # The assets share one partitioning (symbol x target).
    partitions_def = graph.get(assets[0]).partitions_def
    tick = now.strftime("%Y-%m-%dT%H:%M")
    with dg.partition_loading_context(dynamic_partitions_store=context.instance):
        cut = build_run_requests_with_backfill_policies(
            [AssetKeyPartitionKey(key, cell) for key in assets for cell in reasons], graph, context.instance
        )
        requests = []
        for request in cut:
            start, end = request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]
            cells = partitions_def.get_partition_keys_in_range(dg.PartitionKeyRange(start, end))
            requests.append(
                dg.RunRequest(
                    run_key=f"{run_key_prefix}:{start}..{end}:{tick}",
                    tags={
                        **request.tags,
                        **tags,
                        REASON_TAG: "; ".join(sorted({reasons[cell] for cell in cells if cell in reasons}))[:250],
                    },
                    asset_selection=request.asset_selection,
                    asset_check_keys=request.asset_check_keys,
                )
            )
    return requests


def registered_symbols(context: dg.ScheduleEvaluationContext, universe: Universe) -> list[str]:
    return [s for s in context.instance.get_dynamic_partitions(SYMBOL_DIMENSION) if s in universe.symbols]


def build_retrain_schedule(
    universe: Universe, training_job: Any, assets: Sequence[dg.AssetsDefinition]
) -> dg.ScheduleDefinition:
    graph = asset_graph_of(assets)
    training_assets = sorted(training_job.selection.resolve(graph))

    @dg.schedule(
        name="periodic_retrain",
        job=training_job,
        cron_schedule=universe.automation.retrain_cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(
            f"On '{universe.automation.retrain_cron}' (UTC): training runs for model partitions that are stale or "
            f"older than {universe.automation.retrain_max_age_days:g} days."
        ),
    )
    def periodic_retrain(
        context: dg.ScheduleEvaluationContext, artifact_store: ArtifactStoreResource, bars_source: BarsSourceResource
    ) -> list[dg.RunRequest] | dg.SkipReason:
        now = context.scheduled_execution_time or datetime.now(UTC)
        symbols = registered_symbols(context, universe)
        reasons = cells_to_retrain(
            universe, artifact_store.store(), assets, training_assets, symbols, bars_source.source(), now
        )
        if not reasons:
            return dg.SkipReason(
                f"all {len(symbols) * len(universe.target_names)} model partitions are current and younger than "
                f"{universe.automation.retrain_max_age_days:g} days"
            )
        return ranged_run_requests(
            context, graph, training_assets, reasons, production_tags(universe, "periodic_retrain"), "retrain", now
        )

    return periodic_retrain


def build_search_schedule(
    universe: Universe, search_job: Any, assets: Sequence[dg.AssetsDefinition]
) -> dg.ScheduleDefinition:
    """Searches again where their inputs, space or budget changed: the searches' own schedule,
    stopped until a user starts it (a search is exploratory work, never automatic by default)."""
    graph = asset_graph_of(assets)
    job_assets = sorted(search_job.selection.resolve(graph))
    search_assets = [key.to_user_string() for key in job_assets if key.path[0] == SEARCH_KEY_PREFIX]

    @dg.schedule(
        name="periodic_search",
        job=search_job,
        cron_schedule=universe.automation.search_cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=(
            f"On '{universe.automation.search_cron}' (UTC), once started: hyperparameter_search_job runs for the "
            "search partitions whose inputs, space or budget changed (exploratory priority)."
        ),
    )
    def periodic_search(
        context: dg.ScheduleEvaluationContext, artifact_store: ArtifactStoreResource, bars_source: BarsSourceResource
    ) -> list[dg.RunRequest] | dg.SkipReason:
        now = context.scheduled_execution_time or datetime.now(UTC)
        symbols = registered_symbols(context, universe)
        plan = plan_runs(universe, artifact_store.store(), assets, symbols, bars_source.source())
        reasons = {cell: "stale" for cell in plan.partitions(search_assets) if cell}
        if not reasons:
            return dg.SkipReason(f"every search partition of {len(symbols)} symbols is current")
        return ranged_run_requests(
            context, graph, job_assets, reasons, exploratory_tags(universe, "periodic_search"), "search", now
        )

    return periodic_search
