"""The embedded default's instance storage: Dagster's SQLite storage, with its event log keeping
one SQLAlchemy engine per database file.

`dagster.yaml` names it (`storage: custom:`) where Dagster's `storage: sqlite:` would stand; the
files on disk, their schema and every query are Dagster's, so a home written with either opens
with the other. PostgreSQL deployments (`deploy/postgres/dagster.yaml`, Helm) do not use it.

We wrote it because Dagster's `SqliteEventLogStorage` builds and disposes of an engine for every
connection: each event written, and each dynamic-partition lookup a ranged step makes, paid for
a new engine, its first-connect set-up and the compilation of its statements again.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage
from dagster._serdes import ConfigurableClassData
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

# A webserver reads the logs of many runs over its life; the engines of the shards it read most
# recently are kept. A run writes two shards (its own and the index).
ENGINES_KEPT = 16


class SqliteEventLogStorageKeepingEngines(SqliteEventLogStorage):
    """Dagster's per-run SQLite event log, with one engine per shard for the process's life.

    The engines pool nothing (`NullPool`, as Dagster's do): every connection is still opened
    and closed around its statements, so processes and threads share the files exactly as
    before. What is kept is the engine itself, with its first-connect set-up done and its
    compiled statements cached.
    """

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        # Dagster's `_db_lock` is held for the whole of a connection, and Dagster checks a table
        # (`has_table`) while holding it: the engines have a lock of their own.
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._engines_lock = threading.Lock()
        super().__init__(base_dir, inst_data)

    def _engine(self, shard: str) -> Engine:
        with self._engines_lock:
            engine = self._engines.pop(shard, None)
            if engine is None:
                engine = create_engine(
                    self.conn_string_for_shard(shard),
                    poolclass=NullPool,
                    connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
                )
            self._engines[shard] = engine
            while len(self._engines) > ENGINES_KEPT:
                self._engines.popitem(last=False)  # a NullPool engine holds no connection to close
            return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as connection, connection.begin():
                yield connection

    def has_table(self, table_name: str) -> bool:
        engine = self._engine(INDEX_SHARD_NAME)
        with engine.connect() as connection:
            return bool(engine.dialect.has_table(connection, table_name))


class EmbeddedSqliteStorage(DagsterSqliteStorage):
    """Dagster's SQLite instance storage (runs, event log, schedules under `base_dir`), with the
    event log keeping its engines (`SqliteEventLogStorageKeepingEngines`).

    Configured in `dagster.yaml`::

        storage:
          custom:
            module: intelligence_assets.defs.instance_storage
            class: EmbeddedSqliteStorage
            config:
              base_dir:
                env: DAGSTER_HOME
    """

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        super().__init__(base_dir, inst_data)
        # Dagster's layout: the directory its own event log storage was just given.
        shards_directory = os.path.dirname(self._event_log_storage.path_for_shard(INDEX_SHARD_NAME))
        self._event_log_storage = SqliteEventLogStorageKeepingEngines(shards_directory)

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: dict) -> EmbeddedSqliteStorage:
        # Dagster's own builds `DagsterSqliteStorage`, not `cls`: the instance would lose the kept engines.
        return cls.from_local(inst_data=inst_data, **config_value)
