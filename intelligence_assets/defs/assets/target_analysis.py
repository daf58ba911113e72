"""`labels`, `target_rankings` and `feature_sets`: one partition per symbol x target.

Ranking gates training: below the configured bar, `feature_sets` records why and selects
nothing, and every model family skips the partition with the same reason in its metadata.
"""

from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any

import dagster as dg

from intelligence_assets.cells import target_analysis as analysis
from intelligence_assets.config.universe import Universe
from intelligence_assets.defs.assets.caching import Computed, PartitionWork, input_for, materialize_partitions
from intelligence_assets.defs.assets.market_data import BARS, FEATURES
from intelligence_assets.defs.assets.metadata import date_range, table_metadata
from intelligence_assets.defs.assets.planning import PlanningContext, plans
from intelligence_assets.defs.automation.conditions import FOLLOWS_UPSTREAM
from intelligence_assets.defs.partitions import by_symbol, cell_of, symbol_target_partitions
from intelligence_assets.defs.pods import step_pod_tags
from intelligence_assets.defs.pools import CPU_POOL
from intelligence_assets.defs.resources.artifact_store import ArtifactStoreResource
from intelligence_assets.defs.resources.io_manager import HANDLE_OR_RANGE
from intelligence_assets.ml.metrics import finite_or_none
from intelligence_assets.ml.ranking import ranking_code_version
from intelligence_assets.ml.selection import selection_code_version
from intelligence_assets.ml.targets import label_horizon
from intelligence_assets.store.artifacts import ArtifactHandle, HandleOrRange

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


def walk_forward_config(universe: Universe, target: str, **settings: Any) -> dict[str, Any]:
    """What a cell's walk-forward problem depends on (see `TargetCell.problem`), with `settings`,
    those of what the stage fits on it."""
    spec = universe.target(target)
    return {
        "split": universe.split,
        **settings,
        "seed": universe.seed,
        "task": spec.task,
        "horizon": label_horizon(spec),
    }


def ranking_config(universe: Universe, target: str) -> dict[str, Any]:
    return walk_forward_config(universe, target, ranking=universe.ranking)


def selection_config(universe: Universe, target: str) -> dict[str, Any]:
    return walk_forward_config(universe, target, selection=universe.selection)


@plans(LABELS)
def planned_labels_config(context: PlanningContext) -> Any:
    return labels_config(context.universe, context.target)


@plans(TARGET_RANKINGS)
def planned_ranking_config(context: PlanningContext) -> dict[str, Any]:
    return ranking_config(context.universe, context.target)


@plans(FEATURE_SETS)
def planned_selection_config(context: PlanningContext) -> dict[str, Any]:
    return selection_config(context.universe, context.target)


def target_stage_attributes(universe: Universe) -> dict[str, Any]:
    """What every asset of the target stage shares: one partition per symbol x target, ranged
    backfills, recomputed when its inputs change."""
    return {
        "automation_condition": FOLLOWS_UPSTREAM,
        "partitions_def": symbol_target_partitions(universe),
        "backfill_policy": training_backfill_policy(universe),
        "group_name": "targets",
    }


def model_fitting_step(universe: Universe, step: str) -> dict[str, Any]:
    """The pool and pod of a step that fits quick models on the CPU (ranking, selection)."""
    return {"pool": CPU_POOL, "op_tags": step_pod_tags(universe.kubernetes, gpu=False, labels={"step": step})}


def labels_metadata(cell: analysis.TargetCell, labels: analysis.CellLabels) -> dict[str, Any]:
    return {
        "rows": labels.table.height,
        "labelled_rows": labels.labelled.height,
        "task": cell.spec.task,
        "spec": dg.MetadataValue.json(cell.spec.model_dump(mode="json")),
        **labels.balance,
        **{f"{k}_timestamp": v for k, v in date_range(labels.labelled).items()},
    }


def ranking_metadata(ranked: analysis.RankedCell) -> dict[str, Any]:
    ranking = ranked.ranking
    return {
        "passed": ranking.passed,
        "score": finite_or_none(ranking.score),
        "stability": finite_or_none(ranking.stability),
        "bar": ranking.bar,
        "best_model": ranking.best_model,
        "decision": ranking.reason,
        "fold_scores": table_metadata(ranked.fold_score_rows, ranked.fold_score_columns),
        "rows": ranked.rows,
    }


def feature_set_metadata(feature_set: analysis.CellFeatureSet) -> dict[str, Any]:
    if feature_set.gated:
        return {"gated": True, "decision": feature_set.reason, "ranking_score": feature_set.ranking_score}
    selected = feature_set.selected
    return {
        "gated": False,
        "selected_count": len(selected),
        "selected": ", ".join(selected),
        "importances": table_metadata(
            feature_set.importance_rows,
            ["feature", "selected", "permutation_mean", "permutation_std", "gain_mean", "stability"],
        ),
    }


def feature_set_decision(feature_set: analysis.CellFeatureSet) -> str:
    """The log line of a cell's selection: what was selected, or why nothing was."""
    cell = feature_set.cell
    if feature_set.gated:
        return f"{cell.symbol} {cell.target}: {feature_set.reason}"
    selected = feature_set.selected
    return f"{cell.symbol} {cell.target}: selected {len(selected)} of {feature_set.candidates} features: {selected}"


# Inputs partitioned by symbol alone (`by_symbol`): a cell reads its symbol's partition of them.
SYMBOL_INPUTS = ("bars", "features")


