"""Which deployment this process serves, and the resources that go with it.

One variable, INTELLIGENCE_DEPLOYMENT, chooses: `local` (embedded default: SQLite instance,
artifacts in a local directory). Everything else has typed defaults that environment
variables may override; credentials come only from the environment.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from intelligence_assets.resources.artifact_store_resource import ArtifactStoreResource
from intelligence_assets.resources.io_manager import ArtifactIOManager
from intelligence_assets.universe import REPOSITORY_ROOT

DEPLOYMENT_VARIABLE = "INTELLIGENCE_DEPLOYMENT"
ARTIFACT_ROOT_VARIABLE = "INTELLIGENCE_ARTIFACT_ROOT"


class DeploymentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["local"] = "local"
    artifact_root: Path

    @classmethod
    def from_environment(cls) -> DeploymentSettings:
        dagster_home = Path(os.environ.get("DAGSTER_HOME") or REPOSITORY_ROOT / ".dagster_home")
        name = os.environ.get(DEPLOYMENT_VARIABLE, "local")
        try:
            return cls(name=name, artifact_root=Path(os.environ.get(ARTIFACT_ROOT_VARIABLE) or dagster_home / "artifacts"))
        except ValidationError:
            raise ValueError(f"{DEPLOYMENT_VARIABLE}={name!r} is not a known deployment; expected one of: local") from None

    def resources(self) -> dict[str, object]:
        artifact_store = ArtifactStoreResource(backend="local", root=str(self.artifact_root))
        return {"artifact_store": artifact_store, "io_manager": ArtifactIOManager(artifact_store=artifact_store)}
