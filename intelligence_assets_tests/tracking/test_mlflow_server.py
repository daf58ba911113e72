"""Tracking, registry, promotion and rollback against a real MLflow server on loopback (SQLite
backend, artifacts proxied into the moto S3 server), through `dagster.materialize`; one test
follows a model's link into MLflow's own UI in Chromium."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path, PurePosixPath

import dagster as dg
import mlflow
import numpy as np
import polars as pl
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.entities import ViewType

from intelligence_assets.config.universe import load_universe
from intelligence_assets.definitions import build_assets
from intelligence_assets.defs.assets.market_data import FEATURES
from intelligence_assets.defs.assets.models import model_key
from intelligence_assets.defs.assets.predictions import PREDICTIONS
from intelligence_assets.defs.assets.registry import MODEL_REGISTRY
from intelligence_assets.defs.resources.deployment import Deployment
from intelligence_assets.defs.resources.mlflow_tracking import MlflowTrackingResource, request_settings
from intelligence_assets.ml.dataset import build_inference_matrix
from intelligence_assets.store.artifact_store import LocalArtifactStore
from intelligence_assets.store.artifacts import ArtifactHandle, read_value
from intelligence_assets.store.keys import artifact_prefix, manifest_key, pointer_key
from intelligence_assets.tracking import names
from intelligence_assets_tests.conftest import write_small_universe
from intelligence_assets_tests.support.browser import SCREENSHOTS
from intelligence_assets_tests.support.mlflow_server import (
    MlflowServer,
    pause_server,
    resume_server,
    start_mlflow_server,
)
from intelligence_assets_tests.support.pipeline import MODEL_SELECTION, materialize_everything
from intelligence_assets_tests.support.services import (
    LOOPBACK,
    FaultProxy,
    S3Endpoint,
    stop_process,
    unique_bucket_name,
)
from intelligence_assets_tests.tracking.test_importance_chart import bars

# A deliberately weak first model, then a strong one: the second must win promotion.
WEAK = {
    "lightgbm": {"params": {"num_boost_round": 3, "num_leaves": 2, "learning_rate": 0.01, "early_stopping_rounds": 3}}
}
STRONG = {"lightgbm": {"params": {"num_boost_round": 120}}}
CELL = ("SIGNAL", "y_up_1b")
LIGHTGBM = model_key("lightgbm")
MIN_IMPROVEMENT = 0.001


@pytest.fixture(autouse=True)
def quick_mlflow_client(monkeypatch: pytest.MonkeyPatch) -> None:
    # One HTTP attempt per request: the outage tests measure our retries, not urllib3's.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def resources_for(artifacts: Path, tracking_uri: str, universe) -> dict:
    return Deployment(artifact_root=artifacts, mlflow_tracking_uri=tracking_uri).resources(universe)


def write_universe(directory: Path, families: dict, symbols_prefix: str) -> Path:
    """A small universe whose symbols are unique to the test, so tests sharing the session's
    server never see each other's registered models."""
    # The strong model's edge over the weak one on the planted signal is small but fixed (seeded).
    path = write_small_universe(
        directory, families=families, promotion={"min_improvement": MIN_IMPROVEMENT, "min_test_rows": 100}
    )
    config = yaml.safe_load(path.read_text())
    bars = directory / "bars"
    for symbol in list(config["symbols"]):
        (bars / f"{symbol}.parquet").rename(bars / f"{symbols_prefix}{symbol}.parquet")
    config["symbols"] = [f"{symbols_prefix}{symbol}" for symbol in config["symbols"]]
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def set_families(path: Path, families: dict) -> None:
    config = yaml.safe_load(path.read_text())
    config["model_families"] = families
    path.write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture(scope="module")
def promoted(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory):
    """Weak models first, then strong ones: two registry generations on the server."""
    directory = tmp_path_factory.mktemp("tracked")
    universe_path = write_universe(directory, WEAK, "T")
    artifacts = directory / "artifacts"
    resources = resources_for(artifacts, mlflow_server.url, load_universe(universe_path))
    store = LocalArtifactStore(artifacts)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        with dg.instance_for_test() as instance:
            materialize_everything(load_universe(universe_path), instance, resources)
            first_registry = read_value(store, artifact_prefix(MODEL_REGISTRY))
            set_families(universe_path, STRONG)
            materialize_everything(load_universe(universe_path), instance, resources)
            yield {
                "universe_path": universe_path,
                "instance": instance,
                "resources": resources,
                "store": store,
                "first_registry": first_registry,
                "client": MlflowClient(mlflow_server.url),
                "symbol": f"T{CELL[0]}",
                "target": CELL[1],
            }


