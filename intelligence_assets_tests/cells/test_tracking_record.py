"""A committed cell's MLflow record: logged once per fingerprint into a real embedded MLflow store,
with the provenance that leads back to the artifact, and linked from beside the artifact so that
a cache hit needs no tracking server. Without Dagster."""

from __future__ import annotations

import json
import socket
from dataclasses import asdict
from pathlib import Path

import pytest
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_SOURCE_NAME

from intelligence_assets.cells.training import (
    TRACKING_RECORD_FILE,
    Cell,
    Provenance,
    TrainedCell,
    track_cell,
    train_cell,
)
from intelligence_assets.config.universe import Universe
from intelligence_assets.defs.assets.models import model_key
from intelligence_assets.store.artifact_store import LocalArtifactStore
from intelligence_assets.store.artifacts import ArtifactHandle, Manifest, commit_artifact
from intelligence_assets.store.keys import artifact_prefix, file_key, fingerprint_directory
from intelligence_assets.tracking import names
from intelligence_assets.tracking.tracker import ModelTracker, TrackingError
from intelligence_assets_tests.cells.conftest import DIRECTION, SELECTED, SymbolData

CODE_VERSION = "1.1"
LINEAR = model_key("linear").to_user_string()
CONFIG = {"params": {"max_iter": 200}, "seed": 3, "split": {"folds": 3, "embargo": 5}}


def not_read() -> None:
    raise AssertionError("a gated cell must not read its features or labels")


COMMIT = "c0ffee" * 6 + "c0ff"  # the code revision the committing run recorded


def never_asked() -> ModelTracker:
    raise AssertionError("a model tracked before must be linked without asking MLflow")


def commit(
    store: LocalArtifactStore, cell: Cell, trained: TrainedCell, fingerprint: str
) -> tuple[ArtifactHandle, Manifest]:
    """What the asset's cache commits before tracking: the model's files and manifest under its fingerprint."""
    prefix = artifact_prefix(model_key(cell.family), cell.symbol, cell.target)
    manifest = commit_artifact(
        store,
        prefix,
        trained.model,
        Manifest(
            fingerprint, fingerprint, {}, trained.metadata, [], {"code_version": CODE_VERSION, "code_commit": COMMIT}
        ),
    )
    return ArtifactHandle(store, prefix, fingerprint, fingerprint), manifest


@pytest.fixture(scope="module")
def signal_model(small_universe: Universe, planted: SymbolData) -> TrainedCell:
    cell = Cell(small_universe, "linear", "SIGNAL", DIRECTION)
    return train_cell(
        cell,
        {"gated": False, "reason": "", "selected": SELECTED},
        lambda: planted.features,
        lambda: planted.labels[DIRECTION],
    )


def test_a_committed_model_is_logged_with_its_provenance_and_registered(
    small_universe: Universe, signal_model: TrainedCell, tracker: ModelTracker, tmp_path: Path
) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    cell = Cell(small_universe, "linear", "LOGGED", DIRECTION)
    stored, manifest = commit(store, cell, signal_model, "f" * 32)
    lines: list[str] = []
    provenance = Provenance("dagster-run-1", LINEAR, f"LOGGED|{DIRECTION}")

    tracked = track_cell(
        cell, lambda: tracker, stored, manifest, signal_model.model, CONFIG, provenance, log=lines.append
    )

    assert (tracked.registered_model, tracked.version) == (f"intelligence.LOGGED.{DIRECTION}", "1")
    run = tracker.client.get_run(tracked.run_id)
    assert {
        tag: run.data.tags.get(tag)
        for tag in (
            names.FINGERPRINT_TAG,
            names.ARTIFACT_URI_TAG,
            names.DAGSTER_RUN_TAG,
            names.DAGSTER_ASSET_TAG,
            names.DAGSTER_PARTITION_TAG,
            names.CODE_VERSION_TAG,
            names.SYMBOL_TAG,
            names.TARGET_TAG,
            names.FAMILY_TAG,
            names.TRAINED_TAG,
            MLFLOW_GIT_COMMIT,
            MLFLOW_SOURCE_NAME,
        )
    } == {
        names.FINGERPRINT_TAG: "f" * 32,
        names.ARTIFACT_URI_TAG: store.uri(
            fingerprint_directory(artifact_prefix(LINEAR, "LOGGED", DIRECTION), "f" * 32)
        ),
        names.DAGSTER_RUN_TAG: "dagster-run-1",
        names.DAGSTER_ASSET_TAG: LINEAR,
        names.DAGSTER_PARTITION_TAG: f"LOGGED|{DIRECTION}",
        names.CODE_VERSION_TAG: CODE_VERSION,
        names.SYMBOL_TAG: "LOGGED",
        names.TARGET_TAG: DIRECTION,
        names.FAMILY_TAG: "linear",
        names.TRAINED_TAG: "true",
        # MLflow's own source tags: its UI shows the commit that trained the model.
        MLFLOW_GIT_COMMIT: COMMIT,
        MLFLOW_SOURCE_NAME: LINEAR,
    }
    assert {
        "params.max_iter",
        "seed",
        "split.folds",
        "split.embargo",
        "family",
    } <= run.data.params.keys() and run.data.params["split.folds"] == "3"
    assert run.data.metrics["heldout_auc"] == pytest.approx(signal_model.metrics["auc"])
    version = tracker.client.get_model_version(tracked.registered_model, tracked.version)
    assert version.tags[names.SCORE_METRIC_TAG] == "auc" and float(version.tags[names.SCORE_TAG]) == pytest.approx(
        signal_model.metrics["auc"]
    )
    assert (
        version.tags[names.ELIGIBLE_TAG] == "true"
        and version.tags[names.TEST_START_TAG] == signal_model.model.summary["test_start"]
    )
    # The run is linked beside the artifact, and the step's log says where it went in one line.
    assert json.loads(
        (store.root / file_key(stored.prefix, stored.fingerprint, TRACKING_RECORD_FILE)).read_text()
    ) == asdict(tracked)
    assert lines[-1].startswith(f"linear LOGGED {DIRECTION}: held-out ") and lines[-1].endswith(
        f"; MLflow run {tracked.run_url}, registered models:/intelligence.LOGGED.{DIRECTION}/1"
    )

    # A cache hit: the value is not loaded and MLflow is not asked.
    assert (
        track_cell(
            cell,
            never_asked,
            stored,
            manifest,
            None,
            CONFIG,
            Provenance("dagster-run-2", LINEAR, f"LOGGED|{DIRECTION}"),
        )
        == tracked
    )


