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
from pydantic import ConfigDict, Field, PrivateAttr

from intelligence_assets.tracking.links import UiLinks
from intelligence_assets.tracking.tracker import ModelTracker

# As the S3 store's DEFAULT_RETRY_SECONDS: a tracking server restarted or briefly hung costs a
# pause, not a failed step (the step's RetryPolicy retries on top, after a full budget).
DEFAULT_RETRY_SECONDS = 60.0
# One hung request may spend at most this share of the budget, so the attempts after it still
# fit: 3 attempts of a quarter each, plus urllib3's backoff between them (0 s, then 2 s).
TIMEOUT_SHARE_OF_BUDGET = 0.25
MAX_RETRIES = 2
BACKOFF_FACTOR = 1


def request_settings(retry_seconds: float) -> dict[str, str]:
    """MLflow's HTTP client settings (environment variables) that fit `retry_seconds`: a timeout
    per request of a quarter of the budget (whole seconds, at least 1), and two retries."""
    return {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, int(retry_seconds * TIMEOUT_SHARE_OF_BUDGET))),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(MAX_RETRIES),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(BACKOFF_FACTOR),
    }


class MlflowTrackingResource(dg.ConfigurableResource):
    model_config = ConfigDict(extra="forbid")  # a misspelt setting fails here instead of being ignored

    tracking_uri: str = Field(description="sqlite:///... for the embedded store, http(s)://... for an MLflow server.")
    registry_uri: str | None = Field(default=None, description="Defaults to the tracking URI.")
    ui_url: str | None = Field(
        default=None,
        description="Base URL of the MLflow UI for links in Dagster metadata; defaults to an http tracking URI.",
    )
    dagster_ui_url: str | None = Field(
        default=None,
        description="Base URL of the Dagster UI for the back-links on MLflow runs and versions; defaults to "
        "http://127.0.0.1:3000 (`make ui`).",
    )
    experiment_root: str | None = Field(
        default=None, description="Local directory for the artifacts of experiments created here (embedded store only)."
    )
    retry_seconds: float = Field(
        default=DEFAULT_RETRY_SECONDS,
        gt=0,
        description=(
            "How long one MLflow call may keep trying a hung or unreachable server: each HTTP request times out after "
            "a quarter of it, and is retried twice. The step's RetryPolicy retries on top."
        ),
    )

    _tracker: ModelTracker | None = PrivateAttr(default=None)

    def links(self) -> UiLinks:
        """Where users reach both UIs, without opening the tracker."""
        return UiLinks.of(self.dagster_ui_url, self.ui_url, self.tracking_uri)

    def tracker(self) -> ModelTracker:
        if self._tracker is None:
            # MLflow reads these only from the environment (process-wide, per request); setdefault
            # leaves an operator's choice alone.
            for variable, value in request_settings(self.retry_seconds).items():
                os.environ.setdefault(variable, value)
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            self._tracker = ModelTracker(
                self.tracking_uri,
                self.registry_uri,
                self.links(),
                Path(self.experiment_root) if self.experiment_root else None,
            )
        return self._tracker
