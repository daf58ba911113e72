"""The day's housekeeping, without Dagster: checkpoint retention over the registry and the store,
and the store's usage against its quota."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import polars as pl

from intelligence_assets.store.artifact_store import ArtifactStore, StoredObject
from intelligence_assets.store.usage import DailyGrowth, QuotaStatus, daily_growth, quota_status, usage_by_key
from intelligence_assets.tracking.retention import (
    RetentionReport,
    RetentionSettings,
    apply_retention,
    gather_retention_snapshot,
    plan_retention,
)

if TYPE_CHECKING:  # mlflow loads in seconds; the definitions import this module
    from mlflow import MlflowClient

RETENTION_ACTIONS_SCHEMA = {
    "kind": pl.String,
    "target": pl.String,
    "status": pl.String,
    "bytes": pl.Int64,
    "reason": pl.String,
    "detail": pl.String,
}


@dataclass(frozen=True)
class RetentionRun:
    """What one retention pass did (or, in a dry run, would do), one row per action."""

    report: RetentionReport
    actions: pl.DataFrame


def run_retention(
    client: MlflowClient,
    store: ArtifactStore,
    settings: RetentionSettings,
    now: datetime,
    *,
    dry_run: bool,
    log: Callable[[str], None],
) -> RetentionRun:
    """Snapshot the registry and the store, plan retention as of `now`, and apply the plan."""
    actions = plan_retention(gather_retention_snapshot(client, store), settings, now)
    log(f"retention ({'dry run' if dry_run else 'applying'}, as of {now.date()}): {len(actions)} actions")
    report = apply_retention(actions, client, store, dry_run=dry_run, log=log)
    rows = [
        {
            "kind": outcome.action.kind.value,
            "target": outcome.action.target,
            "status": outcome.status,
            "bytes": outcome.bytes_freed if outcome.bytes_freed is not None else outcome.action.bytes,
            "reason": outcome.action.reason,
            "detail": outcome.detail,
        }
        for outcome in report.outcomes
    ]
    return RetentionRun(report, pl.DataFrame(rows, schema=RETENTION_ACTIONS_SCHEMA))


@dataclass(frozen=True)
class StorageUsage:
    """Bytes by key (`usage_by_key`), their growth per day, the quota's state and totals by asset."""

    by_key: pl.DataFrame
    growth: DailyGrowth
    quota: QuotaStatus
    by_asset: pl.DataFrame


def measure_storage(
    objects: Iterable[StoredObject], quota_bytes: int, alert_fraction: float, window_days: int
) -> StorageUsage:
    """Usage of every stored object, growth over the last `window_days` and the quota's state."""
    table = usage_by_key(objects)
    growth = daily_growth(table, window_days)
    return StorageUsage(
        by_key=table,
        growth=growth,
        quota=quota_status(table, quota_bytes, alert_fraction, growth.mean_bytes_per_day),
        by_asset=table.group_by("area", "asset", "family").agg(pl.col("bytes").sum()).sort("bytes", descending=True),
    )
