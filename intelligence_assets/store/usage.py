"""Where the artifact store's bytes go, and how fast they grow.

Every key falls in one area: `mlflow/...` (MLflow run artifacts, which the embedded deployment and
an MLflow server with `--serve-artifacts` both keep in the store), `archive/...` (retention's
compressed model versions) or anything else, the assets' `artifacts`. Within an area a key's
asset is its first folder (`features`, `model_leaderboard`), `models/<family>` for models, the
experiment folder for MLflow and the registered model for archives.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import polars as pl

from intelligence_assets.store.artifact_store import StoredObject
from intelligence_assets.store.keys import MODELS, asset_path

ARTIFACTS_AREA = "artifacts"
MLFLOW_AREA = "mlflow"
ARCHIVE_AREA = "archive"

USAGE_SCHEMA = {"area": pl.String, "asset": pl.String, "family": pl.String, "day": pl.Date, "bytes": pl.Int64}


def classify_key(key: str) -> tuple[str, str, str | None]:
    """(area, asset, family) of a store key; family only for `models/<family>/...`."""
    parts = key.split("/")
    if parts[0] in {MLFLOW_AREA, ARCHIVE_AREA} and len(parts) > 1:
        return parts[0], parts[1], None
    if parts[0] == MODELS and len(parts) > 2:
        return ARTIFACTS_AREA, asset_path([MODELS, parts[1]]), parts[1]
    return ARTIFACTS_AREA, parts[0], None


def usage_by_key(objects: Iterable[StoredObject]) -> pl.DataFrame:
    """Bytes per area, asset, family and UTC day of last modification, each key classified by
    `classify_key`; sorted by area, asset, family, day."""
    rows = []
    for stored in objects:
        area, asset, family = classify_key(stored.key)
        rows.append((area, asset, family, stored.modified.astimezone(UTC).date(), stored.bytes))
    table = pl.DataFrame(rows, schema=USAGE_SCHEMA, orient="row")
    return (
        table.group_by(["area", "asset", "family", "day"])
        .agg(pl.col("bytes").sum())
        .sort(["area", "asset", "family", "day"], nulls_last=False)
    )


@dataclass(frozen=True)
class DailyGrowth:
    per_day: pl.DataFrame  # columns day, bytes: one row per day of the window, oldest first, zero-filled
    mean_bytes_per_day: float


def daily_growth(table: pl.DataFrame, days: int, today: date | None = None) -> DailyGrowth:
    """Bytes last modified on each of the `days` days ending `today` (UTC; default the current day),
    and their mean over the whole window.

    It counts what is still stored, by the day it was last written: bytes deleted since, or
    rewritten later, do not count for the day they first appeared.
    """
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    last = today or datetime.now(UTC).date()
    window = pl.DataFrame(
        {"day": [last - timedelta(days=offset) for offset in range(days - 1, -1, -1)]}, schema={"day": pl.Date}
    )
    added = table.group_by("day").agg(pl.col("bytes").sum())
    per_day = (
        window.join(added, on="day", how="left").with_columns(pl.col("bytes").fill_null(0).cast(pl.Int64)).sort("day")
    )
    return DailyGrowth(per_day=per_day, mean_bytes_per_day=float(per_day["bytes"].sum()) / days)


@dataclass(frozen=True)
class QuotaStatus:
    used_bytes: int
    quota_bytes: int
    used_fraction: float
    alert: bool  # usage exceeds the alert fraction of the quota
    days_until_full: float | None  # at the mean daily growth; None when usage does not grow

    def describe(self) -> str:
        horizon = (
            f", full in about {self.days_until_full:.0f} days at the recent growth"
            if self.days_until_full is not None
            else ""
        )
        return f"{self.used_bytes:,} of {self.quota_bytes:,} bytes used ({self.used_fraction:.0%}){horizon}"


def quota_status(
    table: pl.DataFrame, quota_bytes: int, alert_fraction: float, mean_bytes_per_day: float
) -> QuotaStatus:
    """Usage of `table` (from `usage_by_key`) against a quota."""
    if quota_bytes <= 0:
        raise ValueError(f"quota_bytes must be positive, got {quota_bytes}")
    used = int(table["bytes"].sum()) if table.height else 0
    remaining = max(quota_bytes - used, 0)
    return QuotaStatus(
        used_bytes=used,
        quota_bytes=quota_bytes,
        used_fraction=used / quota_bytes,
        alert=used > alert_fraction * quota_bytes,
        days_until_full=remaining / mean_bytes_per_day if mean_bytes_per_day > 0 else None,
    )
