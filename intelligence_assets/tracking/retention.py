"""Checkpoint retention: which model versions, runs and artifacts to archive or delete, and doing it safely.

Three steps, kept apart so that each can be tested and reviewed on its own:

* `gather_retention_snapshot` reads the state (MLflow registry and runs, artifact-store listing);
* `plan_retention` is a pure function of that snapshot, the settings and a clock: the same inputs
  always give the same actions in the same order, so a dry run shows exactly what would happen;
* `apply_retention` performs the actions, re-checking the live state before each one, so that
  applying a plan twice (or a stale plan) changes nothing the second time.

Retention never touches a version that holds an alias (`champion`, `previous-champion`,
`challenger`) nor one of the `keep_top` best versions of its registered model by `score`.
Archiving writes and verifies one tar.gz before deleting any original, and the version is tagged
`archived=true` only after the originals are gone, so a crash at any point either leaves the
originals in place or leaves a verified archive that the next run finds by its checksum.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import tarfile
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from intelligence_assets.store.artifact_store import (
    ArtifactNotFoundError,
    ArtifactStore,
    CorruptArtifactError,
    StoredObject,
)
from intelligence_assets.tracking import names

MANIFEST_FILE = "manifest.json"  # the artifact layout's names (store/artifacts.py), repeated to stay import-light
POINTER_FILE = "current.json"
MLFLOW_AREA = "mlflow"
ARCHIVE_INDEX_FILE = "archive.json"
ARCHIVE_MLFLOW_FOLDER = "mlflow"
ARCHIVE_STORE_FOLDER = "artifact_store"
SEARCH_PAGE_SIZE = 1000
RESOURCE_DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"
GIGABYTE = 1000**3


class RetentionSettings(BaseModel):
    """How long checkpoints live and how much storage they may take."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keep_top: int = Field(
        5, ge=1, description="Versions per registered model kept by `score` (higher is better); never archived or deleted."
    )
    archive_after_days: int = Field(
        30, ge=1, description="Other versions older than this are archived into one tar.gz and their model files deleted."
    )
    delete_archived_after_days: int = Field(
        90, ge=2, description="Archived versions older than this (from creation) are deleted with their run and archive."
    )
    collect_unregistered_after_days: int = Field(
        7, ge=1, description="Runs that never became a model version are deleted, with their artifacts, after this."
    )
    collect_superseded_artifacts_after_days: int = Field(
        7,
        ge=1,
        description=(
            "Artifact-store fingerprint directories that are neither current nor referenced by a live model version "
            "are deleted this long after they were committed."
        ),
    )
    quota_bytes: int = Field(20 * GIGABYTE, gt=0, description="Storage the artifact store (MLflow artifacts and archives included) may use.")
    alert_fraction: float = Field(0.8, gt=0, le=1, description="Alert once usage exceeds this fraction of `quota_bytes`.")

    @model_validator(mode="after")
    def _deletion_follows_archiving(self) -> RetentionSettings:
        if self.delete_archived_after_days <= self.archive_after_days:
            raise ValueError(
                f"delete_archived_after_days ({self.delete_archived_after_days}) must be greater than "
                f"archive_after_days ({self.archive_after_days}): a version is archived before it is deleted"
            )
        return self


# -- the state ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionState:
    """One model version of an `intelligence.` registered model."""

    registered_model: str
    version: int
    run_id: str | None
    created: datetime
    aliases: tuple[str, ...]
    score: float | None  # None when missing or not a finite number: such a version ranks last
    fingerprint: str | None
    family: str | None
    symbol: str | None
    target: str | None
    archived: bool
    model_bytes: int | None  # the run's `model/` artifacts, when they lie in the artifact store
    run_bytes: int | None  # all the run's artifacts, when they lie in the artifact store
    archive_bytes: int | None  # the archive object, when it exists


@dataclass(frozen=True)
class RunState:
    """An active run in an `intelligence/*` experiment that no model version comes from."""

    run_id: str
    experiment_id: str
    experiment_name: str
    started: datetime | None
    fingerprint: str | None
    bytes: int | None  # all the run's artifacts, when they lie in the artifact store


@dataclass(frozen=True)
class ArtifactDirectory:
    """A committed fingerprint directory, `<prefix>/<fingerprint>/` holding a manifest."""

    prefix: str
    fingerprint: str
    committed: datetime  # when its manifest was written
    current: bool  # the prefix's pointer names it, or the pointer cannot be read (then every one counts as current)
    bytes: int

    @property
    def key(self) -> str:
        return f"{self.prefix}/{self.fingerprint}"


