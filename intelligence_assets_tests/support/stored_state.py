"""What a home holds after a run, in a form two homes can be compared by: the artifact store's
pointers, and MLflow's runs, versions and aliases keyed by artifact fingerprint (version numbers
and run ids differ between homes; fingerprints do not).

A fault test runs the same universe cleanly once (the reference) and with the fault injected,
then asserts `state.problems == []` and `state.comparable() == reference.comparable()`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import ViewType

from intelligence_assets.defs.assets.predictions import PREDICTIONS
from intelligence_assets.defs.assets.registry import MODEL_REGISTRY
from intelligence_assets.store.artifact_store import LocalArtifactStore
from intelligence_assets.store.artifacts import find_intact_manifest
from intelligence_assets.store.keys import artifact_prefix, pointer_prefix
from intelligence_assets.store.usage import MLFLOW_AREA, classify_key
from intelligence_assets.tracking import names

# Always computed from the registry, whose version numbers differ between homes: compared
# through the aliases' fingerprints instead.
FROM_THE_REGISTRY = (artifact_prefix(MODEL_REGISTRY), artifact_prefix(PREDICTIONS))


@dataclass(frozen=True)
class StoredState:
    pointers: dict[str, str]  # prefix -> current fingerprint
    finished_runs: Counter  # model fingerprint -> active FINISHED runs
    versions: Counter  # (registered model, fingerprint) -> versions
    aliases: dict[tuple[str, str], str]  # (registered model, alias) -> fingerprint
    problems: list[str] = field(default_factory=list)

    def comparable(self) -> dict:
        return {
            "pointers": {
                prefix: fingerprint
                for prefix, fingerprint in self.pointers.items()
                if not prefix.startswith(FROM_THE_REGISTRY)
            },
            "finished_runs": dict(self.finished_runs),
            "versions": dict(self.versions),
            "aliases": self.aliases,
        }


def stored_state(home: Path) -> StoredState:
    """The state of a home made by `make demo` (local store under home/artifacts, embedded MLflow)."""
    store = LocalArtifactStore(home / "artifacts")
    problems: list[str] = []
    pointers = {}
    for key in store.list_keys(""):
        prefix = pointer_prefix(key)
        if prefix is None or classify_key(key)[0] == MLFLOW_AREA:
            continue
        fingerprint = store.get_json(key)["fingerprint"]
        pointers[prefix] = fingerprint
        if find_intact_manifest(store, prefix, fingerprint)[1] != "intact":
            problems.append(f"{prefix}: the pointer names {fingerprint}, which is not intact")
    client = MlflowClient(f"sqlite:///{home / 'artifacts' / 'mlflow' / 'mlflow.db'}")
    experiments = [experiment.experiment_id for experiment in client.search_experiments(view_type=ViewType.ALL)]
    runs = client.search_runs(experiments, run_view_type=ViewType.ALL, max_results=50_000) if experiments else []
    finished_runs: Counter = Counter()
    run_status = {}
    for run in runs:
        fingerprint = run.data.tags.get(names.FINGERPRINT_TAG)
        run_status[run.info.run_id] = (run.info.status, run.info.lifecycle_stage)
        if run.info.lifecycle_stage != "active":
            continue
        if run.info.status != "FINISHED":
            problems.append(f"run {run.info.run_id} of {fingerprint} is {run.info.status} and not deleted")
        else:
            finished_runs[fingerprint] += 1
    problems += [
        f"{count} finished runs track fingerprint {fingerprint}"
        for fingerprint, count in finished_runs.items()
        if count > 1
    ]
    versions: Counter = Counter()
    aliases = {}
    fingerprint_of_version = {}
    for model in client.search_registered_models(max_results=1000):
        for version in client.search_model_versions(f"name = '{model.name}'"):
            fingerprint = version.tags.get(names.FINGERPRINT_TAG)
            versions[(model.name, fingerprint)] += 1
            fingerprint_of_version[(model.name, str(version.version))] = fingerprint
            if run_status.get(version.run_id) != ("FINISHED", "active"):
                problems.append(
                    f"{model.name} v{version.version} comes from run {version.run_id}, which is "
                    f"{run_status.get(version.run_id, 'gone')}"
                )
        for alias, version in (model.aliases or {}).items():
            aliases[(model.name, alias)] = fingerprint_of_version.get((model.name, str(version)), f"missing v{version}")
    problems += [
        f"{count} versions of {name} hold fingerprint {fingerprint}"
        for (name, fingerprint), count in versions.items()
        if count > 1
    ]
    return StoredState(pointers, finished_runs, versions, aliases, problems)