def latest_metadata(instance: dg.DagsterInstance, asset: dg.AssetKey, partition: str | None = None) -> dict:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset, asset_partitions=[partition] if partition else None), limit=1
    ).records
    return records[0].asset_materialization.metadata


def test_every_model_materialization_is_one_run_with_provenance(promoted) -> None:
    client, store, instance = promoted["client"], promoted["store"], promoted["instance"]
    universe = load_universe(promoted["universe_path"])
    for symbol in universe.symbols:
        for target in universe.target_names:
            partition = f"{symbol}|{target}"
            handle = ArtifactHandle.current(store, artifact_prefix(LIGHTGBM, symbol, target))
            experiment = client.get_experiment_by_name(names.experiment_name(target))
            runs = client.search_runs(
                [experiment.experiment_id],
                f"tags.{names.SYMBOL_TAG} = '{symbol}' and tags.{names.FAMILY_TAG} = 'lightgbm'",
            )
            assert len(runs) == 2, f"{partition}: one run per materialization (weak, then strong)"
            run = next(r for r in runs if r.data.tags[names.FINGERPRINT_TAG] == handle.fingerprint)
            metadata = latest_metadata(instance, LIGHTGBM, partition)
            # Dagster -> MLflow and MLflow -> Dagster.
            assert metadata["mlflow_run_id"].value == run.info.run_id
            assert run.info.run_id in metadata["mlflow_run"].value and metadata["mlflow_run"].value.startswith(
                "http://127.0.0.1"
            )
            tags = run.data.tags
            record = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=LIGHTGBM, asset_partitions=[partition]),
                limit=1,
            ).records[0]
            assert tags[names.DAGSTER_RUN_TAG] == record.run_id
            assert (
                tags[names.DAGSTER_ASSET_TAG] == LIGHTGBM.to_user_string()
                and tags[names.DAGSTER_PARTITION_TAG] == partition
            )
            assert tags[names.CODE_VERSION_TAG] == record.asset_materialization.tags.get(
                "dagster/code_version", tags[names.CODE_VERSION_TAG]
            )
            assert run.info.status == "FINISHED"


def test_runs_carry_params_fold_metrics_curves_and_artifacts(promoted) -> None:
    client, store = promoted["client"], promoted["store"]
    symbol, target = promoted["symbol"], promoted["target"]
    handle = ArtifactHandle.current(store, artifact_prefix(LIGHTGBM, symbol, target))
    model = handle.load()
    assert model.trained
    experiment = client.get_experiment_by_name(names.experiment_name(target))
    run = client.search_runs([experiment.experiment_id], f"tags.{names.FINGERPRINT_TAG} = '{handle.fingerprint}'")[0]
    params = run.data.params
    assert params["params.num_boost_round"] == "120" and params["seed"] == "3" and params["split.folds"] == "3"
    assert params["feature_count"] == str(len(model.feature_names))
    assert run.data.metrics["heldout_auc"] == pytest.approx(model.summary["metrics"]["auc"])
    folds = client.get_metric_history(run.info.run_id, "fold_auc")
    assert sorted(m.step for m in folds) == [1, 2, 3]
    curve = client.get_metric_history(run.info.run_id, "validation_loss")
    assert len(curve) == len(model.summary["training_curve"]) > 1
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model", "features.json", names.IMPORTANCE_CHART, "config.json", "summary.json"} <= artifacts
    model_files = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert "model/MLmodel" in model_files
    features = json.loads(Path(client.download_artifacts(run.info.run_id, "features.json")).read_text())
    assert features["features"] == model.feature_names and len(features["importance"]) == len(model.feature_names)
    chart = Path(client.download_artifacts(run.info.run_id, names.IMPORTANCE_CHART)).read_text()
    assert {name for name, _ in bars(chart)} == set(model.feature_names)


