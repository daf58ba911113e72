"""Retention against a real MLflow store (SQLite + file artifacts) and a real local artifact store.

Age is simulated by planning at `now` = real now + N days; nothing sleeps and nothing is backdated.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import pytest
from mlflow.entities import ViewType
from pydantic import ValidationError

from intelligence_assets.defs.assets.leaderboard import MODEL_LEADERBOARD
from intelligence_assets.defs.assets.market_data import FEATURES
from intelligence_assets.defs.assets.models import model_key
from intelligence_assets.defs.assets.predictions import PREDICTIONS
from intelligence_assets.defs.assets.target_analysis import LABELS
from intelligence_assets.ml.trained_model import MODEL_FOLDER
from intelligence_assets.store.artifact_store import LocalArtifactStore
from intelligence_assets.store.artifacts import Manifest, commit_artifact, point_to, read_value
from intelligence_assets.store.keys import (
    MANIFEST_FILE,
    artifact_prefix,
    file_key,
    fingerprint_directory,
    manifest_key,
    pointer_key,
)
from intelligence_assets.tracking import names
from intelligence_assets.tracking.retention import (
    RetentionAction,
    RetentionActionKind,
    RetentionSettings,
    RetentionSnapshot,
    apply_retention,
    archive_key,
    gather_retention_snapshot,
    plan_retention,
)
from intelligence_assets_tests.support.services import free_port

TARGET = "y_up_1b"
# A model's own files may hold a file named like the store's manifest, below the fingerprint directory.
NESTED_MANIFEST = f"{MODEL_FOLDER}/{MANIFEST_FILE}"


@pytest.fixture(autouse=True)
def quiet_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(scope="module")
def empty_tracking_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with its schema created once; each test works on its own copy."""
    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@dataclass
class Trained:
    symbol: str
    target: str
    family: str
    run_id: str
    fingerprint: str
    prefix: str
    model_files: dict[str, bytes]  # path under the run's `model/` -> bytes
    registered_model: str | None = None
    version: int | None = None

    @property
    def directory(self) -> str:
        return fingerprint_directory(self.prefix, self.fingerprint)