@dataclass(frozen=True)
class RetentionSnapshot:
    versions: tuple[VersionState, ...]
    unregistered_runs: tuple[RunState, ...]
    artifact_directories: tuple[ArtifactDirectory, ...]


def archive_key(registered_model: str, version: int) -> str:
    return f"{names.ARCHIVE_PREFIX}/{registered_model}/v{version}.tar.gz"


def _from_milliseconds(milliseconds: int | None) -> datetime | None:
    return None if milliseconds is None else datetime.fromtimestamp(milliseconds / 1000, tz=timezone.utc)


def _parse_score(text: str | None) -> float | None:
    try:
        score = float(text) if text else None
    except ValueError:
        return None
    return score if score is not None and math.isfinite(score) else None


def _quoted(value: str, what: str) -> str:
    """A value for an MLflow filter string; MLflow's filter grammar has no escape for quotes."""
    if "'" in value:
        raise ValueError(f"{what} {value!r} contains a single quote, which MLflow filter strings cannot express")
    return f"'{value}'"


def _all_pages(fetch: Callable[[str | None], Any]) -> Iterator[Any]:
    token = None
    while True:
        page = fetch(token)
        yield from page
        token = getattr(page, "token", None)
        if not token:
            return


def _mlflow_bytes_by_run(objects: Iterable[StoredObject], run_ids: set[str]) -> tuple[dict[str, int], dict[str, int]]:
    """Bytes of each run's artifacts (all, and under `model/`) found in the store's `mlflow/` area.

    Embedded deployments keep run artifacts at `mlflow/<experiment>/<run id>/artifacts/...`, an MLflow
    server with `--serve-artifacts` at `mlflow/<experiment id>/<run id>/artifacts/...`; either way the
    run id followed by `artifacts` identifies the run, whatever the experiment folder is called.
    """
    total: dict[str, int] = defaultdict(int)
    model: dict[str, int] = defaultdict(int)
    for stored in objects:
        parts = stored.key.split("/")
        if parts[0] != MLFLOW_AREA:
            continue
        for position in range(1, len(parts) - 2):
            if parts[position] in run_ids and parts[position + 1] == "artifacts":
                total[parts[position]] += stored.bytes
                if parts[position + 2] == names.MODEL_ARTIFACT_PATH:
                    model[parts[position]] += stored.bytes
                break
    return dict(total), dict(model)


def _fingerprint_directories(store: ArtifactStore, objects: list[StoredObject]) -> list[ArtifactDirectory]:
    """Committed fingerprint directories of every asset, outside the `mlflow/` and `archive/` areas.

    A directory holding `manifest.json` is a fingerprint directory unless an ancestor also is one:
    a stored value's own files (a model's folder, say) may contain a file of that name.
    """
    artifacts = [stored for stored in objects if stored.key.split("/")[0] not in {MLFLOW_AREA, names.ARCHIVE_PREFIX}]
    manifests = {stored.key.removesuffix(f"/{MANIFEST_FILE}"): stored for stored in artifacts if stored.key.endswith(f"/{MANIFEST_FILE}")}

    def ancestors(directory: str) -> Iterator[str]:
        parts = directory.split("/")
        for length in range(1, len(parts)):
            yield "/".join(parts[:length])

    directories = {
        directory: manifest
        for directory, manifest in manifests.items()
        if "/" in directory and not any(ancestor in manifests for ancestor in ancestors(directory))
    }
    sizes: dict[str, int] = defaultdict(int)
    for stored in artifacts:
        for ancestor in ancestors(stored.key):
            if ancestor in directories:
                sizes[ancestor] += stored.bytes
                break
    pointers = {stored.key for stored in artifacts if stored.key.endswith(f"/{POINTER_FILE}")}
    current_by_prefix: dict[str, str | None] = {}
    found = []
    for directory in sorted(directories):
        prefix, fingerprint = directory.rsplit("/", 1)
        if prefix not in current_by_prefix:
            current_by_prefix[prefix] = _current_fingerprint(store, prefix) if f"{prefix}/{POINTER_FILE}" in pointers else ""
        current = current_by_prefix[prefix]
        found.append(
            ArtifactDirectory(
                prefix=prefix,
                fingerprint=fingerprint,
                committed=directories[directory].modified,
                current=current is None or current == fingerprint,
                bytes=sizes[directory],
            )
        )
    return found


