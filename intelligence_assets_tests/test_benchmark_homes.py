"""The backfill benchmark's scratch homes: the embedded default or a new PostgreSQL database, kept
between commands with the instance it was made with."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest
import yaml
from psycopg2 import sql

from benchmarks.backfill import CHEAPEST_SETTINGS, scratch_home
from benchmarks.homes import POSTGRES_SETTINGS
from intelligence_assets_tests.support.postgres import PostgresDatabase, execute_outside_transaction

SET_BY_A_HOME = ("DAGSTER_HOME", "INTELLIGENCE_UNIVERSE", "INTELLIGENCE_ARTIFACT_ROOT", "DAGSTER_PG_DB")


def test_a_kept_postgres_home_opens_its_own_new_database_again_and_refuses_another_instance(
    postgres_database: PostgresDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = postgres_database.dagster_environment()
    for name in POSTGRES_SETTINGS:
        monkeypatch.setenv(name, server[name])
    for name in SET_BY_A_HOME:  # so that the test's end restores them
        monkeypatch.setenv(name, "unset")
    kept = tmp_path / "kept"

    with scratch_home(2, 1, CHEAPEST_SETTINGS, kept, instance="postgres"):
        database = os.environ["DAGSTER_PG_DB"]
        assert database.startswith("bench_") and database != server["DAGSTER_PG_DB"]
        assert "postgres" in yaml.safe_load((kept / "home" / "dagster.yaml").read_text())["storage"]
        with dg.DagsterInstance.get() as instance:
            assert instance.get_runs() == []
            assert database in instance.run_storage.postgres_url
    try:
        with scratch_home(2, 1, CHEAPEST_SETTINGS, kept, instance="postgres"):
            assert os.environ["DAGSTER_PG_DB"] == database
        refused = "holds a postgres instance, not sqlite: pass --instance postgres"
        with pytest.raises(SystemExit, match=refused), scratch_home(2, 1, CHEAPEST_SETTINGS, kept, instance="sqlite"):
            pass
    finally:
        execute_outside_transaction(
            postgres_database, sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(database))
        )


def test_a_scratch_home_is_the_embedded_default_unless_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SET_BY_A_HOME:
        monkeypatch.setenv(name, "unset")
    with scratch_home(2, 1, CHEAPEST_SETTINGS, tmp_path / "kept"):
        storage = yaml.safe_load((tmp_path / "kept" / "home" / "dagster.yaml").read_text())["storage"]
        assert storage["custom"]["class"] == "EmbeddedSqliteStorage"
        assert os.environ["DAGSTER_HOME"] == str(tmp_path / "kept" / "home")
