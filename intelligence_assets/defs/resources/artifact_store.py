"""The artifact store as a Dagster resource, configured per deployment."""

from typing import Literal

import dagster as dg
from pydantic import PrivateAttr

from intelligence_assets.store.artifact_store import ArtifactStore, LocalArtifactStore
from intelligence_assets.store.read_cache import DEFAULT_MAX_BYTES


class ArtifactStoreResource(dg.ConfigurableResource):
    """Where artifacts live. `local`: a directory (embedded default). `s3`: a MinIO / S3 bucket
    through the minio SDK; give credentials as `dg.EnvVar`s so the UI shows variable names only."""

    backend: Literal["local", "s3"] = "local"
    root: str = ".dagster_home/artifacts"
    endpoint: str = ""
    bucket: str = "intelligence-assets"
    secure: bool = False
    region: str | None = None
    access_key: str = ""
    secret_key: str = ""
    retry_seconds: float = 60.0  # see s3_artifact_store.DEFAULT_RETRY_SECONDS
    # s3 only: local verified copies of the immutable objects read (store/read_cache.py); None: none.
    read_cache_directory: str | None = None
    read_cache_max_bytes: int = DEFAULT_MAX_BYTES
    # One store per resource instance: an S3 store holds a client and its connection pool, which
    # every input load, output and cache check of a step should share.
    _store: ArtifactStore | None = PrivateAttr(default=None)

    def store(self) -> ArtifactStore:
        if self._store is None:
            self._store = self._build_store()
        return self._store

    def _build_store(self) -> ArtifactStore:
        if self.backend == "local":
            return LocalArtifactStore(self.root)
        from intelligence_assets.store.read_cache import ReadCache
        from intelligence_assets.store.s3 import S3ArtifactStore

        if not self.endpoint:
            raise ValueError("artifact store backend 's3' needs an endpoint (INTELLIGENCE_S3_ENDPOINT)")
        return S3ArtifactStore(
            self.endpoint,
            self.bucket,
            self.access_key,
            self.secret_key,
            secure=self.secure,
            region=self.region,
            retry_seconds=self.retry_seconds,
            read_cache=ReadCache(self.read_cache_directory, self.read_cache_max_bytes)
            if self.read_cache_directory
            else None,
        )
