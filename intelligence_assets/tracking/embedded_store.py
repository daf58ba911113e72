"""The embedded MLflow store: one SQLite file (`sqlite:///<DAGSTER_HOME>/mlflow/mlflow.db`) that
every process of one machine opens.

MLflow builds a new store by running each of its schema migrations since its first: seconds of CPU
for every new DAGSTER_HOME. A new store here starts as a copy of an empty one that MLflow built
once on this machine for the MLflow version installed, kept in the user's cache directory
(`$XDG_CACHE_HOME` or `~/.cache`, then `intelligence-assets/`). MLflow then finds the schema at its
head and migrates nothing. The Default experiment, which nothing here logs to, keeps the artifact
location of the process that built the empty store.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from intelligence_assets.store.atomic_files import write_atomically

T = TypeVar("T")


def empty_store_copy() -> Path:
    """Where this machine keeps the empty store of the MLflow version installed."""
    import mlflow

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "intelligence-assets" / f"mlflow-{mlflow.__version__}-empty.db"


def open_embedded_store(database: Path, open_client: Callable[[], T]) -> T:
    """`open_client()` on the store at `database`. A store that exists is opened by any number
    of processes together; a new one is built by one process at a time: MLflow creates the
    tables when a client is made, and that fails when several processes start on a fresh store
    together (the steps of one run launched from the UI on a new DAGSTER_HOME).

    A store that does not exist yet is first copied from the empty one (module docstring); where
    there is none yet, MLflow builds the store and a copy of it is kept for the next."""
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(f"{database.name}.lock"), "a") as lock:
        # Shared while the store exists: opening one writes nothing, and a pool's workers open it
        # at once. Whoever builds one holds the lock alone, so a store seen here is whole.
        fcntl.flock(lock, fcntl.LOCK_SH)  # released when the file closes
        if database.exists():
            return open_client()
        fcntl.flock(lock, fcntl.LOCK_EX)  # not atomic: another process may have built it meanwhile
        if database.exists():
            return open_client()
        empty = empty_store_copy()
        if empty.exists():
            write_atomically(database, empty.read_bytes())
            return open_client()
        client = open_client()
        # Nothing has been logged yet: the file is the empty store. A machine whose cache cannot
        # be written builds every new store the slow way.
        with contextlib.suppress(OSError):
            write_atomically(empty, database.read_bytes())
        return client