def test_a_models_mlflow_link_opens_its_run_whose_importance_chart_shows_as_an_image(promoted, browser) -> None:
    """From the link in a model's Dagster metadata to MLflow's own UI, in Chromium: the run's
    artifacts show importance.svg drawn as an image of the size the chart declares."""
    partition = f"{promoted['symbol']}|{promoted['target']}"
    metadata = latest_metadata(promoted["instance"], LIGHTGBM, partition)
    assert metadata["trained"].value
    chart = Path(
        promoted["client"].download_artifacts(metadata["mlflow_run_id"].value, names.IMPORTANCE_CHART)
    ).read_text()
    declared = ElementTree.fromstring(chart)

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(metadata["mlflow_run"].value)
    page.get_by_role("tab", name="Artifacts").click()
    page.get_by_text(names.IMPORTANCE_CHART, exact=True).first.click()
    # MLflow previews an image artifact as an <img> of a blob it fetched through the server.
    image = page.locator('img[src^="blob:"]').first
    image.wait_for()
    page.wait_for_function("image => image.complete", arg=image.element_handle())
    drawn = image.evaluate("image => [image.naturalWidth, image.naturalHeight]")
    page.screenshot(path=str(SCREENSHOTS / "6_mlflow_importance_chart.png"))
    page.close()
    assert drawn == [int(declared.get("width")), int(declared.get("height"))], (
        "MLflow's UI did not draw the chart as an image"
    )


def test_stronger_model_is_promoted_and_the_old_one_kept_as_previous_champion(promoted) -> None:
    client = promoted["client"]
    symbol, target = promoted["symbol"], promoted["target"]
    name = names.registered_model_name(symbol, target)
    versions = {v.version: v for v in client.search_model_versions(f"name = '{name}'")}
    assert len(versions) == 2  # every trained model became a version
    first = (
        promoted["first_registry"]
        .filter(pl.col("symbol") == symbol)
        .filter(pl.col("target") == target)
        .row(0, named=True)
    )
    weak, strong = sorted(versions.values(), key=lambda v: int(v.version))
    assert float(strong.tags["score"]) >= float(weak.tags["score"]) + MIN_IMPROVEMENT, (
        "precondition: the strong model beats the weak one"
    )
    assert first["champion_version"] == str(weak.version)
    aliases = client.get_registered_model(name).aliases
    assert aliases[names.CHAMPION] == strong.version and aliases[names.PREVIOUS_CHAMPION] == weak.version
    registry = (
        read_value(promoted["store"], artifact_prefix(MODEL_REGISTRY))
        .filter((pl.col("symbol") == symbol) & (pl.col("target") == target))
        .row(0, named=True)
    )
    assert (
        registry["champion_version"] == str(strong.version) and registry["champion_uri"] == f"models:/{name}@champion"
    )


def test_predictions_come_from_the_champion_alias(promoted, mlflow_server: MlflowServer) -> None:
    store = promoted["store"]
    symbol, target = promoted["symbol"], promoted["target"]
    predictions = read_value(store, artifact_prefix(PREDICTIONS, symbol)).filter(pl.col("target") == target)
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server.url)  # MLflow's own loader, as a user would call it
    try:
        model = mlflow.pyfunc.load_model(f"models:/{names.registered_model_name(symbol, target)}@champion")
    finally:
        mlflow.set_tracking_uri(previous_uri)
    feature_names = model.metadata.get_input_schema().input_names()
    timestamps, x = build_inference_matrix(read_value(store, artifact_prefix(FEATURES, symbol)), feature_names)
    expected = pl.DataFrame(
        {
            "timestamp": timestamps,
            "expected": np.asarray(
                model.predict(pl.DataFrame(x, schema=feature_names, orient="row").to_pandas()), dtype=float
            ),
        }
    )
    joined = predictions.with_columns(pl.col("timestamp").dt.replace_time_zone(None)).join(
        expected.with_columns(pl.col("timestamp").cast(pl.Datetime("us"))), on="timestamp"
    )
    assert joined.height == predictions.height > 0
    np.testing.assert_allclose(joined["prediction"].to_numpy(), joined["expected"].to_numpy(), rtol=0, atol=1e-12)


def test_promotion_twice_changes_nothing(promoted) -> None:
    universe = load_universe(promoted["universe_path"])
    client = promoted["client"]
    before = {
        name: client.get_registered_model(name).aliases
        for name in (names.registered_model_name(s, t) for s in universe.symbols for t in universe.target_names)
        if client.search_model_versions(f"name = '{name}'")
    }
    result = dg.materialize(
        build_assets(universe),
        selection=dg.AssetSelection.assets("model_registry"),
        instance=promoted["instance"],
        resources=promoted["resources"],
    )
    assert result.success
    assert result.asset_materializations_for_node("model_registry")[0].metadata["cells_changed"].value == 0
    after = {name: client.get_registered_model(name).aliases for name in before}
    assert after == before


