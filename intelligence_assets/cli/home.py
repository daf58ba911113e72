"""One command at a time on a DAGSTER_HOME.

`make demo`, `make report` and `make rollback` share the instance's storage and the artifact
store under DAGSTER_HOME. Two of them at once raced to create the instance's SQLite storage
(leaving two migration heads) and to write the same fingerprints, so each takes the home's lock
first. The lock is an advisory `flock`: the kernel releases it when its holder exits or dies, so
a killed command never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dagster import DagsterInstance

LOCK_FILE = ".intelligence-assets.lock"
# Exit status of a command that found the home in use (2 is a configuration error).
HOME_IN_USE = 3


class HomeInUseError(RuntimeError):
    """Another command holds the home; the message names it."""


def _holder(path: Path) -> str:
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    return f"`{holder.get('command', '?')}` (pid {holder.get('pid', '?')}, since {holder.get('since', '?')})"


@contextmanager
def exclusive_home(
    home: Path | str, command: str, wait_seconds: float = 0.0, on_wait: Callable[[str], None] = lambda _: None
) -> Iterator[None]:
    """Hold DAGSTER_HOME for `command`; wait up to `wait_seconds` for a holder to finish (telling
    `on_wait` once whom it waits for), then raise HomeInUseError naming it."""
    directory = Path(home)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_seconds
    waiting = False
    try:
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise HomeInUseError(
                        f"{directory} is in use by {_holder(path)}; wait for it to finish (or pass --wait SECONDS), "
                        f"or set DAGSTER_HOME to another folder"
                    ) from None
                if not waiting:
                    on_wait(
                        f"{directory} is in use by {_holder(path)}; waiting up to {wait_seconds:.0f}s for it to finish"
                    )
                    waiting = True
                time.sleep(0.5)
        os.ftruncate(descriptor, 0)
        os.write(
            descriptor,
            json.dumps(
                {
                    "command": command,
                    "pid": os.getpid(),
                    "since": datetime.now(UTC).isoformat(timespec="seconds"),
                }
            ).encode(),
        )
        yield
    finally:
        os.close(descriptor)  # releases the lock


@contextmanager
def holding_home(command: str, wait_seconds: float = 0.0) -> Iterator[None]:
    """For a command's main: hold the DAGSTER_HOME of the environment, or print who holds it
    and exit with status HOME_IN_USE (3)."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise SystemExit("DAGSTER_HOME is not set; run the command through make, which sets it to .dagster_home/")
    try:
        with exclusive_home(
            home, command, wait_seconds, on_wait=lambda message: print(message, file=sys.stderr, flush=True)
        ):
            yield
    except HomeInUseError as error:  # only raised while acquiring: the body runs holding the lock
        print(error, file=sys.stderr)
        raise SystemExit(HOME_IN_USE) from None


MIGRATION_HEADS_ERROR = "more than one head"


def dagster_schema_head() -> str:
    """The newest schema revision of the installed Dagster: the one revision of its migration
    scripts that no other names as its `down_revision`."""
    import dagster

    revisions, parents = set(), set()
    for script in (Path(dagster.__file__).parent / "_core" / "storage" / "alembic" / "versions").glob("*.py"):
        text = script.read_text()
        revisions.update(re.findall(r'^revision = "(\w+)"', text, flags=re.MULTILINE))
        for names in re.findall(r"^down_revision = (.+)$", text, flags=re.MULTILINE):
            parents.update(re.findall(r"\w{6,}", names))
    heads = revisions - parents
    if len(heads) != 1:
        raise ValueError(f"cannot tell Dagster's schema head from its migration scripts (heads {sorted(heads)})")
    return heads.pop()


