"""What retention does: `plan_retention` turns a snapshot, the settings and a clock into actions.

A pure function: the same inputs always give the same actions in the same order, so a dry run
shows exactly what would happen.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from intelligence_assets.store.keys import MODELS, artifact_prefix
from intelligence_assets.tracking.retention.snapshot import (
    ArtifactDirectory,
    RetentionSnapshot,
    VersionState,
    archive_key,
)

GIGABYTE = 1000**3


class RetentionSettings(BaseModel):
    """How long checkpoints live and how much storage they may take."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keep_top: int = Field(
        5,
        ge=1,
        description="Versions per registered model kept by `score` (higher is better); never archived or deleted.",
    )
    archive_after_days: int = Field(
        30,
        ge=1,
        description="Other versions older than this are archived into one tar.gz and their model files deleted.",
    )
    delete_archived_after_days: int = Field(
        90,
        ge=2,
        description="Archived versions older than this (from creation) are deleted with their run and archive.",
    )
    collect_unregistered_after_days: int = Field(
        7,
        ge=1,
        description=(
            "Runs that never became a model version are deleted, with their artifacts, after this; a hyperparameter "
            "search's parent and trial runs are kept."
        ),
    )
    collect_superseded_artifacts_after_days: int = Field(
        7,
        ge=1,
        description=(
            "Artifact-store fingerprint directories that are neither current nor referenced by a live model version "
            "are deleted this long after they were committed."
        ),
    )
    quota_bytes: int = Field(
        20 * GIGABYTE, gt=0, description="Storage the artifact store (MLflow artifacts and archives included) may use."
    )
    alert_fraction: float = Field(
        0.8, gt=0, le=1, description="Alert once usage exceeds this fraction of `quota_bytes`."
    )

    @model_validator(mode="after")
    def _deletion_follows_archiving(self) -> RetentionSettings:
        if self.delete_archived_after_days <= self.archive_after_days:
            raise ValueError(
                f"delete_archived_after_days ({self.delete_archived_after_days}) must be greater than "
                f"archive_after_days ({self.archive_after_days}): a version is archived before it is deleted"
            )
        return self


class RetentionActionKind(str, Enum):  # noqa: UP042 - StrEnum would change str()/format() of members
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
        return (
            KIND_ORDER[self.kind],
            self.registered_model or "",
            self.version or 0,
            self.run_id or "",
            self.artifact_directory or "",
        )


def _require_aware(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware (UTC), got naive {now.isoformat()}")
    return now.astimezone(UTC)


def _sum_known(*sizes: int | None) -> int | None:
    return None if any(size is None for size in sizes) else sum(sizes)  # type: ignore[arg-type]


def _directory_of(version: VersionState, directories: dict[str, list[ArtifactDirectory]]) -> ArtifactDirectory | None:
    """The artifact-store directory a version was registered from: by fingerprint, preferring the model layout."""
    candidates = directories.get(version.fingerprint or "", [])
    expected = artifact_prefix([MODELS, version.family], version.symbol, version.target)
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
                reason=(
                    f"archived, created {version.created:%Y-%m-%d}, older than {settings.delete_archived_after_days} "
                    "days"
                ),
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
                        f"run in {run.experiment_name} started {run.started:%Y-%m-%d}, never registered as a model "
                        "version, "
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
        if (
            directory.current
            or directory.fingerprint in live_fingerprints
            or now - directory.committed <= directory_age
        ):
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