def test_rollback_restores_previous_champion_records_why_and_sticks(promoted) -> None:
    from intelligence_assets.cli.rollback import roll_back

    universe = load_universe(promoted["universe_path"])
    client, store = promoted["client"], promoted["store"]
    symbol, target = promoted["symbol"], promoted["target"]
    name = names.registered_model_name(symbol, target)
    aliases = client.get_registered_model(name).aliases
    champion, previous = aliases[names.CHAMPION], aliases[names.PREVIOUS_CHAMPION]
    assets = build_assets(universe)
    defs = dg.Definitions(
        assets=assets,
        jobs=[
            dg.define_asset_job("registry_job", selection=["model_registry"]),
            dg.define_asset_job("predictions_job", selection=["predictions"]),
        ],
        resources=promoted["resources"],
    )
    results = roll_back([f"{symbol}|{target}"], "live drawdown after promotion", promoted["instance"], defs)
    assert all(result.success for result in results)
    assert client.get_registered_model(name).aliases[names.CHAMPION] == previous
    assert "live drawdown" in client.get_model_version(name, champion).tags[names.ROLLED_BACK_TAG]
    metadata = results[0].asset_materializations_for_node("model_registry")[0].metadata
    assert metadata["rollback_reason"].value == "live drawdown after promotion"
    served = read_value(store, artifact_prefix(PREDICTIONS, symbol)).filter(pl.col("target") == target)
    assert set(served["model_version"]) == {previous}
    # The normal promotion run that follows does not undo the rollback.
    rerun = dg.materialize(
        assets,
        selection=dg.AssetSelection.assets("model_registry"),
        instance=promoted["instance"],
        resources=promoted["resources"],
    )
    assert rerun.success
    assert client.get_registered_model(name).aliases[names.CHAMPION] == previous


def test_rollback_without_previous_champion_fails_clearly(promoted) -> None:
    from intelligence_assets.cli.rollback import roll_back

    universe = load_universe(promoted["universe_path"])
    # NOISE|y_up_1b is gated by ranking: no model, no champion, nothing to go back to.
    defs = dg.Definitions(
        assets=build_assets(universe),
        jobs=[
            dg.define_asset_job("registry_job", selection=["model_registry"]),
            dg.define_asset_job("predictions_job", selection=["predictions"]),
        ],
        resources=promoted["resources"],
    )
    results = roll_back(["TNOISE|y_up_1b"], "test", promoted["instance"], defs)
    assert not results[0].success
    error = results[0].get_step_failure_events()[0].step_failure_data.error
    assert "previous-champion" in str(error.cause.message if error.cause else error.message)


def step_retries(result: dg.ExecuteInProcessResult, step_key: str) -> int:
    return sum(
        1 for event in result.all_events if event.event_type_value == "STEP_UP_FOR_RETRY" and event.step_key == step_key
    )


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    error = result.get_step_failure_events()[0].step_failure_data.error
    return (error.cause.message if error.cause else "") + error.message


def runs_of(client: MlflowClient, symbol: str, target: str) -> list:
    experiment = client.get_experiment_by_name(names.experiment_name(target))
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], f"tags.{names.SYMBOL_TAG} = '{symbol}'")


def versions_of(client: MlflowClient, symbol: str, target: str) -> list:
    return list(client.search_model_versions(f"name = '{names.registered_model_name(symbol, target)}'"))


@pytest.fixture
def outage_setup(mlflow_server: MlflowServer, tmp_path: Path, request: pytest.FixtureRequest):
    prefix = "O" if request.node.name.startswith("test_tracker_unreachable") else "H"
    universe = load_universe(write_universe(tmp_path, STRONG, prefix))
    with FaultProxy(mlflow_server.host, mlflow_server.port, upstream_bytes_per_second=150_000) as proxy:
        resources = resources_for(tmp_path / "artifacts", f"http://{proxy.endpoint}", universe)
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions("symbol", universe.symbols)
            symbol = f"{prefix}SIGNAL"
            assert dg.materialize(
                build_assets(universe),
                selection=dg.AssetSelection.assets("bars", "features"),
                partition_key=symbol,
                instance=instance,
                resources=resources,
            ).success
            yield (
                universe,
                symbol,
                proxy,
                resources,
                instance,
                LocalArtifactStore(tmp_path / "artifacts"),
                MlflowClient(mlflow_server.url),
            )