def repair_migration_heads(home: Path | str) -> list[str]:
    """Keep only the installed Dagster's schema head in each SQLite storage's `alembic_version`
    where two processes creating a fresh home at once stamped more than one version; every run,
    event and schedule stays. Returns what was repaired; raises ValueError when the head is not
    among the recorded versions (that storage needs `dagster instance migrate`, not this)."""
    head = dagster_schema_head()
    repaired = []
    for database in sorted(Path(home).rglob("*.db")):
        if "artifacts" in database.relative_to(home).parts:  # the MLflow store is MLflow's own
            continue
        with sqlite3.connect(database) as connection:
            if not connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'").fetchone():
                continue
            versions = [row[0] for row in connection.execute("SELECT version_num FROM alembic_version")]
            if len(versions) <= 1:
                continue
            if head not in versions:
                raise ValueError(
                    f"{database} records schema versions {versions}, not Dagster's head {head}; run `dagster instance "
                    "migrate`"
                )
            connection.execute("DELETE FROM alembic_version WHERE version_num != ?", (head,))
            repaired.append(f"{database}: kept schema version {head}, removed {sorted(set(versions) - {head})}")
    return repaired


def hold_storage_connections(instance: DagsterInstance) -> DagsterInstance:
    """`instance`, set to keep one database connection per storage open between writes, as
    Dagster's webserver sets its own. For a process that runs many runs on one instance:
    dagster-postgres otherwise opens a connection for every event it writes and every query it
    makes (a server process and a password exchange each). Nothing changes on SQLite. No
    statement timeout: a write must not be cut off on a loaded server."""
    instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=20)
    return instance


@contextmanager
def event_log_kept_open(instance: DagsterInstance, run_id: str) -> Iterator[None]:
    """While the run `run_id` writes its events to the embedded SQLite event log: its shard and
    the asset index each kept open by one idle connection. Dagster opens and closes a connection
    for every event it writes, and closing a write-ahead-logged database's last connection
    checkpoints it and deletes its log, which the next event creates again; with a second
    connection open, SQLite checkpoints on its own schedule instead. Every event is committed as
    before. Nothing changes on other storages."""
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage

    storage = instance.event_log_storage
    if not isinstance(storage, SqliteEventLogStorage):
        yield
        return
    with ExitStack() as held:
        for shard, created_by_dagster in (
            (run_id, storage.run_connection(run_id)),
            (INDEX_SHARD_NAME, storage.index_connection()),
        ):
            with created_by_dagster:  # creates the shard, in write-ahead-log mode, if it is new
                pass
            connection = held.enter_context(closing(sqlite3.connect(storage.path_for_shard(shard))))
            # A read maps the shard's log index: until then the connection does not count as open.
            connection.execute("SELECT 1 FROM event_logs LIMIT 1").fetchall()
        yield


def open_instance_or_explain():
    """The Dagster instance of DAGSTER_HOME, holding its connections (`hold_storage_connections`);
    on storage left with two migration heads, a message with the one command that repairs it
    keeping the run history (exit status 2)."""
    import dagster as dg

    try:
        return hold_storage_connections(dg.DagsterInstance.get())
    except Exception as error:  # alembic's CommandError, wrapped differently by Dagster versions
        if MIGRATION_HEADS_ERROR not in str(error):
            raise
        raise SystemExit(
            f"the instance storage in {os.environ.get('DAGSTER_HOME')} records its schema version twice (two "
            "processes created it at once). "
            "Repair it, keeping every run: python -m intelligence_assets.cli.home --repair"
        ) from None


def main(argv: list[str] | None = None) -> None:
    import argparse
    import subprocess

    parser = argparse.ArgumentParser(description="Hold or repair a DAGSTER_HOME.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument(
        "--repair", action="store_true", help="repair SQLite storage that records its schema version twice"
    )
    action.add_argument(
        "--hold",
        metavar="NAME",
        help="run the command after `--` holding DAGSTER_HOME, named NAME to whoever finds it in use",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="with --hold: -- COMMAND [ARGUMENTS...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.hold and not command:
        parser.error("--hold needs a command after --")
    if not os.environ.get("DAGSTER_HOME"):
        raise SystemExit("DAGSTER_HOME is not set")
    with holding_home(args.hold or "repair"):
        if args.hold:
            raise SystemExit(subprocess.call(command))
        for line in repair_migration_heads(os.environ["DAGSTER_HOME"]) or ["nothing to repair"]:
            print(line)


if __name__ == "__main__":
    main()
