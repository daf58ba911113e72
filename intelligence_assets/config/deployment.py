"""Which deployment this process serves, and the resources that go with it.

One variable, INTELLIGENCE_DEPLOYMENT, chooses:
  local  (default)  artifacts in a local directory (DAGSTER_HOME/artifacts); SQLite instance
  minio             artifacts in a MinIO / S3 bucket (INTELLIGENCE_S3_* variables); the
                    instance is PostgreSQL through the dagster.yaml in DAGSTER_HOME
                    (deploy/postgres/dagster.yaml, DAGSTER_PG_* variables)
  k8s               as minio, inside the Dagster Helm chart (helm/): every step runs in its own
                    pod (dagster-k8s's k8s_job_executor), GPU families on GPU nodes; MLflow is a
                    tracking server (INTELLIGENCE_MLFLOW_TRACKING_URI is required)
Credentials come only from the environment.

MLflow: INTELLIGENCE_MLFLOW_TRACKING_URI names a tracking server (any deployment); without it the
embedded store is used, `sqlite:///<DAGSTER_HOME>/mlflow/mlflow.db` with no server, whose run
artifacts live in the local artifact store under `mlflow/` (`make mlflow-ui` browses it).
INTELLIGENCE_MLFLOW_UI_URL overrides the base of the links shown in Dagster.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import BaseModel, ConfigDict, ValidationError

from intelligence_assets.config.universe import REPOSITORY_ROOT, ConfigurationError, Universe
from intelligence_assets.defs.automation.alerts import AlertNotifier
from intelligence_assets.defs.processes import step_process_executor
from intelligence_assets.defs.resources.artifact_store import ArtifactStoreResource
from intelligence_assets.defs.resources.io_manager import ArtifactIOManager
from intelligence_assets.defs.resources.mlflow_tracking import MlflowTrackingResource
from intelligence_assets.store.artifact_store import ArtifactStore
from intelligence_assets.store.bars_source import BarsSource, BarsSourceResource

DEPLOYMENT_VARIABLE = "INTELLIGENCE_DEPLOYMENT"
ARTIFACT_ROOT_VARIABLE = "INTELLIGENCE_ARTIFACT_ROOT"
MLFLOW_TRACKING_VARIABLE = "INTELLIGENCE_MLFLOW_TRACKING_URI"
BARS_PREFIX_VARIABLE = "INTELLIGENCE_BARS_PREFIX"
MLFLOW_UI_VARIABLE = "INTELLIGENCE_MLFLOW_UI_URL"
# The Kubernetes secret holding INTELLIGENCE_S3_ACCESS_KEY / _SECRET_KEY (helm/dagster-values.yaml).
S3_SECRET_NAME = "intelligence-s3"
DEPLOYMENTS = ("local", "minio", "k8s")
# Where `make mlflow-ui` serves the embedded store.
EMBEDDED_MLFLOW_UI_URL = "http://127.0.0.1:5000"
S3_VARIABLES = {
    "endpoint": "INTELLIGENCE_S3_ENDPOINT",
    "bucket": "INTELLIGENCE_S3_BUCKET",
    "secure": "INTELLIGENCE_S3_SECURE",
    "region": "INTELLIGENCE_S3_REGION",
    "access_key": "INTELLIGENCE_S3_ACCESS_KEY",
    "secret_key": "INTELLIGENCE_S3_SECRET_KEY",
}


class DeploymentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["local", "minio", "k8s"] = "local"
    artifact_root: Path = REPOSITORY_ROOT / ".dagster_home" / "artifacts"
    dagster_home: Path = REPOSITORY_ROOT / ".dagster_home"
    mlflow_tracking_uri: str | None = None
    mlflow_ui_url: str | None = None
    bars_prefix: str | None = None

    @classmethod
    def from_environment(cls) -> DeploymentSettings:
        dagster_home = Path(os.environ.get("DAGSTER_HOME") or REPOSITORY_ROOT / ".dagster_home")
        name = os.environ.get(DEPLOYMENT_VARIABLE, "local")
        try:
            return cls(
                name=name,
                artifact_root=Path(os.environ.get(ARTIFACT_ROOT_VARIABLE) or dagster_home / "artifacts"),
                dagster_home=dagster_home,
                mlflow_tracking_uri=os.environ.get(MLFLOW_TRACKING_VARIABLE) or None,
                mlflow_ui_url=os.environ.get(MLFLOW_UI_VARIABLE) or None,
                bars_prefix=os.environ.get(BARS_PREFIX_VARIABLE) or None,
            )
        except ValidationError:
            raise ConfigurationError(
                f"{DEPLOYMENT_VARIABLE}={name!r} is not a known deployment; expected one of: {', '.join(DEPLOYMENTS)}"
            ) from None

    def artifact_store_resource(self, resolve_secrets: bool = False) -> ArtifactStoreResource:
        """`resolve_secrets`: read credentials now (tools outside Dagster); inside Dagster they stay
        `EnvVar`s, resolved at run time and shown in the UI by name only."""
        if self.name == "local":
            return ArtifactStoreResource(backend="local", root=str(self.artifact_root))
        missing = [
            v
            for k, v in S3_VARIABLES.items()
            if k in ("endpoint", "access_key", "secret_key") and not os.environ.get(v)
        ]
        if missing:
            raise ConfigurationError(f"deployment {self.name!r} needs environment variables {missing}")

        def secret(field: str) -> str:
            return os.environ[S3_VARIABLES[field]] if resolve_secrets else dg.EnvVar(S3_VARIABLES[field])

        return ArtifactStoreResource(
            backend="s3",
            endpoint=os.environ[S3_VARIABLES["endpoint"]],
            bucket=os.environ.get(S3_VARIABLES["bucket"]) or "intelligence-assets",
            secure=os.environ.get(S3_VARIABLES["secure"], "false").strip().lower() in ("1", "true", "yes"),
            region=os.environ.get(S3_VARIABLES["region"]) or None,
            access_key=secret("access_key"),
            secret_key=secret("secret_key"),
        )

    def artifact_store(self) -> ArtifactStore:
        return self.artifact_store_resource(resolve_secrets=True).store()

    @property
    def embedded_mlflow_home(self) -> Path:
        """The embedded MLflow store (database and run artifacts): inside the local artifact store,
        so its bytes count in storage usage; beside DAGSTER_HOME's instance otherwise."""
        return (self.artifact_root if self.name == "local" else self.dagster_home) / "mlflow"

    def mlflow_tracking_resource(self) -> MlflowTrackingResource:
        if self.name == "k8s" and not self.mlflow_tracking_uri:
            # Step pods share nothing but the bucket and the tracking server: an embedded store would
            # scatter runs across pods' disks.
            raise ConfigurationError(
                f"deployment 'k8s' needs {MLFLOW_TRACKING_VARIABLE} (the MLflow server, e.g. http://intelligence-mlflow:5000)"
            )
        if self.mlflow_tracking_uri:
            return MlflowTrackingResource(tracking_uri=self.mlflow_tracking_uri, ui_url=self.mlflow_ui_url)
        home = self.embedded_mlflow_home.resolve()
        return MlflowTrackingResource(
            tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
            ui_url=self.mlflow_ui_url or EMBEDDED_MLFLOW_UI_URL,
            experiment_root=str(home),
        )

    def bars_source_resource(
        self, universe: Universe, artifact_store: ArtifactStoreResource | None = None
    ) -> BarsSourceResource:
        """Bars under INTELLIGENCE_BARS_PREFIX in the artifact store when set, else the universe's directory."""
        artifact_store = artifact_store or self.artifact_store_resource()
        if self.bars_prefix:
            return BarsSourceResource(kind="store", prefix=self.bars_prefix, artifact_store=artifact_store)
        return BarsSourceResource(
            kind="directory", directory=str(universe.bars_directory), artifact_store=artifact_store
        )

    def bars_source(self, universe: Universe) -> BarsSource:
        return self.bars_source_resource(universe, self.artifact_store_resource(resolve_secrets=True)).source()

    def executor(self, name: str = "step_processes", preload: tuple[str, ...] = ()) -> dg.ExecutorDefinition:
        """k8s: one pod per step, with the S3 credentials from their secret (a pod starts fresh,
        so `preload` does not apply); others: a process per step, forked from a server that has
        imported the definitions and `preload` once (`processes.step_process_executor`)."""
        if self.name != "k8s":
            return step_process_executor(name, preload)
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor.configured({"env_secrets": [S3_SECRET_NAME]}, name="k8s_step_pods")

    def resources(self, universe: Universe) -> dict[str, object]:
        artifact_store = self.artifact_store_resource()
        return {
            "artifact_store": artifact_store,
            "bars_source": self.bars_source_resource(universe, artifact_store),
            "alert_notifier": AlertNotifier(artifact_store=artifact_store),
            "io_manager": ArtifactIOManager(artifact_store=artifact_store),
            "mlflow_tracking": self.mlflow_tracking_resource(),
        }
