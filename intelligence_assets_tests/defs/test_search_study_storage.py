"""Where Optuna keeps the hyperparameter searches' studies (`study_storage`): in a schema of its
own in the PostgreSQL instance's database, apart from Dagster's tables, which keep working; in a
SQLite file under the instance's `storage/` directory on the embedded default."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import dagster as dg
import optuna
import pytest

from intelligence_assets.config.universe import load_universe
from intelligence_assets.definitions import build_assets
from intelligence_assets.defs.assets.hyperparameter_search import (
    SEARCH_GROUP,
    STUDY_DATABASE,
    STUDY_SCHEMA,
    search_key,
    study_storage,
)
from intelligence_assets.defs.assets.market_data import BARS, FEATURES
from intelligence_assets.defs.assets.target_analysis import TARGET_ANALYSIS_ASSETS
from intelligence_assets.defs.partitions import register_symbols
from intelligence_assets_tests.conftest import write_small_universe
from intelligence_assets_tests.support.pipeline import local_resources
from intelligence_assets_tests.support.postgres import PostgresDatabase

OPTUNA_TABLES = {"studies", "trials", "trial_params", "trial_values", "version_info"}
DAGSTER_TABLES = {"runs", "event_logs", "asset_keys", "dynamic_partitions"}
SYMBOL, TARGET = "SIGNAL", "y_up_1b"
CELL = dg.MultiPartitionKey({"symbol": SYMBOL, "target": TARGET})
TRIALS = 3


@pytest.fixture
def postgres_instance(
    postgres_database: PostgresDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dg.DagsterInstance]:
    """An instance on deploy/postgres/dagster.yaml, on the session's database."""
    home = postgres_database.write_dagster_home(tmp_path / "dagster_home")
    for name, value in postgres_database.dagster_environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


def tables_by_schema(database: PostgresDatabase) -> dict[str, set[str]]:
    connection = database.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema IN (%s, 'public')",
                (STUDY_SCHEMA,),
            )
            rows = cursor.fetchall()
    finally:
        connection.close()
    tables: dict[str, set[str]] = {STUDY_SCHEMA: set(), "public": set()}
    for schema, table in rows:
        tables[schema].add(table)
    return tables


def query(database: PostgresDatabase, statement: str, parameters: tuple = ()) -> list[tuple]:
    connection = database.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement, parameters)
            return cursor.fetchall()
    finally:
        connection.close()


def objective(trial: optuna.Trial) -> float:
    return trial.suggest_float("x", 0.0, 1.0)


@dg.asset
def probe() -> int:
    return 1


def test_postgresql_studies_live_in_their_own_schema_beside_dagsters_tables(
    postgres_instance: dg.DagsterInstance, postgres_database: PostgresDatabase
) -> None:
    runs_before = {run.run_id for run in postgres_instance.get_runs()}  # the database is the session's
    url = study_storage(postgres_instance)
    assert url.startswith(postgres_instance.run_storage.postgres_url)
    study_name = f"probe-{uuid.uuid4().hex[:8]}"
    study = optuna.create_study(study_name=study_name, storage=url, direction="maximize")
    study.optimize(objective, n_trials=2)

    tables = tables_by_schema(postgres_database)
    assert tables[STUDY_SCHEMA] >= OPTUNA_TABLES, tables
    assert not OPTUNA_TABLES & tables["public"], tables
    assert tables["public"] >= DAGSTER_TABLES, tables
    assert not DAGSTER_TABLES & tables[STUDY_SCHEMA], tables
    trials = query(
        postgres_database,
        f'SELECT count(*) FROM "{STUDY_SCHEMA}".trials JOIN "{STUDY_SCHEMA}".studies USING (study_id)'
        " WHERE study_name = %s",
        (study_name,),
    )
    assert trials == [(2,)]
    # Each keeps its own migration state: Optuna's revision beside its tables, Dagster's in public.
    [(optuna_revision,)] = query(postgres_database, f'SELECT version_num FROM "{STUDY_SCHEMA}".alembic_version')
    [(dagster_revision,)] = query(postgres_database, "SELECT version_num FROM public.alembic_version")
    assert optuna_revision != dagster_revision

    # A second call (every search step makes one) changes nothing and finds the study.
    assert study_storage(postgres_instance) == url
    again = optuna.load_study(study_name=study_name, storage=url)
    assert len(again.trials) == 2

    # Dagster's instance still works: on the object at hand, and on a new one that checks its schema.
    assert {run.run_id for run in postgres_instance.get_runs()} == runs_before
    with dg.DagsterInstance.from_config(postgres_instance.root_directory) as fresh:
        result = dg.materialize([probe], instance=fresh)
        assert result.success
    runs_after = {run.run_id for run in postgres_instance.get_runs()}
    assert runs_after == runs_before | {result.run_id}
    assert postgres_instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS


