"""What is served is what was verified: a model tracked into a real embedded MLflow store (SQLite
and file artifacts, as the embedded default lays them out), then its files changed on disk in the
artifact store. `load_model` refuses every such version, naming it; an untouched one loads and
predicts what was trained."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path
from urllib.parse import unquote, urlparse

import dagster as dg
import mlflow
import numpy as np
import polars as pl
import pytest

from intelligence_assets.config.universe import load_universe
from intelligence_assets.definitions import build_assets
from intelligence_assets.defs.assets.models import model_key
from intelligence_assets.defs.assets.predictions import PREDICTIONS
from intelligence_assets.defs.assets.registry import MODEL_REGISTRY
from intelligence_assets.defs.partitions import register_symbols
from intelligence_assets.ml.families import load_family
from intelligence_assets.ml.trained_model import TrainedModel
from intelligence_assets.store.artifact_store import LocalArtifactStore
from intelligence_assets.store.artifacts import read_value
from intelligence_assets.store.keys import artifact_prefix, pointer_key
from intelligence_assets.tracking import names
from intelligence_assets.tracking.flavours import pyfunc_predict
from intelligence_assets.tracking.tracker import ModelIntegrityError, ModelTracker, TrackedRun, TrainingRecord
from intelligence_assets_tests.conftest import write_small_universe
from intelligence_assets_tests.support.pipeline import MODEL_SELECTION, local_resources, symbol_training_range

FEATURES = ["momentum", "volatility", "volume_z", "range"]
TARGET = "y_up_1b"
LIGHTGBM_FILE = "model.lgb"  # where MLflow's LightGBM flavour keeps the booster, under `model/`


@pytest.fixture(autouse=True)
def quiet_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def rows(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(900, len(FEATURES)))
    return x, (x[:, 0] - 0.5 * x[:, 1] + rng.normal(size=900) > 0).astype(float)


def fit_lightgbm(x: np.ndarray, y: np.ndarray):
    return load_family("lightgbm")("classification", {"num_boost_round": 30}, 5).fit(
        x[:600], y[:600], x[600:750], y[600:750]
    )


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> ModelTracker:
    """One embedded store for the module; each test tracks its own symbol's registered model."""
    home = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        return ModelTracker(f"sqlite:///{home / 'mlflow.db'}", experiment_root=home)


@pytest.fixture(scope="module")
def model():
    return fit_lightgbm(*rows(seed=11))


def track(tracker: ModelTracker, model, symbol: str) -> TrackedRun:
    summary = {
        "task": "classification",
        "features": FEATURES,
        "metrics": {"auc": 0.61},
        "test_rows": 150,
        "test_start": "2024-01-01T00:00:00+00:00",
    }
    record = TrainingRecord(
        symbol=symbol,
        target=TARGET,
        trained_model=TrainedModel("lightgbm", summary, model),
        score_metric="auc",
        eligible=True,
        provenance_tags={
            names.FINGERPRINT_TAG: uuid.uuid4().hex,
            names.DAGSTER_ASSET_TAG: model_key("lightgbm").to_user_string(),
            names.DAGSTER_PARTITION_TAG: f"{symbol}|{TARGET}",
        },
        config={"params": {"num_boost_round": 30}},
    )
    tracked = tracker.track_training(record)
    assert tracked.version == "1"
    return tracked


def stored_model_directory(tracker: ModelTracker, tracked: TrackedRun) -> Path:
    """The run's `model/` folder in the embedded artifact store.

    That is `<experiment root>/<target>/<run id>/artifacts/model`."""
    artifact_uri = tracker.client.get_run(tracked.run_id).info.artifact_uri
    directory = Path(unquote(urlparse(artifact_uri).path)) / names.MODEL_ARTIFACT_PATH
    assert directory == tracker.experiment_root / TARGET / tracked.run_id / "artifacts" / names.MODEL_ARTIFACT_PATH
    assert (directory / LIGHTGBM_FILE).is_file()
    return directory


def version_of(tracker: ModelTracker, tracked: TrackedRun):
    return tracker.client.get_model_version(tracked.registered_model, tracked.version)


def test_the_logged_models_checksums_are_recorded_on_its_version_and_run(tracker: ModelTracker, model) -> None:
    tracked = track(tracker, model, "RECORDED")
    directory = stored_model_directory(tracker, tracked)
    stored = {
        path.relative_to(directory).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in directory.rglob("*")
        if path.is_file()
    }
    assert {"MLmodel", LIGHTGBM_FILE} <= stored.keys()
    assert json.loads(version_of(tracker, tracked).tags[names.MODEL_SHA256_TAG]) == stored
    assert json.loads(tracker.client.get_run(tracked.run_id).data.tags[names.MODEL_SHA256_TAG]) == stored


def test_an_untouched_version_loads_and_predicts_what_was_trained(tracker: ModelTracker, model) -> None:
    tracked = track(tracker, model, "UNTOUCHED")
    loaded = tracker.load_model(version_of(tracker, tracked))
    x, _ = rows(seed=12)
    np.testing.assert_allclose(pyfunc_predict(loaded, FEATURES, x), model.predict(x), rtol=0, atol=1e-12)


def test_a_version_logged_through_an_mlflow_server_verifies_and_loads(mlflow_server, model) -> None:
    """Checksums are taken from the files uploaded; through a tracking server that proxies its
    artifacts into S3, what comes back must hash the same (no false alarms)."""
    tracker = ModelTracker(mlflow_server.url)
    tracked = track(tracker, model, f"PROXIED{uuid.uuid4().hex[:8].upper()}")
    loaded = tracker.load_model(version_of(tracker, tracked))
    x, _ = rows(seed=12)
    np.testing.assert_allclose(pyfunc_predict(loaded, FEATURES, x), model.predict(x), rtol=0, atol=1e-12)