def materialize_cell(universe, symbol: str, instance, resources) -> dg.ExecuteInProcessResult:
    key = dg.MultiPartitionKey({"symbol": symbol, "target": CELL[1]})
    return dg.materialize(
        build_assets(universe),
        selection=MODEL_SELECTION,
        partition_key=key,
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )


def test_tracker_unreachable_keeps_the_model_retries_then_fails_clearly(outage_setup) -> None:
    universe, symbol, proxy, resources, instance, store, client = outage_setup
    proxy.stop_listening()
    failed = materialize_cell(universe, symbol, instance, resources)
    assert not failed.success
    assert step_retries(failed, "models__lightgbm") == 3  # the asset's RetryPolicy, then a clear failure
    message = failure_message(failed)
    assert f"MLflow tracking at http://{proxy.endpoint} failed" in message
    assert "safe in the artifact store" in message
    # The model is committed (manifest written) but not published, and MLflow holds nothing.
    prefix = artifact_prefix(LIGHTGBM, symbol, CELL[1])
    keys = store.list_keys(prefix)
    assert any(key == manifest_key(prefix, PurePosixPath(key).parent.name) for key in keys)
    assert pointer_key(prefix) not in keys
    assert runs_of(client, symbol, CELL[1]) == [] and versions_of(client, symbol, CELL[1]) == []

    proxy.start_listening()
    recovered = materialize_cell(universe, symbol, instance, resources)
    assert recovered.success
    model_event = recovered.asset_materializations_for_node("models__lightgbm")[0]
    assert model_event.metadata["cache"].value == "hit"  # logged from the stored model, not retrained
    runs = runs_of(client, symbol, CELL[1])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert [v.run_id for v in versions_of(client, symbol, CELL[1])] == [runs[0].info.run_id]


def test_outage_in_the_middle_of_logging_leaves_nothing_half_registered(outage_setup) -> None:
    universe, symbol, proxy, resources, instance, store, client = outage_setup
    cut = threading.Event()

    def cut_when_the_run_appears() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not cut.is_set():
            if runs_of(client, symbol, CELL[1]):
                proxy.stop_listening()  # the run exists; its artifacts are still uploading (throttled)
                cut.set()
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=cut_when_the_run_appears, daemon=True)
    watcher.start()
    failed = materialize_cell(universe, symbol, instance, resources)
    cut.set()
    watcher.join(timeout=5)
    assert not failed.success, "the outage began after the run was created and before it completed"
    # Whatever reached the server, no version points at an unfinished run.
    for version in versions_of(client, symbol, CELL[1]):
        assert client.get_run(version.run_id).info.status == "FINISHED"
        assert client.get_run(version.run_id).data.tags.get(names.REGISTERED_VERSION_TAG) == version.version

    proxy.start_listening()
    assert materialize_cell(universe, symbol, instance, resources).success
    runs = runs_of(client, symbol, CELL[1])  # active runs only: the incomplete one was deleted
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    versions = versions_of(client, symbol, CELL[1])
    assert [v.run_id for v in versions] == [runs[0].info.run_id]
    assert runs[0].data.tags[names.REGISTERED_VERSION_TAG] == versions[0].version


# A short tracking budget keeps the pause quick: 3 s per request, three attempts within 12 s. The
# server is paused for longer than one request, so the request is retried, and resumed within
# the budget, so the call (and the step) succeeds without a step retry.
PAUSE_BUDGET_SECONDS = 12.0
PAUSE_SECONDS = 7.5


@pytest.fixture(scope="module")
def pausable_server(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: S3Endpoint):
    """An MLflow server of this module's own, so pausing it holds up no other test."""
    directory = tmp_path_factory.mktemp("pausable_mlflow")
    bucket = unique_bucket_name("pause")
    s3_endpoint.client().make_bucket(bucket)
    process, port = start_mlflow_server(directory, s3_endpoint, bucket)
    try:
        yield process, f"http://{LOOPBACK}:{port}"
    finally:
        resume_server(process)
        stop_process(process, grace_seconds=10.0)