def test_a_search_asset_keeps_its_study_in_the_postgresql_schema(
    postgres_instance: dg.DagsterInstance, postgres_database: PostgresDatabase, tmp_path: Path
) -> None:
    families = {"linear": {"params": {}, "search": {"trials": TRIALS, "startup_trials": 2}}}
    universe = load_universe(write_small_universe(tmp_path / "universe", families=families))
    assets = build_assets(universe)
    resources = local_resources(tmp_path / "artifacts", universe)
    register_symbols(postgres_instance, universe.symbols)

    def run(selection: dg.AssetSelection, partition_key) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            assets, selection=selection, partition_key=partition_key, instance=postgres_instance, resources=resources
        )

    assert run(dg.AssetSelection.assets(BARS, FEATURES), SYMBOL).success
    searched = run(dg.AssetSelection.assets(*TARGET_ANALYSIS_ASSETS) | dg.AssetSelection.groups(SEARCH_GROUP), CELL)
    assert searched.success
    [metadata] = [
        event.materialization.metadata
        for event in searched.get_asset_materialization_events()
        if event.materialization.asset_key == search_key("linear") and "cache" in event.materialization.metadata
    ]
    study_name = metadata["study"].value
    assert (study_name,) in query(postgres_database, f'SELECT study_name FROM "{STUDY_SCHEMA}".studies')
    assert query(
        postgres_database,
        f'SELECT count(*) FROM "{STUDY_SCHEMA}".trials t JOIN "{STUDY_SCHEMA}".studies s USING (study_id)'
        " WHERE s.study_name = %s AND t.state IN ('COMPLETE', 'PRUNED')",
        (study_name,),
    ) == [(TRIALS,)]
    # Nothing of the study reached SQLite beside the instance's directory.
    assert not (Path(postgres_instance.root_directory) / "storage" / STUDY_DATABASE).exists()


def test_sqlite_studies_are_a_file_in_the_instances_storage_directory(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        url = study_storage(instance)
        path = Path(instance.root_directory) / "storage" / STUDY_DATABASE
        assert url == f"sqlite:///{path}"
        assert study_storage(instance) == url
        study = optuna.create_study(study_name="probe", storage=url)
        study.optimize(objective, n_trials=2)
        assert path.is_file()
        assert len(optuna.load_study(study_name="probe", storage=url).trials) == 2
        assert instance.get_runs() == []


def test_searches_starting_together_on_a_fresh_database_share_one_schema(
    postgres_database: PostgresDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unlocked, CREATE SCHEMA IF NOT EXISTS and Optuna's first table creation both failed with
    unique violations when six steps started at once."""
    from concurrent.futures import ThreadPoolExecutor

    from psycopg2 import sql

    from intelligence_assets_tests.support.postgres import execute_outside_transaction

    fresh = replace(postgres_database, db_name=f"intelligence_race_{uuid.uuid4().hex[:12]}")
    name = sql.Identifier(fresh.db_name)
    execute_outside_transaction(postgres_database, sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(name))
    try:
        home = fresh.write_dagster_home(tmp_path / "dagster_home")
        for variable, value in fresh.dagster_environment().items():
            monkeypatch.setenv(variable, value)
        with dg.DagsterInstance.from_config(str(home)) as instance:

            def start_a_search(worker: int) -> str:
                url = study_storage(instance)
                optuna.create_study(storage=url, study_name=f"step-{worker}", load_if_exists=True)
                return url

            with ThreadPoolExecutor(6) as pool:
                urls = set(pool.map(start_a_search, range(6)))
        assert len(urls) == 1
        assert tables_by_schema(fresh)[STUDY_SCHEMA] >= OPTUNA_TABLES
    finally:
        execute_outside_transaction(postgres_database, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


def test_searches_starting_together_on_a_fresh_sqlite_file_share_it(tmp_path: Path) -> None:
    """Six steps opening a fresh study file at once: unlocked, Optuna's table creation raced and
    failed a step (a second `alembic_version` row), as on PostgreSQL."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    (tmp_path / "home").mkdir()
    # The instance exists before its steps start, as under `make demo` or the daemon.
    with (
        dg.instance_for_test(temp_dir=str(tmp_path / "home")),
        ProcessPoolExecutor(6, mp_context=multiprocessing.get_context("spawn")) as pool,
    ):
        urls = set(pool.map(_start_a_sqlite_search, [str(tmp_path / "home")] * 6, range(6)))
    assert len(urls) == 1
    assert {study.study_name for study in optuna.get_all_study_summaries(storage=urls.pop())} == {
        f"step-{worker}" for worker in range(6)
    }


def _start_a_sqlite_search(home: str, worker: int) -> str:
    with dg.instance_for_test(temp_dir=home) as instance:
        url = study_storage(instance)
        optuna.create_study(storage=url, study_name=f"step-{worker}", load_if_exists=True)
        return url
