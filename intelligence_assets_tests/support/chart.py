"""What helm/dagster-values.yaml ships, as the tests read it."""

from __future__ import annotations

import yaml

from intelligence_assets.config.universe import REPOSITORY_ROOT

DAGSTER_VALUES = REPOSITORY_ROOT / "helm" / "dagster-values.yaml"


def dagster_values() -> dict:
    """The Dagster chart's values (the file's first document)."""
    return next(document for document in yaml.safe_load_all(DAGSTER_VALUES.read_text()) if document)


def run_pod_environment(values: dict | None = None) -> dict[str, str]:
    """The variables run pods, and the step pods they start, get: the run launcher's `envVars`
    ("NAME=value")."""
    launcher = (values or dagster_values())["runLauncher"]["config"]["k8sRunLauncher"]
    return dict(item.split("=", 1) for item in launcher["envVars"])