def cell_handles(inputs: Mapping[str, HandleOrRange], key: str) -> dict[str, ArtifactHandle]:
    """A symbol x target partition's handle of each input (its symbol's, for SYMBOL_INPUTS)."""
    symbol, _ = cell_of(key)
    return {name: input_for(value, symbol if name in SYMBOL_INPUTS else key) for name, value in inputs.items()}


def training_ins() -> dict[str, dg.AssetIn]:
    """What a model family's assets read per cell (its models, its search): the symbol's features,
    the cell's labels and the features selected for it."""
    return {
        "features": dg.AssetIn(FEATURES, partition_mapping=by_symbol, dagster_type=HANDLE_OR_RANGE),
        "labels": dg.AssetIn(LABELS, dagster_type=HANDLE_OR_RANGE),
        "feature_sets": dg.AssetIn(FEATURE_SETS, dagster_type=HANDLE_OR_RANGE),
    }


def materialize_cells(
    context: dg.AssetExecutionContext,
    artifact_store: ArtifactStoreResource,
    universe: Universe,
    inputs: Mapping[str, HandleOrRange],
    config: Callable[[Universe, str], Any],
    compute: Callable[[analysis.TargetCell, dict[str, ArtifactHandle]], Computed],
) -> Iterator[dg.Output]:
    """Materialize each symbol x target partition of the run: its handles of `inputs` and its
    `config` make its fingerprint; on a cache miss, `compute` makes its value."""

    def work_for(key: str) -> PartitionWork:
        cell = analysis.TargetCell(universe, *cell_of(key))
        handles = cell_handles(inputs, key)
        return PartitionWork(handles, config(universe, cell.target), partial(compute, cell, handles))

    yield from materialize_partitions(context, artifact_store.store(), work_for)


def build_target_analysis_assets(universe: Universe) -> list[dg.AssetsDefinition]:
    stage = target_stage_attributes(universe)
    # A cell's dataset: the symbol's features and the cell's labels.
    dataset_ins = {
        "features": dg.AssetIn(FEATURES, partition_mapping=by_symbol, dagster_type=HANDLE_OR_RANGE),
        "labels": dg.AssetIn(LABELS, dagster_type=HANDLE_OR_RANGE),
    }

    @dg.asset(
        key=LABELS,
        ins={"bars": dg.AssetIn(BARS, partition_mapping=by_symbol, dagster_type=HANDLE_OR_RANGE)},
        code_version="1",
        kinds={"polars"},
        description="One target column built from its spec; label windows look only at the next `horizon` bars.",
        **stage,
    )
    def labels(
        context: dg.AssetExecutionContext, artifact_store: ArtifactStoreResource, **inputs: HandleOrRange
    ) -> Iterator[dg.Output]:
        def label(cell: analysis.TargetCell, handles: dict[str, ArtifactHandle]) -> Computed:
            labelled = analysis.label_cell(cell, handles["bars"].load())
            return Computed(labelled.table, metadata=labels_metadata(cell, labelled))

        yield from materialize_cells(context, artifact_store, universe, inputs, labels_config, label)

    @dg.asset(
        key=TARGET_RANKINGS,
        ins=dataset_ins,
        code_version=ranking_code_version(),
        kinds={"lightgbm", "scikitlearn"},
        description=(
            "How predictable this target is: purged, embargoed walk-forward CV of a quick LightGBM and a linear model."
        ),
        **stage,
        **model_fitting_step(universe, "target_rankings"),
    )
    def target_rankings(
        context: dg.AssetExecutionContext, artifact_store: ArtifactStoreResource, **inputs: HandleOrRange
    ) -> Iterator[dg.Output]:
        def rank(cell: analysis.TargetCell, handles: dict[str, ArtifactHandle]) -> Computed:
            ranked = analysis.rank_cell(cell, handles["features"].load(), handles["labels"].load())
            context.log.debug(f"{cell.symbol} {cell.target}: {ranked.ranking.reason}")
            return Computed(ranked.value, metadata=ranking_metadata(ranked))

        yield from materialize_cells(context, artifact_store, universe, inputs, ranking_config, rank)

    @dg.asset(
        key=FEATURE_SETS,
        ins={**dataset_ins, "target_rankings": dg.AssetIn(TARGET_RANKINGS, dagster_type=HANDLE_OR_RANGE)},
        code_version=selection_code_version(),
        kinds={"lightgbm"},
        description=(
            "Features selected for this target (gain and permutation importance on held-out folds, kept when stable); "
            "empty when ranking gated the target."
        ),
        **stage,
        **model_fitting_step(universe, "feature_sets"),
    )
    def feature_sets(
        context: dg.AssetExecutionContext, artifact_store: ArtifactStoreResource, **inputs: HandleOrRange
    ) -> Iterator[dg.Output]:
        def select(cell: analysis.TargetCell, handles: dict[str, ArtifactHandle]) -> Computed:
            ranking = handles["target_rankings"].load()
            feature_set = analysis.select_cell_features(cell, ranking, handles["features"].load, handles["labels"].load)
            context.log.debug(feature_set_decision(feature_set))
            return Computed(feature_set.value, metadata=feature_set_metadata(feature_set))

        yield from materialize_cells(context, artifact_store, universe, inputs, selection_config, select)

    return [labels, target_rankings, feature_sets]
