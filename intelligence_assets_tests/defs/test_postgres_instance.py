"""The PostgreSQL instance (deploy/postgres/dagster.yaml) against a real PostgreSQL 15 on loopback.

Materializes through Dagster, then reads the answers back from PostgreSQL twice: through a new
instance object, and with plain SQL, so that nothing can come from process memory or SQLite.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import yaml
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from intelligence_assets.cli.demo import UniverseRun, run_market_data_stage, worker_pool
from intelligence_assets.config.universe import REPOSITORY_ROOT, Universe, load_universe
from intelligence_assets.definitions import MARKET_DATA_JOB, build_assets
from intelligence_assets.defs.assets.market_data import BARS, FEATURES
from intelligence_assets.defs.partitions import SYMBOL_DIMENSION, register_symbols
from intelligence_assets.defs.planner import plan_runs
from intelligence_assets.defs.resources.deployment import Deployment
from intelligence_assets.store.artifact_store import LocalArtifactStore
from intelligence_assets_tests.conftest import home_environment, write_small_universe
from intelligence_assets_tests.support.chart import run_pod_environment
from intelligence_assets_tests.support.postgres import POSTGRES_INSTANCE_CONFIG, PostgresDatabase, new_database

PARTITION = "SIGNAL"
DATA_VERSION_TAG = "dagster/data_version"


def use_postgres_instance(monkeypatch: pytest.MonkeyPatch, database: PostgresDatabase, home: Path) -> None:
    for name, value in database.dagster_environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(home))


def test_config_differs_from_the_embedded_default_only_in_storage():
    postgres_config = yaml.safe_load(POSTGRES_INSTANCE_CONFIG.read_text())
    embedded_config = yaml.safe_load((REPOSITORY_ROOT / "dagster.yaml").read_text())
    assert list(postgres_config.pop("storage")) == ["postgres"]
    assert list(embedded_config.pop("storage")) == ["custom"]  # Dagster's SQLite storage (defs/instance_storage.py)
    assert postgres_config == embedded_config


def test_dagster_home_selects_postgres_storage(
    postgres_database: PostgresDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    use_postgres_instance(
        monkeypatch, postgres_database, postgres_database.write_dagster_home(tmp_path / "dagster_home")
    )
    instance = dg.DagsterInstance.get()
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        expected_url = f"postgresql+psycopg2://{postgres_database.user}:"
        assert instance.run_storage.postgres_url.startswith(expected_url)
        assert instance.run_storage.postgres_url.endswith(
            f"@{postgres_database.host}:{postgres_database.port}/{postgres_database.db_name}"
        )
        # The rest of the file is read too, not just storage.
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        assert instance.run_coordinator.get_run_queue_config().max_concurrent_runs == 2
        assert instance.run_monitoring_enabled
        assert not instance.telemetry_enabled
    finally:
        instance.dispose()
    # Loading the instance created Dagster's schema in the session's own database.
    connection = postgres_database.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            tables = {row[0] for row in cursor.fetchall()}
    finally:
        connection.close()
    assert {"runs", "event_logs", "dynamic_partitions", "jobs", "asset_keys"} <= tables


@dataclass(frozen=True)
class Materialized:
    home: Path
    universe: Universe
    run_id: str
    reported_features_version: str
    artifacts: Path


@pytest.fixture(scope="module")
def materialized(postgres_database: PostgresDatabase, tmp_path_factory: pytest.TempPathFactory) -> Materialized:
    """`bars` and `features` of SIGNAL, materialized into the PostgreSQL instance."""
    root = tmp_path_factory.mktemp("postgres_materialization")
    universe = load_universe(write_small_universe(root / "universe"))
    home = postgres_database.write_dagster_home(root / "dagster_home")
    with pytest.MonkeyPatch.context() as monkeypatch:
        use_postgres_instance(monkeypatch, postgres_database, home)
        instance = dg.DagsterInstance.get()
        try:
            register_symbols(instance, universe.symbols)
            result = dg.materialize(
                build_assets(universe),
                selection=dg.AssetSelection.assets("bars", "features"),
                partition_key=PARTITION,
                instance=instance,
                resources=Deployment(artifact_root=root / "artifacts").resources(universe),
            )
        finally:
            instance.dispose()
    assert result.success
    # The in-process result is held in memory; what the tests read back must come from PostgreSQL.
    [reported] = result.asset_materializations_for_node("features")
    return Materialized(
        home=home,
        universe=universe,
        run_id=result.run_id,
        reported_features_version=reported.tags[DATA_VERSION_TAG],
        artifacts=root / "artifacts",
    )


def test_a_new_instance_reads_the_materialization_back(
    materialized: Materialized, postgres_database: PostgresDatabase, monkeypatch: pytest.MonkeyPatch
):
    use_postgres_instance(monkeypatch, postgres_database, materialized.home)
    instance = dg.DagsterInstance.from_config(str(materialized.home))
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert materialized.run_id in {run.run_id for run in instance.get_runs()}
        run = instance.get_run_by_id(materialized.run_id)
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["dagster/partition"] == PARTITION

        events = [entry.dagster_event for entry in instance.all_logs(materialized.run_id) if entry.is_dagster_event]
        materialized_keys = {
            event.asset_key for event in events if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
        }
        assert materialized_keys == {BARS, FEATURES}
        assert events[-1].event_type == dg.DagsterEventType.RUN_SUCCESS

        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=FEATURES, asset_partitions=[PARTITION]), limit=10
        ).records
        assert [record.run_id for record in records] == [materialized.run_id]
        materialization = records[0].asset_materialization
        assert materialization.partition == PARTITION
        assert dg.DataVersion(materialization.tags[DATA_VERSION_TAG]) == dg.DataVersion(
            materialized.reported_features_version
        )
        assert materialization.metadata["rows"].value > 0

        assert sorted(instance.get_dynamic_partitions(SYMBOL_DIMENSION)) == sorted(materialized.universe.symbols)
    finally:
        instance.dispose()


def test_the_rows_live_in_postgresql(materialized: Materialized, postgres_database: PostgresDatabase):
    connection = postgres_database.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM runs")
            assert cursor.fetchone()[0] >= 1
            cursor.execute("SELECT status FROM runs WHERE run_id = %s", (materialized.run_id,))
            assert cursor.fetchall() == [("SUCCESS",)]

            cursor.execute(
                "SELECT partition, event FROM event_logs"
                " WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION' AND asset_key = %s",
                (materialized.run_id, FEATURES.to_string()),
            )
            rows = cursor.fetchall()
            assert [partition for partition, _ in rows] == [PARTITION]
            # The stored JSON itself carries the data version, whatever Dagster would make of it.
            stored_event = json.dumps(json.loads(rows[0][1]))
            assert json.dumps({DATA_VERSION_TAG: materialized.reported_features_version})[1:-1] in stored_event

            cursor.execute("SELECT count(*) FROM event_logs WHERE run_id = %s", (materialized.run_id,))
            assert cursor.fetchone()[0] > 2

            cursor.execute(
                "SELECT partition FROM dynamic_partitions WHERE partitions_def_name = %s", (SYMBOL_DIMENSION,)
            )
            assert sorted(row[0] for row in cursor.fetchall()) == sorted(materialized.universe.symbols)
    finally:
        connection.close()


def test_a_wrong_password_fails_clearly_without_showing_it(
    postgres_database: PostgresDatabase,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
):
    wrong_password = f"wrong-{uuid.uuid4().hex}"
    use_postgres_instance(
        monkeypatch, postgres_database, postgres_database.write_dagster_home(tmp_path / "dagster_home")
    )
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", wrong_password)
    caplog.set_level(logging.WARNING)
    with pytest.raises(Exception) as raised:  # dagster-postgres retries (about 6 s), then gives up
        dg.DagsterInstance.get()
    # What a user sees: the exception with its causes, as the traceback prints them.
    shown = "".join(traceback.format_exception(raised.value))
    assert f'connection to server at "{postgres_database.host}", port {postgres_database.port} failed' in shown
    assert f'password authentication failed for user "{postgres_database.user}"' in shown
    for secret in (wrong_password, postgres_database.password):
        assert secret not in shown
        assert secret not in caplog.text


def test_make_audit_verifies_a_partition_recorded_in_postgresql(
    materialized: Materialized, postgres_database: PostgresDatabase, monkeypatch: pytest.MonkeyPatch
):
    from intelligence_assets.cli.audit import run_audit

    use_postgres_instance(monkeypatch, postgres_database, materialized.home)
    deployment = Deployment(artifact_root=materialized.artifacts)
    defs = dg.Definitions(
        assets=build_assets(materialized.universe), resources=deployment.resources(materialized.universe)
    )
    lines: list[str] = []
    instance = dg.DagsterInstance.from_config(str(materialized.home))
    try:
        assert run_audit(None, "features", PARTITION, defs, instance, deployment, say=lines.append), "\n".join(lines)
    finally:
        instance.dispose()
    assert [line.split(":")[0] for line in lines if line.startswith("  ok")] == [
        f"  ok  features {PARTITION}",
        f"  ok  bars {PARTITION}",
    ]


def test_batched_event_writes_keep_each_partitions_own_record_its_latest(
    postgres_database: PostgresDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The k8s deployment's pods batch a ranged output's materializations (DAGSTER_EVENT_BATCH_SIZE
    in helm/dagster-values.yaml), Dagster's record of the range and each partition's own record
    alike: the own record, written after the range's, must stay the partition's latest, with its
    metadata and data version, as without batching."""
    batch_size = int(run_pod_environment()["DAGSTER_EVENT_BATCH_SIZE"])
    # A `bars` run takes up to twice backfill_partitions_per_run symbols: one batch holds them all.
    assert batch_size >= 2 * load_universe().automation.backfill_partitions_per_run
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", str(batch_size))

    written_alone: list[dg.DagsterEventType] = []
    store_event = PostgresEventLogStorage.store_event

    def store_one_event(storage: PostgresEventLogStorage, event: dg.EventLogEntry) -> None:
        if event.is_dagster_event:
            written_alone.append(event.get_dagster_event().event_type)
        store_event(storage, event)

    monkeypatch.setattr(PostgresEventLogStorage, "store_event", store_one_event)

    universe = load_universe(write_small_universe(tmp_path / "universe"))
    assert len(universe.symbols) > 1
    home = postgres_database.write_dagster_home(tmp_path / "dagster_home")
    use_postgres_instance(monkeypatch, postgres_database, home)
    with dg.DagsterInstance.get() as instance:
        register_symbols(instance, universe.symbols)
        result = dg.materialize(
            build_assets(universe),
            selection=dg.AssetSelection.assets("bars", "features"),
            instance=instance,
            resources=Deployment(artifact_root=tmp_path / "artifacts").resources(universe),
            tags={
                "dagster/asset_partition_range_start": universe.symbols[0],
                "dagster/asset_partition_range_end": universe.symbols[-1],
            },
        )
    assert result.success
    # Not one materialization written on its own: both kinds of record went out in batches.
    assert dg.DagsterEventType.ASSET_MATERIALIZATION not in written_alone
    assert dg.DagsterEventType.STEP_SUCCESS in written_alone
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for symbol in universe.symbols:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=FEATURES, asset_partitions=[symbol]), limit=10
            ).records
            # Newest first: the partition's own record, then the one Dagster wrote for the range.
            own, of_the_range = (record.asset_materialization for record in records if record.run_id == result.run_id)
            assert "partition_record" in of_the_range.metadata and "cache" not in of_the_range.metadata
            assert own.metadata["cache"].value == "miss"
            assert own.tags[DATA_VERSION_TAG] == own.metadata["fingerprint"].value
            latest = instance.get_latest_data_version_record(FEATURES, partition_key=symbol)
            assert latest.asset_materialization.tags[DATA_VERSION_TAG] == own.tags[DATA_VERSION_TAG]


