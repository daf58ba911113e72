"""`labels`, `target_rankings` and `feature_sets`: one partition per symbol x target.

Ranking gates training: below the configured bar, `feature_sets` records why and selects
nothing, and every model family skips the partition with the same reason in its metadata.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl

from intelligence_assets.config.universe import Universe
from intelligence_assets.defs.assets.caching import Computed, PartitionWork, input_for, materialize_partitions
from intelligence_assets.defs.assets.market_data import BARS, FEATURES
from intelligence_assets.defs.assets.metadata import date_range, markdown_table
from intelligence_assets.defs.assets.planning import PlanningContext, plans
from intelligence_assets.defs.automation.conditions import FOLLOWS_UPSTREAM
from intelligence_assets.defs.partitions import by_symbol, cell_of, symbol_target_partitions
from intelligence_assets.defs.pods import step_pod_tags
from intelligence_assets.defs.pools import CPU_POOL
from intelligence_assets.defs.resources.artifact_store import ArtifactStoreResource
from intelligence_assets.defs.resources.io_manager import HANDLE_OR_RANGE
from intelligence_assets.ml.dataset import build_dataset
from intelligence_assets.ml.metrics import finite_or_none
from intelligence_assets.ml.ranking import rank_target, ranking_code_version
from intelligence_assets.ml.selection import select_features, selection_code_version
from intelligence_assets.ml.targets import build_labels, label_horizon
from intelligence_assets.store.artifacts import HandleOrRange

LABELS = dg.AssetKey("labels")
TARGET_RANKINGS = dg.AssetKey("target_rankings")
FEATURE_SETS = dg.AssetKey("feature_sets")
# With the models/<family> assets, the training stage of a symbol x target (training_job).
TARGET_ANALYSIS_ASSETS = [LABELS, TARGET_RANKINGS, FEATURE_SETS]


def training_backfill_policy(universe: Universe) -> dg.BackfillPolicy:
    """The training stage's assets take partition ranges: a backfill (or `make demo`) runs a
    symbol's targets, or a target's symbols, as one run instead of one run per cell, which
    would cost a run's start-up and event writes for a fraction of a second of work on the
    many cells the ranking gates."""
    return dg.BackfillPolicy.multi_run(universe.automation.backfill_partitions_per_run)


def labels_config(universe: Universe, target: str) -> Any:
    return universe.target(target)


def ranking_config(universe: Universe, target: str) -> dict[str, Any]:
    spec = universe.target(target)
    return {
        "split": universe.split,
        "ranking": universe.ranking,
        "seed": universe.seed,
        "task": spec.task,
        "horizon": label_horizon(spec),
    }


def selection_config(universe: Universe, target: str) -> dict[str, Any]:
    spec = universe.target(target)
    return {
        "split": universe.split,
        "selection": universe.selection,
        "seed": universe.seed,
        "task": spec.task,
        "horizon": label_horizon(spec),
    }


@plans(LABELS)
def planned_labels_config(context: PlanningContext) -> Any:
    return labels_config(context.universe, context.target)


@plans(TARGET_RANKINGS)
def planned_ranking_config(context: PlanningContext) -> dict[str, Any]:
    return ranking_config(context.universe, context.target)


@plans(FEATURE_SETS)
def planned_selection_config(context: PlanningContext) -> dict[str, Any]:
    return selection_config(context.universe, context.target)


def build_target_analysis_assets(universe: Universe) -> list[dg.AssetsDefinition]:
    partitions = symbol_target_partitions(universe)
    backfill_policy = training_backfill_policy(universe)

    @dg.asset(
        key=LABELS,
        automation_condition=FOLLOWS_UPSTREAM,
        ins={"bars": dg.AssetIn(BARS, partition_mapping=by_symbol, dagster_type=HANDLE_OR_RANGE)},
        partitions_def=partitions,
        backfill_policy=backfill_policy,
        group_name="targets",
        code_version="1",
        kinds={"polars"},
        description="One target column built from its spec; label windows look only at the next `horizon` bars.",
    )
    def labels(
        context: dg.AssetExecutionContext, artifact_store: ArtifactStoreResource, bars: HandleOrRange
    ) -> Iterator[dg.Output]:
        def work_for(key: str) -> PartitionWork:
            symbol, target = cell_of(key)
            spec = universe.target(target)
            symbol_bars = input_for(bars, symbol)

            def compute() -> Computed:
                table = build_labels(symbol_bars.load(), spec)
                known = table.filter(pl.col("label").is_not_null())
                balance = (
                    {"positive_rate": finite_or_none(known["label"].mean())}
                    if spec.task == "classification"
                    else {
                        "label_mean": finite_or_none(known["label"].mean()),
                        "label_std": finite_or_none(known["label"].std()),
                    }
                )
                return Computed(
                    table,
                    metadata={
                        "rows": table.height,
                        "labelled_rows": known.height,
                        "task": spec.task,
                        "spec": dg.MetadataValue.json(spec.model_dump(mode="json")),
                        **balance,
                        **{f"{k}_timestamp": v for k, v in date_range(known).items()},
                    },
                )

            return PartitionWork({"bars": symbol_bars}, labels_config(universe, target), compute)

        yield from materialize_partitions(context, artifact_store.store(), work_for)

    @dg.asset(
        key=TARGET_RANKINGS,
        automation_condition=FOLLOWS_UPSTREAM,
        pool=CPU_POOL,
        op_tags=step_pod_tags(universe.kubernetes, gpu=False, labels={"step": "target_rankings"}),
        ins={
            "features": dg.AssetIn(FEATURES, partition_mapping=by_symbol, dagster_type=HANDLE_OR_RANGE),
            "labels": dg.AssetIn(LABELS, dagster_type=HANDLE_OR_RANGE),
        },
        partitions_def=partitions,
        backfill_policy=backfill_policy,
        group_name="targets",
        code_version=ranking_code_version(),
        kinds={"lightgbm", "scikitlearn"},
        description=(
            "How predictable this target is: purged, embargoed walk-forward CV of a quick LightGBM and a linear model."
        ),
    )
    def target_rankings(
        context: dg.AssetExecutionContext,
        artifact_store: ArtifactStoreResource,
        features: HandleOrRange,
        labels: HandleOrRange,
    ) -> Iterator[dg.Output]:
        def work_for(key: str) -> PartitionWork:
            symbol, target = cell_of(key)
            spec = universe.target(target)
            inputs = {"features": input_for(features, symbol), "labels": input_for(labels, key)}

            def compute() -> Computed:
                dataset = build_dataset(inputs["features"].load(), inputs["labels"].load())
                ranking = rank_target(
                    dataset.x,
                    dataset.y,
                    spec.task,
                    label_horizon(spec),
                    universe.split,
                    universe.ranking,
                    seed=universe.seed,
                )
                context.log.info(f"{symbol} {target}: {ranking.reason}")
                folds = [
                    {"model": model, **{f"fold_{i + 1}": finite_or_none(score) for i, score in enumerate(scores)}}
                    for model, scores in ranking.fold_scores.items()
                ]
                fold_columns = [
                    "model",
                    *[f"fold_{i + 1}" for i in range(max((len(s) for s in ranking.fold_scores.values()), default=0))],
                ]
                return Computed(
                    {
                        "symbol": symbol,
                        "target": target,
                        "task": spec.task,
                        "rows": len(dataset.y),
                        **ranking.to_dict(),
                    },
                    metadata={
                        "passed": ranking.passed,
                        "score": finite_or_none(ranking.score),
                        "stability": finite_or_none(ranking.stability),
                        "bar": ranking.bar,
                        "best_model": ranking.best_model,
                        "decision": ranking.reason,
                        "fold_scores": markdown_table(folds, fold_columns),
                        "rows": len(dataset.y),
                    },
                )

            return PartitionWork(inputs, ranking_config(universe, target), compute)

        yield from materialize_partitions(context, artifact_store.store(), work_for)

    @dg.asset(
        key=FEATURE_SETS,
        automation_condition=FOLLOWS_UPSTREAM,
        pool=CPU_POOL,
        op_tags=step_pod_tags(universe.kubernetes, gpu=False, labels={"step": "feature_sets"}),
        ins={
            "features": dg.AssetIn(FEATURES, partition_mapping=by_symbol, dagster_type=HANDLE_OR_RANGE),
            "labels": dg.AssetIn(LABELS, dagster_type=HANDLE_OR_RANGE),
            "target_rankings": dg.AssetIn(TARGET_RANKINGS, dagster_type=HANDLE_OR_RANGE),
        },
        partitions_def=partitions,
        backfill_policy=backfill_policy,
        group_name="targets",
        code_version=selection_code_version(),
        kinds={"lightgbm"},
        description=(
            "Features selected for this target (gain and permutation importance on held-out folds, kept when stable); "
            "empty when ranking gated the target."
        ),
    )
    def feature_sets(
        context: dg.AssetExecutionContext,
        artifact_store: ArtifactStoreResource,
        features: HandleOrRange,
        labels: HandleOrRange,
        target_rankings: HandleOrRange,
    ) -> Iterator[dg.Output]:
        def work_for(key: str) -> PartitionWork:
            symbol, target = cell_of(key)
            spec = universe.target(target)
            inputs = {
                "features": input_for(features, symbol),
                "labels": input_for(labels, key),
                "target_rankings": input_for(target_rankings, key),
            }

            def compute() -> Computed:
                ranking = inputs["target_rankings"].load()
                if not ranking["passed"]:
                    reason = f"not trained: {ranking['reason']}"
                    context.log.info(f"{symbol} {target}: {reason}")
                    return Computed(
                        {
                            "symbol": symbol,
                            "target": target,
                            "gated": True,
                            "reason": reason,
                            "selected": [],
                            "importances": [],
                        },
                        metadata={"gated": True, "decision": reason, "ranking_score": ranking.get("score")},
                    )
                dataset = build_dataset(inputs["features"].load(), inputs["labels"].load())
                selection = select_features(
                    dataset.x,
                    dataset.y,
                    dataset.feature_names,
                    spec.task,
                    label_horizon(spec),
                    universe.split,
                    universe.selection,
                    seed=universe.seed,
                )
                context.log.info(
                    f"{symbol} {target}: selected {len(selection.selected)} of {len(dataset.feature_names)} features: "
                    f"{selection.selected}"
                )
                result = {"symbol": symbol, "target": target, "gated": False, "reason": "", **selection.to_dict()}
                importance_rows = sorted(result["importances"], key=lambda row: -(row.get("permutation_mean") or 0.0))
                return Computed(
                    result,
                    metadata={
                        "gated": False,
                        "selected_count": len(selection.selected),
                        "selected": ", ".join(selection.selected),
                        "importances": markdown_table(
                            importance_rows,
                            ["feature", "selected", "permutation_mean", "permutation_std", "gain_mean", "stability"],
                        ),
                    },
                )

            return PartitionWork(inputs, selection_config(universe, target), compute)

        yield from materialize_partitions(context, artifact_store.store(), work_for)

    return [labels, target_rankings, feature_sets]
