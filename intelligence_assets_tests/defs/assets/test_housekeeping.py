"""Housekeeping through Dagster on the embedded default: retention (dry run and applied, ages
rehearsed with `days_ahead`), storage usage and its quota check, and the daily schedule."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import dagster as dg
import polars as pl
import pytest
from mlflow import MlflowClient

from intelligence_assets.config.universe import Universe, load_universe
from intelligence_assets.definitions import HOUSEKEEPING_JOB, build_assets, build_definitions
from intelligence_assets.defs.assets.housekeeping import CHECKPOINT_RETENTION, STORAGE_USAGE
from intelligence_assets.defs.assets.models import model_key
from intelligence_assets.defs.resources.deployment import Deployment
from intelligence_assets.store.artifact_store import LocalArtifactStore
from intelligence_assets.store.artifacts import read_value
from intelligence_assets.store.keys import artifact_prefix, asset_path, fingerprint_directory
from intelligence_assets.tracking.retention import RetentionSettings
from intelligence_assets_tests.conftest import write_small_universe
from intelligence_assets_tests.support.pipeline import local_resources, materialize_everything

HOUSEKEEPING = dg.AssetSelection.assets(CHECKPOINT_RETENTION, STORAGE_USAGE)
HOUSEKEEPING_PREFIXES = (artifact_prefix(CHECKPOINT_RETENTION), artifact_prefix(STORAGE_USAGE))


def is_housekeeping_result(directory: str) -> bool:
    """A fingerprint directory of a housekeeping asset's own result."""
    return any(
        directory == fingerprint_directory(prefix, PurePosixPath(directory).name) for prefix in HOUSEKEEPING_PREFIXES
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("housekeeping")
    universe = load_universe(
        write_small_universe(
            directory, families={"linear": {"params": {}}, "lightgbm": {"params": {"num_boost_round": 40}}}
        )
    )
    root = directory / "artifacts"
    resources = local_resources(root, universe)
    with dg.instance_for_test() as instance:
        materialize_everything(universe, instance, resources)
        yield (
            universe,
            instance,
            resources,
            LocalArtifactStore(root),
            MlflowClient(f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"),
        )


def all_runs(client: MlflowClient) -> list:
    return [run for experiment in client.search_experiments() for run in client.search_runs([experiment.experiment_id])]


def housekeeping(universe: Universe, instance, resources, dry_run: bool, days_ahead: int) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        build_assets(universe),
        selection=HOUSEKEEPING,
        instance=instance,
        resources=resources,
        run_config={"ops": {"checkpoint_retention": {"config": {"dry_run": dry_run, "days_ahead": days_ahead}}}},
    )


def test_dry_run_lists_actions_and_changes_nothing_then_apply_is_idempotent(trained) -> None:
    universe, instance, resources, store, client = trained
    runs_before = {run.info.run_id for run in all_runs(client)}
    gated_runs = {run.info.run_id for run in all_runs(client) if run.data.tags["trained"] == "false"}
    assert gated_runs, "precondition: NOISE's direction target is gated, so its runs never became versions"
    versions_before = {(v.name, v.version) for v in client.search_model_versions()}
    keys_before = set(store.list_keys(""))

    # Today nothing is old enough.
    today = housekeeping(universe, instance, resources, dry_run=True, days_ahead=0)
    assert today.asset_materializations_for_node("checkpoint_retention")[0].metadata["actions"].value == 0

    # Rehearse ten days ahead: the unregistered runs are due for collection.
    rehearsal = housekeeping(universe, instance, resources, dry_run=True, days_ahead=10)
    metadata = rehearsal.asset_materializations_for_node("checkpoint_retention")[0].metadata
    assert metadata["dry_run"].value is True and metadata["actions"].value == len(gated_runs)
    report = read_value(store, artifact_prefix(CHECKPOINT_RETENTION))
    assert set(report["kind"]) == {"collect_run"} and set(report["status"]) == {"planned"}
    assert {run.info.run_id for run in all_runs(client)} == runs_before
    assert {(v.name, v.version) for v in client.search_model_versions()} == versions_before
    assert set(store.list_keys("")) - keys_before <= {
        key for prefix in HOUSEKEEPING_PREFIXES for key in store.list_keys(prefix)
    }

    applied = housekeeping(universe, instance, resources, dry_run=False, days_ahead=10)
    assert applied.asset_materializations_for_node("checkpoint_retention")[0].metadata["failed"].value == 0
    assert {run.info.run_id for run in all_runs(client)} == runs_before - gated_runs
    assert {
        (v.name, v.version) for v in client.search_model_versions()
    } == versions_before  # top-K and alias holders untouched
    again = housekeeping(universe, instance, resources, dry_run=False, days_ahead=10)
    assert again.success
    # Nothing left to do in MLflow; the only targets are earlier housekeeping results, superseded
    # by the runs above and "older than 7 days" ten days ahead.
    second = read_value(store, artifact_prefix(CHECKPOINT_RETENTION))
    assert set(second["kind"]) <= {"collect_artifact"}
    assert all(is_housekeeping_result(target) for target in second["target"])


def test_storage_usage_counts_every_area_and_checks_the_quota(trained) -> None:
    universe, instance, resources, store, _ = trained
    result = housekeeping(universe, instance, resources, dry_run=True, days_ahead=0)
    usage = read_value(store, artifact_prefix(STORAGE_USAGE))
    on_disk = sum(
        path.stat().st_size for path in Path(store.location.removeprefix("file://")).rglob("*") if path.is_file()
    )
    stored = int(usage["bytes"].sum())
    # Everything but the usage table being written at that moment (and its pointer).
    assert 0 < on_disk - stored < 50_000
    assert {"artifacts", "mlflow"} <= set(usage["area"])
    assert set(usage.filter(pl.col("asset") == asset_path(model_key("lightgbm")))["family"]) == {"lightgbm"}
    check = result.get_asset_check_evaluations()[0]
    assert check.check_name == "storage_quota" and check.passed

    tiny = universe.model_copy(update={"retention": RetentionSettings(quota_bytes=stored // 2)})
    over = dg.materialize(
        build_assets(tiny), selection=dg.AssetSelection.assets(STORAGE_USAGE), instance=instance, resources=resources
    )
    evaluation = over.get_asset_check_evaluations()[0]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert "bytes used" in (evaluation.description or "")


def test_housekeeping_is_scheduled_daily(small_universe: Universe, tmp_path: Path) -> None:
    defs = build_definitions(small_universe, Deployment(artifact_root=tmp_path))
    schedule = defs.resolve_schedule_def("daily_housekeeping")
    assert schedule.cron_schedule == "0 3 * * *" and schedule.job_name == HOUSEKEEPING_JOB
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance)
        requests = schedule.evaluate_tick(context).run_requests
    assert len(requests) == 1 and requests[0].job_name in (None, HOUSEKEEPING_JOB)