def sessions_opened(connection: psycopg2.extensions.connection, database: str) -> int:
    """Sessions ever opened on `database`, once every other session has ended (a session's count
    reaches the statistics when it ends)."""
    with connection.cursor() as cursor:
        deadline = time.monotonic() + 10
        while True:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (database,)
            )
            [still_open] = cursor.fetchone()
            if still_open == 0:
                break
            assert time.monotonic() < deadline, f"{still_open} sessions on {database} still open after 10 s"
            time.sleep(0.1)
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", (database,))
        return cursor.fetchone()[0]


def test_a_demo_worker_writes_every_event_of_its_runs_over_connections_it_keeps(
    postgres_database: PostgresDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """dagster-postgres opens a connection for each event it writes (a server process and a
    password exchange each) unless the instance keeps them, as `make demo`'s workers do."""
    universe_path = write_small_universe(tmp_path / "universe")
    universe = load_universe(universe_path)
    with new_database(postgres_database) as database:
        home = database.write_dagster_home(tmp_path / "home")
        for key, value in {**home_environment(home, universe_path), **database.dagster_environment()}.items():
            monkeypatch.setenv(key, value)
        watcher = database.connect()
        watcher.autocommit = True
        try:
            with dg.DagsterInstance.get() as instance:  # creates Dagster's schema
                register_symbols(instance, universe.symbols)
            before = sessions_opened(watcher, database.db_name)
            store = LocalArtifactStore(home / "artifacts")
            assets = build_assets(universe)
            market_data = [BARS.to_user_string(), FEATURES.to_user_string()]
            outcome = UniverseRun(market_data_assets=frozenset(market_data))
            with worker_pool(1) as pool:
                run_market_data_stage(
                    pool,
                    MARKET_DATA_JOB,
                    universe.symbols,
                    universe.symbols,
                    100,
                    1,
                    "INFO",
                    outcome,
                    lambda: plan_runs(
                        universe, store, assets, universe.symbols, Deployment.from_environment().bars_source(universe)
                    ).partitions(market_data),
                )
            opened = sessions_opened(watcher, database.db_name) - before
            with watcher.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM event_logs")
                [events] = cursor.fetchone()
        finally:
            watcher.close()
    assert not outcome.failures
    assert outcome.stages[0].cache == {"miss": 2 * len(universe.symbols)}
    # The worker's instance opens a few connections (its storages, Dagster's first look at the
    # schema), none per event or query: without kept connections these 53 events took 254.
    assert opened <= 25 < events, f"{opened} sessions for {events} events"