def _current_fingerprint(store: ArtifactStore, prefix: str) -> str | None:
    """The fingerprint the prefix's pointer names; "" when there is no pointer; None when it cannot be read."""
    try:
        pointer = store.get_json(f"{prefix}/{POINTER_FILE}")
    except ArtifactNotFoundError:
        return ""
    except CorruptArtifactError:
        return None
    fingerprint = pointer.get("fingerprint") if isinstance(pointer, dict) else None
    return fingerprint if isinstance(fingerprint, str) and fingerprint else None


def gather_retention_snapshot(client: Any, store: ArtifactStore) -> RetentionSnapshot:
    """The registry, the runs and the artifact store as retention sees them.

    `client` is an `mlflow.MlflowClient` bound to the deployment's tracking and registry URIs.
    """
    from mlflow.entities import ViewType

    objects = store.list_objects("")
    object_bytes = {stored.key: stored.bytes for stored in objects}

    registered_models = [
        model
        for model in _all_pages(
            lambda token: client.search_registered_models(
                filter_string=f"name LIKE '{names.REGISTERED_MODEL_PREFIX}.%'", max_results=SEARCH_PAGE_SIZE, page_token=token
            )
        )
        if model.name.startswith(f"{names.REGISTERED_MODEL_PREFIX}.")
    ]
    raw_versions = []
    for model in registered_models:
        # Version search results carry no aliases; the registered model's alias map is the authority.
        aliases_by_version: dict[int, list[str]] = defaultdict(list)
        for alias, version in (model.aliases or {}).items():
            aliases_by_version[int(version)].append(alias)
        for version in _all_pages(
            lambda token, name=model.name: client.search_model_versions(
                filter_string=f"name = {_quoted(name, 'registered model name')}", max_results=SEARCH_PAGE_SIZE, page_token=token
            )
        ):
            raw_versions.append((model, version, tuple(sorted(aliases_by_version.get(int(version.version), [])))))

    experiments = list(
        _all_pages(
            lambda token: client.search_experiments(
                view_type=ViewType.ACTIVE_ONLY,
                filter_string=f"name LIKE '{names.EXPERIMENT_PREFIX}/%'",
                max_results=SEARCH_PAGE_SIZE,
                page_token=token,
            )
        )
    )
    runs = []
    for experiment in experiments:
        runs.extend(
            (experiment, run)
            for run in _all_pages(
                lambda token, experiment_id=experiment.experiment_id: client.search_runs(
                    [experiment_id], run_view_type=ViewType.ACTIVE_ONLY, max_results=SEARCH_PAGE_SIZE, page_token=token
                )
            )
        )

    run_ids = {run.info.run_id for _, run in runs} | {version.run_id for _, version, _ in raw_versions if version.run_id}
    run_bytes, model_bytes = _mlflow_bytes_by_run(objects, run_ids)

    versions = []
    for model, version, aliases in raw_versions:
        tags = version.tags or {}
        number = int(version.version)
        versions.append(
            VersionState(
                registered_model=model.name,
                version=number,
                run_id=version.run_id or None,
                created=_from_milliseconds(version.creation_timestamp) or datetime.fromtimestamp(0, tz=timezone.utc),
                aliases=aliases,
                score=_parse_score(tags.get(names.SCORE_TAG)),
                fingerprint=tags.get(names.FINGERPRINT_TAG) or None,
                family=tags.get(names.FAMILY_TAG) or None,
                symbol=(model.tags or {}).get(names.SYMBOL_TAG),
                target=(model.tags or {}).get(names.TARGET_TAG),
                archived=tags.get(names.ARCHIVED_TAG) == "true",
                model_bytes=model_bytes.get(version.run_id, 0) if version.run_id in run_bytes else None,
                run_bytes=run_bytes.get(version.run_id) if version.run_id else 0,
                archive_bytes=object_bytes.get(archive_key(model.name, number)),
            )
        )
    registered_run_ids = {version.run_id for version in versions if version.run_id}
    unregistered = [
        RunState(
            run_id=run.info.run_id,
            experiment_id=experiment.experiment_id,
            experiment_name=experiment.name,
            started=_from_milliseconds(run.info.start_time),
            fingerprint=run.data.tags.get(names.FINGERPRINT_TAG) or None,
            bytes=run_bytes.get(run.info.run_id),
        )
        for experiment, run in runs
        if run.info.run_id not in registered_run_ids
    ]
    return RetentionSnapshot(
        versions=tuple(sorted(versions, key=lambda version: (version.registered_model, version.version))),
        unregistered_runs=tuple(sorted(unregistered, key=lambda run: run.run_id)),
        artifact_directories=tuple(_fingerprint_directories(store, objects)),
    )