def test_a_replaced_model_file_is_refused_naming_the_version_and_the_file(
    tracker: ModelTracker, model, tmp_path: Path
) -> None:
    tracked = track(tracker, model, "REPLACED")
    directory = stored_model_directory(tracker, tracked)
    # A valid booster that predicts the opposite: MLflow's own loader serves it without a murmur.
    x, y = rows(seed=11)
    impostor = fit_lightgbm(x, 1.0 - y)
    impostor.native_model().save_model(str(tmp_path / LIGHTGBM_FILE))
    shutil.copyfile(tmp_path / LIGHTGBM_FILE, directory / LIGHTGBM_FILE)
    served_by_mlflow = mlflow.pyfunc.load_model(str(directory))
    assert not np.allclose(pyfunc_predict(served_by_mlflow, FEATURES, x), model.predict(x)), (
        "precondition: the impostor predicts differently"
    )

    with pytest.raises(ModelIntegrityError) as refused:
        tracker.load_model(version_of(tracker, tracked))
    message = str(refused.value)
    assert f"{tracked.registered_model} version {tracked.version}" in message
    assert f"changed: {LIGHTGBM_FILE}" in message
    assert "missing" not in message and "unexpected" not in message
    # What to do, for this very partition.
    assert (
        f"make rollback PARTITION='REPLACED|{TARGET}'" in message
        and f"retrain models/lightgbm REPLACED|{TARGET}" in message
    )


def test_missing_and_unexpected_model_files_are_refused_naming_them(tracker: ModelTracker, model) -> None:
    tracked = track(tracker, model, "REARRANGED")
    directory = stored_model_directory(tracker, tracked)
    (directory / "requirements.txt").unlink()
    (directory / "extra").mkdir()
    (directory / "extra" / "hook.py").write_text("print('hello')\n")
    with pytest.raises(ModelIntegrityError, match=f"{tracked.registered_model} version 1") as refused:
        tracker.load_model(version_of(tracker, tracked))
    assert "missing: requirements.txt" in str(refused.value) and "unexpected: extra/hook.py" in str(refused.value)
    assert "changed" not in str(refused.value)


def test_a_version_without_recorded_checksums_is_refused_as_predating_them(tracker: ModelTracker, model) -> None:
    tracked = track(tracker, model, "LEGACY")
    tracker.client.delete_model_version_tag(tracked.registered_model, tracked.version, names.MODEL_SHA256_TAG)
    with pytest.raises(
        ModelIntegrityError,
        match=f"{tracked.registered_model} version 1 has no {names.MODEL_SHA256_TAG} tag: it predates model checksums",
    ):
        tracker.load_model(version_of(tracker, tracked))


def test_predictions_fail_naming_a_tampered_champion_and_publish_nothing(tmp_path: Path) -> None:
    """Through Dagster on the embedded default: one symbol, the linear family (its model is a
    pickled family object), trained and promoted; then the champion's pickle is changed in the
    MLflow artifact store before predictions run."""
    universe = load_universe(write_small_universe(tmp_path, families={"linear": {"params": {}}}, symbols=["SIGNAL"]))
    root = tmp_path / "artifacts"
    resources = local_resources(root, universe)
    assets = build_assets(universe)
    store = LocalArtifactStore(root)
    with dg.instance_for_test() as instance:
        register_symbols(instance, universe.symbols)

        def materialize(
            selection: dg.AssetSelection, partition_key: str | None = None, tags: dict | None = None
        ) -> dg.ExecuteInProcessResult:
            return dg.materialize(
                assets,
                selection=selection,
                partition_key=partition_key,
                instance=instance,
                resources=resources,
                tags=tags,
                raise_on_error=False,
            )

        assert materialize(dg.AssetSelection.assets("bars", "features"), "SIGNAL").success
        assert materialize(MODEL_SELECTION, tags=symbol_training_range(universe, "SIGNAL")).success
        assert materialize(dg.AssetSelection.assets("model_leaderboard", "model_registry")).success
        champion = (
            read_value(store, artifact_prefix(MODEL_REGISTRY))
            .filter(pl.col("champion_version").is_not_null())
            .sort("target")
            .row(0, named=True)
        )

        tracker = ModelTracker(f"sqlite:///{root / 'mlflow' / 'mlflow.db'}", experiment_root=root / "mlflow")
        version = tracker.client.get_model_version(champion["registered_model"], champion["champion_version"])
        pickle = (
            Path(unquote(urlparse(tracker.client.get_run(version.run_id).info.artifact_uri).path))
            / names.MODEL_ARTIFACT_PATH
            / "python_model.pkl"
        )
        original = pickle.read_bytes()
        pickle.write_bytes(original + b"\0")  # pickle ignores bytes after its STOP opcode: this loads as before

        tampered = materialize(dg.AssetSelection.assets("predictions"), "SIGNAL")
        assert not tampered.success
        error = tampered.get_step_failure_events()[0].step_failure_data.error
        message = (error.cause.message if error.cause else "") + error.message
        assert "ModelIntegrityError" in message
        assert (
            f"{champion['registered_model']} version {champion['champion_version']}" in message
            and "changed: python_model.pkl" in message
        )
        assert not store.exists(pointer_key(artifact_prefix(PREDICTIONS, "SIGNAL"))), (
            "predictions from an unverified model were published"
        )

        # The same run with the files as logged serves the champion.
        pickle.write_bytes(original)
        assert materialize(dg.AssetSelection.assets("predictions"), "SIGNAL").success
        served = read_value(store, artifact_prefix(PREDICTIONS, "SIGNAL")).filter(
            pl.col("target") == champion["target"]
        )
        assert served.height > 0 and set(served["model_version"]) == {champion["champion_version"]}
