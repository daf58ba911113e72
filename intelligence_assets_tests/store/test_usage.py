"""Storage usage from real store listings: a local directory and an S3 bucket on a moto server."""

from __future__ import annotations

import os
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from intelligence_assets.store.artifact_store import LocalArtifactStore, StoredObject
from intelligence_assets.store.s3 import S3ArtifactStore
from intelligence_assets.store.usage import classify_key, daily_growth, quota_status, usage_by_key
from intelligence_assets_tests.support.services import S3Endpoint, unique_bucket_name

# key -> size; sizes differ so that a wrong grouping cannot add up to the right sum by accident.
LAYOUT = {
    "features/AAPL/f1/data.parquet": 1201,
    "features/AAPL/f1/manifest.json": 311,
    "features/AAPL/current.json": 97,
    "features/MSFT/f2/data.parquet": 877,
    "models/lightgbm/AAPL/y_up_1b/m1/model/model.txt": 4099,
    "models/lightgbm/AAPL/y_up_1b/m1/manifest.json": 402,
    "models/xgboost/AAPL/y_up_1b/m2/model/model.json": 2903,
    "model_leaderboard/l1/result.json": 515,
    "mlflow/y_up_1b/0123456789abcdef0123456789abcdef/artifacts/model/MLmodel": 233,
    "mlflow/y_up_1b/0123456789abcdef0123456789abcdef/artifacts/model/weights.bin": 7001,
    "mlflow/y_volatility_5b/fedcba9876543210fedcba9876543210/artifacts/metrics.json": 61,
    "archive/intelligence.AAPL.y_up_1b/v3.tar.gz": 3333,
}


def expected_usage(sizes: dict[str, int], days: dict[str, date]) -> dict[tuple, int]:
    """Sums worked out independently of `usage_by_key`, from the layout's own meaning."""
    expected: dict[tuple, int] = defaultdict(int)
    for key, size in sizes.items():
        parts = key.split("/")
        if parts[0] == "mlflow":
            group = ("mlflow", parts[1], None)
        elif parts[0] == "archive":
            group = ("archive", parts[1], None)
        elif parts[0] == "models":
            group = ("artifacts", f"models/{parts[1]}", parts[1])
        else:
            group = ("artifacts", parts[0], None)
        expected[(*group, days[key])] += size
    return dict(expected)


def as_groups(table: pl.DataFrame) -> dict[tuple, int]:
    assert table.columns == ["area", "asset", "family", "day", "bytes"]
    assert table.schema["day"] == pl.Date and table.schema["bytes"] == pl.Int64
    groups = {
        (row["area"], row["asset"], row["family"], row["day"]): row["bytes"] for row in table.iter_rows(named=True)
    }
    assert len(groups) == table.height, "one row per area, asset, family and day"
    return groups


def payload(size: int, seed: int) -> bytes:
    return bytes((seed + position) % 251 for position in range(size))


def test_classify_key() -> None:
    assert classify_key("models/lightgbm/AAPL/y_up_1b/f/model.txt") == ("artifacts", "models/lightgbm", "lightgbm")
    assert classify_key("features/AAPL/f/data.parquet") == ("artifacts", "features", None)
    assert classify_key("model_leaderboard/f/result.json") == ("artifacts", "model_leaderboard", None)
    assert classify_key("mlflow/3/abc/artifacts/model/MLmodel") == ("mlflow", "3", None)
    assert classify_key("archive/intelligence.AAPL.y_up_1b/v1.tar.gz") == ("archive", "intelligence.AAPL.y_up_1b", None)