# -- the plan ----------------------------------------------------------------------------------


class RetentionActionKind(str, Enum):
    ARCHIVE = "archive"
    DELETE_ARCHIVED = "delete_archived"
    COLLECT_RUN = "collect_run"
    COLLECT_ARTIFACT = "collect_artifact"


KIND_ORDER = {kind: position for position, kind in enumerate(RetentionActionKind)}


@dataclass(frozen=True)
class RetentionAction:
    kind: RetentionActionKind
    reason: str
    bytes: int | None = None  # what the action frees, where known (an archive's own size not deducted)
    registered_model: str | None = None
    version: int | None = None
    run_id: str | None = None
    fingerprint: str | None = None
    artifact_directory: str | None = None  # `<prefix>/<fingerprint>` in the artifact store
    archive_key: str | None = None
    # Archiving keeps originals that something else still needs (a current pointer, another version).
    delete_run_model: bool = False
    delete_artifact_directory: bool = False

    @property
    def target(self) -> str:
        if self.registered_model is not None:
            return f"{self.registered_model} v{self.version}"
        if self.run_id is not None:
            return f"run {self.run_id}"
        return str(self.artifact_directory)

    def describe(self) -> str:
        size = f"{self.bytes} bytes" if self.bytes is not None else "size unknown"
        return f"{self.kind.value} {self.target} ({size}): {self.reason}"

    def sort_key(self) -> tuple:
        return (KIND_ORDER[self.kind], self.registered_model or "", self.version or 0, self.run_id or "", self.artifact_directory or "")


