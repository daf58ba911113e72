"""The bars source as a Dagster resource, configured per deployment (the sources themselves:
`store/bars_source.py`)."""

from typing import Literal

import dagster as dg
from pydantic import Field

from intelligence_assets.defs.resources.artifact_store import ArtifactStoreResource
from intelligence_assets.store.bars_source import BarsSource, LocalBarsSource, StoreBarsSource


class BarsSourceResource(dg.ConfigurableResource):
    kind: Literal["directory", "store"] = "directory"
    directory: str | None = Field(default=None, description="kind=directory: the folder of <SYMBOL>.parquet files.")
    prefix: str | None = Field(default=None, description="kind=store: the key prefix in the artifact store's bucket.")
    # Given for both kinds: every deployment wires the same resource graph.
    artifact_store: dg.ResourceDependency[ArtifactStoreResource]

    def source(self) -> BarsSource:
        if self.kind == "directory":
            if not self.directory:
                raise ValueError("bars source kind 'directory' needs `directory`")
            return LocalBarsSource(self.directory)
        if not self.prefix:
            raise ValueError("bars source kind 'store' needs `prefix`")
        return StoreBarsSource(self.artifact_store.store(), self.prefix)