def test_local_store_usage_by_area_asset_family_and_day(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    today = datetime.now(UTC).date()
    days = {}
    for position, (key, size) in enumerate(sorted(LAYOUT.items())):
        if key.startswith("mlflow/"):  # MLflow writes its artifacts itself, not through the store
            path = store.root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(payload(size, position))
        else:
            store.put_bytes(key, payload(size, position))
        days[key] = today - timedelta(days=position % 3)
        noon = datetime.combine(days[key], datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)
        os.utime(store.root / key, (noon.timestamp(), noon.timestamp()))
    # A write in progress is not an object yet.
    (store.root / "features" / "AAPL" / ".data.parquet.x1.partial").write_bytes(b"x" * 999)

    objects = store.list_objects("")
    assert [stored.key for stored in objects] == sorted(LAYOUT)
    assert {stored.key: stored.bytes for stored in objects} == LAYOUT
    assert all(stored.modified.tzinfo is not None and stored.modified.date() == days[stored.key] for stored in objects)
    assert store.list_keys("") == sorted(LAYOUT)
    assert [stored.key for stored in store.list_objects("features/AAPL")] == sorted(
        k for k in LAYOUT if k.startswith("features/AAPL/")
    )
    assert store.list_objects("features/AAP") == [] and store.list_objects("nothing/here") == []

    usage = usage_by_key(objects)
    assert as_groups(usage) == expected_usage(LAYOUT, days)
    assert usage["bytes"].sum() == sum(LAYOUT.values())
    models = usage.filter(pl.col("asset").str.starts_with("models/")).group_by("family").agg(pl.col("bytes").sum())
    assert dict(models.iter_rows()) == {
        family: sum(size for key, size in LAYOUT.items() if key.startswith(f"models/{family}/"))
        for family in ("lightgbm", "xgboost")
    }

    growth = daily_growth(usage, days=5, today=today)
    assert growth.per_day["day"].to_list() == [today - timedelta(days=offset) for offset in range(4, -1, -1)]
    by_day = dict(growth.per_day.iter_rows())
    for offset in range(5):
        day = today - timedelta(days=offset)
        assert by_day[day] == sum(size for key, size in LAYOUT.items() if days[key] == day)
    assert growth.mean_bytes_per_day == pytest.approx(sum(LAYOUT.values()) / 5)


def test_s3_store_usage_matches_what_was_written(s3_endpoint: S3Endpoint) -> None:
    store = s3_endpoint.store(unique_bucket_name("usage"))
    assert store.list_objects("") == []  # the bucket does not exist yet: empty, not an error
    before = datetime.now(UTC)
    for position, (key, size) in enumerate(sorted(LAYOUT.items())):
        store.put_bytes(key, payload(size, position))
    store.put_bytes("featuresX/AAPL/f9/data.parquet", b"not under features/")
    after = datetime.now(UTC)

    objects = store.list_objects("")
    sizes = {**LAYOUT, "featuresX/AAPL/f9/data.parquet": len(b"not under features/")}
    assert {stored.key: stored.bytes for stored in objects} == sizes
    assert [stored.key for stored in objects] == sorted(sizes)
    # S3 keeps whole seconds; the server's clock is this machine's.
    assert all(before - timedelta(seconds=2) <= stored.modified <= after + timedelta(seconds=2) for stored in objects)
    assert all(stored.modified.utcoffset() == timedelta(0) for stored in objects)
    assert [stored.key for stored in store.list_objects("features")] == sorted(
        k for k in LAYOUT if k.startswith("features/")
    )
    assert store.list_keys("") == sorted(sizes)

    days = {stored.key: stored.modified.date() for stored in objects}
    usage = usage_by_key(objects)
    assert as_groups(usage) == expected_usage(sizes, days)
    per_asset = dict(usage.group_by("asset").agg(pl.col("bytes").sum()).iter_rows())
    assert (
        per_asset["models/lightgbm"]
        == LAYOUT["models/lightgbm/AAPL/y_up_1b/m1/model/model.txt"]
        + LAYOUT["models/lightgbm/AAPL/y_up_1b/m1/manifest.json"]
    )
    assert per_asset["y_up_1b"] == 233 + 7001
    assert per_asset["featuresX"] == len(b"not under features/")


def test_s3_list_objects_missing_bucket_is_empty(s3_endpoint: S3Endpoint) -> None:
    store = S3ArtifactStore(
        s3_endpoint.endpoint,
        unique_bucket_name("absent"),
        s3_endpoint.access_key,
        s3_endpoint.secret_key,
        retry_seconds=2,
    )
    assert store.list_objects("") == [] and store.list_objects("features") == [] and store.list_keys("features") == []
    with pytest.raises(ValueError, match="invalid artifact key"):
        store.list_objects("../escape")


def synthetic(key: str, size: int, day: date) -> StoredObject:
    return StoredObject(
        key=key,
        bytes=size,
        modified=datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=23),
    )


def test_daily_growth_fills_quiet_days_and_ignores_older_ones() -> None:
    today = date(2025, 3, 10)
    objects = [
        synthetic("features/A/f/data.parquet", 100, today),
        synthetic("features/B/f/data.parquet", 50, today),
        synthetic("models/linear/A/y/f/model.bin", 30, today - timedelta(days=2)),
        synthetic("mlflow/1/run/artifacts/x", 999, today - timedelta(days=7)),  # outside a 7-day window
    ]
    growth = daily_growth(usage_by_key(objects), days=7, today=today)
    assert growth.per_day.columns == ["day", "bytes"] and growth.per_day.height == 7
    assert dict(growth.per_day.iter_rows()) == {
        today - timedelta(days=offset): {0: 150, 2: 30}.get(offset, 0) for offset in range(7)
    }
    assert growth.mean_bytes_per_day == pytest.approx(180 / 7)
    with pytest.raises(ValueError, match="days must be at least 1"):
        daily_growth(usage_by_key(objects), days=0)
    empty = daily_growth(usage_by_key([]), days=3, today=today)
    assert empty.per_day["bytes"].to_list() == [0, 0, 0] and empty.mean_bytes_per_day == 0


def test_quota_status() -> None:
    today = date(2025, 3, 10)
    usage = usage_by_key(
        [synthetic("features/A/f/data.parquet", 850, today), synthetic("archive/m/v1.tar.gz", 50, today)]
    )
    status = quota_status(usage, quota_bytes=1000, alert_fraction=0.8, mean_bytes_per_day=25.0)
    assert (status.used_bytes, status.alert) == (900, True)
    assert status.used_fraction == pytest.approx(0.9) and status.days_until_full == pytest.approx(4.0)
    calm = quota_status(usage, quota_bytes=2000, alert_fraction=0.8, mean_bytes_per_day=0.0)
    assert calm.alert is False and calm.days_until_full is None
    assert "900 of 2,000 bytes used (45%)" in calm.describe()
