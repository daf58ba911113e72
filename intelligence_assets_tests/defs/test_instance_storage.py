"""The embedded default's instance storage (`dagster.yaml`'s `storage: custom:`): its event log
keeps one engine per shard, and what it writes is what Dagster's own SQLite storage reads."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME
from sqlalchemy import event
from sqlalchemy.pool import Pool

from intelligence_assets.defs.instance_storage import ENGINES_KEPT, SqliteEventLogStorageKeepingEngines
from intelligence_assets_tests.conftest import fresh_home

SYMBOLS = dg.DynamicPartitionsDefinition(name="symbol")


@dg.asset(partitions_def=SYMBOLS)
def _prices(context) -> int:  # unannotated: Dagster checks the annotation, which `annotations` leaves a string
    context.log.info(f"prices of {context.partition_key}")
    return len(context.partition_key)


@dg.asset(partitions_def=SYMBOLS)
def _returns(_prices: int) -> int:
    return _prices * 2


JOB = dg.define_asset_job("prices_and_returns").resolve(
    asset_graph=dg.Definitions(assets=[_prices, _returns]).resolve_asset_graph()
)


@contextmanager
def new_engines_by_file() -> Iterator[Counter]:
    """Counts the SQLAlchemy engines that connect for the first time, by database file name (a
    pool's `first_connect` fires once per engine)."""
    engines: Counter = Counter()

    def first_connect(connection: sqlite3.Connection, _record: object) -> None:
        if isinstance(connection, sqlite3.Connection):
            engines[Path(connection.execute("PRAGMA database_list").fetchone()[2]).name] += 1

    event.listen(Pool, "first_connect", first_connect)
    try:
        yield engines
    finally:
        event.remove(Pool, "first_connect", first_connect)


def _instance(home: Path, monkeypatch: pytest.MonkeyPatch) -> dg.DagsterInstance:
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return dg.DagsterInstance.from_config(str(home))


def _run_twice(instance: dg.DagsterInstance) -> list[str]:
    instance.add_dynamic_partitions(SYMBOLS.name, ["AAA", "BBBB"])
    return [JOB.execute_in_process(instance=instance, partition_key=key).run_id for key in ("AAA", "BBBB")]


def test_the_embedded_event_log_keeps_one_engine_per_shard_and_dagsters_own_storage_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = _instance(fresh_home(tmp_path / "ours"), monkeypatch)
    assert isinstance(instance.event_log_storage, SqliteEventLogStorageKeepingEngines)
    with new_engines_by_file() as ours:
        run_ids = _run_twice(instance)
    # Dagster's own storage, on a home of its own, for the same runs: an engine per connection.
    plain_home = tmp_path / "plain"
    plain_home.mkdir()
    (plain_home / "dagster.yaml").write_text(f"storage:\n  sqlite:\n    base_dir: {plain_home}\n")
    with new_engines_by_file() as dagsters:
        _run_twice(dg.DagsterInstance.from_config(str(plain_home)))

    for run_id in run_ids:
        assert ours[f"{run_id}.db"] == 1, ours
    assert ours[f"{INDEX_SHARD_NAME}.db"] <= 1, ours
    assert dagsters[f"{INDEX_SHARD_NAME}.db"] > 20 * max(1, ours[f"{INDEX_SHARD_NAME}.db"]), dagsters

    # The same files, read by Dagster's own SQLite storage.
    reader_home = tmp_path / "reader"
    reader_home.mkdir()
    (reader_home / "dagster.yaml").write_text(f"storage:\n  sqlite:\n    base_dir: {tmp_path / 'ours' / 'home'}\n")
    reader = dg.DagsterInstance.from_config(str(reader_home))
    for run_id in run_ids:
        assert [entry.message for entry in reader.all_logs(run_id)] == [
            entry.message for entry in instance.all_logs(run_id)
        ]
        assert reader.get_run_by_id(run_id).is_success
    for key in (dg.AssetKey("_prices"), dg.AssetKey("_returns")):
        assert reader.get_materialized_partitions(key) == {"AAA", "BBBB"}


def test_engines_are_kept_for_the_most_recently_used_shards_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = _instance(fresh_home(tmp_path), monkeypatch).event_log_storage
    shards = [f"run-{number}" for number in range(ENGINES_KEPT + 4)]
    with new_engines_by_file() as engines:
        for shard in shards:
            with storage.run_connection(shard):
                pass
        with storage.run_connection(shards[-1]):  # among the most recent: its engine is kept
            pass
        with storage.run_connection(shards[0]):  # the least recent: its engine was let go
            pass
    assert engines == Counter({f"{shard}.db": 2 if shard == shards[0] else 1 for shard in shards})


def test_a_table_check_inside_an_open_connection_does_not_wait_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Dagster checks a table while it holds a connection of the index (storing an asset event's
    # tags); a check that waited on the connection's lock would never return.
    storage = _instance(fresh_home(tmp_path), monkeypatch).event_log_storage
    answers: list[bool] = []

    def check_inside_a_connection() -> None:
        with storage.index_connection():
            answers.append(storage.has_table("dynamic_partitions"))

    checker = threading.Thread(target=check_inside_a_connection, daemon=True)
    checker.start()
    checker.join(timeout=30)
    assert answers == [True]
