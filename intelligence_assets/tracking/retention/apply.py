"""Doing what the plan says: `apply_retention` performs retention's actions against the live state.

Each action re-checks the registry and the artifact store before it acts and is skipped when it
no longer applies, so applying a plan twice (or a stale plan) changes nothing the second time.
Archiving writes and verifies one tar.gz before deleting any original, and the version is tagged
`archived=true` only after the originals are gone, so a crash at any point either leaves the
originals in place or leaves a verified archive that the next run finds by its checksum.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from intelligence_assets.store.artifact_store import ArtifactNotFoundError, ArtifactStore
from intelligence_assets.store.keys import SEPARATOR, manifest_key
from intelligence_assets.tracking import names
from intelligence_assets.tracking.retention.plan import RetentionAction, RetentionActionKind
from intelligence_assets.tracking.retention.snapshot import SEARCH_PAGE_SIZE, current_fingerprint, quoted
from intelligence_assets.tracking.tracker import all_pages

ARCHIVE_INDEX_FILE = "archive.json"
ARCHIVE_MLFLOW_FOLDER = "mlflow"
ARCHIVE_STORE_FOLDER = "artifact_store"
RESOURCE_DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"


OutcomeStatus = Literal["planned", "applied", "skipped", "failed"]


@dataclass(frozen=True)
class ActionOutcome:
    """What became of one action. `bytes_freed`: measured when applied, the plan's estimate in a
    dry run, None where not known (skipped, failed, or not sized by the plan); `bytes_written`:
    the size of the archive written, if any."""

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
        counted: dict[str, dict[str, int]] = {
            kind.value: {"planned": 0, "applied": 0, "skipped": 0, "failed": 0} for kind in RetentionActionKind
        }
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
                f"| {kind.value} | {row['planned'] + row['applied']} | {row['skipped']} | {row['failed']} | "
                f"{freed[kind.value]:,} |"
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
        return list(
            all_pages(
                lambda token: self.client.search_model_versions(
                    filter_string=f"run_id = {quoted(run_id, 'run id')}", max_results=SEARCH_PAGE_SIZE, page_token=token
                )
            )
        )

    def _is_current(self, directory: str) -> bool:
        prefix, fingerprint = directory.rsplit(SEPARATOR, 1)
        current = current_fingerprint(self.store, prefix)
        return current is None or current == fingerprint  # an unreadable pointer protects everything under it

    def _delete_directory(self, directory: str) -> int:
        """Manifest first: from then on readers see "not stored" (recompute), never a half-deleted artifact."""
        objects = self.store.list_objects(directory)
        prefix, fingerprint = directory.rsplit(SEPARATOR, 1)
        manifest = manifest_key(prefix, fingerprint)
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
            self.client.set_model_version_tag(
                action.registered_model, str(action.version), names.ARCHIVE_URI_TAG, self.store.uri(action.archive_key)
            )
            self.client.set_model_version_tag(
                action.registered_model, str(action.version), names.ARCHIVE_SHA256_TAG, checksum
            )
            written = len(data)

        freed = 0
        if action.delete_run_model and run is not None:
            freed += self._delete_run_model(run)
        if action.delete_artifact_directory and action.artifact_directory:
            if self._is_current(action.artifact_directory):
                self.log(f"{action.target}: keeping {action.artifact_directory}, it became current again")
            else:
                freed += self._delete_directory(action.artifact_directory)
        self.client.set_model_version_tag(
            action.registered_model, str(action.version), names.ARCHIVED_AT_TAG, datetime.now(UTC).isoformat()
        )
        self.client.set_model_version_tag(action.registered_model, str(action.version), names.ARCHIVED_TAG, "true")
        return ActionOutcome(
            action,
            "applied",
            f"archived to {self.store.uri(action.archive_key)}",
            bytes_freed=freed,
            bytes_written=written,
        )

    def _verified_archive(self, key: str, checksum: str) -> None:
        try:
            stored = self.store.get_bytes(key)
        except ArtifactNotFoundError:
            raise RetentionError(
                f"archive {self.store.uri(key)} is missing although the version records checksum {checksum}; "
                "originals may "
                "already be partly deleted, so it is not rebuilt: restore the archive, or check the originals and "
                "remove "
                f"the {names.ARCHIVE_SHA256_TAG} tag to archive again"
            ) from None
        if _sha256(stored) != checksum:
            raise RetentionError(
                f"archive {self.store.uri(key)} has sha256 {_sha256(stored)}, expected {checksum}; it is not rebuilt "
                "because "
                f"originals may already be partly deleted: restore the archive, or check the originals and remove the "
                f"{names.ARCHIVE_SHA256_TAG} tag to archive again"
            )

    def _build_archive(self, action: RetentionAction, version: Any, run: Any | None) -> bytes:
        files: dict[str, bytes] = {}
        if run is not None:
            files.update(self._download_model(run.info.run_id))
        if not files:
            raise RetentionError(
                f"run {version.run_id} of {action.target} has no `{names.MODEL_ARTIFACT_PATH}/` artifacts (or no "
                "longer exists); "
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
            "archived_at": datetime.now(UTC).isoformat(),
            "files": {name: {"sha256": _sha256(data), "bytes": len(data)} for name, data in sorted(files.items())},
        }
        buffer = io.BytesIO()
        modified = int(datetime.now(UTC).timestamp())
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for name, data in [
                (ARCHIVE_INDEX_FILE, json.dumps(index, indent=2, sort_keys=True).encode()),
                *sorted(files.items()),
            ]:
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
                f"{ARCHIVE_MLFLOW_FOLDER}/"
                f"{PurePosixPath(names.MODEL_ARTIFACT_PATH, path.relative_to(local).as_posix())}": path.read_bytes()
                for path in sorted(local.rglob("*"))
                if path.is_file()
            }

    def _delete_run_model(self, run: Any) -> int:
        run_id = run.info.run_id
        size = _tree_bytes(self.client, run_id, names.MODEL_ARTIFACT_PATH)
        self._artifact_repository(run).delete_artifacts(names.MODEL_ARTIFACT_PATH)
        if self.client.list_artifacts(run_id, names.MODEL_ARTIFACT_PATH):
            raise RetentionError(
                f"run {run_id}: `{names.MODEL_ARTIFACT_PATH}/` artifacts are still listed after deleting them"
            )
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
            others = [
                v
                for v in self._versions_of_run(version.run_id)
                if (v.name, int(v.version)) != (action.registered_model, action.version)
            ]
            if others:
                self.log(
                    f"{action.target}: keeping run {version.run_id}, it also backs "
                    f"{', '.join(f'{v.name} v{v.version}' for v in others)}"
                )
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
            for version in all_pages(
                lambda token: self.client.search_model_versions(
                    filter_string=f"tags.{names.FINGERPRINT_TAG} = {quoted(action.fingerprint, 'fingerprint')}",
                    max_results=SEARCH_PAGE_SIZE,
                    page_token=token,
                )
            )
            if (version.tags or {}).get(names.ARCHIVED_TAG) != "true"
        ]
        if users:
            raise _Skip(f"referenced by {', '.join(f'{v.name} v{v.version}' for v in users)}")
        if not self.store.list_keys(action.artifact_directory):
            raise _Skip("already deleted")
        freed = self._delete_directory(action.artifact_directory)
        return ActionOutcome(
            action, "applied", f"deleted {self.store.uri(action.artifact_directory)}", bytes_freed=freed
        )


def _tree_bytes(client: Any, run_id: str, path: str | None) -> int:
    """Bytes of a run's artifacts under `path` (all of them when None), as MLflow lists them."""
    total = 0
    for info in client.list_artifacts(run_id, path):
        total += _tree_bytes(client, run_id, info.path) if info.is_dir else int(info.file_size or 0)
    return total
