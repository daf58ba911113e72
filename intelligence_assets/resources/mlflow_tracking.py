"""The MLflow tracking resource: one `ModelTracker` per resource instance.

dagster-mlflow's `mlflow_tracking` resource opens one MLflow run per Dagster run, named after the
job, through MLflow's process-global fluent API; we need one run per asset partition, in an
experiment per target, from steps that may share a process, so this resource wraps an explicit
`MlflowClient` instead (README, "MLflow").
"""
from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr

from intelligence_assets.tracking.tracker import ModelTracker


class MlflowTrackingResource(dg.ConfigurableResource):
    tracking_uri: str = Field(description="sqlite:///... for the embedded store, http(s)://... for an MLflow server.")
    registry_uri: str | None = Field(default=None, description="Defaults to the tracking URI.")
    ui_url: str | None = Field(default=None, description="Base URL of the MLflow UI for links in Dagster metadata; defaults to an http tracking URI.")
    experiment_root: str | None = Field(default=None, description="Local directory for the artifacts of experiments created here (embedded store only).")
    request_timeout_seconds: int = Field(default=20, ge=1, description="Per HTTP request to the tracking server.")
    request_max_retries: int = Field(default=2, ge=0, description="HTTP retries per request; the step's RetryPolicy retries on top.")

    _tracker: ModelTracker | None = PrivateAttr(default=None)

    def tracker(self) -> ModelTracker:
        if self._tracker is None:
            # MLflow reads these only from the environment; setdefault leaves an operator's choice alone.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(self.request_timeout_seconds))
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(self.request_max_retries))
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            self._tracker = ModelTracker(
                self.tracking_uri, self.registry_uri, self.ui_url, Path(self.experiment_root) if self.experiment_root else None
            )
        return self._tracker
