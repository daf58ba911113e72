"""`ModelTracker`: every model materialization as one MLflow run, every trained model as a
version of its symbol x target's registered model.

Only `MlflowClient` calls with explicit run ids: no fluent API, no process-global active run,
so steps running side by side in one process cannot log into each other's runs.

Idempotent by fingerprint: a run is found again by its artifact fingerprint. A finished run
(and its version) is reused; an unfinished one, left by a tracker outage or a crash, is removed
with any version pointing at it before logging again, so the registry never holds a version
whose run is incomplete.

MLflow's HTTP client retries every request after a read timeout, POSTs included, and a server
that was hung (paused, swapping, a stalled database) still carries out the requests whose
answers nobody waits for any more: a retried create_run leaves a ghost run (RUNNING, our tags),
a retried create_model_version a second version of our run. Tracking runs under the
fingerprint's claim, so any other run or version with our fingerprint is such a ghost: it is
swept before the run is tagged complete (see _sweep_ghosts).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from intelligence_assets.ml.metrics import finite_or_none
from intelligence_assets.ml.trained_model import TrainedModel
from intelligence_assets.tracking import names
from intelligence_assets.tracking.embedded_store import open_embedded_store
from intelligence_assets.tracking.flavours import load_pyfunc, save_in_flavour
from intelligence_assets.tracking.importance_chart import importance_svg
from intelligence_assets.tracking.links import UiLinks

logger = logging.getLogger("intelligence_assets.tracking")
# A tracker request waiting longer than this is logged (once) while it keeps waiting.
SLOW_CALL_SECONDS = 5.0

T = TypeVar("T")
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a parameter value
REGISTERED_MODELS_PER_PAGE = 1000  # the most MLflow returns a request
VERSIONS_PER_PAGE = 10_000  # MLflow's default page of model versions
# What tracking a model imports on first use: MLflow (about a second) and its pyfunc flavour. A
# long-lived worker imports them ahead of its first run.
LIBRARIES = ("mlflow", "mlflow.pyfunc")


class TrackingError(RuntimeError):
    """MLflow was unreachable or refused a request; the message names the URI and the step."""


class ModelIntegrityError(RuntimeError):
    """A registered version's model files do not match the checksums recorded when it was logged
    (or it has none): it is refused rather than served. Not a TrackingError: MLflow answered, and
    asking again returns the same files."""


@dataclass(frozen=True)
class TrackedRun:
    """Where a model is tracked: its MLflow run and, once registered, its version, with links to
    both in the MLflow UI as it was when the model was tracked. A stored format: `track_cell`
    keeps it as JSON (`mlflow_run.json`) beside the model artifact and reads it back with
    `TrackedRun(**record)`, so a field renamed or removed fails on every model tracked before."""

    run_id: str
    experiment_id: str
    run_url: str
    registered_model: str | None = None
    version: str | None = None
    version_url: str | None = None

    @property
    def model_uri(self) -> str | None:
        return f"models:/{self.registered_model}/{self.version}" if self.version else None


@dataclass
class TrainingRecord:
    """Everything one model materialization logs."""

    symbol: str
    target: str
    trained_model: TrainedModel
    score_metric: str  # the leaderboard metric for this task
    eligible: bool  # may become champion: trained, beats no skill, not a leakage suspect
    provenance_tags: dict[str, str]  # Dagster run id, asset key, partition key, code version, fingerprint, artifact URI
    config: dict[str, Any]  # the resolved config that produced the model

    @property
    def family(self) -> str:
        return self.trained_model.family

    @property
    def fingerprint(self) -> str:
        return self.provenance_tags[names.FINGERPRINT_TAG]


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config as MLflow params: dotted keys, JSON values for lists."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            flat[name] = text[:MAX_PARAM_LENGTH]
    return flat


def model_checksums(directory: Path) -> dict[str, str]:
    """sha256 of every file under an MLflow model directory, by POSIX path relative to it: the
    files a reader downloads (artifact stores keep files, not empty folders)."""
    checksums = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            with path.open("rb") as handle:
                checksums[path.relative_to(directory).as_posix()] = hashlib.file_digest(handle, "sha256").hexdigest()
    return checksums


def checksum_differences(recorded: Mapping[str, str], found: Mapping[str, str]) -> list[str]:
    """What differs between recorded and found checksums, one phrase per kind; [] when they match."""
    changed = sorted(path for path in recorded.keys() & found.keys() if recorded[path] != found[path])
    missing = sorted(recorded.keys() - found.keys())
    unexpected = sorted(found.keys() - recorded.keys())
    return [
        f"{kind}: {', '.join(paths)}"
        for kind, paths in (("changed", changed), ("missing", missing), ("unexpected", unexpected))
        if paths
    ]


def all_pages(fetch: Callable[[str | None], Any]) -> Iterator[Any]:
    """Every item of a paged MLflow search, `fetch(page_token)` returning one page."""
    token = None
    while True:
        page = fetch(token)
        yield from page
        token = getattr(page, "token", None)
        if not token:
            return


def sqlite_database(tracking_uri: str) -> Path | None:
    """The database file of an embedded `sqlite:///` store; None for any other store."""
    prefix = "sqlite:///"
    return Path(tracking_uri[len(prefix) :]) if tracking_uri.startswith(prefix) else None


class ModelTracker:
    def __init__(
        self,
        tracking_uri: str,
        registry_uri: str | None = None,
        links: UiLinks | None = None,
        experiment_root: Path | None = None,
    ) -> None:
        """`links`: where users reach the MLflow UI (links shown in Dagster) and the Dagster UI
        (back-links on runs and versions); by default an http tracking URI's own UI.
        `experiment_root`: where experiments created here keep their artifacts, one folder per
        target (the embedded default); None lets the MLflow server decide."""
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.links = links or UiLinks.of(None, None, tracking_uri)
        self.experiment_root = experiment_root
        self._experiment_ids: dict[str, str] = {}

        def open_client() -> Any:
            return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)

        database = sqlite_database(tracking_uri)
        if database is None:
            self.client = open_client()
        else:
            self.client = open_embedded_store(
                database, lambda: self.call("opening the embedded MLflow store", open_client)
            )

    # -- errors ---------------------------------------------------------------------------

    def call(self, step: str, action: Callable[[], T]) -> T:
        """Run one MLflow request; any failure becomes a TrackingError naming URI and step. A
        request still waiting after SLOW_CALL_SECONDS says so once, so a stalled tracker is
        visible in the step's log instead of silent."""
        started = time.monotonic()
        timer = threading.Timer(
            SLOW_CALL_SECONDS,
            lambda: logger.warning(
                "MLflow at %s has not answered %s for %.0fs; still waiting",
                self.tracking_uri,
                step,
                time.monotonic() - started,
            ),
        )
        timer.daemon = True
        timer.start()
        try:
            return action()
        except TrackingError:
            raise
        except Exception as error:  # MLflow wraps transport and store errors in many types
            raise self._failure(step, error) from error
        finally:
            timer.cancel()

    def _failure(self, step: str, error: Exception) -> TrackingError:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        return TrackingError(
            f"MLflow tracking at {self.tracking_uri} failed while {step}: {type(error).__name__}: {message}"
        )

    @staticmethod
    def _error_code(error: BaseException) -> str | None:
        while error is not None:
            code = getattr(error, "error_code", None)
            if code:
                return str(code)
            error = error.__cause__
        return None

    # -- naming and links -----------------------------------------------------------------

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return self.links.mlflow_run(experiment_id, run_id)

    def version_url(self, registered_model: str, version: str) -> str:
        return self.links.mlflow_model_version(registered_model, version)

    def dagster_back_links(self, record: TrainingRecord) -> str:
        """Markdown for a run's description and its version's: links to the Dagster run, asset and
        partition that materialized the model (MLflow renders tag values as plain text); empty
        for a model tracked outside Dagster."""
        run_id = record.provenance_tags.get(names.DAGSTER_RUN_TAG)
        asset = record.provenance_tags.get(names.DAGSTER_ASSET_TAG)
        partition = record.provenance_tags.get(names.DAGSTER_PARTITION_TAG)
        if not (run_id and asset and partition):
            return ""
        return (
            f"Materialized by Dagster run [{run_id[:8]}]({self.links.dagster_run(run_id)}) as "
            f"[{asset}]({self.links.dagster_asset(asset)}) partition "
            f"[{partition}]({self.links.dagster_partition(asset, partition)}); "
            f"artifact fingerprint `{record.fingerprint}`."
        )

    def experiment_id(self, target: str) -> str:
        name = names.experiment_name(target)
        if name in self._experiment_ids:
            return self._experiment_ids[name]
        experiment = self.call(f"looking up experiment {name}", lambda: self.client.get_experiment_by_name(name))
        if experiment is None:
            location = (self.experiment_root / target).as_uri() if self.experiment_root else None
            try:
                experiment_id = self.call(
                    f"creating experiment {name}",
                    lambda: self.client.create_experiment(
                        name, artifact_location=location, tags={names.TARGET_TAG: target}
                    ),
                )
            except TrackingError as error:
                if (
                    self._error_code(error) != "RESOURCE_ALREADY_EXISTS"
                ):  # created meanwhile by a parallel step (or by our retried request)
                    raise
                experiment_id = self.call(
                    f"looking up experiment {name}", lambda: self.client.get_experiment_by_name(name)
                ).experiment_id
        else:
            experiment_id = experiment.experiment_id
        self._experiment_ids[name] = experiment_id
        return experiment_id

    # -- finding a run again --------------------------------------------------------------

    def _runs_with_fingerprint(self, experiment_id: str, record: TrainingRecord) -> list[Any]:
        query = (
            f"tags.{names.FINGERPRINT_TAG} = '{record.fingerprint}' and tags.{names.FAMILY_TAG} = '{record.family}' "
            f"and tags.{names.SYMBOL_TAG} = '{record.symbol}'"
        )
        return self.call(
            "searching runs by fingerprint",
            lambda: self.client.search_runs([experiment_id], filter_string=query, max_results=20),
        )

    @staticmethod
    def _is_complete(run: Any) -> bool:
        tags = run.data.tags
        return run.info.status == "FINISHED" and (
            tags.get(names.TRAINED_TAG) == "false" or bool(tags.get(names.REGISTERED_VERSION_TAG))
        )

    def _discard(self, run_id: str, status: str = "RUNNING") -> None:
        """Remove an incomplete run and any version registered from it. A run left RUNNING is
        marked KILLED first: one deleted but RUNNING reads as still being written to."""
        versions = self.call(
            "finding versions of an incomplete run", lambda: self.client.search_model_versions(f"run_id = '{run_id}'")
        )
        for version in versions:
            self._delete_version(version)
        if status in ("RUNNING", "SCHEDULED"):
            self.call(f"marking incomplete run {run_id} killed", lambda: self.client.set_terminated(run_id, "KILLED"))
        self.call(f"deleting incomplete run {run_id}", lambda: self.client.delete_run(run_id))

    def _sweep_ghosts(
        self,
        experiment_id: str,
        record: TrainingRecord,
        run_id: str,
        version: str | None,
        log: Callable[[str], None],
        runs: list[Any] | None = None,
    ) -> None:
        """Delete every other run and version with this fingerprint than `run_id` and its `version`.
        They can only be ghosts of retried requests (see the module docstring): we hold the
        fingerprint's claim, so nobody else logs it, and an earlier attempt's leftovers were
        discarded before this run was created. Runs first (with their versions), then versions
        whose run is already gone: a ghost create_model_version of an earlier, discarded attempt
        may have landed after the discard. Before registry aliases are set (model_registry), so
        no alias ever points at a ghost. The embedded store is written in process, with no HTTP
        request to retry: it has no ghosts, and tracking skips the two searches."""
        if sqlite_database(self.tracking_uri) is not None:
            return
        for run in self._runs_with_fingerprint(experiment_id, record) if runs is None else runs:
            if run.info.run_id != run_id:
                log(
                    f"removing MLflow run {run.info.run_id} (status {run.info.status}): a duplicate of run {run_id} "
                    "left by a retried request"
                )
                self._discard(run.info.run_id, run.info.status)
        if not record.trained_model.trained:
            return
        name = names.registered_model_name(record.symbol, record.target)
        query = (
            f"name = '{name}' and tags.`{names.FINGERPRINT_TAG}` = '{record.fingerprint}' and "
            f"tags.`{names.FAMILY_TAG}` = '{record.family}'"
        )
        for found in self.call(
            f"finding versions of {name} with fingerprint {record.fingerprint}",
            lambda: self.client.search_model_versions(query),
        ):
            if not (found.run_id == run_id and str(found.version) == version):
                log(
                    f"removing version {found.version} of {name} (run {found.run_id}): a duplicate of version "
                    f"{version} left by a retried request"
                )
                self._delete_version(found)

    def _delete_version(self, version: Any) -> None:
        try:
            self.call(
                f"deleting version {version.version} of {version.name}",
                lambda: self.client.delete_model_version(version.name, version.version),
            )
        except TrackingError as error:
            # A retried delete whose first attempt went through: the version is gone, as asked.
            if self._error_code(error) != "RESOURCE_DOES_NOT_EXIST":
                raise

    def _tracked(self, run: Any) -> TrackedRun:
        tags = run.data.tags
        version = tags.get(names.REGISTERED_VERSION_TAG) or None
        model = names.registered_model_name(tags[names.SYMBOL_TAG], tags[names.TARGET_TAG]) if version else None
        return TrackedRun(
            run_id=run.info.run_id,
            experiment_id=run.info.experiment_id,
            run_url=self.run_url(run.info.experiment_id, run.info.run_id),
            registered_model=model,
            version=version,
            version_url=self.version_url(model, version) if model and version else None,
        )

    # -- logging --------------------------------------------------------------------------

    def track_training(self, record: TrainingRecord, log: Callable[[str], None] = lambda _: None) -> TrackedRun:
        """Log one model materialization (idempotent by fingerprint) and register its version."""
        experiment_id = self.experiment_id(record.target)
        runs = self._runs_with_fingerprint(experiment_id, record)
        complete = next((run for run in runs if self._is_complete(run)), None)
        if complete is not None:
            log(f"MLflow run {complete.info.run_id} already tracks fingerprint {record.fingerprint}")
            tracked = self._tracked(complete)
            # Ghosts of its own requests may have landed after that run was tagged complete.
            self._sweep_ghosts(experiment_id, record, tracked.run_id, tracked.version, log, runs)
            return tracked
        for run in runs:
            log(f"removing incomplete MLflow run {run.info.run_id} (status {run.info.status}) before logging again")
            self._discard(run.info.run_id, run.info.status)

        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

        summary = record.trained_model.summary
        tags = {
            **record.provenance_tags,
            names.SYMBOL_TAG: record.symbol,
            names.TARGET_TAG: record.target,
            names.FAMILY_TAG: record.family,
            names.TRAINED_TAG: "true" if record.trained_model.trained else "false",
            "task": str(summary.get("task", "")),
        }
        if back_links := self.dagster_back_links(record):
            tags[MLFLOW_RUN_NOTE] = back_links
        run = self.call(
            "creating a run",
            lambda: self.client.create_run(
                experiment_id, run_name=f"{record.symbol}.{record.target}.{record.family}", tags=tags
            ),
        )
        run_id = run.info.run_id
        try:
            checksums = self._log_contents(run_id, run.info.artifact_uri, record)
            # Finished before registering: a version never points at an unfinished run. The run
            # counts as complete only once it is tagged with its version (see _is_complete).
            self.call("finishing the run", lambda: self.client.set_terminated(run_id, "FINISHED"))
            tracked = TrackedRun(run_id, experiment_id, self.run_url(experiment_id, run_id))
            if record.trained_model.trained:
                tracked = self._register(run_id, experiment_id, record, checksums)
            # Swept before the run is tagged complete: a complete run has no ghosts beside it
            # (ghosts landing later still are swept when it is found again).
            self._sweep_ghosts(experiment_id, record, run_id, tracked.version, log)
            if tracked.version:
                self.call(
                    "tagging the run with its version",
                    lambda: self.client.set_tag(run_id, names.REGISTERED_VERSION_TAG, tracked.version),
                )
        except TrackingError:
            # Leave nothing half-registered; if MLflow is down, the next attempt cleans up.
            with contextlib.suppress(TrackingError):
                self._discard(run_id)
            raise
        return tracked

    def _log_contents(self, run_id: str, artifact_uri: str, record: TrainingRecord) -> str | None:
        """Log params, metrics and artifacts; returns the model's checksum tag (None without a model)."""
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        summary = record.trained_model.summary
        params = flatten(record.config) | {
            "family": record.family,
            "feature_count": str(len(record.trained_model.feature_names)),
            "task": str(summary.get("task", "")),
        }
        timestamp = int(time.time() * 1000)
        metrics: list[Metric] = []

        def add(key: str, value: Any, step: int = 0) -> None:
            number = finite_or_none(value)
            if number is not None:
                metrics.append(Metric(key, number, timestamp, step))

        for name, value in (summary.get("metrics") or {}).items():
            add(f"heldout_{name}", value)
        for name, value in (summary.get("baseline") or {}).items():
            add(f"baseline_{name}", value)
        for fold in summary.get("fold_metrics") or []:
            for name, value in fold.items():
                if name not in ("fold",):
                    add(f"fold_{name}", value, int(fold["fold"]))
        for step, value in enumerate(summary.get("training_curve") or []):
            add("validation_loss", value, step)
        for name in ("train_rows", "test_rows", "best_iteration", "training_seconds"):
            add(name, summary.get(name))
        param_items = [Param(key, value) for key, value in sorted(params.items())]

        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            (folder / "config.json").write_text(json.dumps(record.config, indent=2, sort_keys=True, default=str))
            (folder / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
            model = record.trained_model.model
            features = record.trained_model.feature_names
            native_importance = model.feature_importance() if model is not None else None
            importance = None if native_importance is None else [float(value) for value in native_importance]
            (folder / "features.json").write_text(
                json.dumps({"features": features, "importance": importance}, indent=2)
            )
            if importance is not None and len(features):
                title = f"{record.family} {record.symbol} {record.target}: feature importance"
                (folder / names.IMPORTANCE_CHART).write_text(importance_svg(features, importance, title))
            checksums = None
            tags: list[RunTag] = []
            if model is not None:
                save_in_flavour(model, features, folder / names.MODEL_ARTIFACT_PATH)
                # Of the very files uploaded below: the artifact store keeps them byte for byte, so
                # a reader's download must hash the same.
                checksums = json.dumps(
                    model_checksums(folder / names.MODEL_ARTIFACT_PATH), sort_keys=True, separators=(",", ":")
                )
                tags.append(RunTag(names.MODEL_SHA256_TAG, checksums))
            # Params, metrics and the checksum tag together, within log_batch's limits (100 params,
            # 1000 entries in all): one call for a typical model rather than three.
            param_batches = [param_items[start : start + 100] for start in range(0, len(param_items), 100)]
            metric_batches = [metrics[start : start + 890] for start in range(0, len(metrics), 890)]
            for index in range(max(len(param_batches), len(metric_batches), 1)):
                batch_params = param_batches[index] if index < len(param_batches) else []
                batch_metrics = metric_batches[index] if index < len(metric_batches) else []
                batch_tags = tags if index == 0 else []
                self.call(
                    "logging params and metrics",
                    lambda p=batch_params, m=batch_metrics, t=batch_tags: self.client.log_batch(
                        run_id, metrics=m, params=p, tags=t
                    ),
                )
            # Straight to the run's artifact location, known since create_run: the client's
            # log_artifacts would fetch the run again to find it (one more request per model).
            self.call(
                "uploading artifacts",
                lambda: get_artifact_repository(artifact_uri, tracking_uri=self.tracking_uri).log_artifacts(scratch),
            )
        return checksums

    def _register(self, run_id: str, experiment_id: str, record: TrainingRecord, checksums: str | None) -> TrackedRun:
        name = names.registered_model_name(record.symbol, record.target)
        summary = record.trained_model.summary
        metrics = summary.get("metrics") or {}
        score = finite_or_none(metrics.get(record.score_metric))
        tags = {
            names.FAMILY_TAG: record.family,
            names.FINGERPRINT_TAG: record.fingerprint,
            names.SCORE_METRIC_TAG: record.score_metric,
            names.SCORE_TAG: "" if score is None else repr(score),
            names.TEST_ROWS_TAG: str(summary.get("test_rows") or 0),
            names.TEST_START_TAG: str(summary.get("test_start") or ""),
            names.TEST_END_TAG: str(summary.get("test_end") or ""),
            names.ELIGIBLE_TAG: "true" if record.eligible else "false",
            names.MODEL_SHA256_TAG: checksums or "",
            **{
                f"{names.HELDOUT_PREFIX}{metric}": repr(value)
                for metric, value in metrics.items()
                if finite_or_none(value) is not None
            },
        }

        def create_version() -> Any:
            return self.client.create_model_version(
                name,
                source=f"runs:/{run_id}/{names.MODEL_ARTIFACT_PATH}",
                run_id=run_id,
                tags=tags,
                description=(
                    f"{record.family} on {record.symbol} {record.target}, held-out {record.score_metric} {score}. "
                    f"{self.dagster_back_links(record)}"
                ).strip(),
            )

        # The registered model exists for all but the first model of a symbol x target: try the
        # version first and create the model only when MLflow says it is missing (one request
        # per model instead of two). A retried create may leave a second version of this run:
        # track_training sweeps it (_sweep_ghosts) before tagging the run with this one.
        try:
            version = self.call(f"registering a version of {name}", create_version)
        except TrackingError as error:
            if self._error_code(error) != "RESOURCE_DOES_NOT_EXIST":
                raise
            self.ensure_registered_model(name, record.symbol, record.target)
            version = self.call(f"registering a version of {name}", create_version)
        return TrackedRun(
            run_id,
            experiment_id,
            self.run_url(experiment_id, run_id),
            name,
            str(version.version),
            self.version_url(name, str(version.version)),
        )

    # -- registry -------------------------------------------------------------------------

    def ensure_registered_model(self, name: str, symbol: str, target: str) -> None:
        try:
            self.call(
                f"creating registered model {name}",
                lambda: self.client.create_registered_model(
                    name,
                    tags={names.SYMBOL_TAG: symbol, names.TARGET_TAG: target},
                    description=(
                        f"Models predicting {target} for {symbol}; aliases champion / previous-champion / challenger."
                    ),
                ),
            )
        except TrackingError as error:
            if self._error_code(error) != "RESOURCE_ALREADY_EXISTS":
                raise

    def registered_models(self) -> list[Any]:
        """Every registered model of the platform (named `intelligence.*`) with its tags and
        aliases: a registry pass reads them all in a few requests, not one a cell. Each model
        once, though one registered while the pages were read may be listed twice."""
        models = {
            model.name: model
            for model in all_pages(
                lambda token: self.call(
                    "listing registered models",
                    lambda: self.client.search_registered_models(
                        filter_string=names.PLATFORM_MODELS_FILTER,
                        max_results=REGISTERED_MODELS_PER_PAGE,
                        page_token=token,
                    ),
                )
            )
        }
        return list(models.values())

    def versions_by_model(self) -> dict[str, list[Any]]:
        """Every version of the platform's registered models, by model name."""
        versions: dict[str, list[Any]] = {}
        pages = all_pages(
            lambda token: self.call(
                "listing model versions",
                # A fixed order: each page token is an offset into it.
                lambda: self.client.search_model_versions(
                    names.PLATFORM_MODELS_FILTER,
                    max_results=VERSIONS_PER_PAGE,
                    order_by=["name ASC", "version_number ASC"],
                    page_token=token,
                ),
            )
        )
        for version in pages:
            versions.setdefault(version.name, []).append(version)
        return versions

    def versions(self, name: str) -> list[Any]:
        return self.call(
            f"listing versions of {name}", lambda: list(self.client.search_model_versions(f"name = '{name}'"))
        )

    def aliases(self, name: str) -> dict[str, str]:
        """alias -> version of a registered model ({} when it does not exist)."""
        try:
            model = self.call(f"reading aliases of {name}", lambda: self.client.get_registered_model(name))
        except TrackingError as error:
            if self._error_code(error) == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise
        return {alias: str(version) for alias, version in (model.aliases or {}).items()}

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.call(
            f"setting {name}@{alias} to version {version}",
            lambda: self.client.set_registered_model_alias(name, alias, version),
        )

    def delete_alias(self, name: str, alias: str) -> None:
        self.call(f"removing {name}@{alias}", lambda: self.client.delete_registered_model_alias(name, alias))

    def set_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.call(
            f"tagging {name} version {version}", lambda: self.client.set_model_version_tag(name, version, key, value)
        )

    def version_by_alias(self, name: str, alias: str) -> Any | None:
        try:
            return self.call(
                f"resolving models:/{name}@{alias}", lambda: self.client.get_model_version_by_alias(name, alias)
            )
        except TrackingError as error:
            if self._error_code(error) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def load_model(self, version: Any) -> Any:
        """The version's model as an MLflow pyfunc, downloaded once from the tracking server's
        store and loaded from that copy only after its files match the checksums recorded when it
        was logged: what is served is what was trained. Raises ModelIntegrityError otherwise."""
        recorded_text = version.tags.get(names.MODEL_SHA256_TAG) or ""
        if not recorded_text:
            raise ModelIntegrityError(
                f"{version.name} version {version.version} has no {names.MODEL_SHA256_TAG} tag: it predates model "
                "checksums, so its "
                f"files cannot be verified and it is not served. {self._integrity_remedy(version)}"
            )
        try:
            recorded = json.loads(recorded_text)
        except json.JSONDecodeError:
            recorded = None
        if not isinstance(recorded, dict):
            raise ModelIntegrityError(
                f"{version.name} version {version.version}: its {names.MODEL_SHA256_TAG} tag is not the JSON object "
                "written at "
                f"logging, so its files cannot be verified and it is not served. {self._integrity_remedy(version)}"
            )
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(
                self.call(
                    f"downloading {version.name} version {version.version}",
                    lambda: self.client.download_artifacts(version.run_id, names.MODEL_ARTIFACT_PATH, scratch),
                )
            )
            differences = checksum_differences(recorded, model_checksums(path))
            if differences:
                raise ModelIntegrityError(
                    f"{version.name} version {version.version}: the model files in MLflow's artifact store (run "
                    f"{version.run_id}, "
                    f"`{names.MODEL_ARTIFACT_PATH}/`) differ from those logged at training "
                    f"({'; '.join(differences)}); it is not served. "
                    f"{self._integrity_remedy(version)}"
                )
            return load_pyfunc(path)

    def _integrity_remedy(self, version: Any) -> str:
        """What to do about a version that may not be served, naming its Dagster asset and partition."""
        family = version.tags.get(names.FAMILY_TAG, "<family>")
        asset, partition = f"models/{family}", "SYMBOL|target"
        try:  # only on the way to an error: one more request costs nothing that matters
            tags = self.client.get_run(version.run_id).data.tags
            asset, partition = (
                tags.get(names.DAGSTER_ASSET_TAG) or asset,
                tags.get(names.DAGSTER_PARTITION_TAG) or partition,
            )
        except Exception:  # the error raised says what matters without them
            pass
        return (
            f"Roll back to the previous champion (make rollback PARTITION='{partition}' REASON='version "
            f"{version.version} failed its "
            f"integrity check'), or retrain {asset} {partition} so that a new version with checksums is registered, "
            "then "
            "materialize model_registry and predictions."
        )
