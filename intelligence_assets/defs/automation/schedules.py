"""The retrain schedule: on the configured cron, runs for the model partitions that are stale (the
planner: inputs, code or config changed) or whose model is older than the configured age, cut
into ranged runs (one per symbol, or per target and up to 100 symbols) as a backfill is."""
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import dagster as dg

from intelligence_assets.defs.assets.models import model_key
from intelligence_assets.defs.assets.target_analysis import TARGET_ANALYSIS_ASSETS
from intelligence_assets.defs.automation.sensors import production_tags
from intelligence_assets.defs.partitions import RANGE_END_TAG, RANGE_START_TAG, SYMBOL_DIMENSION, cell_key
from intelligence_assets.defs.planner import cells_in_range, code_versions_of, plan_runs, training_ranges
from intelligence_assets.store.artifact_store import ArtifactStore, ArtifactStoreError
from intelligence_assets.defs.resources.artifact_store import ArtifactStoreResource
from intelligence_assets.store.artifacts import ArtifactHandle, read_manifest
from intelligence_assets.store.bars_source import BarsSourceResource
from intelligence_assets.config.universe import Universe



def model_age_days(store: ArtifactStore, prefix: str, now: datetime) -> float | None:
    """Days since the current model was computed (None when there is none)."""
    try:
        handle = ArtifactHandle.current(store, prefix)
        computed_at = datetime.fromisoformat(read_manifest(store, prefix, handle.fingerprint).provenance["computed_at"])
    except (ArtifactStoreError, KeyError, ValueError):
        return None
    return (now - computed_at).total_seconds() / 86400.0


def cells_to_retrain(universe: Universe, store: ArtifactStore, assets: list[dg.AssetsDefinition], symbols: list[str], bars_source: Any, now: datetime) -> dict[str, str]:
    """symbol|target -> why: stale by the planner, or a model older than retrain_max_age_days."""
    plan = plan_runs(universe, store, code_versions_of(assets), symbols, bars_source)
    model_assets = [f"models/{family}" for family in universe.model_families]
    reasons = {cell: "stale" for cell in plan.partitions([*TARGET_ANALYSIS_ASSETS, *model_assets]) if cell}
    for symbol in symbols:
        for target in universe.target_names:
            cell = cell_key(symbol, target)
            if cell in reasons:
                continue
            ages = [model_age_days(store, f"{'/'.join(model_key(f).path)}/{symbol}/{target}", now) for f in universe.model_families]
            oldest = max((age for age in ages if age is not None), default=None)
            if oldest is not None and oldest > universe.automation.retrain_max_age_days:
                reasons[cell] = f"model {oldest:.1f} days old"
    return dict(sorted(reasons.items()))


def build_retrain_schedule(universe: Universe, training_job: Any, assets: list[dg.AssetsDefinition]) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="periodic_retrain",
        job=training_job,
        cron_schedule=universe.automation.retrain_cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"On '{universe.automation.retrain_cron}' (UTC): training runs for model partitions that are stale or older than {universe.automation.retrain_max_age_days:g} days.",
    )
    def periodic_retrain(context: dg.ScheduleEvaluationContext, artifact_store: ArtifactStoreResource, bars_source: BarsSourceResource) -> Iterator[dg.RunRequest] | dg.SkipReason:
        now = context.scheduled_execution_time or datetime.now(timezone.utc)
        symbols = [s for s in context.instance.get_dynamic_partitions(SYMBOL_DIMENSION) if s in universe.symbols]
        reasons = cells_to_retrain(universe, artifact_store.store(), assets, symbols, bars_source.source(), now)
        if not reasons:
            return dg.SkipReason(f"all {len(symbols) * len(universe.target_names)} model partitions are current and younger than {universe.automation.retrain_max_age_days:g} days")
        tick = now.strftime("%Y-%m-%dT%H:%M")
        ordered = context.instance.get_dynamic_partitions(SYMBOL_DIMENSION)
        ranges = training_ranges(ordered, universe.target_names, list(reasons), universe.automation.backfill_partitions_per_run, {})
        return [
            dg.RunRequest(
                run_key=f"retrain:{start}..{end}:{tick}",
                tags={
                    **production_tags(universe, "periodic_retrain"),
                    RANGE_START_TAG: start,
                    RANGE_END_TAG: end,
                    # The distinct reasons of the cells in the range.
                    "intelligence/reason": "; ".join(sorted({reasons[cell] for cell in cells_in_range(ordered, universe.target_names, start, end) if cell in reasons}))[:250],
                },
            )
            for start, end in ranges
        ]

    return periodic_retrain

