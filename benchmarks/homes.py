"""Dagster homes for benchmarks: the embedded default (SQLite) or a PostgreSQL instance."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from intelligence_assets.config.deployment import ARTIFACT_ROOT_VARIABLE
from intelligence_assets.config.universe import REPOSITORY_ROOT, UNIVERSE_PATH_VARIABLE


def home_environment(home: Path, universe_path: Path) -> dict[str, str]:
    """This process's environment, pointed at `home` (instance and artifacts) and the universe."""
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        UNIVERSE_PATH_VARIABLE: str(universe_path),
        ARTIFACT_ROOT_VARIABLE: str(home / "artifacts"),
    }


def fresh_home(home: Path, universe_path: Path) -> dict[str, str]:
    """A new DAGSTER_HOME with the repository's dagster.yaml; returns its `home_environment`."""
    home.mkdir(parents=True)
    shutil.copy(REPOSITORY_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home_environment(home, universe_path)


# What deploy/postgres/dagster.yaml reads; set all of them to use a server of your own.
POSTGRES_SETTINGS = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD")


def postgres_server() -> dict[str, str]:
    """The DAGSTER_PG_* settings (but the database) of the server the environment names, or else
    of the one scripts/start_postgres.sh starts (or finds running)."""
    import subprocess

    if all(os.environ.get(name) for name in POSTGRES_SETTINGS):
        return {name: os.environ[name] for name in POSTGRES_SETTINGS}
    exports = subprocess.run(
        ["bash", str(REPOSITORY_ROOT / "scripts" / "start_postgres.sh")], capture_output=True, text=True, check=True
    ).stdout
    settings = dict(line.removeprefix("export ").split("=", 1) for line in exports.splitlines() if "=" in line)
    return {name: settings[name] for name in POSTGRES_SETTINGS}


def fresh_postgres_home(home: Path, universe_path: Path) -> dict[str, str]:
    """A new DAGSTER_HOME whose runs and event log live in a new database (the `postgres`
    deployment's dagster.yaml) of the server the DAGSTER_PG_* variables name, or else of the one
    scripts/start_postgres.sh starts; artifacts stay local. The login role needs CREATEDB.
    Returns its environment, DAGSTER_PG_DB naming the new database."""
    import uuid

    import psycopg2
    from psycopg2 import sql

    settings = {**postgres_server(), "DAGSTER_PG_DB": f"bench_{uuid.uuid4().hex[:12]}"}
    connection = psycopg2.connect(
        host=settings["DAGSTER_PG_HOST"],
        port=settings["DAGSTER_PG_PORT"],
        user=settings["DAGSTER_PG_USERNAME"],
        password=settings["DAGSTER_PG_PASSWORD"],
        dbname="postgres",
    )
    connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(settings["DAGSTER_PG_DB"])))
    connection.close()
    home.mkdir(parents=True)
    shutil.copy(REPOSITORY_ROOT / "deploy" / "postgres" / "dagster.yaml", home / "dagster.yaml")
    return {**home_environment(home, universe_path), **settings}
