"""Housekeeping, daily: `checkpoint_retention` (what retention did, or would do in a dry run) and
`storage_usage` (bytes by area, asset, family and day, growth per day) with a quota check.

Both read state outside the asset graph (the MLflow registry, the whole store), so both always
run; their data versions hash their results. The schedule `daily_housekeeping` runs them at
03:00 UTC; by hand, materialize them from the UI or run
`dagster job execute -m intelligence_assets.definitions -j housekeeping_job`
(add `-c` with `ops: {checkpoint_retention: {config: {dry_run: true}}}` to only list the actions).
"""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from intelligence_assets.cells.housekeeping import measure_storage, run_retention
from intelligence_assets.config.universe import Universe
from intelligence_assets.defs.assets.caching import Computed, materialize_uncached
from intelligence_assets.defs.assets.metadata import table_metadata
from intelligence_assets.defs.resources.artifact_store import ArtifactStoreResource
from intelligence_assets.defs.resources.mlflow_tracking import MlflowTrackingResource

CHECKPOINT_RETENTION = dg.AssetKey("checkpoint_retention")
STORAGE_USAGE = dg.AssetKey("storage_usage")
HOUSEKEEPING_JOB = "housekeeping_job"
GROWTH_WINDOW_DAYS = 7


class RetentionRunConfig(dg.Config):
    dry_run: bool = Field(default=False, description="List what retention would do and change nothing.")
    days_ahead: int = Field(
        default=0, ge=0, description="Judge ages as if this many days had passed (rehearse a policy with dry_run)."
    )


def build_housekeeping_assets(universe: Universe) -> list[dg.AssetsDefinition]:
    settings = universe.retention

    @dg.asset(
        key=CHECKPOINT_RETENTION,
        group_name="housekeeping",
        code_version="1",
        kinds={"mlflow"},
        description=(
            f"Checkpoint retention: keep the top {settings.keep_top} versions per registered model, never touch alias "
            "holders, "
            f"archive others after {settings.archive_after_days} days, delete archives after "
            f"{settings.delete_archived_after_days}, "
            f"collect unregistered runs and superseded artifacts after {settings.collect_unregistered_after_days} days."
        ),
    )
    def checkpoint_retention(
        context: dg.AssetExecutionContext,
        config: RetentionRunConfig,
        artifact_store: ArtifactStoreResource,
        mlflow_tracking: MlflowTrackingResource,
    ) -> Iterator[dg.Output]:
        def compute() -> Computed:
            now = datetime.now(UTC) + timedelta(days=config.days_ahead)
            client = mlflow_tracking.tracker().client
            run = run_retention(
                client, artifact_store.store(), settings, now, dry_run=config.dry_run, log=context.log.info
            )
            report = run.report
            if report.failures:
                context.log.warning(f"retention: {len(report.failures)} actions failed; the others were applied")
            return Computed(
                run.actions,
                metadata={
                    "dry_run": config.dry_run,
                    "as_of": now.isoformat(timespec="seconds"),
                    "actions": run.actions.height,
                    "failed": len(report.failures),
                    "bytes_freed": int(sum(report.bytes_freed().values())),
                    "archive_bytes_written": int(report.bytes_written()),
                    "report": dg.MetadataValue.md(report.markdown_table()),
                },
            )

        yield from materialize_uncached(
            context, artifact_store.store(), {"retention": settings, **config.model_dump()}, compute
        )

    @dg.asset(
        key=STORAGE_USAGE,
        deps=[CHECKPOINT_RETENTION],
        group_name="housekeeping",
        code_version="1",
        kinds={"polars"},
        check_specs=[
            dg.AssetCheckSpec(
                "storage_quota",
                asset=STORAGE_USAGE,
                description=f"Fails above {settings.alert_fraction:.0%} of the {settings.quota_bytes:,}-byte quota.",
            )
        ],
        description=(
            "Bytes in the artifact store (MLflow artifacts and archives included) by area, asset, family and day; "
            "growth per day."
        ),
    )
    def storage_usage(
        context: dg.AssetExecutionContext, artifact_store: ArtifactStoreResource
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        def compute() -> Computed:
            usage = measure_storage(
                artifact_store.store().list_objects(""),
                settings.quota_bytes,
                settings.alert_fraction,
                GROWTH_WINDOW_DAYS,
            )
            status, growth = usage.quota, usage.growth
            context.log.info(
                f"storage: {status.describe()}; mean growth {growth.mean_bytes_per_day / 1e6:.1f} MB/day over "
                f"{GROWTH_WINDOW_DAYS} days"
            )
            check = dg.AssetCheckResult(
                check_name="storage_quota",
                passed=not status.alert,
                severity=dg.AssetCheckSeverity.ERROR,
                description=status.describe(),
                metadata={"used_fraction": status.used_fraction, "alert_fraction": settings.alert_fraction},
            )
            return Computed(
                usage.by_key,
                metadata={
                    "total_bytes": status.used_bytes,
                    "quota_bytes": settings.quota_bytes,
                    "used_fraction": round(status.used_fraction, 6),
                    "mean_growth_bytes_per_day": int(growth.mean_bytes_per_day),
                    "growth_per_day": table_metadata(
                        growth.per_day.with_columns(pl.col("day").cast(pl.String)).to_dicts(), ["day", "bytes"]
                    ),
                    "by_asset": table_metadata(usage.by_asset.to_dicts(), ["area", "asset", "family", "bytes"]),
                },
                checks=[check],
            )

        yield from materialize_uncached(
            context,
            artifact_store.store(),
            {"retention": settings, "day": datetime.now(UTC).date().isoformat()},
            compute,
        )

    return [checkpoint_retention, storage_usage]


def build_housekeeping_schedule(job: dg.JobDefinition | Any) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="daily_housekeeping",
        job=job,
        cron_schedule="0 3 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Checkpoint retention, then storage usage and its quota check, every day at 03:00 UTC.",
    )
