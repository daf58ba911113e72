"""`hyperparameter_search/<family>` through `dagster.materialize`: a real Optuna study in the
instance's database, the models training with what it found, and every trial in MLflow."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import optuna
import pytest

from intelligence_assets.config.universe import load_universe
from intelligence_assets.definitions import SEARCH_JOB, TRAINING_JOB, build_assets, build_definitions
from intelligence_assets.defs.assets.hyperparameter_search import STUDY_DATABASE, search_key
from intelligence_assets.defs.assets.market_data import BARS, FEATURES
from intelligence_assets.defs.assets.models import model_key
from intelligence_assets.defs.assets.target_analysis import TARGET_ANALYSIS_ASSETS
from intelligence_assets.defs.partitions import register_symbols
from intelligence_assets.defs.pods import K8S_CONFIG_TAG
from intelligence_assets.defs.resources.deployment import Deployment
from intelligence_assets.store.artifact_store import LocalArtifactStore
from intelligence_assets.store.artifacts import ArtifactHandle
from intelligence_assets.store.keys import artifact_prefix
from intelligence_assets.tracking import names
from intelligence_assets_tests.conftest import write_small_universe
from intelligence_assets_tests.support.pipeline import cache_outcomes, local_resources

SYMBOL, TARGET = "SIGNAL", "y_up_1b"
CELL = dg.MultiPartitionKey({"symbol": SYMBOL, "target": TARGET})
TRIALS = 6
FAMILIES = {
    "linear": {"params": {}},
    "lightgbm": {
        "params": {"num_boost_round": 60, "learning_rate": 0.05, "num_leaves": 15},
        "search": {
            "space": {"learning_rate": {"low": 0.01, "high": 0.3, "log": True}, "num_leaves": {"low": 4, "high": 32}},
            "trials": TRIALS,
            "startup_trials": 3,
        },
    },
}


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("searched")
    universe = load_universe(write_small_universe(directory, families=FAMILIES))
    assets = build_assets(universe)
    resources = local_resources(directory / "artifacts", universe)
    (directory / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(directory / "home")) as instance:
        register_symbols(instance, universe.symbols)

        def run(selection: dg.AssetSelection, partition_key=None) -> dg.ExecuteInProcessResult:
            return dg.materialize(
                assets, selection=selection, partition_key=partition_key, instance=instance, resources=resources
            )

        assert run(dg.AssetSelection.assets(BARS, FEATURES), SYMBOL).success
        search_selection = dg.AssetSelection.assets(*TARGET_ANALYSIS_ASSETS) | dg.AssetSelection.groups(
            "hyperparameter_search"
        )
        first = run(search_selection, CELL)
        models = run(dg.AssetSelection.key_prefixes("models"), CELL)
        again = run(search_selection, CELL)
        yield universe, instance, resources, LocalArtifactStore(directory / "artifacts"), first, models, again


def _materialization(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dg.AssetMaterialization:
    return next(
        event.materialization
        for event in result.get_asset_materialization_events()
        if event.materialization.asset_key == key and "cache" in event.materialization.metadata
    )


def test_the_search_runs_its_budget_on_the_instances_database(searched) -> None:
    universe, instance, _, store, first, _, _ = searched
    assert first.success
    metadata = _materialization(first, search_key("lightgbm")).metadata
    assert metadata["cache"].value == "miss"
    assert metadata["trials_complete"].value + metadata["trials_pruned"].value == TRIALS
    assert metadata["mlflow_run"].value.startswith("http")
    storage = f"sqlite:///{Path(instance.root_directory) / 'storage' / STUDY_DATABASE}"
    study = optuna.load_study(study_name=metadata["study"].value, storage=storage)
    finished = study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    assert len(finished) == TRIALS
    # The study is named by the partition's fingerprint.
    assert metadata["study"].value == metadata["fingerprint"].value


def test_the_searched_familys_model_trains_with_the_best_params_the_others_with_theirs(searched) -> None:
    universe, _, _, store, _, models, _ = searched
    assert models.success
    search = ArtifactHandle.current(store, artifact_prefix(search_key("lightgbm"), SYMBOL, TARGET)).load()
    lightgbm = ArtifactHandle.current(store, artifact_prefix(model_key("lightgbm"), SYMBOL, TARGET)).load()
    linear = ArtifactHandle.current(store, artifact_prefix(model_key("linear"), SYMBOL, TARGET)).load()
    assert search["searched"] is True
    configured = universe.model_families["lightgbm"].params
    assert lightgbm.summary["params"] == {**configured, **search["searched_params"]}
    assert lightgbm.summary["params"] != configured or search["searched_params"] == {
        name: configured[name] for name in search["searched_params"]
    }
    assert linear.summary["params"] == universe.model_families["linear"].params
    # The leakage sentinel judges searched models as any other.
    checks = [event for event in models.get_asset_check_evaluations() if event.asset_key == model_key("lightgbm")]
    assert checks and all(check.check_name == "leakage_sentinel" for check in checks)


def test_a_rerun_with_the_same_space_budget_and_inputs_is_a_cache_hit(searched) -> None:
    _, _, _, _, first, _, again = searched
    outcomes = cache_outcomes(again)
    assert outcomes[(search_key("lightgbm").to_user_string(), CELL)] == "hit"
    assert (
        _materialization(again, search_key("lightgbm")).metadata["fingerprint"]
        == _materialization(first, search_key("lightgbm")).metadata["fingerprint"]
    )


def test_every_trial_is_a_child_run_of_the_searchs_parent_run_in_mlflow(searched) -> None:
    _, _, resources, _, first, _, _ = searched
    metadata = _materialization(first, search_key("lightgbm")).metadata
    client = resources["mlflow_tracking"].tracker().client
    parent = client.get_run(metadata["mlflow_run_id"].value)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[names.FINGERPRINT_TAG] == metadata["fingerprint"].value
    assert parent.data.metrics["best_value"] == pytest.approx(metadata["best_value"].value)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == TRIALS
    artifacts = {artifact.path for artifact in client.list_artifacts(parent.info.run_id)}
    assert {"optimization_history.png", "trials.json"} <= artifacts


def test_searches_are_exploratory_runs_that_automation_never_starts(searched) -> None:
    universe = searched[0]
    defs = build_definitions(universe, Deployment(artifact_root=Path("/nonexistent")))
    graph = defs.resolve_asset_graph()
    assert graph.get(search_key("lightgbm")).automation_condition is None
    assert search_key("lightgbm") in graph.get(model_key("lightgbm")).parent_keys
    assert search_key("lightgbm") not in graph.get(model_key("linear")).parent_keys
    search_job = defs.resolve_job_def(SEARCH_JOB)
    assert search_job.tags["dagster/priority"] == str(universe.automation.exploratory_priority)
    assert search_job.tags["intelligence/purpose"] == "exploratory"
    assert search_key("lightgbm") not in defs.resolve_job_def(TRAINING_JOB).asset_layer.selected_asset_keys
    automation = defs.resolve_sensor_def("automation")
    assert search_key("lightgbm") not in automation.asset_selection.resolve(graph)
    assert model_key("lightgbm") in automation.asset_selection.resolve(graph)
    assert graph.get(search_key("lightgbm")).pools == {"search"}


def test_on_kubernetes_a_search_pod_asks_for_a_core_per_trial_worker(tmp_path: Path) -> None:
    families = {"lightgbm": {"params": {}, "search": {"trials": 4, "workers": 3}}}
    universe = load_universe(write_small_universe(tmp_path, families=families))
    search = next(asset for asset in build_assets(universe) if search_key("lightgbm") in asset.keys)
    model = next(asset for asset in build_assets(universe) if model_key("lightgbm") in asset.keys)

    def requests(asset: dg.AssetsDefinition) -> dict[str, str]:
        # Dagster keeps op tags as strings: the pod config as JSON.
        return json.loads(asset.op.tags[K8S_CONFIG_TAG])["container_config"]["resources"]["requests"]

    assert requests(search)["cpu"] == "3"
    assert requests(model)["cpu"] == universe.kubernetes.cpu_step.cpu


def test_the_search_schedule_is_stopped_until_started_and_asks_only_for_stale_searches(searched) -> None:
    universe, instance, resources, _, _, _, _ = searched
    defs = build_definitions(universe, Deployment(artifact_root=Path("/nonexistent")))
    schedule = defs.resolve_schedule_def("periodic_search")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.job_name == SEARCH_JOB
    with dg.build_schedule_context(
        instance=instance, resources=resources, scheduled_execution_time=datetime.now(UTC)
    ) as context:
        requests = schedule.evaluate_tick(context).run_requests
    assert requests, "the other cells' searches have never run"
    for request in requests:
        assert request.tags["dagster/priority"] == str(universe.automation.exploratory_priority)
        assert request.tags["intelligence/purpose"] == "exploratory"
        assert set(request.asset_selection) <= set(defs.resolve_job_def(SEARCH_JOB).asset_layer.selected_asset_keys)
    ranges = sorted(
        (request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"])
        for request in requests
    )
    # The searched cell is current; the others have never been searched.
    assert ranges == [("NOISE|y_up_1b", "NOISE|y_volatility_5b"), ("SIGNAL|y_volatility_5b", "SIGNAL|y_volatility_5b")]