@pytest.mark.parametrize("paused_call", ["create_run", "create_model_version"])
def test_a_tracking_server_paused_within_the_budget_leaves_one_run_and_one_version(
    pausable_server,
    paused_call: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SIGSTOP of the MLflow server (and its workers) as the tracker sends a request that creates
    a record, SIGCONT within the budget. MLflow's client retries every request on a read timeout,
    POSTs too, and the paused server still holds the requests that timed out: once resumed, it
    may carry out each of them. Whatever it did, one finished run and one version must be left."""
    process, url = pausable_server
    prefix = {"create_run": "PR", "create_model_version": "PV"}[paused_call]
    universe = load_universe(write_universe(tmp_path, STRONG, prefix))
    symbol, target = f"{prefix}SIGNAL", CELL[1]
    name = names.registered_model_name(symbol, target)
    client = MlflowClient(url)
    if paused_call == "create_model_version":
        # As for every model but a cell's first: the version is created at the first try.
        client.create_registered_model(name)
    # The resource's own settings, not the module's quick client (set/del so teardown restores).
    for variable in request_settings(PAUSE_BUDGET_SECONDS):
        monkeypatch.setenv(variable, "")
        monkeypatch.delenv(variable)
    resources = {
        **resources_for(tmp_path / "artifacts", url, universe),
        "mlflow_tracking": MlflowTrackingResource(tracking_uri=url, retry_seconds=PAUSE_BUDGET_SECONDS),
    }

    original = getattr(MlflowClient, paused_call)
    waited: list[float] = []

    def paused_then_called(self, *args, **kwargs):
        if waited:
            return original(self, *args, **kwargs)
        pause_server(process)
        resume = threading.Timer(PAUSE_SECONDS, resume_server, [process])
        resume.start()
        started = time.monotonic()
        try:
            return original(self, *args, **kwargs)
        finally:
            waited.append(time.monotonic() - started)
            resume.cancel()
            resume_server(process)

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("symbol", universe.symbols)
        assets = build_assets(universe)
        assert dg.materialize(
            assets,
            selection=dg.AssetSelection.assets("bars", "features"),
            partition_key=symbol,
            instance=instance,
            resources=resources,
        ).success
        monkeypatch.setattr(MlflowClient, paused_call, paused_then_called)
        with caplog.at_level(logging.WARNING, logger="intelligence_assets.tracking"):
            result = materialize_cell(universe, symbol, instance, resources)
        monkeypatch.setattr(MlflowClient, paused_call, original)
        # Promotion sees the registry as the tracker left it: its aliases must name the one version.
        assert dg.materialize(
            assets,
            selection=dg.AssetSelection.assets("model_leaderboard", "model_registry"),
            instance=instance,
            resources=resources,
        ).success

    assert result.success
    assert step_retries(result, "models__lightgbm") == 0, "the pause fitted in the call's budget"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"
    assert waited and PAUSE_SECONDS - 0.5 <= waited[0] < PAUSE_BUDGET_SECONDS, f"{paused_call} waited {waited}"
    assert any(
        "has not answered" in record.getMessage() and "still waiting" in record.getMessage()
        for record in caplog.records
    )

    fingerprint = ArtifactHandle.current(
        LocalArtifactStore(tmp_path / "artifacts"), artifact_prefix(LIGHTGBM, symbol, target)
    ).fingerprint
    experiment = client.get_experiment_by_name(names.experiment_name(target))
    every_run = client.search_runs(
        [experiment.experiment_id], f"tags.{names.SYMBOL_TAG} = '{symbol}'", run_view_type=ViewType.ALL
    )
    described = [
        (run.info.run_id, run.info.status, run.info.lifecycle_stage, run.data.tags.get(names.REGISTERED_VERSION_TAG))
        for run in every_run
    ]
    active = [run for run in every_run if run.info.lifecycle_stage == "active"]
    assert len(active) == 1, f"one run per fingerprint; runs: {described}"
    run = active[0]
    assert run.data.tags[names.FINGERPRINT_TAG] == fingerprint and run.info.status == "FINISHED"
    # Ghosts of retried requests are deleted and do not read as still running.
    assert all(other.info.status == "KILLED" for other in every_run if other is not run), f"runs: {described}"
    versions = versions_of(client, symbol, target)
    assert [(v.version, v.run_id) for v in versions] == [
        (run.data.tags[names.REGISTERED_VERSION_TAG], run.info.run_id)
    ], f"versions: {[(v.version, v.run_id) for v in versions]}; runs: {described}"
    aliases = client.get_registered_model(name).aliases
    assert aliases and set(aliases.values()) == {versions[0].version}, f"aliases {aliases}"
