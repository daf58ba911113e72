"""Where this deployment's Dagster and MLflow UIs are, and the address of every page one UI links
to in the other: the one place a link is built, so links follow the deployment's addresses
instead of the ones a model was trained under."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

# `make ui` serves Dagster here, `make mlflow-ui` the embedded MLflow store.
DEFAULT_DAGSTER_UI_URL = "http://127.0.0.1:3000"
EMBEDDED_MLFLOW_UI_URL = "http://127.0.0.1:5000"


def default_mlflow_ui_url(tracking_uri: str | None) -> str:
    """An MLflow server's UI is at its tracking URI; the embedded store's where `make mlflow-ui` serves it."""
    if tracking_uri and tracking_uri.startswith(("http://", "https://")):
        return tracking_uri
    return EMBEDDED_MLFLOW_UI_URL


@dataclass(frozen=True)
class UiLinks:
    """Page addresses in both UIs. `dagster_url` and `mlflow_url` are the UIs' base URLs as users
    reach them (INTELLIGENCE_DAGSTER_UI_URL, INTELLIGENCE_MLFLOW_UI_URL)."""

    dagster_url: str = DEFAULT_DAGSTER_UI_URL
    mlflow_url: str = EMBEDDED_MLFLOW_UI_URL

    def __post_init__(self) -> None:
        object.__setattr__(self, "dagster_url", self.dagster_url.rstrip("/"))
        object.__setattr__(self, "mlflow_url", self.mlflow_url.rstrip("/"))

    @classmethod
    def of(cls, dagster_url: str | None, mlflow_url: str | None, tracking_uri: str | None) -> UiLinks:
        """The links of a deployment from its settings, each default filled in the one way."""
        return cls(
            dagster_url=dagster_url or DEFAULT_DAGSTER_UI_URL,
            mlflow_url=mlflow_url or default_mlflow_ui_url(tracking_uri),
        )

    def dagster_run(self, run_id: str) -> str:
        return f"{self.dagster_url}/runs/{quote(run_id)}"

    def dagster_asset(self, asset: str) -> str:
        """`asset` as users write it: `models/lightgbm`."""
        return f"{self.dagster_url}/assets/{'/'.join(quote(part, safe='') for part in asset.split('/'))}"

    def dagster_partition(self, asset: str, partition: str | None) -> str:
        """The asset's page open at one partition (the asset's page when `partition` is None)."""
        page = self.dagster_asset(asset)
        return page if partition is None else f"{page}?view=partitions&partition={quote(partition, safe='')}"

    def mlflow_run(self, experiment_id: str, run_id: str) -> str:
        return f"{self.mlflow_url}/#/experiments/{experiment_id}/runs/{run_id}"

    def mlflow_model_version(self, registered_model: str, version: str) -> str:
        return f"{self.mlflow_url}/#/models/{quote(registered_model, safe='')}/versions/{version}"
