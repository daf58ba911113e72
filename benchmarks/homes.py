"""Embedded-default Dagster homes for benchmark child processes."""

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
