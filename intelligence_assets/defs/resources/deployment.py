"""The resources, executor and stores of each deployment (`config/deployment.py` reads which
one this process serves): dagster-open-platform's resources per environment, as one class."""

from __future__ import annotations

import dagster as dg

from intelligence_assets.config.deployment import (
    MLFLOW_TRACKING_VARIABLE,
    S3_SECRET_NAME,
    DeploymentSettings,
)
from intelligence_assets.config.universe import ConfigurationError, Universe
from intelligence_assets.defs.automation.alerts import AlertNotifier
from intelligence_assets.defs.processes import step_process_executor
from intelligence_assets.defs.resources.artifact_store import ArtifactStoreResource
from intelligence_assets.defs.resources.bars_source import BarsSourceResource
from intelligence_assets.defs.resources.io_manager import ArtifactIOManager
from intelligence_assets.defs.resources.mlflow_tracking import MlflowTrackingResource
from intelligence_assets.store.artifact_store import ArtifactStore
from intelligence_assets.store.bars_source import BarsSource


class Deployment(DeploymentSettings):
    """A deployment's settings and what Dagster runs with there: `Deployment.from_environment()`
    for this process, or `Deployment(artifact_root=...)` in tools and tests."""

    def artifact_store_resource(self, resolve_secrets: bool = False) -> ArtifactStoreResource:
        """`resolve_secrets`: read credentials now (tools outside Dagster); inside Dagster they stay
        `EnvVar`s, resolved at run time and shown in the UI by name only."""
        if self.name == "local":
            return ArtifactStoreResource(backend="local", root=str(self.artifact_root))
        connection = self.s3_connection(resolve_secrets)
        return ArtifactStoreResource(
            backend="s3",
            endpoint=connection.endpoint,
            bucket=connection.bucket,
            secure=connection.secure,
            region=connection.region,
            access_key=connection.access_key,
            secret_key=connection.secret_key,
            read_cache_directory=str(self.artifact_cache) if self.artifact_cache else None,
        )

    def artifact_store(self) -> ArtifactStore:
        return self.artifact_store_resource(resolve_secrets=True).store()

    def mlflow_tracking_resource(self) -> MlflowTrackingResource:
        if self.name == "k8s" and not self.mlflow_tracking_uri:
            # Step pods share nothing but the bucket and the tracking server: an embedded store would
            # scatter runs across pods' disks.
            raise ConfigurationError(
                f"deployment 'k8s' needs {MLFLOW_TRACKING_VARIABLE} (the MLflow server, e.g. http://intelligence-mlflow:5000)"
            )
        links = self.ui_links()
        if self.mlflow_tracking_uri:
            return MlflowTrackingResource(
                tracking_uri=self.mlflow_tracking_uri, ui_url=links.mlflow_url, dagster_ui_url=links.dagster_url
            )
        home = self.embedded_mlflow_home.resolve()
        return MlflowTrackingResource(
            tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
            ui_url=links.mlflow_url,
            dagster_ui_url=links.dagster_url,
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
