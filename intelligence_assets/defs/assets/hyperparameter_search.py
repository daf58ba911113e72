"""`hyperparameter_search/<family>`: an Optuna study per symbol x target, for each family whose
`search:` universe.yaml declares; the family's models train with the best params it found.

Exploratory work, kept out of production's way: no automation condition (launched from the UI,
the CLI or `hyperparameter_search_job`'s runs, which carry the exploratory priority and purpose
tags the run queue orders and limits by), and the `search` concurrency pool for its steps.

The study lives in the instance's database (`study_storage`), named by the partition's
fingerprint: a killed search resumes with its finished trials, and once its result is committed
the same space, budget and inputs are a cache hit.
"""

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dagster as dg
import sqlalchemy

from intelligence_assets.cells.hyperparameter_search import search_cell, search_settings_config, track_search_cell
from intelligence_assets.cells.training import Cell, Provenance
from intelligence_assets.config.universe import KubernetesSettings, PodResources, Universe
from intelligence_assets.defs.assets.caching import (
    Computed,
    PartitionWork,
    fingerprint_of,
    input_versions,
    materialize_partitions,
)
from intelligence_assets.defs.assets.planning import PlanningContext, plans
from intelligence_assets.defs.assets.target_analysis import cell_handles, training_backfill_policy, training_ins
from intelligence_assets.defs.gpus import GpuPlacement
from intelligence_assets.defs.partitions import cell_of, symbol_target_partitions
from intelligence_assets.defs.pods import step_pod_tags, threads_for
from intelligence_assets.defs.pools import SEARCH_POOL
from intelligence_assets.defs.resources.artifact_store import ArtifactStoreResource
from intelligence_assets.defs.resources.mlflow_tracking import MlflowTrackingResource
from intelligence_assets.ml.families import load_family
from intelligence_assets.ml.hyperparameter_search import SearchSettings
from intelligence_assets.store.artifacts import ArtifactHandle, HandleOrRange, Manifest

SEARCH_KEY_PREFIX = "hyperparameter_search"
SEARCH_GROUP = "hyperparameter_search"
# Optuna keeps its tables (and its own alembic_version) in this schema of a PostgreSQL instance
# database, apart from Dagster's tables.
STUDY_SCHEMA = "hyperparameter_search"
# The SQLite file of an embedded instance's studies, in its storage directory (DAGSTER_HOME/storage).
STUDY_DATABASE = "hyperparameter_search.db"


def search_key(family: str) -> dg.AssetKey:
    return dg.AssetKey([SEARCH_KEY_PREFIX, family])


def searched_families(universe: Universe) -> list[str]:
    return [name for name, settings in universe.model_families.items() if settings.search is not None]


def search_config(universe: Universe, family_name: str, target: str) -> dict[str, Any]:
    settings = universe.model_families[family_name].search
    assert settings is not None, f"model family {family_name!r} declares no search"
    spec = universe.target(target)
    return {
        "params": universe.model_families[family_name].params,
        "search": search_settings_config(settings),
        "split": universe.split,
        "seed": universe.seed,
        "task": spec.task,
        "target": spec,
    }


def study_storage(instance: dg.DagsterInstance) -> str:
    """The SQLAlchemy URL of the instance's database for Optuna studies: a schema of its own in
    PostgreSQL (the postgres and k8s deployments), a file under the instance's storage directory
    on SQLite."""
    postgres_url = getattr(instance.run_storage, "postgres_url", None)
    if postgres_url:
        separator = "&" if "?" in postgres_url else "?"
        url = f"{postgres_url}{separator}options={quote(f'-csearch_path={STUDY_SCHEMA}')}"
        _create_study_schema(postgres_url, url)
        return url
    directory = Path(instance.root_directory) / "storage"
    directory.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{directory / STUDY_DATABASE}"
    _create_study_file(url, directory / f"{STUDY_DATABASE}.lock")
    return url


def _create_study_file(study_url: str, lock_path: Path) -> None:
    """Optuna's tables in the study file, once, under a file lock: as on PostgreSQL, two search
    steps starting together on a fresh file race to create them, and one fails (a second
    `alembic_version` row)."""
    import fcntl

    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or its process dies
        _create_optuna_tables(study_url, connect_args={"timeout": 60})


def _create_optuna_tables(study_url: str, **engine_kwargs: Any) -> None:
    """Optuna creates its tables when its storage is first opened on a database without them."""
    import optuna

    optuna.storages.RDBStorage(
        study_url, engine_kwargs={"poolclass": sqlalchemy.pool.NullPool, **engine_kwargs}
    ).engine.dispose()


def _create_study_schema(postgres_url: str, study_url: str) -> None:
    """The schema and Optuna's tables, once, under an advisory lock: neither CREATE SCHEMA IF NOT
    EXISTS nor Optuna's first table creation is safe when two search steps start together on a
    fresh database (both failed with unique violations when tried)."""
    engine = sqlalchemy.create_engine(postgres_url, poolclass=sqlalchemy.pool.NullPool)
    lock = sqlalchemy.text("SELECT pg_advisory_lock(hashtext(:name))")
    unlock = sqlalchemy.text("SELECT pg_advisory_unlock(hashtext(:name))")
    try:
        with engine.connect() as connection:
            # Committed before Optuna's own connection creates its tables in the schema.
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            connection.execute(lock, {"name": STUDY_SCHEMA})
            try:
                connection.execute(sqlalchemy.text(f'CREATE SCHEMA IF NOT EXISTS "{STUDY_SCHEMA}"'))
                _create_optuna_tables(study_url)
            finally:
                connection.execute(unlock, {"name": STUDY_SCHEMA})
    finally:
        engine.dispose()


