"""The `minio` deployment: the whole graph against a real S3 HTTP endpoint (moto server on
loopback) through the minio SDK, with the same layout and the same cache as the local backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from intelligence_assets.cli.audit import run_audit
from intelligence_assets.config.universe import load_universe
from intelligence_assets.definitions import build_assets
from intelligence_assets.defs.assets.leaderboard import MODEL_LEADERBOARD
from intelligence_assets.defs.assets.models import model_key
from intelligence_assets.defs.assets.registry import MODEL_REGISTRY
from intelligence_assets.defs.resources.deployment import Deployment
from intelligence_assets.store.artifacts import ArtifactHandle, read_manifest, read_value
from intelligence_assets.store.keys import artifact_prefix, manifest_key, pointer_key
from intelligence_assets_tests.conftest import write_small_universe
from intelligence_assets_tests.support.mlflow_server import MlflowServer, running_mlflow_server
from intelligence_assets_tests.support.pipeline import materialize_everything
from intelligence_assets_tests.support.services import S3Endpoint, unique_bucket_name


@pytest.fixture
def own_mlflow_server(tmp_path: Path, s3_endpoint: S3Endpoint) -> Iterator[MlflowServer]:
    """The registry step reads every registered model of the server: on the session's shared one, a
    cell another test left behind is retired by the first pass, so a rerun would not be all hits."""
    (tmp_path / "mlflow_server").mkdir()
    with running_mlflow_server(tmp_path / "mlflow_server", s3_endpoint) as server:
        yield server


def test_graph_on_s3_with_cache_hits_and_no_secret_in_dagster(
    tmp_path: Path, s3_endpoint: S3Endpoint, own_mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow_server = own_mlflow_server
    bucket = unique_bucket_name("graph")
    monkeypatch.setenv("INTELLIGENCE_DEPLOYMENT", "minio")
    monkeypatch.setenv("INTELLIGENCE_S3_ENDPOINT", s3_endpoint.endpoint)
    monkeypatch.setenv("INTELLIGENCE_S3_BUCKET", bucket)
    monkeypatch.setenv("INTELLIGENCE_S3_ACCESS_KEY", s3_endpoint.access_key)
    monkeypatch.setenv("INTELLIGENCE_S3_SECRET_KEY", s3_endpoint.secret_key)
    # As in production: an MLflow server whose artifacts live in S3 too.
    monkeypatch.setenv("INTELLIGENCE_MLFLOW_TRACKING_URI", mlflow_server.url)
    # The store's read cache, in the test's scratch rather than the repository's .dagster_home.
    monkeypatch.setenv("INTELLIGENCE_ARTIFACT_CACHE", str(tmp_path / "artifact-cache"))
    deployment = Deployment.from_environment()
    # Symbols of its own: the session's MLflow server names registered models by symbol.
    universe = load_universe(write_small_universe(tmp_path, families={"linear": {"params": {}}}, symbol_prefix="GRAPH"))

    with dg.instance_for_test() as instance:
        cold = materialize_everything(universe, instance, deployment.resources(universe))
        assert set(cold.values()) == {"miss", "recomputed"}  # the registry step always recomputes
        rerun = materialize_everything(universe, instance, deployment.resources(universe))
        assert set(rerun.values()) == {"hit", "recomputed"}
        # Models were logged once, on the miss; the hits linked the same runs.
        model_metadata = (
            instance.fetch_materializations(model_key("linear"), limit=1).records[0].asset_materialization.metadata
        )
        assert model_metadata["mlflow_run"].value.startswith(mlflow_server.url)

        # make audit on this deployment: the store in S3, the MLflow model copy in S3 behind the server.
        store = deployment.artifact_store()
        registry = read_value(store, artifact_prefix(MODEL_REGISTRY))
        champion = registry.filter(registry["champion_version"].is_not_null()).row(0, named=True)
        defs = dg.Definitions(assets=build_assets(universe), resources=deployment.resources(universe))
        lines: list[str] = []
        alias = f"{champion['registered_model']}@champion"
        assert run_audit(alias, None, None, defs, instance, deployment, say=lines.append), "\n".join(lines)
        assert any(line.startswith("  ok  MLflow model copy") for line in lines)
        assert any(line.startswith(f"  ok  bars {champion['symbol']}") for line in lines)

        # The credentials were EnvVars: nothing Dagster stored mentions the secret.
        records = instance.get_records_for_run(instance.get_runs(limit=1)[0].run_id).records
        assert all(s3_endpoint.secret_key not in str(record.event_log_entry) for record in records)
        for run in instance.get_runs():
            assert s3_endpoint.secret_key not in str(run.run_config)

    store = deployment.artifact_store()
    model = artifact_prefix(model_key("linear"), "GRAPHSIGNAL", "y_up_1b")
    handle = ArtifactHandle.current(store, model)
    objects = {obj.object_name for obj in s3_endpoint.client().list_objects(bucket, prefix=model, recursive=True)}
    # A small model is one object: its manifest, holding the model's files.
    assert manifest_key(model, handle.fingerprint) in objects
    assert "model/model.json" in read_manifest(store, model, handle.fingerprint).inline
    assert pointer_key(model) in objects
    assert read_value(store, artifact_prefix(MODEL_LEADERBOARD)).height == len(universe.symbols) * len(universe.targets)
