"""`models/<family>`: one asset per model family (symbol x target), made by a factory.

One asset per family rather than a third partition dimension (Dagster allows two): each family
gets its own code version, compute kind, retry policy and lineage.
"""

from collections.abc import Iterator
from functools import partial
from typing import Any

import dagster as dg

from intelligence_assets.cells.hyperparameter_search import searched_params
from intelligence_assets.cells.training import Cell, Provenance, track_cell, train_cell
from intelligence_assets.config.universe import Universe
from intelligence_assets.defs.assets.caching import Computed, PartitionWork, materialize_partitions, resolved
from intelligence_assets.defs.assets.hyperparameter_search import search_key
from intelligence_assets.defs.assets.market_data import annualisation_config
from intelligence_assets.defs.assets.planning import PlanningContext, plans
from intelligence_assets.defs.assets.target_analysis import cell_handles, training_backfill_policy, training_ins
from intelligence_assets.defs.automation.conditions import FOLLOWS_UPSTREAM
from intelligence_assets.defs.checks import leakage_sentinel_result, leakage_sentinel_spec
from intelligence_assets.defs.gpus import GpuPlacement, StepDevice
from intelligence_assets.defs.partitions import cell_of, symbol_target_partitions
from intelligence_assets.defs.pods import step_pod_tags
from intelligence_assets.defs.pools import CPU_POOL, GPU_POOL
from intelligence_assets.defs.resources.artifact_store import ArtifactStoreResource
from intelligence_assets.defs.resources.io_manager import HANDLE_OR_RANGE
from intelligence_assets.defs.resources.mlflow_tracking import MlflowTrackingResource
from intelligence_assets.ml.families import load_family
from intelligence_assets.ml.trained_model import TrainedModel
from intelligence_assets.store.artifacts import ArtifactHandle, HandleOrRange, Manifest
from intelligence_assets.store.keys import MODELS

MODEL_KEY_PREFIX = MODELS
# The input a searched family's models read their params from.
SEARCH_INPUT = "hyperparameter_search"

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
    kinds = set(family.kinds)
    ins = training_ins()
    searched = universe.model_families[family_name].search is not None
    if searched:
        # An input, so a new search result (its fingerprint) makes the cell's model stale.
        ins[SEARCH_INPUT] = dg.AssetIn(search_key(family_name), dagster_type=HANDLE_OR_RANGE)

    # A multi_asset of one asset, for `can_subset`: its check is then an optional output, so a
    # ranged run can report each partition's leakage sentinel as that partition's evaluation.
    # `@asset` cannot say so: it makes every check a required output.
    @dg.multi_asset(
        name=key.to_python_identifier(),
        outs={
            key.to_python_identifier(): dg.AssetOut(
                key=key,
                group_name="models",
                code_version=f"1.{family.version}",
                kinds=kinds,
                tags={"family": family_name, "device": "gpu" if gpu else "cpu"},
                automation_condition=FOLLOWS_UPSTREAM,
                description=f"{family_name} model per symbol x target: fitted with early stopping "
                "on the development period, scored on the held-out test period.",
            )
        },
        ins=ins,
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
        **inputs: HandleOrRange,
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        with GpuPlacement(universe).step_device(context, family_name) as device:
            work_for = partial(_partition_work, context, mlflow_tracking, universe, family_name, inputs, device)
            yield from materialize_partitions(context, artifact_store.store(), work_for)

    return model


def _partition_work(
    context: dg.AssetExecutionContext,
    mlflow_tracking: MlflowTrackingResource,
    universe: Universe,
    family_name: str,
    inputs: dict[str, HandleOrRange],
    device: StepDevice,
    partition_key: str,
) -> PartitionWork:
    """One symbol x target's model: its inputs and config (its fingerprint), how to train it and
    how to track it once committed."""
    symbol, target = cell_of(partition_key)
    cell = Cell(universe, family_name, symbol, target)
    handles = cell_handles(inputs, partition_key)
    config = model_config(universe, family_name, symbol, target)
    provenance = Provenance(context.run.run_id, model_key(family_name).to_user_string(), partition_key, device.tags())
    return PartitionWork(
        handles,
        config,
        partial(_train, context, cell, handles, device),
        after_commit=partial(_track, context, mlflow_tracking, cell, resolved(config), provenance),
    )


def _train(
    context: dg.AssetExecutionContext, cell: Cell, handles: dict[str, ArtifactHandle], device: StepDevice
) -> Computed:
    """Train the cell (with its search's best params, if its family is searched); its leakage
    sentinel judges the held-out scores, searched or not."""
    search = handles[SEARCH_INPUT].load() if SEARCH_INPUT in handles else None
    params = searched_params(search, cell.universe.model_families[cell.family].params)
    trained = train_cell(
        cell,
        handles["feature_sets"].load(),
        handles["features"].load,
        handles["labels"].load,
        log=context.log.debug,
        params=params,
    )
    check = leakage_sentinel_result(
        model_key(cell.family), cell.spec.kind, trained.metrics, cell.universe.leakage_sentinel
    )
    metadata = {**trained.metadata, **device.metadata()} if trained.model.trained else trained.metadata
    return Computed(trained.model, metadata=metadata, checks=[check])


def _track(
    context: dg.AssetExecutionContext,
    mlflow_tracking: MlflowTrackingResource,
    cell: Cell,
    config: dict[str, Any],
    provenance: Provenance,
    stored: ArtifactHandle,
    manifest: Manifest,
    computed: TrainedModel | None,
) -> dict[str, Any]:
    """Log the committed model to MLflow (once per fingerprint) and link the run."""
    tracked = track_cell(
        cell, mlflow_tracking.tracker, stored, manifest, computed, config, provenance, log=context.log.debug
    )
    # Built from this deployment's MLflow address, not the one stored when the model was tracked.
    links = mlflow_tracking.links()
    metadata: dict[str, Any] = {
        "mlflow_run": dg.MetadataValue.url(links.mlflow_run(tracked.experiment_id, tracked.run_id)),
        "mlflow_run_id": tracked.run_id,
    }
    if tracked.version and tracked.registered_model:
        metadata["mlflow_model"] = tracked.model_uri
        metadata["mlflow_model_version"] = dg.MetadataValue.url(
            links.mlflow_model_version(tracked.registered_model, tracked.version)
        )
    return metadata


def build_model_assets(universe: Universe) -> list[dg.AssetsDefinition]:
    return [build_model_asset(name, universe) for name in universe.model_families]


@plans(dg.AssetKey([MODEL_KEY_PREFIX]))
def planned_model_config(context: PlanningContext) -> dict[str, Any]:
    """What the planner hashes for a `models/<family>` partition: the config the asset hashes."""
    family = context.asset_key.path[-1]
    return model_config(context.universe, family, context.symbol, context.target)
