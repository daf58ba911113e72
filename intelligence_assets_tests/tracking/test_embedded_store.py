"""The embedded MLflow store (sqlite): a new store copied from the empty one this machine keeps,
and several processes opening a store for the first time together, as the steps of one run do when
launched from the UI on a new DAGSTER_HOME."""

from __future__ import annotations

import fcntl
import logging
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from intelligence_assets.config.universe import REPOSITORY_ROOT
from intelligence_assets.tracking.embedded_store import empty_store_copy
from intelligence_assets.tracking.tracker import ModelTracker

# Each child imports first, says so, and waits for the word to go: the store is then opened by all
# of them at once, however long each one's imports took.
OPEN_AT_ONCE = """
import sys
from pathlib import Path
import mlflow  # imported by ModelTracker on first use: here, so that it does not stagger the opening
from intelligence_assets.tracking.tracker import ModelTracker

uri, root = sys.argv[1], Path(sys.argv[2])
print("READY", flush=True)
sys.stdin.readline()
tracker = ModelTracker(uri, experiment_root=root)
print("EXPERIMENT", tracker.experiment_id("y_up_1b"))
"""


@contextmanager
def mlflow_built_stores() -> Iterator[list[str]]:
    """The messages MLflow logs while it builds a new store's tables, as they are logged."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "Creating initial MLflow database tables" in record.getMessage():
                messages.append(record.getMessage())

    # MLflow's loggers do not propagate to the root logger, where pytest's caplog listens.
    logger, handler = logging.getLogger("mlflow.store.db.utils"), Collect()
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def schema(database: Path) -> tuple[list[tuple], list[tuple]]:
    with sqlite3.connect(database) as connection:
        tables = connection.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
        return tables, connection.execute("SELECT version_num FROM alembic_version").fetchall()


def runs_in(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        return connection.execute("SELECT count(*) FROM runs").fetchone()[0]


def test_a_new_store_is_a_copy_of_the_empty_one_mlflow_built_first(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first, second = tmp_path / "first" / "mlflow.db", tmp_path / "second" / "mlflow.db"
    with mlflow_built_stores() as built:
        tracker = ModelTracker(f"sqlite:///{first}", experiment_root=tmp_path / "first")
        assert len(built) == 1, "MLflow builds the first store"
        assert empty_store_copy().is_relative_to(tmp_path / "cache") and empty_store_copy().exists()
        tracker.client.create_run(tracker.experiment_id("y_up_1b"))

        copied = ModelTracker(f"sqlite:///{second}", experiment_root=tmp_path / "second")
        assert len(built) == 1, "the second store is a copy: MLflow built no tables for it"
    assert schema(second) == schema(first), "the copy has MLflow's schema at the same revision"
    assert runs_in(second) == 0, "nothing logged into the first store is in the second"
    assert second.stat().st_mode == first.stat().st_mode, "the copy has the permissions of a store MLflow builds"
    copied.client.create_run(copied.experiment_id("y_up_1b"))
    assert runs_in(second) == 1 and runs_in(first) == 1
    assert runs_in(empty_store_copy()) == 0, "the kept copy stays empty"


def test_without_a_writable_cache_every_new_store_is_built_by_mlflow(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "cache").write_text("a file where the cache directory would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with mlflow_built_stores() as built:
        for name in ("first", "second"):
            tracker = ModelTracker(f"sqlite:///{tmp_path / name / 'mlflow.db'}", experiment_root=tmp_path / name)
            tracker.client.create_run(tracker.experiment_id("y_up_1b"))
    assert len(built) == 2


def child_opening_at_the_word(uri: str, root: Path) -> subprocess.Popen:
    """A child running OPEN_AT_ONCE on the store at `uri`: it says READY once imported, then
    opens the store when a line is written to its stdin (`give_the_word`)."""
    return subprocess.Popen(
        [sys.executable, "-c", OPEN_AT_ONCE, uri, str(root)],
        cwd=REPOSITORY_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def give_the_word(child: subprocess.Popen) -> None:
    child.stdin.write("go\n")
    child.stdin.flush()


def ready_child_opening_at_the_word(uri: str, root: Path) -> subprocess.Popen:
    child = child_opening_at_the_word(uri, root)
    assert child.stdout.readline().strip() == "READY", child.stderr.read()[-2000:]
    give_the_word(child)
    return child


@pytest.mark.parametrize("empty_store", ["built by MLflow", "copied"])
def test_processes_opening_a_fresh_embedded_store_together_all_succeed_and_share_it(
    tmp_path: Path, empty_store: str, monkeypatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))  # the children's too
    if empty_store == "copied":
        ModelTracker(f"sqlite:///{tmp_path / 'before' / 'mlflow.db'}", experiment_root=tmp_path / "before")
    database = tmp_path / "mlflow" / "mlflow.db"
    uri = f"sqlite:///{database}"
    children = [child_opening_at_the_word(uri, tmp_path / "artifacts") for _ in range(4)]
    ready = [child.stdout.readline().strip() for child in children]
    assert ready == ["READY"] * 4, (
        "a child failed before opening the store: "
        f"{[child.stderr.read()[-2000:] for child in children if child.poll()]}"
    )
    assert not database.exists(), "nothing may have opened the store before the word to go"
    for child in children:
        give_the_word(child)
    outputs = [child.communicate(timeout=300) for child in children]
    failures = [
        stderr.strip().splitlines()[-1]
        for child, (_, stderr) in zip(children, outputs, strict=True)
        if child.returncode != 0
    ]
    assert not failures, f"{len(failures)} of 4 processes failed to open the fresh store: {failures}"
    experiments = {
        line.split()[1] for stdout, _ in outputs for line in stdout.splitlines() if line.startswith("EXPERIMENT ")
    }
    assert len(experiments) == 1, f"the processes created different experiments: {experiments}"
    assert list(cache.rglob("mlflow-*-empty.db")), "no copy of the empty store was kept for the next store"


def test_a_store_that_exists_is_opened_by_many_processes_at_once_but_never_while_one_builds(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    database = tmp_path / "mlflow" / "mlflow.db"
    uri = f"sqlite:///{database}"
    ModelTracker(uri, experiment_root=tmp_path / "artifacts")
    lock = database.with_name(f"{database.name}.lock")

    # Another process is opening the store (a pool's workers start together): no waiting for it.
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_SH)
        child = ready_child_opening_at_the_word(uri, tmp_path / "artifacts")
        stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 0 and "EXPERIMENT" in stdout, stderr[-2000:]

    # A process building a store holds the lock alone: nobody opens what it is still writing.
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        child = ready_child_opening_at_the_word(uri, tmp_path / "artifacts")
        time.sleep(3)
        assert child.poll() is None, "the store was opened while a builder held the lock"
    stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 0 and "EXPERIMENT" in stdout, stderr[-2000:]
