"""Training one cell (a model family fitted on one symbol x target) and the record MLflow keeps of
it: what `models/<family>` does for each partition, without Dagster."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl

from intelligence_assets.cells import Log, ignore
from intelligence_assets.config.universe import Universe
from intelligence_assets.ml.bars import describe_spacing
from intelligence_assets.ml.dataset import build_dataset, utc_timestamps
from intelligence_assets.ml.families import load_family
from intelligence_assets.ml.leakage import leakage_suspicion
from intelligence_assets.ml.metrics import finite_or_none, model_is_eligible
from intelligence_assets.ml.targets import label_horizon
from intelligence_assets.ml.trained_model import TrainedModel
from intelligence_assets.ml.training import train_and_evaluate
from intelligence_assets.store.artifacts import ArtifactHandle, Manifest
from intelligence_assets.store.keys import file_key, fingerprint_directory
from intelligence_assets.tracking import names
from intelligence_assets.tracking.tracker import ModelTracker, TrackedRun, TrackingError, TrainingRecord

# Beside a model's manifest once MLflow tracks it: a cache hit then links the same run.
TRACKING_RECORD_FILE = "mlflow_run.json"


@dataclass(frozen=True)
class Cell:
    """One symbol x target for one model family, and the universe that says how to train it."""

    universe: Universe
    family: str
    symbol: str
    target: str

    @property
    def spec(self) -> Any:
        """The target's spec (task, kind, horizon) from the universe."""
        return self.universe.target(self.target)

    @property
    def score_metric(self) -> str:
        """The leaderboard metric for the target's task: what the cell's registry versions are ranked by."""
        leaderboard = self.universe.leaderboard
        return (
            leaderboard.classification_metric if self.spec.task == "classification" else leaderboard.regression_metric
        )


@dataclass(frozen=True)
class TrainedCell:
    """A cell's training outcome: the model to store (without a fitted model when ranking gated
    the target) and what its materialization shows, as plain values."""

    model: TrainedModel
    metadata: dict[str, Any]

    @property
    def metrics(self) -> dict[str, float | None]:
        """Held-out metrics, empty when nothing was trained: what the leakage sentinel judges."""
        return self.model.summary["metrics"]


@dataclass(frozen=True)
class Provenance:
    """Where a committed model was materialized, as its MLflow run is tagged."""

    run_id: str  # the Dagster run
    asset: str  # the asset key as users write it, e.g. `models/lightgbm`
    partition: str  # the partition key, e.g. `SP500|y_up_5b`
    device: Mapping[str, str] = field(default_factory=dict)  # the GPU it trained on, as run tags


def train_cell(
    cell: Cell,
    selection: Mapping[str, Any],
    features: Callable[[], pl.DataFrame],
    labels: Callable[[], pl.DataFrame],
    log: Log = ignore,
    params: Mapping[str, Any] | None = None,
) -> TrainedCell:
    """Fit the cell's family on its selected features, with early stopping on the development
    period, and score it on the held-out test period.

    `selection` is the cell's `feature_sets` result. `features` and `labels` load the symbol's
    feature table and the cell's labels; a target that ranking gated is decided from `selection`
    alone, so neither is called for it. `params`: what a hyperparameter search found
    (`searched_params`); the family's configured params by default.
    """
    universe, spec = cell.universe, cell.spec
    params = dict(universe.model_families[cell.family].params if params is None else params)
    base = {
        "symbol": cell.symbol,
        "target": cell.target,
        "task": spec.task,
        "target_kind": spec.kind,
        "family_version": load_family(cell.family).version,
    }
    if selection["gated"]:
        summary = {**base, "reason": selection["reason"], "metrics": {}}
        return TrainedCell(
            TrainedModel(family=cell.family, summary=summary),
            metadata={"trained": False, "decision": summary["reason"]},
        )
    selected = selection["selected"]
    feature_table = features()
    bars_per_year = universe.bars_per_year(cell.symbol, feature_table["timestamp"])
    dataset = build_dataset(feature_table, labels(), selected)
    log(f"{cell.family} {cell.symbol} {cell.target}: training on {len(dataset.y)} rows x {len(selected)} features")
    result = train_and_evaluate(
        cell.family,
        params,
        dataset.x,
        dataset.y,
        dataset.forward_return_1,
        task=spec.task,
        spec_kind=spec.kind,
        label_horizon=label_horizon(spec),
        split=universe.split,
        seed=universe.seed,
        bars_per_year=bars_per_year,
        side=getattr(spec, "side", None),
        cross_validate=universe.split.score_models_on_folds,
    )
    details = result.to_dict()
    test_timestamps = utc_timestamps(dataset.timestamps[result.test_index])
    metrics = {name: finite_or_none(value) for name, value in result.metrics.items()}
    suspicion = leakage_suspicion(spec.kind, metrics, universe.leakage_sentinel)
    summary = {
        **base,
        "reason": "",
        "features": selected,
        "params": params,
        "seed": universe.seed,
        "metrics": metrics,
        "baseline": details.get("baseline", {}),
        "train_rows": details.get("train_rows"),
        "test_rows": details.get("test_rows"),
        "test_start": test_timestamps[0].isoformat(),
        "test_end": test_timestamps[-1].isoformat(),
        "best_iteration": result.best_iteration,
        "training_curve": details["training_curve"],
        "fold_metrics": details["fold_metrics"],
        "training_seconds": round(result.seconds, 3),
        "leakage_suspect": suspicion is not None,
        "bars_per_year": bars_per_year,
        "bar_spacing": describe_spacing(feature_table["timestamp"]),
    }
    metadata = {
        "trained": True,
        **{name: value for name, value in metrics.items() if value is not None},
        **{f"baseline_{name}": value for name, value in summary["baseline"].items() if isinstance(value, (int, float))},
        "feature_count": len(selected),
        "features": ", ".join(selected),
        "train_rows": summary["train_rows"],
        "test_rows": summary["test_rows"],
        "test_period": f"{summary['test_start']} .. {summary['test_end']}",
        "best_iteration": result.best_iteration if result.best_iteration is not None else -1,
        "training_seconds": summary["training_seconds"],
        "bars_per_year": bars_per_year,
        "bar_spacing": summary["bar_spacing"],
        "seed": universe.seed,
    }
    return TrainedCell(TrainedModel(family=cell.family, summary=summary, model=result.model), metadata)


