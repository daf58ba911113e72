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
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

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
def exclusive_home(home: Path | str, command: str, wait_seconds: float = 0.0) -> Iterator[None]:
    """Hold DAGSTER_HOME for `command`; wait up to `wait_seconds` for a holder to finish, then
    raise HomeInUseError naming it."""
    directory = Path(home)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_seconds
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
                time.sleep(0.5)
        os.ftruncate(descriptor, 0)
        os.write(descriptor, json.dumps({"command": command, "pid": os.getpid(), "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}).encode())
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
        with exclusive_home(home, command, wait_seconds):
            yield
    except HomeInUseError as error:  # only raised while acquiring: the body runs holding the lock
        print(error, file=sys.stderr)
        raise SystemExit(HOME_IN_USE) from None
