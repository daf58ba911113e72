"""Which code is running: the git commit, and whether the checkout had uncommitted changes.

Read from the checkout at run time; in an image, which holds no `.git`, from the values `make image`
bakes in at build time (INTELLIGENCE_GIT_COMMIT, INTELLIGENCE_GIT_DIRTY). Unknown (None) where
neither exists, e.g. an installed wheel.
"""

from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from intelligence_assets.config.universe import REPOSITORY_ROOT

COMMIT_VARIABLE = "INTELLIGENCE_GIT_COMMIT"
DIRTY_VARIABLE = "INTELLIGENCE_GIT_DIRTY"


@dataclass(frozen=True)
class CodeRevision:
    commit: str | None
    dirty: bool = False

    def describe(self) -> str:
        if self.commit is None:
            return "unknown"
        return f"{self.commit}{' (uncommitted changes)' if self.dirty else ''}"


def read_code_revision(root: Path, environment: dict[str, str]) -> CodeRevision:
    """The revision baked into the environment, else the one of the git checkout at `root`."""
    if environment.get(COMMIT_VARIABLE):
        return CodeRevision(environment[COMMIT_VARIABLE], environment.get(DIRTY_VARIABLE, "false").lower() == "true")
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        # Tracked files only: untracked ones (a local universe, results) are not the code that ran.
        changes = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return CodeRevision(None)
    return CodeRevision(commit, bool(changes))


@functools.cache
def code_revision() -> CodeRevision:
    """This process's revision, read once: the code cannot change under a running process."""
    return read_code_revision(REPOSITORY_ROOT, dict(os.environ))
