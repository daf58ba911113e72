"""The day's housekeeping without Dagster: a retention pass over a real MLflow store and a local
artifact store, and the store's usage against its quota."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from mlflow import MlflowClient

from intelligence_assets.cells.housekeeping import RETENTION_ACTIONS_SCHEMA, measure_storage, run_retention
from intelligence_assets.defs.assets.market_data import FEATURES
from intelligence_assets.store.artifact_store import LocalArtifactStore
from intelligence_assets.store.artifacts import Manifest, commit_artifact, point_to, read_value
from intelligence_assets.store.keys import artifact_prefix, asset_path, fingerprint_directory
from intelligence_assets.tracking.retention import RetentionSettings


def commit(store: LocalArtifactStore, prefix: str, value: dict, fingerprint: str) -> None:
    manifest = commit_artifact(
        store, prefix, value, Manifest(fingerprint=fingerprint, data_version=fingerprint, files={})
    )
    point_to(store, prefix, manifest)


@pytest.fixture
def stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[MlflowClient, LocalArtifactStore]:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}"), LocalArtifactStore(tmp_path / "artifacts")


def test_a_retention_pass_collects_a_superseded_directory_once_old_enough(stores) -> None:
    client, store = stores
    features = artifact_prefix(FEATURES, "AAPL")
    commit(store, features, {"rows": 1}, "old")
    commit(store, features, {"rows": 2}, "new")
    settings = RetentionSettings()
    logged: list[str] = []

    early = datetime.now(UTC)
    dry = run_retention(client, store, settings, early, dry_run=True, log=logged.append)
    assert dry.actions.height == 0 and dict(dry.actions.schema) == RETENTION_ACTIONS_SCHEMA
    assert logged[0] == f"retention (dry run, as of {early.date()}): 0 actions"

    later = early + timedelta(days=settings.collect_superseded_artifacts_after_days + 1)
    applied = run_retention(client, store, settings, later, dry_run=False, log=logged.append)
    assert applied.actions.select("kind", "target", "status").rows() == [
        ("collect_artifact", fingerprint_directory(features, "old"), "applied")
    ]
    assert applied.actions["bytes"][0] == applied.report.bytes_freed()["collect_artifact"] > 0
    assert store.list_keys(fingerprint_directory(features, "old")) == []
    assert read_value(store, features) == {"rows": 2}


def test_storage_usage_totals_every_object_and_raises_the_quota_alert(stores) -> None:
    _, store = stores
    for symbol in ("AAPL", "MSFT"):
        commit(store, artifact_prefix(FEATURES, symbol), {"rows": list(range(200))}, "f1")
    objects = store.list_objects("")
    total = sum(stored.bytes for stored in objects)

    roomy = measure_storage(objects, quota_bytes=total * 10, alert_fraction=0.8, window_days=7)
    assert roomy.quota.used_bytes == int(roomy.by_key["bytes"].sum()) == total
    assert not roomy.quota.alert
    assert roomy.by_asset.filter(roomy.by_asset["asset"] == asset_path(FEATURES))["bytes"].sum() > 0
    # Everything was written today: the window's growth is all of it.
    assert roomy.growth.mean_bytes_per_day == pytest.approx(total / 7)

    tight = measure_storage(objects, quota_bytes=total, alert_fraction=0.8, window_days=7)
    assert tight.quota.alert and tight.quota.used_fraction == pytest.approx(1.0)
