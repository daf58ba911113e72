"""Retention's view of the state: model versions, unregistered runs and committed artifact-store
directories, read from the MLflow registry, its runs and one listing of the artifact store.

`gather_retention_snapshot` only reads; `plan.plan_retention` decides from what it returns.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from intelligence_assets.ml.metrics import finite_or_none
from intelligence_assets.store.artifact_store import (
    ArtifactNotFoundError,
    ArtifactStore,
    CorruptArtifactError,
    StoredObject,
)
from intelligence_assets.store.keys import MANIFEST_FILE, POINTER_FILE, pointer_key
from intelligence_assets.tracking import names
from intelligence_assets.tracking.tracker import all_pages

MLFLOW_AREA = "mlflow"
SEARCH_PAGE_SIZE = 1000


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
    return None if milliseconds is None else datetime.fromtimestamp(milliseconds / 1000, tz=UTC)


def quoted(value: str, what: str) -> str:
    """A value for an MLflow filter string; MLflow's filter grammar has no escape for quotes."""
    if "'" in value:
        raise ValueError(f"{what} {value!r} contains a single quote, which MLflow filter strings cannot express")
    return f"'{value}'"


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
    manifests = {
        stored.key.removesuffix(f"/{MANIFEST_FILE}"): stored
        for stored in artifacts
        if stored.key.endswith(f"/{MANIFEST_FILE}")
    }

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
            current_by_prefix[prefix] = current_fingerprint(store, prefix) if pointer_key(prefix) in pointers else ""
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


def current_fingerprint(store: ArtifactStore, prefix: str) -> str | None:
    """The fingerprint the prefix's pointer names; "" when there is no pointer; None when it cannot be read."""
    try:
        pointer = store.get_json(pointer_key(prefix))
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
        for model in all_pages(
            lambda token: client.search_registered_models(
                filter_string=names.PLATFORM_MODELS_FILTER,
                max_results=SEARCH_PAGE_SIZE,
                page_token=token,
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
        for version in all_pages(
            lambda token, name=model.name: client.search_model_versions(
                filter_string=f"name = {quoted(name, 'registered model name')}",
                max_results=SEARCH_PAGE_SIZE,
                page_token=token,
            )
        ):
            raw_versions.append((model, version, tuple(sorted(aliases_by_version.get(int(version.version), [])))))

    experiments = list(
        all_pages(
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
            for run in all_pages(
                lambda token, experiment_id=experiment.experiment_id: client.search_runs(
                    [experiment_id], run_view_type=ViewType.ACTIVE_ONLY, max_results=SEARCH_PAGE_SIZE, page_token=token
                )
            )
        )

    run_ids = {run.info.run_id for _, run in runs} | {
        version.run_id for _, version, _ in raw_versions if version.run_id
    }
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
                created=_from_milliseconds(version.creation_timestamp) or datetime.fromtimestamp(0, tz=UTC),
                aliases=aliases,
                score=finite_or_none(tags.get(names.SCORE_TAG)),
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
        # A hyperparameter search's runs never become versions; they are the record of what was tried.
        and run.data.tags.get(names.RUN_KIND_TAG) not in (names.SEARCH_RUN_KIND, names.TRIAL_RUN_KIND)
    ]
    return RetentionSnapshot(
        versions=tuple(sorted(versions, key=lambda version: (version.registered_model, version.version))),
        unregistered_runs=tuple(sorted(unregistered, key=lambda run: run.run_id)),
        artifact_directories=tuple(_fingerprint_directories(store, objects)),
    )
