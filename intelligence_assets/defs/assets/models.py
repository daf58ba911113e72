"""`models/<family>`: one asset per model family (symbol x target), made by a factory.

One asset per family rather than a third partition dimension (Dagster allows two): each family
gets its own code version, compute kind, retry policy and lineage.
"""

from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import dagster as dg

from intelligence_assets.defs.assets.caching import Computed, PartitionWork, input_for, materialize_partitions, resolved
from intelligence_assets.defs.assets.metadata import clean_number, utc_timestamps
from intelligence_assets.defs.assets.market_data import annualisation_config, bars_per_year_of
from intelligence_assets.defs.assets.target_analysis import FEATURE_SETS, FEATURES, LABELS, training_backfill_policy
from intelligence_assets.defs.automation.conditions import FOLLOWS_UPSTREAM
from intelligence_assets.cli.pools import CPU_POOL, GPU_POOL
from intelligence_assets.defs.checks import leakage_sentinel_result, leakage_sentinel_spec
from intelligence_assets.ml.bars import describe_spacing
from intelligence_assets.ml.dataset import build_dataset
from intelligence_assets.ml.families import load_family
from intelligence_assets.ml.leakage import leakage_suspicion
from intelligence_assets.ml.metrics import model_is_eligible
from intelligence_assets.ml.targets import label_horizon
from intelligence_assets.ml.trained_model import TrainedModel
from intelligence_assets.ml.training import train_and_evaluate
from intelligence_assets.defs.partitions import by_symbol, cell_of, symbol_target_partitions
from intelligence_assets.defs.pods import step_pod_tags
from intelligence_assets.defs.resources.artifact_store import ArtifactStoreResource
from intelligence_assets.store.artifacts import ArtifactHandle, HandleOrRange, Manifest
from intelligence_assets.defs.resources.io_manager import HANDLE_OR_RANGE
from intelligence_assets.defs.resources.mlflow_tracking import MlflowTrackingResource
from intelligence_assets.tracking import names
from intelligence_assets.tracking.tracker import TrackedRun, TrackingError, TrainingRecord
from intelligence_assets.config.universe import Universe

MODEL_KEY_PREFIX = "models"
# Beside a model's manifest once MLflow tracks it: a cache hit then links the same run.
TRACKING_RECORD_FILE = "mlflow_run.json"
FAMILY_KINDS = {"lightgbm": {"lightgbm"}, "xgboost": {"xgboost"}, "torch_mlp": {"pytorch"}, "linear": {"scikitlearn"}}

# Transient failures (a storage hiccup, a preempted pod) get retried; jitter spreads the retries
# of many partitions that failed together.
MODEL_RETRY_POLICY = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def model_key(family: str) -> dg.AssetKey:
    return dg.AssetKey([MODEL_KEY_PREFIX, family])


def model_config(universe: Universe, family_name: str, symbol: str, target: str) -> dict[str, Any]:
    return {
        "params": universe.model_families[family_name].params,
        "split": universe.split,
        "seed": universe.seed,
        "target": universe.target(target),
        "annualisation": annualisation_config(universe, symbol),
        "leakage_sentinel": universe.leakage_sentinel,
    }