def search_pod_settings(universe: Universe, settings: SearchSettings) -> KubernetesSettings:
    """On Kubernetes a search step is a pod of its own: a CPU family's pod asks for a core per
    trial worker (`search.workers`), so the study's parallel trials do not share one core."""
    kubernetes = universe.kubernetes
    cores = max(threads_for(kubernetes.cpu_step.cpu), settings.workers)
    if cores == threads_for(kubernetes.cpu_step.cpu):
        return kubernetes
    return kubernetes.model_copy(update={"cpu_step": PodResources(cpu=str(cores), memory=kubernetes.cpu_step.memory)})


def build_search_asset(family_name: str, universe: Universe) -> dg.AssetsDefinition:
    family = load_family(family_name)
    key = search_key(family_name)
    gpu = universe.trains_on_gpu(family_name)
    settings = universe.model_families[family_name].search
    assert settings is not None

    @dg.multi_asset(
        name=key.to_python_identifier(),
        outs={
            key.to_python_identifier(): dg.AssetOut(
                key=key,
                group_name=SEARCH_GROUP,
                code_version=f"1.{family.version}",
                kinds={"optuna", *list(family.kinds)[:2]},
                tags={"family": family_name, "workload": "exploratory"},
                description=(
                    f"Optuna search of {family_name}'s {', '.join(settings.ranges)} per symbol x target on the "
                    "walk-forward folds of the development period (TPE sampler, median pruner); the models train "
                    "with its best params. Launched by hand or hyperparameter_search_job, never by automation."
                ),
            )
        },
        ins=training_ins(),
        can_subset=True,
        partitions_def=symbol_target_partitions(universe),
        backfill_policy=training_backfill_policy(universe),
        pool=SEARCH_POOL,
        op_tags=step_pod_tags(
            search_pod_settings(universe, settings), gpu, {"family": family_name, "workload": "search"}
        ),
    )
    def hyperparameter_search(
        context: dg.AssetExecutionContext,
        artifact_store: ArtifactStoreResource,
        mlflow_tracking: MlflowTrackingResource,
        **inputs: HandleOrRange,
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        storage = study_storage(context.instance)
        # Trials train like the family's models: a GPU family's on a leased GPU slot of the host.
        with GpuPlacement(universe).step_device(context, family_name):
            work_for = partial(_partition_work, context, mlflow_tracking, universe, family_name, inputs, storage)
            yield from materialize_partitions(context, artifact_store.store(), work_for)

    return hyperparameter_search


def _partition_work(
    context: dg.AssetExecutionContext,
    mlflow_tracking: MlflowTrackingResource,
    universe: Universe,
    family_name: str,
    inputs: dict[str, HandleOrRange],
    storage: str,
    partition_key: str,
) -> PartitionWork:
    symbol, target = cell_of(partition_key)
    cell = Cell(universe, family_name, symbol, target)
    handles = cell_handles(inputs, partition_key)
    config = search_config(universe, family_name, target)
    # The partition's fingerprint, as caching computes it: a rerun of a killed search finds its study.
    code_version = context.assets_def.code_versions_by_key[search_key(family_name)] or ""
    study_name = fingerprint_of(code_version, config, partition_key, input_versions(handles))
    provenance = Provenance(context.run.run_id, search_key(family_name).to_user_string(), partition_key)
    return PartitionWork(
        handles,
        config,
        partial(_search, context, cell, handles, storage, study_name),
        after_commit=partial(_track, context, mlflow_tracking, cell, provenance),
    )


def _search(
    context: dg.AssetExecutionContext,
    cell: Cell,
    handles: dict[str, ArtifactHandle],
    storage: str,
    study_name: str,
) -> Computed:
    settings = cell.universe.model_families[cell.family].search
    assert settings is not None
    searched = search_cell(
        cell,
        settings,
        handles["feature_sets"].load(),
        handles["features"].load,
        handles["labels"].load,
        storage,
        study_name,
        log=context.log.info,
    )
    return Computed(searched.value, metadata=searched.metadata)


def _track(
    context: dg.AssetExecutionContext,
    mlflow_tracking: MlflowTrackingResource,
    cell: Cell,
    provenance: Provenance,
    stored: ArtifactHandle,
    manifest: Manifest,
    computed: dict[str, Any] | None,
) -> dict[str, Any]:
    """Each trial a child run under the search's parent run in MLflow (once per fingerprint)."""
    tracked = track_search_cell(
        cell, mlflow_tracking.tracker, stored, manifest, computed, provenance, log=context.log.info
    )
    if tracked is None:
        return {}
    links = mlflow_tracking.links()
    return {
        "mlflow_run": dg.MetadataValue.url(links.mlflow_run(tracked.experiment_id, tracked.run_id)),
        "mlflow_run_id": tracked.run_id,
    }


def build_search_assets(universe: Universe) -> list[dg.AssetsDefinition]:
    return [build_search_asset(name, universe) for name in searched_families(universe)]


@plans(dg.AssetKey([SEARCH_KEY_PREFIX]))
def planned_search_config(context: PlanningContext) -> dict[str, Any]:
    """What the planner hashes for a `hyperparameter_search/<family>` partition."""
    return search_config(context.universe, context.asset_key.path[-1], context.target)