def _require_aware(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware (UTC), got naive {now.isoformat()}")
    return now.astimezone(timezone.utc)


def _sum_known(*sizes: int | None) -> int | None:
    return None if any(size is None for size in sizes) else sum(sizes)  # type: ignore[arg-type]


def _directory_of(version: VersionState, directories: dict[str, list[ArtifactDirectory]]) -> ArtifactDirectory | None:
    """The artifact-store directory a version was registered from: by fingerprint, preferring the model layout."""
    candidates = directories.get(version.fingerprint or "", [])
    expected = f"models/{version.family}/{version.symbol}/{version.target}"
    for directory in candidates:
        if directory.prefix == expected:
            return directory
    models = [directory for directory in candidates if directory.prefix.startswith("models/")]
    return models[0] if len(models) == 1 else None


def plan_retention(snapshot: RetentionSnapshot, settings: RetentionSettings, now: datetime) -> list[RetentionAction]:
    """The actions retention takes at `now`; pure and deterministic."""
    now = _require_aware(now)
    archive_age = timedelta(days=settings.archive_after_days)
    delete_age = timedelta(days=settings.delete_archived_after_days)
    run_age = timedelta(days=settings.collect_unregistered_after_days)
    directory_age = timedelta(days=settings.collect_superseded_artifacts_after_days)

    by_model: dict[str, list[VersionState]] = defaultdict(list)
    for version in snapshot.versions:
        by_model[version.registered_model].append(version)
    to_archive: list[VersionState] = []
    to_delete: list[VersionState] = []
    for versions in by_model.values():
        # Ties go to the newer version; a missing score ranks below every real one.
        ranked = sorted(versions, key=lambda v: (v.score is None, -(v.score or 0.0), -v.version))
        top = {v.version for v in ranked[: settings.keep_top]}
        for version in versions:
            if version.aliases or version.version in top:
                continue
            age = now - version.created
            if version.archived:
                if age > delete_age:
                    to_delete.append(version)
            elif age > archive_age:
                to_archive.append(version)

    directories_by_fingerprint: dict[str, list[ArtifactDirectory]] = defaultdict(list)
    for directory in snapshot.artifact_directories:
        directories_by_fingerprint[directory.fingerprint].append(directory)

    def still_needed_by_another(version: VersionState, attribute: str) -> bool:
        """Whether another version that keeps its originals (not archived; those archived in this plan
        included, since each archive must find the files) uses the same run or fingerprint."""
        value = getattr(version, attribute)
        return any(
            getattr(other, attribute) == value
            and (other.registered_model, other.version) != (version.registered_model, version.version)
            and not other.archived
            for other in snapshot.versions
        )

    actions: list[RetentionAction] = []
    for version in to_archive:
        directory = _directory_of(version, directories_by_fingerprint)
        delete_model = version.run_id is not None and not still_needed_by_another(version, "run_id")
        delete_directory = (
            directory is not None and not directory.current and not still_needed_by_another(version, "fingerprint")
        )
        actions.append(
            RetentionAction(
                kind=RetentionActionKind.ARCHIVE,
                reason=(
                    f"created {version.created:%Y-%m-%d}, older than {settings.archive_after_days} days, "
                    f"not among the top {settings.keep_top} by score and holds no alias"
                ),
                bytes=_sum_known(
                    version.model_bytes if delete_model else 0,
                    directory.bytes if delete_directory and directory else 0,
                ),
                registered_model=version.registered_model,
                version=version.version,
                run_id=version.run_id,
                fingerprint=version.fingerprint,
                artifact_directory=directory.key if directory else None,
                archive_key=archive_key(version.registered_model, version.version),
                delete_run_model=delete_model,
                delete_artifact_directory=delete_directory,
            )
        )
    for version in to_delete:
        actions.append(
            RetentionAction(
                kind=RetentionActionKind.DELETE_ARCHIVED,
                reason=f"archived, created {version.created:%Y-%m-%d}, older than {settings.delete_archived_after_days} days",
                bytes=_sum_known(version.archive_bytes or 0, version.run_bytes),
                registered_model=version.registered_model,
                version=version.version,
                run_id=version.run_id,
                fingerprint=version.fingerprint,
                archive_key=archive_key(version.registered_model, version.version),
            )
        )
    for run in snapshot.unregistered_runs:
        if run.started is not None and now - run.started > run_age:
            actions.append(
                RetentionAction(
                    kind=RetentionActionKind.COLLECT_RUN,
                    reason=(
                        f"run in {run.experiment_name} started {run.started:%Y-%m-%d}, never registered as a model version, "
                        f"older than {settings.collect_unregistered_after_days} days"
                    ),
                    bytes=run.bytes,
                    run_id=run.run_id,
                    fingerprint=run.fingerprint,
                )
            )
    # Live: not archived. An archived version's files are in its verified archive; one being archived
    # by this very plan is not archived yet, so its directory stays protected until its archive exists.
    live_fingerprints = {v.fingerprint for v in snapshot.versions if v.fingerprint and not v.archived}
    for directory in snapshot.artifact_directories:
        if directory.current or directory.fingerprint in live_fingerprints or now - directory.committed <= directory_age:
            continue
        actions.append(
            RetentionAction(
                kind=RetentionActionKind.COLLECT_ARTIFACT,
                reason=(
                    f"committed {directory.committed:%Y-%m-%d}, not current, referenced by no live model version, "
                    f"older than {settings.collect_superseded_artifacts_after_days} days"
                ),
                bytes=directory.bytes,
                fingerprint=directory.fingerprint,
                artifact_directory=directory.key,
            )
        )
    return sorted(actions, key=RetentionAction.sort_key)


# -- doing it ----------------------------------------------------------------------------------

OutcomeStatus = Literal["planned", "applied", "skipped", "failed"]


@dataclass(frozen=True)
class ActionOutcome:
    action: RetentionAction
    status: OutcomeStatus
    detail: str
    bytes_freed: int | None = None
    bytes_written: int = 0


@dataclass
class RetentionReport:
    dry_run: bool
    outcomes: list[ActionOutcome] = field(default_factory=list)

    @property
    def failures(self) -> list[ActionOutcome]:
        return [outcome for outcome in self.outcomes if outcome.status == "failed"]

    def counts(self) -> dict[str, dict[str, int]]:
        """Per action kind, how many were planned / applied / skipped / failed."""
        counted: dict[str, dict[str, int]] = {kind.value: {"planned": 0, "applied": 0, "skipped": 0, "failed": 0} for kind in RetentionActionKind}
        for outcome in self.outcomes:
            counted[outcome.action.kind.value][outcome.status] += 1
        return counted

    def bytes_freed(self) -> dict[str, int]:
        """Per action kind, bytes freed (or, in a dry run, that would be freed) where known."""
        freed = {kind.value: 0 for kind in RetentionActionKind}
        for outcome in self.outcomes:
            if outcome.status in {"planned", "applied"} and outcome.bytes_freed is not None:
                freed[outcome.action.kind.value] += outcome.bytes_freed
        return freed

    def bytes_written(self) -> int:
        return sum(outcome.bytes_written for outcome in self.outcomes)

    def markdown_table(self) -> str:
        """A summary table for run metadata (Dagster renders markdown)."""
        counts, freed = self.counts(), self.bytes_freed()
        done = "would apply" if self.dry_run else "applied"
        lines = [f"| action | {done} | skipped | failed | bytes freed |", "|---|---:|---:|---:|---:|"]
        for kind in RetentionActionKind:
            row = counts[kind.value]
            lines.append(
                f"| {kind.value} | {row['planned'] + row['applied']} | {row['skipped']} | {row['failed']} | {freed[kind.value]:,} |"
            )
        lines.append(f"\nArchives written: {self.bytes_written():,} bytes.")
        return "\n".join(lines)


class RetentionError(Exception):
    """An action could not be completed safely; what was already done is consistent and resumable."""


class _Skip(Exception):
    """The live state says there is nothing (left) to do for this action."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_missing(error: BaseException) -> bool:
    return getattr(error, "error_code", None) == RESOURCE_DOES_NOT_EXIST


def apply_retention(
    actions: Iterable[RetentionAction],
    client: Any,
    store: ArtifactStore,
    dry_run: bool,
    log: Callable[[str], None],
) -> RetentionReport:
    """Perform `actions` (from `plan_retention`) against the live state; a dry run only lists them.

    Every action re-checks the state first and is skipped when it no longer applies, so a stale or
    repeated plan is harmless. A failing action is reported and logged; the others still run.
    """
    report = RetentionReport(dry_run=dry_run)
    worker = _RetentionWorker(client, store, log)
    for action in actions:
        if dry_run:
            log(f"dry run, would {action.describe()}")
            report.outcomes.append(ActionOutcome(action, "planned", "dry run", bytes_freed=action.bytes))
            continue
        try:
            outcome = worker.apply(action)
        except _Skip as skip:
            outcome = ActionOutcome(action, "skipped", str(skip))
            log(f"skipped {action.kind.value} {action.target}: {skip}")
        except Exception as error:  # one broken object must not stop retention of the rest
            outcome = ActionOutcome(action, "failed", f"{type(error).__name__}: {error}")
            log(f"FAILED {action.kind.value} {action.target}: {type(error).__name__}: {error}")
        else:
            log(f"{action.kind.value} {action.target}: {outcome.detail}")
        report.outcomes.append(outcome)
    return report


class _RetentionWorker:
    def __init__(self, client: Any, store: ArtifactStore, log: Callable[[str], None]) -> None:
        self.client = client
        self.store = store
        self.log = log

    def apply(self, action: RetentionAction) -> ActionOutcome:
        if action.kind is RetentionActionKind.ARCHIVE:
            return self.archive(action)
        if action.kind is RetentionActionKind.DELETE_ARCHIVED:
            return self.delete_archived(action)
        if action.kind is RetentionActionKind.COLLECT_RUN:
            return self.collect_run(action)
        return self.collect_artifact(action)

    # -- lookups that tolerate what is already gone

    def _version(self, action: RetentionAction) -> Any:
        try:
            return self.client.get_model_version(action.registered_model, str(action.version))
        except Exception as error:
            if _is_missing(error):
                raise _Skip("the model version no longer exists") from None
            raise

    def _active_run(self, run_id: str) -> Any | None:
        try:
            run = self.client.get_run(run_id)
        except Exception as error:
            if _is_missing(error):
                return None
            raise
        return run if run.info.lifecycle_stage == "active" else None

    def _artifact_repository(self, run: Any) -> Any:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        # The tracking URI must be passed: `mlflow-artifacts:` URIs are resolved against it, and
        # without it MLflow would use the process-global default instead of this client's server.
        return get_artifact_repository(run.info.artifact_uri, tracking_uri=self.client.tracking_uri)

    def _versions_of_run(self, run_id: str) -> list[Any]:
        return list(_all_pages(lambda token: self.client.search_model_versions(
            filter_string=f"run_id = {_quoted(run_id, 'run id')}", max_results=SEARCH_PAGE_SIZE, page_token=token
        )))

    def _is_current(self, directory: str) -> bool:
        prefix, fingerprint = directory.rsplit("/", 1)
        current = _current_fingerprint(self.store, prefix)
        return current is None or current == fingerprint  # an unreadable pointer protects everything under it

    def _delete_directory(self, directory: str) -> int:
        """Manifest first: from then on readers see "not stored" (recompute), never a half-deleted artifact."""
        objects = self.store.list_objects(directory)
        manifest = f"{directory}/{MANIFEST_FILE}"
        for stored in sorted(objects, key=lambda stored: (stored.key != manifest, stored.key)):
            self.store.delete(stored.key)
        return sum(stored.bytes for stored in objects)

    # -- archive

    def archive(self, action: RetentionAction) -> ActionOutcome:
        assert action.registered_model and action.version is not None and action.archive_key
        version = self._version(action)
        tags = version.tags or {}
        if tags.get(names.ARCHIVED_TAG) == "true":
            raise _Skip("already archived")
        if version.aliases:
            raise _Skip(f"holds alias {', '.join(sorted(version.aliases))}")
        run = self._active_run(version.run_id) if version.run_id else None

        recorded_checksum = tags.get(names.ARCHIVE_SHA256_TAG)
        written = 0
        if recorded_checksum:
            # A previous attempt wrote and verified the archive, then may have deleted originals.
            self._verified_archive(action.archive_key, recorded_checksum)
            self.log(f"{action.target}: reusing the verified archive {self.store.uri(action.archive_key)}")
        else:
            data = self._build_archive(action, version, run)
            self.store.put_bytes(action.archive_key, data)
            checksum = _sha256(data)
            self._verified_archive(action.archive_key, checksum)
            self.client.set_model_version_tag(action.registered_model, str(action.version), names.ARCHIVE_URI_TAG, self.store.uri(action.archive_key))
            self.client.set_model_version_tag(action.registered_model, str(action.version), names.ARCHIVE_SHA256_TAG, checksum)
            written = len(data)

        freed = 0
        if action.delete_run_model and run is not None:
            freed += self._delete_run_model(run)
        if action.delete_artifact_directory and action.artifact_directory:
            if self._is_current(action.artifact_directory):
                self.log(f"{action.target}: keeping {action.artifact_directory}, it became current again")
            else:
                freed += self._delete_directory(action.artifact_directory)
        self.client.set_model_version_tag(action.registered_model, str(action.version), names.ARCHIVED_AT_TAG, datetime.now(timezone.utc).isoformat())
        self.client.set_model_version_tag(action.registered_model, str(action.version), names.ARCHIVED_TAG, "true")
        return ActionOutcome(action, "applied", f"archived to {self.store.uri(action.archive_key)}", bytes_freed=freed, bytes_written=written)

    def _verified_archive(self, key: str, checksum: str) -> None:
        try:
            stored = self.store.get_bytes(key)
        except ArtifactNotFoundError:
            raise RetentionError(
                f"archive {self.store.uri(key)} is missing although the version records checksum {checksum}; originals may "
                f"already be partly deleted, so it is not rebuilt: restore the archive, or check the originals and remove "
                f"the {names.ARCHIVE_SHA256_TAG} tag to archive again"
            ) from None
        if _sha256(stored) != checksum:
            raise RetentionError(
                f"archive {self.store.uri(key)} has sha256 {_sha256(stored)}, expected {checksum}; it is not rebuilt because "
                f"originals may already be partly deleted: restore the archive, or check the originals and remove the "
                f"{names.ARCHIVE_SHA256_TAG} tag to archive again"
            )

    def _build_archive(self, action: RetentionAction, version: Any, run: Any | None) -> bytes:
        files: dict[str, bytes] = {}
        if run is not None:
            files.update(self._download_model(run.info.run_id))
        if not files:
            raise RetentionError(
                f"run {version.run_id} of {action.target} has no `{names.MODEL_ARTIFACT_PATH}/` artifacts (or no longer exists); "
                f"refusing to archive a version whose model files cannot be read"
            )
        if action.artifact_directory:
            for stored in self.store.list_objects(action.artifact_directory):
                files[f"{ARCHIVE_STORE_FOLDER}/{stored.key}"] = self.store.get_bytes(stored.key)
        index = {
            "registered_model": action.registered_model,
            "version": action.version,
            "run_id": version.run_id,
            "source": version.source,
            "fingerprint": action.fingerprint,
            "artifact_directory": action.artifact_directory,
            "artifact_store": self.store.location,
            "tags": dict(version.tags or {}),
            "archived_at": datetime.now(timezone.utc).isoformat(),
            "files": {name: {"sha256": _sha256(data), "bytes": len(data)} for name, data in sorted(files.items())},
        }
        buffer = io.BytesIO()
        modified = int(datetime.now(timezone.utc).timestamp())
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for name, data in [(ARCHIVE_INDEX_FILE, json.dumps(index, indent=2, sort_keys=True).encode()), *sorted(files.items())]:
                member = tarfile.TarInfo(name)
                member.size = len(data)
                member.mtime = modified
                archive.addfile(member, io.BytesIO(data))
        return buffer.getvalue()

    def _download_model(self, run_id: str) -> dict[str, bytes]:
        if not self.client.list_artifacts(run_id, names.MODEL_ARTIFACT_PATH):
            return {}
        with tempfile.TemporaryDirectory() as scratch:
            local = Path(self.client.download_artifacts(run_id, names.MODEL_ARTIFACT_PATH, dst_path=scratch))
            return {
                f"{ARCHIVE_MLFLOW_FOLDER}/{PurePosixPath(names.MODEL_ARTIFACT_PATH, path.relative_to(local).as_posix())}": path.read_bytes()
                for path in sorted(local.rglob("*"))
                if path.is_file()
            }

    def _delete_run_model(self, run: Any) -> int:
        run_id = run.info.run_id
        size = _tree_bytes(self.client, run_id, names.MODEL_ARTIFACT_PATH)
        self._artifact_repository(run).delete_artifacts(names.MODEL_ARTIFACT_PATH)
        if self.client.list_artifacts(run_id, names.MODEL_ARTIFACT_PATH):
            raise RetentionError(f"run {run_id}: `{names.MODEL_ARTIFACT_PATH}/` artifacts are still listed after deleting them")
        return size

    # -- deletion

    def delete_archived(self, action: RetentionAction) -> ActionOutcome:
        assert action.registered_model and action.version is not None and action.archive_key
        version = self._version(action)
        if version.aliases:
            raise _Skip(f"holds alias {', '.join(sorted(version.aliases))}")
        if (version.tags or {}).get(names.ARCHIVED_TAG) != "true":
            raise _Skip("not archived; a version is archived before it is deleted")
        freed = 0
        # The version goes last: while it exists the next plan finds this action again.
        folder = PurePosixPath(action.archive_key).parent.as_posix()
        for stored in self.store.list_objects(folder):
            if stored.key == action.archive_key:
                freed += stored.bytes
                self.store.delete(stored.key)
        if version.run_id:
            others = [v for v in self._versions_of_run(version.run_id) if (v.name, int(v.version)) != (action.registered_model, action.version)]
            if others:
                self.log(f"{action.target}: keeping run {version.run_id}, it also backs {', '.join(f'{v.name} v{v.version}' for v in others)}")
            else:
                freed += self._delete_run(version.run_id)
        self.client.delete_model_version(action.registered_model, str(action.version))
        return ActionOutcome(action, "applied", "deleted the version, its run and its archive", bytes_freed=freed)

    def _delete_run(self, run_id: str) -> int:
        run = self._active_run(run_id)
        if run is None:
            return 0
        size = _tree_bytes(self.client, run_id, None)
        self._artifact_repository(run).delete_artifacts()
        self.client.delete_run(run_id)
        return size

    def collect_run(self, action: RetentionAction) -> ActionOutcome:
        assert action.run_id
        if self._active_run(action.run_id) is None:
            raise _Skip("the run is already deleted")
        versions = self._versions_of_run(action.run_id)
        if versions:
            raise _Skip(f"the run now backs {', '.join(f'{v.name} v{v.version}' for v in versions)}")
        freed = self._delete_run(action.run_id)
        return ActionOutcome(action, "applied", "deleted the run and its artifacts", bytes_freed=freed)

    def collect_artifact(self, action: RetentionAction) -> ActionOutcome:
        assert action.artifact_directory and action.fingerprint
        if self._is_current(action.artifact_directory):
            raise _Skip("it is current (or its pointer cannot be read)")
        users = [
            version
            for version in _all_pages(lambda token: self.client.search_model_versions(
                filter_string=f"tags.{names.FINGERPRINT_TAG} = {_quoted(action.fingerprint, 'fingerprint')}",
                max_results=SEARCH_PAGE_SIZE,
                page_token=token,
            ))
            if (version.tags or {}).get(names.ARCHIVED_TAG) != "true"
        ]
        if users:
            raise _Skip(f"referenced by {', '.join(f'{v.name} v{v.version}' for v in users)}")
        if not self.store.list_keys(action.artifact_directory):
            raise _Skip("already deleted")
        freed = self._delete_directory(action.artifact_directory)
        return ActionOutcome(action, "applied", f"deleted {self.store.uri(action.artifact_directory)}", bytes_freed=freed)


def _tree_bytes(client: Any, run_id: str, path: str | None) -> int:
    """Bytes of a run's artifacts under `path` (all of them when None), as MLflow lists them."""
    total = 0
    for info in client.list_artifacts(run_id, path):
        total += _tree_bytes(client, run_id, info.path) if info.is_dir else int(info.file_size or 0)
    return total
