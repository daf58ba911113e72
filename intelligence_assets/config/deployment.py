"""Which deployment this process serves: its settings, read from the environment (the
resources that go with each deployment: `defs/resources/deployment.py`).

One variable, INTELLIGENCE_DEPLOYMENT, chooses:
  local  (default)  artifacts in a local directory (DAGSTER_HOME/artifacts); SQLite instance
  minio             artifacts in a MinIO / S3 bucket (INTELLIGENCE_S3_* variables); the
                    instance is PostgreSQL through the dagster.yaml in DAGSTER_HOME
                    (deploy/postgres/dagster.yaml, DAGSTER_PG_* variables)
  k8s               as minio, inside the Dagster Helm chart (helm/): every step runs in its own
                    pod (dagster-k8s's k8s_job_executor), GPU families on GPU nodes; MLflow is a
                    tracking server (INTELLIGENCE_MLFLOW_TRACKING_URI is required)
Credentials come only from the environment.

On S3 (minio, k8s) the store keeps verified copies of the immutable objects it reads (an
artifact's manifest and files, never a pointer) in a local read cache
(`store/read_cache.py`): INTELLIGENCE_ARTIFACT_CACHE is its directory (default
DAGSTER_HOME/artifact-cache, shared by the steps of one machine; an emptyDir in each step pod
on Kubernetes); `off` reads everything from the bucket.

GPU steps of one host lease their GPU slot through lock files in INTELLIGENCE_GPU_LEASES (default
DAGSTER_HOME/gpu-leases): every step process and run of the host must see the same directory.

MLflow: INTELLIGENCE_MLFLOW_TRACKING_URI names a tracking server (any deployment); without it the
embedded store is used, `sqlite:///<DAGSTER_HOME>/mlflow/mlflow.db` with no server, whose run
artifacts live in the local artifact store under `mlflow/` (`make mlflow-ui` browses it).
Links between the UIs (`tracking/links.py`): INTELLIGENCE_DAGSTER_UI_URL is where users reach the
Dagster UI (default http://127.0.0.1:3000, `make ui`), INTELLIGENCE_MLFLOW_UI_URL the MLflow UI
(default: the tracking server, or http://127.0.0.1:5000 where `make mlflow-ui` serves the
embedded store).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import BaseModel, ConfigDict, ValidationError

from intelligence_assets.config.universe import REPOSITORY_ROOT, ConfigurationError
from intelligence_assets.tracking.links import UiLinks

DEPLOYMENT_VARIABLE = "INTELLIGENCE_DEPLOYMENT"
ARTIFACT_ROOT_VARIABLE = "INTELLIGENCE_ARTIFACT_ROOT"
ARTIFACT_CACHE_VARIABLE = "INTELLIGENCE_ARTIFACT_CACHE"
# Where GPU steps of one host hold their GPU slots' lock files (`devices/leases.py`).
GPU_LEASES_VARIABLE = "INTELLIGENCE_GPU_LEASES"
# The value of INTELLIGENCE_ARTIFACT_CACHE that turns the read cache off.
NO_ARTIFACT_CACHE = "off"
MLFLOW_TRACKING_VARIABLE = "INTELLIGENCE_MLFLOW_TRACKING_URI"
BARS_PREFIX_VARIABLE = "INTELLIGENCE_BARS_PREFIX"
MLFLOW_UI_VARIABLE = "INTELLIGENCE_MLFLOW_UI_URL"
DAGSTER_UI_VARIABLE = "INTELLIGENCE_DAGSTER_UI_URL"
# The repository's web address (https://github.com/<org>/<repo>): asset code references link there.
GIT_URL_VARIABLE = "INTELLIGENCE_GIT_URL"
# The Kubernetes secret holding INTELLIGENCE_S3_ACCESS_KEY / _SECRET_KEY (helm/dagster-values.yaml).
S3_SECRET_NAME = "intelligence-s3"
DEPLOYMENTS = ("local", "minio", "k8s")
S3_VARIABLES = {
    "endpoint": "INTELLIGENCE_S3_ENDPOINT",
    "bucket": "INTELLIGENCE_S3_BUCKET",
    "secure": "INTELLIGENCE_S3_SECURE",
    "region": "INTELLIGENCE_S3_REGION",
    "access_key": "INTELLIGENCE_S3_ACCESS_KEY",
    "secret_key": "INTELLIGENCE_S3_SECRET_KEY",
}


def _artifact_cache(setting: str, dagster_home: Path) -> Path | None:
    """INTELLIGENCE_ARTIFACT_CACHE: a directory, `off`, or unset for the default under DAGSTER_HOME
    (the deployment's own scratch space, which the steps of one machine share)."""
    setting = setting.strip()
    if setting.lower() == NO_ARTIFACT_CACHE:
        return None
    return Path(setting) if setting else dagster_home / "artifact-cache"


@dataclass(frozen=True)
class S3Connection:
    """Where the minio and k8s deployments' bucket is, and the credentials to reach it."""

    endpoint: str
    bucket: str
    secure: bool
    region: str | None
    access_key: str | dg.EnvVar
    secret_key: str | dg.EnvVar


class DeploymentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["local", "minio", "k8s"] = "local"
    artifact_root: Path = REPOSITORY_ROOT / ".dagster_home" / "artifacts"
    dagster_home: Path = REPOSITORY_ROOT / ".dagster_home"
    # The S3 store's read cache; None: no cache. `from_environment` defaults it under DAGSTER_HOME.
    artifact_cache: Path | None = None
    # The host's GPU slot locks, shared by every step process and run of the host.
    gpu_leases: Path = REPOSITORY_ROOT / ".dagster_home" / "gpu-leases"
    mlflow_tracking_uri: str | None = None
    mlflow_ui_url: str | None = None
    dagster_ui_url: str | None = None
    bars_prefix: str | None = None
    git_url: str | None = None

    @classmethod
    def from_environment(cls) -> DeploymentSettings:
        dagster_home = Path(os.environ.get("DAGSTER_HOME") or REPOSITORY_ROOT / ".dagster_home")
        name = os.environ.get(DEPLOYMENT_VARIABLE, "local")
        try:
            return cls(
                name=name,
                artifact_root=Path(os.environ.get(ARTIFACT_ROOT_VARIABLE) or dagster_home / "artifacts"),
                dagster_home=dagster_home,
                artifact_cache=_artifact_cache(os.environ.get(ARTIFACT_CACHE_VARIABLE, ""), dagster_home),
                gpu_leases=Path(os.environ.get(GPU_LEASES_VARIABLE) or dagster_home / "gpu-leases"),
                mlflow_tracking_uri=os.environ.get(MLFLOW_TRACKING_VARIABLE) or None,
                mlflow_ui_url=os.environ.get(MLFLOW_UI_VARIABLE) or None,
                dagster_ui_url=os.environ.get(DAGSTER_UI_VARIABLE) or None,
                bars_prefix=os.environ.get(BARS_PREFIX_VARIABLE) or None,
                git_url=os.environ.get(GIT_URL_VARIABLE) or None,
            )
        except ValidationError:
            raise ConfigurationError(
                f"{DEPLOYMENT_VARIABLE}={name!r} is not a known deployment; expected one of: {', '.join(DEPLOYMENTS)}"
            ) from None

    def ui_links(self) -> UiLinks:
        """Where users reach this deployment's Dagster and MLflow UIs."""
        return UiLinks.of(self.dagster_ui_url, self.mlflow_ui_url, self.mlflow_tracking_uri)

    def s3_connection(self, resolve_secrets: bool = False) -> S3Connection:
        """The bucket's endpoint and credentials from INTELLIGENCE_S3_*. `resolve_secrets`: read
        the credentials now (tools outside Dagster); inside Dagster they stay `EnvVar`s, resolved
        at run time and shown in the UI by name only."""
        missing = [
            variable
            for field, variable in S3_VARIABLES.items()
            if field in ("endpoint", "access_key", "secret_key") and not os.environ.get(variable)
        ]
        if missing:
            raise ConfigurationError(f"deployment {self.name!r} needs environment variables {missing}")

        def secret(field: str) -> str | dg.EnvVar:
            return os.environ[S3_VARIABLES[field]] if resolve_secrets else dg.EnvVar(S3_VARIABLES[field])

        return S3Connection(
            endpoint=os.environ[S3_VARIABLES["endpoint"]],
            bucket=os.environ.get(S3_VARIABLES["bucket"]) or "intelligence-assets",
            secure=os.environ.get(S3_VARIABLES["secure"], "false").strip().lower() in ("1", "true", "yes"),
            region=os.environ.get(S3_VARIABLES["region"]) or None,
            access_key=secret("access_key"),
            secret_key=secret("secret_key"),
        )

    @property
    def embedded_mlflow_home(self) -> Path:
        """The embedded MLflow store (database and run artifacts): inside the local artifact store,
        so its bytes count in storage usage; beside DAGSTER_HOME's instance otherwise."""
        return (self.artifact_root if self.name == "local" else self.dagster_home) / "mlflow"