def test_a_model_tracked_before_its_link_was_written_is_found_again_by_fingerprint(
    small_universe: Universe, signal_model: TrainedCell, tracker: ModelTracker, tmp_path: Path
) -> None:
    """A step that died between logging and writing the link: its retry loads the model from the
    store (a cache hit computes nothing) and MLflow answers with the same run and version."""
    store = LocalArtifactStore(tmp_path / "artifacts")
    cell = Cell(small_universe, "linear", "RETRIED", DIRECTION)
    stored, manifest = commit(store, cell, signal_model, "e" * 32)
    provenance = Provenance("dagster-run-1", LINEAR, f"RETRIED|{DIRECTION}")
    first = track_cell(cell, lambda: tracker, stored, manifest, signal_model.model, CONFIG, provenance)
    store.delete(file_key(stored.prefix, stored.fingerprint, TRACKING_RECORD_FILE))

    again = track_cell(cell, lambda: tracker, stored, manifest, None, CONFIG, provenance)

    assert again == first
    experiment = tracker.experiment_id(DIRECTION)
    runs = tracker.client.search_runs([experiment], filter_string=f"tags.{names.SYMBOL_TAG} = 'RETRIED'")
    assert [run.info.run_id for run in runs] == [first.run_id]
    assert [str(version.version) for version in tracker.versions(f"intelligence.RETRIED.{DIRECTION}")] == ["1"]


def test_a_gated_cell_is_logged_as_a_run_without_a_version(
    small_universe: Universe, tracker: ModelTracker, tmp_path: Path
) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    cell = Cell(small_universe, "linear", "GATED", DIRECTION)
    gated = train_cell(
        cell, {"gated": True, "reason": "not trained: below the bar", "selected": []}, not_read, not_read
    )
    stored, manifest = commit(store, cell, gated, "d" * 32)
    lines: list[str] = []

    tracked = track_cell(
        cell,
        lambda: tracker,
        stored,
        manifest,
        gated.model,
        CONFIG,
        Provenance("run", LINEAR, f"GATED|{DIRECTION}"),
        log=lines.append,
    )

    assert tracked.version is None and tracked.model_uri is None
    assert tracker.client.get_run(tracked.run_id).data.tags[names.TRAINED_TAG] == "false"
    assert tracker.aliases(f"intelligence.GATED.{DIRECTION}") == {}
    assert lines[-1] == f"linear GATED {DIRECTION}: skipped, not trained: below the bar; MLflow run {tracked.run_url}"


def test_a_tracking_failure_says_the_model_is_safe_and_how_to_log_it(
    small_universe: Universe, signal_model: TrainedCell, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = LocalArtifactStore(tmp_path / "artifacts")
    cell = Cell(small_universe, "linear", "DOWN", DIRECTION)
    stored, manifest = commit(store, cell, signal_model, "c" * 32)

    with pytest.raises(TrackingError) as failure:
        track_cell(
            cell,
            lambda: ModelTracker(f"http://127.0.0.1:{port}"),
            stored,
            manifest,
            signal_model.model,
            CONFIG,
            Provenance("run", LINEAR, f"DOWN|{DIRECTION}"),
        )

    message = str(failure.value)
    assert f"127.0.0.1:{port}" in message
    stored_at = store.uri(fingerprint_directory(artifact_prefix(LINEAR, "DOWN", DIRECTION), "c" * 32))
    assert f"safe in the artifact store at {stored_at}" in message
    assert message.endswith(f"materializing {LINEAR} DOWN|{DIRECTION} again logs it without retraining")
    assert not store.exists(file_key(stored.prefix, stored.fingerprint, TRACKING_RECORD_FILE))