def build_model_asset(family_name: str, universe: Universe) -> dg.AssetsDefinition:
    family = load_family(family_name)
    gpu = universe.trains_on_gpu(family_name)
    key = model_key(family_name)
    partitions = symbol_target_partitions(universe)

    # A multi_asset of one asset, for `can_subset`: its check is then an optional output, so a
    # ranged run can report each partition's leakage sentinel as that partition's evaluation.
    @dg.multi_asset(
        name=key.to_python_identifier(),
        outs={
            key.to_python_identifier(): dg.AssetOut(
                key=key,
                group_name="models",
                code_version=f"1.{family.version}",
                kinds=FAMILY_KINDS.get(family_name, {"python"}),
                tags={"family": family_name, "device": "gpu" if gpu else "cpu"},
                automation_condition=FOLLOWS_UPSTREAM,
                description=f"{family_name} model per symbol x target: fitted with early stopping on the development period, scored on the held-out test period.",
            )
        },
        ins={
            "features": dg.AssetIn(FEATURES, partition_mapping=by_symbol, dagster_type=HANDLE_OR_RANGE),
            "labels": dg.AssetIn(LABELS, dagster_type=HANDLE_OR_RANGE),
            "feature_sets": dg.AssetIn(FEATURE_SETS, dagster_type=HANDLE_OR_RANGE),
        },
        check_specs=[leakage_sentinel_spec(key, universe.leakage_sentinel, partitions)],
        can_subset=True,
        partitions_def=partitions,
        backfill_policy=training_backfill_policy(universe),
        pool=GPU_POOL if gpu else CPU_POOL,
        op_tags=step_pod_tags(universe.kubernetes, gpu, {"family": family_name}),
        retry_policy=MODEL_RETRY_POLICY,
    )
    def model(
        context: dg.AssetExecutionContext,
        artifact_store: ArtifactStoreResource,
        mlflow_tracking: MlflowTrackingResource,
        features: HandleOrRange,
        labels: HandleOrRange,
        feature_sets: HandleOrRange,
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        def work_for(partition_key: str) -> PartitionWork:
            symbol = cell_of(partition_key)[0]
            inputs = {"features": input_for(features, symbol), "labels": input_for(labels, partition_key), "feature_sets": input_for(feature_sets, partition_key)}
            return partition_work(context, mlflow_tracking, partition_key, inputs)

        yield from materialize_partitions(context, artifact_store.store(), work_for)

    def partition_work(
        context: dg.AssetExecutionContext, mlflow_tracking: MlflowTrackingResource, partition_key: str, inputs: dict[str, ArtifactHandle]
    ) -> PartitionWork:
        """One symbol x target's model: how to train it and how to track it once committed."""
        symbol, target = cell_of(partition_key)
        spec = universe.target(target)
        features, labels, feature_sets = inputs["features"], inputs["labels"], inputs["feature_sets"]

        def compute() -> Computed:
            base = {"symbol": symbol, "target": target, "task": spec.task, "target_kind": spec.kind, "family_version": family.version}
            selection = feature_sets.load()
            if selection["gated"]:
                summary = {**base, "reason": selection["reason"], "metrics": {}}
                return Computed(
                    TrainedModel(family=family_name, summary=summary),
                    metadata={"trained": False, "decision": summary["reason"]},
                    checks=[leakage_sentinel_result(key, spec.kind, {}, universe.leakage_sentinel)],
                )
            selected = selection["selected"]
            feature_table = features.load()
            bars_per_year = bars_per_year_of(universe, symbol, feature_table["timestamp"])
            dataset = build_dataset(feature_table, labels.load(), selected)
            context.log.info(f"{family_name} {symbol} {target}: training on {len(dataset.y)} rows x {len(selected)} features")
            result = train_and_evaluate(
                family_name,
                universe.model_families[family_name].params,
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
            metrics = {name: clean_number(value) for name, value in result.metrics.items()}
            suspicion = leakage_suspicion(spec.kind, metrics, universe.leakage_sentinel)
            summary = {
                **base,
                "reason": "",
                "features": selected,
                "params": universe.model_families[family_name].params,
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
            return Computed(
                TrainedModel(family=family_name, summary=summary, model=result.model),
                metadata={
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
                },
                checks=[leakage_sentinel_result(key, spec.kind, metrics, universe.leakage_sentinel)],
            )

        config = model_config(universe, family_name, symbol, target)

        def track(stored: ArtifactHandle, manifest: Manifest, computed: Any) -> dict[str, Any]:
            """Log the committed model to MLflow (once per fingerprint) and link the run."""
            record_key = f"{stored.prefix}/{stored.fingerprint}/{TRACKING_RECORD_FILE}"
            if stored.store.exists(record_key):
                tracked = TrackedRun(**stored.store.get_json(record_key))
            else:
                trained_model: TrainedModel = computed if computed is not None else stored.load()
                summary = trained_model.summary
                metric = universe.leaderboard.classification_metric if spec.task == "classification" else universe.leaderboard.regression_metric
                score = summary.get("metrics", {}).get(metric)
                record = TrainingRecord(
                    symbol=symbol,
                    target=target,
                    trained_model=trained_model,
                    score_metric=metric,
                    eligible=model_is_eligible(trained_model.trained, bool(summary.get("leakage_suspect")), metric, score, summary.get("baseline", {}).get("majority_accuracy")),
                    provenance_tags={
                        names.FINGERPRINT_TAG: stored.fingerprint,
                        names.ARTIFACT_URI_TAG: stored.store.uri(f"{stored.prefix}/{stored.fingerprint}"),
                        names.DAGSTER_RUN_TAG: context.run.run_id,
                        names.DAGSTER_ASSET_TAG: key.to_user_string(),
                        names.DAGSTER_PARTITION_TAG: partition_key,
                        names.CODE_VERSION_TAG: manifest.provenance.get("code_version", ""),
                    },
                    config=resolved(config),
                )
                try:
                    tracked = mlflow_tracking.tracker().track_training(record, log=context.log.info)
                except TrackingError as error:
                    raise TrackingError(
                        f"{error}. The trained model is safe in the artifact store at {record.provenance_tags[names.ARTIFACT_URI_TAG]}; "
                        f"materializing {key.to_user_string()} {partition_key} again logs it without retraining"
                    ) from error
                stored.store.put_json(record_key, asdict(tracked))
                # The outcome and where it is tracked in one line (each line is an event-log write).
                outcome = f"held-out {summary.get('metrics')}" if trained_model.trained else f"skipped, {summary.get('reason')}"
                context.log.info(f"{family_name} {symbol} {target}: {outcome}; MLflow run {tracked.run_url}" + (f", registered {tracked.model_uri}" if tracked.version else ""))
            metadata: dict[str, Any] = {"mlflow_run": dg.MetadataValue.url(tracked.run_url), "mlflow_run_id": tracked.run_id}
            if tracked.version:
                metadata["mlflow_model"] = tracked.model_uri
                metadata["mlflow_model_version"] = dg.MetadataValue.url(tracked.version_url)
            return metadata

        return PartitionWork(inputs, config, compute, after_commit=track)

    return model


def build_model_assets(universe: Universe) -> list[dg.AssetsDefinition]:
    return [build_model_asset(name, universe) for name in universe.model_families]
