"""Which deployment this process serves, and the resources that go with it.

One variable, INTELLIGENCE_DEPLOYMENT, chooses:
  local  (default)  artifacts in a local directory (DAGSTER_HOME/artifacts); SQLite instance
  minio             artifacts in a MinIO / S3 bucket (INTELLIGENCE_S3_* variables); the
                    instance is PostgreSQL through the dagster.yaml in DAGSTER_HOME
                    (deploy/postgres/dagster.yaml, DAGSTER_PG_* variables)
Credentials come only from the environment.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import BaseModel, ConfigDict, ValidationError

from intelligence_assets.resources.artifact_store import ArtifactStore
from intelligence_assets.resources.artifact_store_resource import ArtifactStoreResource
from intelligence_assets.resources.io_manager import ArtifactIOManager
from intelligence_assets.universe import REPOSITORY_ROOT

DEPLOYMENT_VARIABLE = "INTELLIGENCE_DEPLOYMENT"
ARTIFACT_ROOT_VARIABLE = "INTELLIGENCE_ARTIFACT_ROOT"
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

    name: Literal["local", "minio"] = "local"
    artifact_root: Path = REPOSITORY_ROOT / ".dagster_home" / "artifacts"

    @classmethod
    def from_environment(cls) -> DeploymentSettings:
        dagster_home = Path(os.environ.get("DAGSTER_HOME") or REPOSITORY_ROOT / ".dagster_home")
        name = os.environ.get(DEPLOYMENT_VARIABLE, "local")
        try:
            return cls(name=name, artifact_root=Path(os.environ.get(ARTIFACT_ROOT_VARIABLE) or dagster_home / "artifacts"))
        except ValidationError:
            raise ValueError(f"{DEPLOYMENT_VARIABLE}={name!r} is not a known deployment; expected one of: local, minio") from None

    def artifact_store_resource(self, resolve_secrets: bool = False) -> ArtifactStoreResource:
        """`resolve_secrets`: read credentials now (tools outside Dagster); inside Dagster they stay
        `EnvVar`s, resolved at run time and shown in the UI by name only."""
        if self.name == "local":
            return ArtifactStoreResource(backend="local", root=str(self.artifact_root))
        missing = [v for k, v in S3_VARIABLES.items() if k in ("endpoint", "access_key", "secret_key") and not os.environ.get(v)]
        if missing:
            raise ValueError(f"deployment 'minio' needs environment variables {missing}")

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

    def resources(self) -> dict[str, object]:
        artifact_store = self.artifact_store_resource()
        return {"artifact_store": artifact_store, "io_manager": ArtifactIOManager(artifact_store=artifact_store)}
