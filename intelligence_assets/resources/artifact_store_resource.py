"""The artifact store as a Dagster resource, configured per deployment."""

from typing import Literal

import dagster as dg

from intelligence_assets.resources.artifact_store import ArtifactStore, LocalArtifactStore


class ArtifactStoreResource(dg.ConfigurableResource):
    """Which backend holds artifacts. `local`: a directory (embedded default)."""

    backend: Literal["local"] = "local"
    root: str = ".dagster_home/artifacts"

    def store(self) -> ArtifactStore:
        return LocalArtifactStore(self.root)
