"""`dagster-daemon` on a temporary DAGSTER_HOME, started by a test and always stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

from intelligence_assets.config.universe import REPOSITORY_ROOT

DAEMON = str(Path(sys.executable).parent / "dagster-daemon")


@contextmanager
def running_daemon(
    home: Path,
    environment: dict[str, str],
    log_path: Path,
    code_location: tuple[str, ...] = ("-m", "intelligence_assets.definitions"),
) -> Iterator[subprocess.Popen]:
    """The daemon over `code_location` (our definitions by default), its output in `log_path`,
    its process group killed on exit. The instance's SQLite storage is created first: two
    processes creating a fresh database at once can stamp its schema twice ("alembic_version has
    more than one head")."""
    dg.DagsterInstance.from_config(str(home)).dispose()
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(
            [DAEMON, "run", *code_location],
            cwd=REPOSITORY_ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield daemon
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(timeout=10)