def provenance_tags(stored: ArtifactHandle, manifest: Manifest, provenance: Provenance) -> dict[str, str]:
    """The MLflow run tags that lead from a tracked model back to its artifact and its materialization."""
    # Here, not at the top: importing any part of mlflow loads all of it (seconds), and the
    # definitions, which every step process and pod loads, import this module.
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_SOURCE_NAME

    return {
        names.FINGERPRINT_TAG: stored.fingerprint,
        names.ARTIFACT_URI_TAG: stored.store.uri(fingerprint_directory(stored.prefix, stored.fingerprint)),
        names.DAGSTER_RUN_TAG: provenance.run_id,
        names.DAGSTER_ASSET_TAG: provenance.asset,
        names.DAGSTER_PARTITION_TAG: provenance.partition,
        names.CODE_VERSION_TAG: manifest.provenance.get("code_version", ""),
        **provenance.device,
        # MLflow's own source tags, so its UI shows which commit trained the model.
        MLFLOW_SOURCE_NAME: provenance.asset,
        **({MLFLOW_GIT_COMMIT: manifest.provenance["code_commit"]} if manifest.provenance.get("code_commit") else {}),
    }


def training_record(
    cell: Cell, trained_model: TrainedModel, tags: Mapping[str, str], config: dict[str, Any]
) -> TrainingRecord:
    """What MLflow logs of a cell's model: its score on the leaderboard's metric, whether it may
    become champion, `tags` (see `provenance_tags`) and `config`, the resolved config that
    produced it."""
    summary = trained_model.summary
    metric = cell.score_metric
    score = summary.get("metrics", {}).get(metric)
    eligible = model_is_eligible(
        trained_model.trained,
        bool(summary.get("leakage_suspect")),
        metric,
        score,
        summary.get("baseline", {}).get("majority_accuracy"),
    )
    return TrainingRecord(
        symbol=cell.symbol,
        target=cell.target,
        trained_model=trained_model,
        score_metric=metric,
        eligible=eligible,
        provenance_tags=dict(tags),
        config=config,
    )


def track_cell(
    cell: Cell,
    tracker: Callable[[], ModelTracker],
    stored: ArtifactHandle,
    manifest: Manifest,
    trained_model: TrainedModel | None,
    config: dict[str, Any],
    provenance: Provenance,
    log: Log = ignore,
) -> TrackedRun:
    """Log a committed model to MLflow, once per fingerprint, and keep its run beside the artifact.

    `trained_model` is the model just computed, or None on a cache hit: it is then loaded from
    `stored` only if MLflow has not tracked it yet. `tracker` is called only when MLflow must be
    asked, so a model tracked before links its run without a tracking server. `config` is the
    resolved config that produced the model, logged as the run's params.

    Raises TrackingError when MLflow fails, saying that the model is safe in the artifact store
    and that materializing the partition again logs it without retraining.
    """
    record_key = file_key(stored.prefix, stored.fingerprint, TRACKING_RECORD_FILE)
    if stored.store.exists(record_key):
        return TrackedRun(**stored.store.get_json(record_key))
    model = trained_model if trained_model is not None else stored.load()
    record = training_record(cell, model, provenance_tags(stored, manifest, provenance), config)
    try:
        tracked = tracker().track_training(record, log=log)
    except TrackingError as error:
        raise TrackingError(
            f"{error}. The trained model is safe in the artifact store at "
            f"{record.provenance_tags[names.ARTIFACT_URI_TAG]}; "
            f"materializing {provenance.asset} {provenance.partition} again logs it without retraining"
        ) from error
    stored.store.put_json(record_key, asdict(tracked))
    # The outcome and where it is tracked in one line: each line is an event-log write.
    summary = model.summary
    outcome = f"held-out {summary.get('metrics')}" if model.trained else f"skipped, {summary.get('reason')}"
    log(
        f"{cell.family} {cell.symbol} {cell.target}: {outcome}; MLflow run {tracked.run_url}"
        + (f", registered {tracked.model_uri}" if tracked.version else "")
    )
    return tracked
