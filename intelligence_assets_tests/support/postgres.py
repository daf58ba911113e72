"""A real PostgreSQL server for tests: started by scripts/start_postgres.sh, one fresh database per session.

The root conftest imports the `postgres_database` fixture, so any test can ask for it. The server keeps
running after the session, so later sessions start in well under a second; only the session's own database is dropped.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest
from psycopg2 import sql

from intelligence_assets.config.universe import REPOSITORY_ROOT

START_SCRIPT = REPOSITORY_ROOT / "scripts" / "start_postgres.sh"
POSTGRES_INSTANCE_CONFIG = REPOSITORY_ROOT / "deploy" / "postgres" / "dagster.yaml"
# The first call on a fresh machine installs the server package (apt), which takes minutes.
START_TIMEOUT_SECONDS = 900


@dataclass(frozen=True)
class PostgresDatabase:
    host: str
    port: int
    user: str
    password: str
    db_name: str

    def dagster_environment(self) -> dict[str, str]:
        """The DAGSTER_PG_* variables that deploy/postgres/dagster.yaml reads."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USERNAME": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.db_name,
        }

    def write_dagster_home(self, directory: Path) -> Path:
        """A DAGSTER_HOME holding the PostgreSQL instance config; it still needs dagster_environment()."""
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(POSTGRES_INSTANCE_CONFIG, directory / "dagster.yaml")
        return directory

    def connect(self) -> psycopg2.extensions.connection:
        return psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=self.db_name,
            connect_timeout=10,
        )


def parse_exports(script_output: str) -> dict[str, str]:
    """`export NAME=value` lines, as the start script prints them for `eval`."""
    exports = {}
    for line in script_output.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, _, value = words[1].partition("=")
            exports[name] = value
    return exports


def start_postgres_server() -> PostgresDatabase:
    """Start (or find running) the server; returns the script's shared database, not a fresh one."""
    result = subprocess.run(
        ["bash", str(START_SCRIPT)], capture_output=True, text=True, timeout=START_TIMEOUT_SECONDS, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{START_SCRIPT} failed with exit status {result.returncode}:\n{result.stderr}")
    exports = parse_exports(result.stdout)
    return PostgresDatabase(
        host=exports["DAGSTER_PG_HOST"],
        port=int(exports["DAGSTER_PG_PORT"]),
        user=exports["DAGSTER_PG_USERNAME"],
        password=exports["DAGSTER_PG_PASSWORD"],
        db_name=exports["DAGSTER_PG_DB"],
    )


def execute_outside_transaction(server: PostgresDatabase, statement: sql.Composable) -> None:
    # CREATE/DROP DATABASE refuse to run inside a transaction block.
    connection = server.connect()
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


@contextmanager
def new_database(server: PostgresDatabase) -> Iterator[PostgresDatabase]:
    """A fresh, uniquely named database on `server`'s server, dropped on leaving."""
    database = replace(server, db_name=f"intelligence_test_{uuid.uuid4().hex[:12]}")
    name = sql.Identifier(database.db_name)
    execute_outside_transaction(server, sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(name))
    try:
        yield database
    finally:
        # FORCE: instances that a failed test left open must not keep the database alive.
        execute_outside_transaction(server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[PostgresDatabase]:
    """A fresh, uniquely named database on the real server, dropped at the end of the session."""
    with new_database(start_postgres_server()) as database:
        yield database