@dataclass
class World:
    client: mlflow.MlflowClient
    store: LocalArtifactStore
    scratch: Path
    experiments: dict[str, str] = field(default_factory=dict)

    def experiment(self, target: str) -> str:
        if target not in self.experiments:
            location = (self.store.root / "mlflow" / target).as_uri()
            self.experiments[target] = self.client.create_experiment(
                names.experiment_name(target), artifact_location=location
            )
        return self.experiments[target]

    def train(
        self,
        score: float | None,
        symbol: str = "AAPL",
        target: str = TARGET,
        family: str = "lightgbm",
        register: bool = True,
        current: bool = True,
        model_size: int = 3000,
    ) -> Trained:
        """One model materialization the way the pipeline leaves it: a committed fingerprint
        directory in the artifact store, an MLflow run with `model/` artifacts, a version."""
        fingerprint = uuid.uuid4().hex
        prefix = artifact_prefix(model_key(family), symbol, target)
        manifest = commit_artifact(
            self.store,
            prefix,
            {"family": family, "score": score},
            Manifest(fingerprint=fingerprint, data_version=fingerprint, files={}),
        )
        # A model's own files may hold a `manifest.json`; it must not pass for a fingerprint directory.
        self.store.put_bytes(file_key(prefix, fingerprint, NESTED_MANIFEST), b'{"framework": "test"}')
        if current:
            point_to(self.store, prefix, manifest)

        tags = {
            names.SYMBOL_TAG: symbol,
            names.TARGET_TAG: target,
            names.FAMILY_TAG: family,
            names.FINGERPRINT_TAG: fingerprint,
            names.ARTIFACT_URI_TAG: self.store.uri(fingerprint_directory(prefix, fingerprint)),
            names.TRAINED_TAG: "true" if register else "false",
        }
        run = self.client.create_run(self.experiment(target), tags=tags)
        run_id = run.info.run_id
        model_directory = self.scratch / run_id / "model"
        (model_directory / "weights").mkdir(parents=True)
        model_files = {
            "MLmodel": f"flavors:\n  python_function:\n    fingerprint: {fingerprint}\n".encode(),
            "weights/booster.bin": uuid.uuid4().bytes * (model_size // 16),
        }
        for relative, data in model_files.items():
            (model_directory / relative).write_bytes(data)
        self.client.log_artifacts(run_id, str(model_directory), names.MODEL_ARTIFACT_PATH)
        self.client.log_text(run_id, json.dumps({"score": score}), "metrics/summary.json")
        trained = Trained(symbol, target, family, run_id, fingerprint, prefix, model_files)
        if register:
            name = names.registered_model_name(symbol, target)
            if not self.client.search_registered_models(filter_string=f"name = '{name}'"):
                self.client.create_registered_model(name, tags={names.SYMBOL_TAG: symbol, names.TARGET_TAG: target})
            version = self.client.create_model_version(
                name,
                source=f"runs:/{run_id}/{names.MODEL_ARTIFACT_PATH}",
                run_id=run_id,
                tags={
                    names.FAMILY_TAG: family,
                    names.FINGERPRINT_TAG: fingerprint,
                    names.SCORE_METRIC_TAG: "auc",
                    names.SCORE_TAG: "" if score is None else repr(score),
                    names.TEST_ROWS_TAG: "250",
                    names.TEST_START_TAG: "2024-01-02T00:00:00+00:00",
                    f"{names.HELDOUT_PREFIX}auc": "" if score is None else repr(score),
                },
            )
            self.client.set_tag(run_id, names.REGISTERED_VERSION_TAG, str(version.version))
            trained.registered_model, trained.version = name, int(version.version)
        self.client.set_terminated(run_id, "FINISHED")
        return trained

    def plan(self, days: float, **settings: int) -> list[RetentionAction]:
        return plan_retention(
            gather_retention_snapshot(self.client, self.store), RetentionSettings(**settings), later(days)
        )

    def apply(self, actions: list[RetentionAction], dry_run: bool = False):
        lines: list[str] = []
        report = apply_retention(actions, self.client, self.store, dry_run=dry_run, log=lines.append)
        return report, lines

    def version_tags(self, trained: Trained) -> dict[str, str]:
        return dict(self.client.get_model_version(trained.registered_model, str(trained.version)).tags)

    def run_stage(self, trained: Trained) -> str:
        return self.client.get_run(trained.run_id).info.lifecycle_stage

    def model_artifacts(self, trained: Trained) -> list[str]:
        return [info.path for info in self.client.list_artifacts(trained.run_id, names.MODEL_ARTIFACT_PATH)]

    def observed_state(self) -> dict:
        """Everything retention could change, for before/after comparisons."""
        runs = []
        for experiment_id in self.experiments.values():
            runs.extend(self.client.search_runs([experiment_id], run_view_type=ViewType.ALL))
        versions = {}
        for model in self.client.search_registered_models():
            for version in self.client.search_model_versions(f"name = '{model.name}'"):
                versions[(model.name, int(version.version))] = sorted(version.tags.items())
            versions[(model.name, "aliases")] = sorted(model.aliases.items())
        return {
            "objects": [
                (o.key, o.bytes, o.modified, hashlib.sha256(self.store.get_bytes(o.key)).hexdigest())
                for o in self.store.list_objects("")
            ],
            "versions": versions,
            "runs": sorted((run.info.run_id, run.info.lifecycle_stage, sorted(run.data.tags.items())) for run in runs),
        }


def later(days: float) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


@pytest.fixture
def world(tmp_path: Path, empty_tracking_database: Path) -> World:
    database = tmp_path / "mlflow.db"
    shutil.copyfile(empty_tracking_database, database)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{database}", registry_uri=f"sqlite:///{database}")
    return World(client=client, store=LocalArtifactStore(tmp_path / "artifacts"), scratch=tmp_path / "scratch")


def kinds_and_targets(actions: list[RetentionAction]) -> list[tuple[str, str]]:
    return [(action.kind.value, action.target) for action in actions]


def store_bytes(store: LocalArtifactStore, prefix: str) -> int:
    return sum(path.stat().st_size for path in (store.root / prefix).rglob("*") if path.is_file())


# -- settings ----------------------------------------------------------------------------------


def test_settings_defaults_and_ranges() -> None:
    settings = RetentionSettings()
    assert (settings.keep_top, settings.archive_after_days, settings.delete_archived_after_days) == (5, 30, 90)
    assert settings.quota_bytes == 20 * 1000**3 and settings.alert_fraction == 0.8
    with pytest.raises(ValidationError, match="delete_archived_after_days .* must be greater than archive_after_days"):
        RetentionSettings(archive_after_days=30, delete_archived_after_days=30)
    with pytest.raises(ValidationError, match="keep_top"):
        RetentionSettings(keep_top=0)
    with pytest.raises(ValidationError, match="alert_fraction"):
        RetentionSettings(alert_fraction=1.5)
    with pytest.raises(ValidationError, match="keep_forever"):
        RetentionSettings(keep_forever=True)
    with pytest.raises(ValidationError):
        settings.keep_top = 3  # frozen
    with pytest.raises(ValueError, match="timezone-aware"):
        plan_retention(RetentionSnapshot((), (), ()), settings, datetime.now())


# -- planning and applying ---------------------------------------------------------------------


def test_top_k_are_kept_and_alias_holders_are_never_touched(world: World) -> None:
    scores = [0.50, 0.90, 0.70, 0.60, 0.80, 0.55, 0.40, None]
    trained = [world.train(score) for score in scores]
    by_score = {t.version: score for t, score in zip(trained, scores, strict=True)}
    champion, challenger = trained[6], trained[3]  # the two lowest-scoring of their kind, old by then
    world.client.set_registered_model_alias(champion.registered_model, names.CHAMPION, str(champion.version))
    world.client.set_registered_model_alias(challenger.registered_model, names.CHALLENGER, str(challenger.version))
    keep_top = 3
    top = set(
        sorted((v for v in by_score if by_score[v] is not None), key=lambda v: by_score[v], reverse=True)[:keep_top]
    )
    expected = sorted(set(by_score) - top - {champion.version, challenger.version})

    assert world.plan(29, keep_top=keep_top) == []
    plan = world.plan(31, keep_top=keep_top)
    assert [action.kind for action in plan] == [RetentionActionKind.ARCHIVE] * len(expected)
    assert [action.version for action in plan] == expected
    # Long past every age limit, still only archiving: deletion needs a version archived first.
    assert world.plan(1000, keep_top=keep_top) == plan

    report, _ = world.apply(plan)
    assert report.counts()["archive"]["applied"] == len(expected) and not report.failures
    deletions = world.plan(1000, keep_top=keep_top)
    assert [(action.kind, action.version) for action in deletions] == [
        (RetentionActionKind.DELETE_ARCHIVED, v) for v in expected
    ]
    world.apply(deletions)

    remaining = {int(v.version) for v in world.client.search_model_versions(f"name = '{champion.registered_model}'")}
    assert remaining == top | {champion.version, challenger.version}
    for kept in trained:
        if kept.version in remaining:
            assert world.model_artifacts(kept), f"v{kept.version} lost its model files"
            assert names.ARCHIVED_TAG not in world.version_tags(kept)
    assert world.plan(1000, keep_top=keep_top) == []


def test_archiving_writes_one_verified_tar_and_then_removes_the_originals(world: World) -> None:
    old = world.train(0.55, current=False)
    best = world.train(0.75)  # current in the store, top-1
    old_directory_files = {key: world.store.get_bytes(key) for key in world.store.list_keys(old.directory)}
    model_bytes = sum(len(data) for data in old.model_files.values())
    directory_bytes = store_bytes(world.store, old.directory)

    plan = world.plan(31, keep_top=1)
    assert kinds_and_targets(plan) == [("archive", f"{old.registered_model} v{old.version}")]
    assert plan[0].bytes == model_bytes + directory_bytes
    report, lines = world.apply(plan)
    assert not report.failures and report.bytes_freed()["archive"] == model_bytes + directory_bytes
    assert any("archive" in line and f"v{old.version}" in line for line in lines)

    tags = world.version_tags(old)
    key = archive_key(old.registered_model, old.version)
    archive = world.store.get_bytes(key)
    assert report.bytes_written() == len(archive)
    assert tags[names.ARCHIVED_TAG] == "true"
    assert tags[names.ARCHIVE_URI_TAG] == world.store.uri(key)
    assert tags[names.ARCHIVE_SHA256_TAG] == hashlib.sha256(archive).hexdigest()
    assert datetime.fromisoformat(tags[names.ARCHIVED_AT_TAG]) <= datetime.now(UTC)

    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        members = {member.name: tar.extractfile(member).read() for member in tar.getmembers() if member.isfile()}
    index = json.loads(members.pop("archive.json"))
    assert {name: hashlib.sha256(data).hexdigest() for name, data in members.items()} == {
        name: entry["sha256"] for name, entry in index["files"].items()
    }
    for relative, data in old.model_files.items():
        assert members[f"mlflow/model/{relative}"] == data
    for stored_key, data in old_directory_files.items():
        assert members[f"artifact_store/{stored_key}"] == data
    assert index["run_id"] == old.run_id and index["version"] == old.version

    # Originals gone: the run's model files and the superseded fingerprint directory.
    assert world.model_artifacts(old) == []
    assert [info.path for info in world.client.list_artifacts(old.run_id)] == ["metrics"]
    assert world.store.list_keys(old.directory) == []
    # Untouched: the best version's files and the current artifact.
    assert sorted(world.model_artifacts(best)) == ["model/MLmodel", "model/weights"]
    assert read_value(world.store, best.prefix)["score"] == 0.75
    assert "| archive | 1 | 0 | 0 |" in report.markdown_table()


def test_archived_versions_are_deleted_with_their_run_and_archive_after_the_deletion_age(world: World) -> None:
    old = world.train(0.55, current=False)
    best = world.train(0.75)
    world.apply(world.plan(31, keep_top=1))
    key = archive_key(old.registered_model, old.version)
    archive_size = len(world.store.get_bytes(key))
    run_folder = world.store.root / "mlflow" / TARGET / old.run_id / "artifacts"
    remaining_run_bytes = store_bytes(world.store, run_folder.relative_to(world.store.root).as_posix())
    assert remaining_run_bytes > 0  # metrics/summary.json outlives the archiving

    assert [action.kind for action in world.plan(89, keep_top=1)] == []
    plan = world.plan(91, keep_top=1)
    assert kinds_and_targets(plan) == [("delete_archived", f"{old.registered_model} v{old.version}")]
    assert plan[0].bytes == archive_size + remaining_run_bytes
    report, _ = world.apply(plan)
    assert report.counts()["delete_archived"]["applied"] == 1
    assert report.bytes_freed()["delete_archived"] == archive_size + remaining_run_bytes

    with pytest.raises(mlflow.exceptions.MlflowException, match="not found|does not exist|RESOURCE_DOES_NOT_EXIST"):
        world.client.get_model_version(old.registered_model, str(old.version))
    assert world.run_stage(old) == "deleted"
    assert not world.store.exists(key)
    assert not run_folder.exists() or not any(path.is_file() for path in run_folder.rglob("*"))
    assert world.run_stage(best) == "active" and world.model_artifacts(best)
    assert world.plan(1000, keep_top=1) == []


def test_runs_that_never_became_a_version_are_collected(world: World) -> None:
    registered = world.train(0.6)
    untrained = world.train(None, family="xgboost", register=False)
    run_folder = world.store.root / "mlflow" / TARGET / untrained.run_id / "artifacts"
    run_bytes = store_bytes(world.store, run_folder.relative_to(world.store.root).as_posix())

    assert world.plan(6) == []
    plan = world.plan(8)
    assert kinds_and_targets(plan) == [("collect_run", f"run {untrained.run_id}")]
    assert plan[0].bytes == run_bytes
    report, _ = world.apply(plan)
    assert report.bytes_freed()["collect_run"] == run_bytes

    assert world.run_stage(untrained) == "deleted"
    assert not any(path.is_file() for path in run_folder.rglob("*"))
    assert world.run_stage(registered) == "active" and world.model_artifacts(registered)
    # The untrained model's artifact is still current in the store: collecting its run leaves it.
    assert read_value(world.store, untrained.prefix)["family"] == "xgboost"


def test_a_hyperparameter_searchs_parent_and_trial_runs_are_kept(world: World) -> None:
    world.train(0.6)
    experiment_id = next(iter(world.experiments.values()))
    parent = world.client.create_run(experiment_id, tags={names.RUN_KIND_TAG: names.SEARCH_RUN_KIND})
    trial = world.client.create_run(
        experiment_id,
        tags={names.RUN_KIND_TAG: names.TRIAL_RUN_KIND, "mlflow.parentRunId": parent.info.run_id},
    )
    other = world.client.create_run(experiment_id)
    for run in (parent, trial, other):
        world.client.set_terminated(run.info.run_id)
    collected = {action.run_id for action in world.plan(30) if action.kind.value == "collect_run"}
    assert other.info.run_id in collected
    assert not collected & {parent.info.run_id, trial.info.run_id}


def test_superseded_fingerprint_directories_are_collected_but_current_and_referenced_ones_kept(world: World) -> None:
    def commit(prefix: str, value: dict, publish: bool) -> tuple[str, str]:
        fingerprint = uuid.uuid4().hex
        manifest = commit_artifact(
            world.store, prefix, value, Manifest(fingerprint=fingerprint, data_version=fingerprint, files={})
        )
        if publish:
            point_to(world.store, prefix, manifest)
        return prefix, fingerprint

    features, labels = artifact_prefix(FEATURES, "AAPL"), artifact_prefix(LABELS, "AAPL", TARGET)
    superseded_features = commit(features, {"rows": 1}, publish=True)
    current_features = commit(features, {"rows": 2}, publish=True)
    superseded_labels = commit(labels, {"rows": 1}, publish=False)
    current_labels = commit(labels, {"rows": 2}, publish=True)
    never_published = commit(artifact_prefix(MODEL_LEADERBOARD), {"rows": 1}, publish=False)
    # A pointer that cannot be read protects every fingerprint under it.
    predictions = artifact_prefix(PREDICTIONS, "AAPL")
    unreadable = commit(predictions, {"rows": 1}, publish=False)
    world.store.put_bytes(pointer_key(predictions), b"{not json")
    referenced = world.train(0.6, current=False)  # a live version's directory, not current
    world.train(0.5)  # current model, also a live version
    superseded_bytes = {
        directory: store_bytes(world.store, directory)
        for directory in (
            fingerprint_directory(*committed) for committed in (superseded_features, superseded_labels, never_published)
        )
    }

    assert world.plan(6) == []
    plan = world.plan(8)
    assert kinds_and_targets(plan) == [("collect_artifact", directory) for directory in sorted(superseded_bytes)]
    assert {action.artifact_directory: action.bytes for action in plan} == superseded_bytes
    report, _ = world.apply(plan)
    assert report.bytes_freed()["collect_artifact"] == sum(superseded_bytes.values())

    for directory in superseded_bytes:
        assert world.store.list_keys(directory) == []
    for prefix, fingerprint in (
        current_features,
        current_labels,
        unreadable,
        (referenced.prefix, referenced.fingerprint),
    ):
        assert world.store.exists(manifest_key(prefix, fingerprint)), prefix
    assert read_value(world.store, features) == {"rows": 2}
    # The nested `model/manifest.json` inside a model's own files was never taken for a directory.
    assert world.store.exists(file_key(referenced.prefix, referenced.fingerprint, NESTED_MANIFEST))


def test_a_directory_becomes_collectable_once_its_version_is_archived(world: World) -> None:
    old = world.train(0.55)  # current when archived: the archive keeps it in place
    world.train(0.75, family="xgboost")
    plan = world.plan(31, keep_top=1)
    assert [(action.kind, action.delete_artifact_directory) for action in plan] == [
        (RetentionActionKind.ARCHIVE, False)
    ]
    world.apply(plan)
    assert world.store.exists(manifest_key(old.prefix, old.fingerprint))
    assert world.plan(32, keep_top=1) == []  # still current

    newer = world.train(0.95)  # same family and cell: `old` is no longer current
    plan = world.plan(32, keep_top=2)  # the two best (newer, xgboost) stay
    assert kinds_and_targets(plan) == [("collect_artifact", old.directory)]
    world.apply(plan)
    assert world.store.list_keys(old.directory) == []
    assert world.store.exists(manifest_key(newer.prefix, newer.fingerprint))


def full_scenario(world: World) -> list[RetentionAction]:
    """A state where all four kinds of action are due at +91 days."""
    first = world.train(0.51, current=False)
    world.train(0.52, current=False)
    world.train(0.9)
    world.apply(world.plan(31, keep_top=1))  # archives the first two
    third = world.train(0.53, family="xgboost")  # created now: archived at +91, not deleted
    world.train(None, family="torch_mlp", register=False)
    manifest_prefix = artifact_prefix(FEATURES, "AAPL")
    for rows in (1, 2):
        fingerprint = uuid.uuid4().hex
        point_to(
            world.store,
            manifest_prefix,
            commit_artifact(
                world.store,
                manifest_prefix,
                {"rows": rows},
                Manifest(fingerprint=fingerprint, data_version=fingerprint, files={}),
            ),
        )
    plan = world.plan(91, keep_top=1)
    assert {action.kind for action in plan} == set(RetentionActionKind), kinds_and_targets(plan)
    assert [action.version for action in plan if action.kind is RetentionActionKind.ARCHIVE] == [third.version]
    assert first.version in [action.version for action in plan if action.kind is RetentionActionKind.DELETE_ARCHIVED]
    return plan


def test_dry_run_lists_every_action_and_changes_nothing(world: World) -> None:
    plan = full_scenario(world)
    before = world.observed_state()
    report, lines = world.apply(plan, dry_run=True)
    assert world.observed_state() == before
    assert [outcome.status for outcome in report.outcomes] == ["planned"] * len(plan)
    assert len(lines) == len(plan) and all(line.startswith("dry run, would") for line in lines)
    for action, line in zip(plan, lines, strict=True):
        assert action.target in line
    assert report.bytes_freed() == {
        kind.value: sum(action.bytes or 0 for action in plan if action.kind is kind) for kind in RetentionActionKind
    }
    assert "would apply" in report.markdown_table()


def test_applying_twice_changes_nothing_the_second_time(world: World) -> None:
    plan = full_scenario(world)
    first, _ = world.apply(plan)
    assert not first.failures and {outcome.status for outcome in first.outcomes} == {"applied"}
    after_first = world.observed_state()
    second, _ = world.apply(plan)
    assert [outcome.status for outcome in second.outcomes] == ["skipped"] * len(plan)
    assert world.observed_state() == after_first
    # Only what the first pass made due: the version it just archived is already past the deletion age.
    archived_now = [action.version for action in plan if action.kind is RetentionActionKind.ARCHIVE]
    assert [(action.kind, action.version) for action in world.plan(91, keep_top=1)] == [
        (RetentionActionKind.DELETE_ARCHIVED, version) for version in archived_now
    ]


class StoreThatCrashesOnDelete(LocalArtifactStore):
    """The local store, dying (as a process would) at the first delete under a prefix."""

    def __init__(self, root: Path, crash_under: str) -> None:
        super().__init__(root)
        self.crash_under = crash_under

    def delete(self, key: str) -> None:
        if key.startswith(self.crash_under):
            raise OSError(f"simulated crash while deleting {key}")
        super().delete(key)


def test_an_interrupted_archive_resumes_from_its_verified_archive_and_never_rebuilds_a_lost_one(world: World) -> None:
    first = world.train(0.51, current=False)
    second = world.train(0.52, current=False)
    world.train(0.9)
    plan = world.plan(31, keep_top=1)
    assert [action.version for action in plan] == [first.version, second.version]

    crashing = StoreThatCrashesOnDelete(world.store.root, crash_under=first.prefix)
    report = apply_retention(plan, world.client, crashing, dry_run=False, log=lambda _: None)
    assert [outcome.status for outcome in report.outcomes] == ["failed", "failed"]
    for trained in (first, second):
        tags = world.version_tags(trained)
        # Archive written and verified, the run's model files gone, the directory not: not yet "archived".
        assert names.ARCHIVED_TAG not in tags and tags[names.ARCHIVE_SHA256_TAG]
        assert world.model_artifacts(trained) == []
        assert world.store.exists(manifest_key(trained.prefix, trained.fingerprint))

    # The second version's archive is lost meanwhile: retention must refuse rather than rebuild it
    # from originals that are already partly deleted.
    world.store.delete(archive_key(second.registered_model, second.version))
    report, lines = world.apply(plan)
    assert [outcome.status for outcome in report.outcomes] == ["applied", "failed"]
    assert "missing" in report.outcomes[1].detail and "not rebuilt" in report.outcomes[1].detail
    assert any("reusing the verified archive" in line for line in lines)

    tags = world.version_tags(first)
    assert tags[names.ARCHIVED_TAG] == "true"
    assert world.store.list_keys(first.directory) == []
    with tarfile.open(
        fileobj=io.BytesIO(world.store.get_bytes(archive_key(first.registered_model, first.version))), mode="r:gz"
    ) as tar:
        assert tar.extractfile("mlflow/model/weights/booster.bin").read() == first.model_files["weights/booster.bin"]
    assert names.ARCHIVED_TAG not in world.version_tags(second)
    assert world.store.exists(manifest_key(second.prefix, second.fingerprint))  # nothing more deleted


class StoreThatCorruptsArchives(LocalArtifactStore):
    """The local store on a faulty disk: archive objects come back truncated."""

    def put_bytes(self, key: str, data: bytes) -> None:
        super().put_bytes(key, data[: len(data) // 2] if key.startswith(f"{names.ARCHIVE_PREFIX}/") else data)


def test_an_archive_that_does_not_read_back_intact_deletes_nothing(world: World) -> None:
    old = world.train(0.55, current=False)
    world.train(0.75)
    before = world.observed_state()
    plan = world.plan(31, keep_top=1)
    report = apply_retention(
        plan, world.client, StoreThatCorruptsArchives(world.store.root), dry_run=False, log=lambda _: None
    )
    assert [outcome.status for outcome in report.outcomes] == ["failed"]
    assert "sha256" in report.outcomes[0].detail
    assert world.model_artifacts(old) and world.store.exists(manifest_key(old.prefix, old.fingerprint))
    tags = world.version_tags(old)
    assert names.ARCHIVED_TAG not in tags and names.ARCHIVE_SHA256_TAG not in tags
    after = world.observed_state()
    key = archive_key(old.registered_model, old.version)
    assert [entry for entry in after["objects"] if entry[0] != key] == before["objects"]
    assert after["runs"] == before["runs"]


def test_a_stale_plan_is_rechecked_before_anything_is_deleted(world: World) -> None:
    features = artifact_prefix(FEATURES, "AAPL")

    def commit(rows: int) -> tuple[str, Manifest]:
        fingerprint = uuid.uuid4().hex
        return fingerprint, commit_artifact(
            world.store,
            features,
            {"rows": rows},
            Manifest(fingerprint=fingerprint, data_version=fingerprint, files={}),
        )

    _, first = commit(1)
    point_to(world.store, features, first)
    _, second = commit(2)
    point_to(world.store, features, second)
    untrained = world.train(None, register=False)
    plan = world.plan(8)
    assert kinds_and_targets(plan) == [
        ("collect_run", f"run {untrained.run_id}"),
        ("collect_artifact", fingerprint_directory(features, first.fingerprint)),
    ]

    # Meanwhile: the inputs went back to the first fingerprint (a cache hit makes it current again)
    # and the run was registered after all.
    point_to(world.store, features, first)
    name = names.registered_model_name(untrained.symbol, untrained.target)
    world.client.create_registered_model(
        name, tags={names.SYMBOL_TAG: untrained.symbol, names.TARGET_TAG: untrained.target}
    )
    world.client.create_model_version(
        name,
        source=f"runs:/{untrained.run_id}/model",
        run_id=untrained.run_id,
        tags={names.FINGERPRINT_TAG: untrained.fingerprint},
    )
    before = world.observed_state()
    report, _ = world.apply(plan)
    assert [outcome.status for outcome in report.outcomes] == ["skipped", "skipped"]
    assert "backs" in report.outcomes[0].detail and "current" in report.outcomes[1].detail
    assert world.observed_state() == before


# -- an MLflow server serving artifacts (`mlflow-artifacts:` URIs) ------------------------------


@pytest.fixture
def mlflow_server(tmp_path: Path, empty_tracking_database: Path):
    """`mlflow server --serve-artifacts` whose artifacts live in the artifact store's `mlflow/` area."""
    database = tmp_path / "server.db"
    shutil.copyfile(empty_tracking_database, database)
    store_root = tmp_path / "artifacts"
    port = free_port()
    log = open(tmp_path / "mlflow_server.log", "wb")  # noqa: SIM115 -- the server writes to it until the fixture ends
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{database}",
            "--serve-artifacts",
            "--artifacts-destination",
            str(store_root / "mlflow"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        # Its own process group: `mlflow server` runs uvicorn as a child, and both must go at the end.
        start_new_session=True,
    )

    def stop() -> None:
        for signal_number, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(process.pid, signal_number)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                continue

    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1).read()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                log.close()
                stop()
                pytest.fail(f"mlflow server did not start: {(tmp_path / 'mlflow_server.log').read_text()[-2000:]}")
            time.sleep(0.2)
    try:
        yield url, store_root
    finally:
        stop()
        log.close()


def test_retention_through_an_mlflow_server_serving_artifacts(tmp_path: Path, mlflow_server) -> None:
    url, store_root = mlflow_server
    client = mlflow.MlflowClient(tracking_uri=url, registry_uri=url)
    world = World(client=client, store=LocalArtifactStore(store_root), scratch=tmp_path / "scratch")
    world.experiments[TARGET] = client.create_experiment(names.experiment_name(TARGET))  # the server picks the location
    old = world.train(0.55, current=False)
    world.train(0.75)
    untrained = world.train(None, family="xgboost", register=False)
    assert client.get_run(old.run_id).info.artifact_uri.startswith("mlflow-artifacts:")

    plan = world.plan(31, keep_top=1)
    assert kinds_and_targets(plan) == [
        ("archive", f"{old.registered_model} v{old.version}"),
        ("collect_run", f"run {untrained.run_id}"),
    ]
    # The server keeps run artifacts under mlflow/<experiment id>/<run id>/artifacts: sizes are known.
    assert plan[0].bytes == sum(len(data) for data in old.model_files.values()) + store_bytes(
        world.store, old.directory
    )
    report, _ = world.apply(plan)
    assert not report.failures, report.outcomes
    assert world.model_artifacts(old) == []
    assert not any(
        path.is_file()
        for path in (store_root / "mlflow" / world.experiments[TARGET] / old.run_id / "artifacts" / "model").rglob("*")
    )
    assert world.version_tags(old)[names.ARCHIVED_TAG] == "true"
    assert world.run_stage(untrained) == "deleted"
    assert not any(
        path.is_file() for path in (store_root / "mlflow" / world.experiments[TARGET] / untrained.run_id).rglob("*")
    )
