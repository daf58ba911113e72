"""`make demo`: materialize the whole graph for the bundled universe on the embedded default.

Runs go through the persistent Dagster instance in DAGSTER_HOME, so the UI (`make ui`) shows
every run, materialization, check and lineage afterwards. Partitions run in-process, spread over
a small pool of worker processes (one per core): a per-step subprocess would cost more than
most steps compute.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import dagster as dg
import polars as pl

from intelligence_assets.partitions import RANGE_END_TAG, RANGE_START_TAG, SYMBOL_DIMENSION, TARGET_DIMENSION, cell_key, cell_of
from intelligence_assets.processes import available_cores, forked_pool, prepare_worker, worker_libraries, worker_threads
from intelligence_assets.universe import Universe, load_universe

@dataclass
class _Worker:
    definitions: dg.Definitions
    instance: dg.DagsterInstance


_worker: _Worker | None = None


def _load_worker(libraries: tuple[str, ...], threads: int) -> None:
    global _worker  # one Definitions and one instance per worker process, for all its runs
    from intelligence_assets.definitions import defs

    _worker = _Worker(defs, dg.DagsterInstance.get())
    prepare_worker(libraries, threads)


# A run's partitions: one key, a (first, last) range of partitions (`symbol`, or a rectangle of
# `symbol|target` keys), or None (unpartitioned).
RunPartitions = str | tuple[str, str] | None


@dataclass
class PartitionRun:
    job_name: str
    partition_key: str | None
    success: bool
    seconds: float
    run_id: str
    cache: dict[str, int]  # "hit" / "miss" -> materializations
    started_at: float  # wall clock (time.time), comparable across workers


@dataclass
class StageTiming:
    job_name: str
    runs: int
    seconds: float
    cache: dict[str, int]


def _run_partition(job_name: str, partitions: RunPartitions, log_level: str) -> PartitionRun:
    assert _worker is not None
    started_at, started = time.time(), time.perf_counter()
    job = _worker.definitions.resolve_job_def(job_name)
    partition_key: str | dg.MultiPartitionKey | None = None
    tags = {}
    if isinstance(partitions, tuple):  # a ranged run, as a BackfillPolicy chunk runs
        tags = {RANGE_START_TAG: partitions[0], RANGE_END_TAG: partitions[1]}
    elif partitions is not None and "|" in partitions:
        symbol, target = cell_of(partitions)
        partition_key = dg.MultiPartitionKey({SYMBOL_DIMENSION: symbol, TARGET_DIMENSION: target})
    else:
        partition_key = partitions
    result = job.execute_in_process(
        instance=_worker.instance,
        partition_key=partition_key,
        tags=tags,
        raise_on_error=False,
        # Our own progress lines (INFO) on the console; Dagster's event stream stays in the UI.
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
    )
    cache = Counter(str(event.materialization.metadata["cache"].value) for event in result.get_asset_materialization_events())
    label = "..".join(partitions) if isinstance(partitions, tuple) else partitions
    return PartitionRun(job_name, label, result.success, time.perf_counter() - started, result.run_id, dict(cache), started_at)


def run_stage(pool: ProcessPoolExecutor, job_name: str, partition_keys: list[RunPartitions], log_level: str) -> StageTiming:
    """Queue a stage's runs on the pool and wait for them."""
    if not partition_keys:
        print(f"  {job_name}: nothing to run", flush=True)
        return StageTiming(job_name, 0, 0.0, {})
    queued = [pool.submit(_run_partition, job_name, key, log_level) for key in partition_keys]
    results = [run.result() for run in queued]
    cache = sum((Counter(run.cache) for run in results), Counter())
    # From the first run's start, not from queueing: the first stage's runs wait for the workers
    # to be forked, which is not the stage's own time.
    seconds = max(run.started_at + run.seconds for run in results) - min(run.started_at for run in results)
    timing = StageTiming(job_name, len(results), seconds, dict(cache))
    print(f"  {job_name}: {timing.runs} runs in {timing.seconds:.1f}s (cache hits {cache['hit']}, misses {cache['miss']})", flush=True)
    failed = [run for run in results if not run.success]
    if failed:
        for run in failed:
            print(f"    FAILED partition {run.partition_key}: run {run.run_id} (open it in `make ui`)", file=sys.stderr)
        raise SystemExit(f"{job_name} failed for {len(failed)} partition(s)")
    return timing


def worker_pool(workers: int, libraries: tuple[str, ...] = ()) -> ProcessPoolExecutor:
    """Worker processes that run in-process Dagster runs: forked from a server that has imported
    Dagster and `libraries` once; each loads the Definitions and an instance for all its runs,
    and caps its native thread pools (`prepare_worker`)."""
    return forked_pool(workers, libraries, _load_worker, (libraries, worker_threads(workers)))


def materialize_universe(universe: Universe, workers: int, log_level: str = "INFO", every_partition: bool = False) -> list[StageTiming]:
    """Every stale partition of every asset, stage by stage, on the instance in DAGSTER_HOME.

    The planner asks the artifact store which partitions' fingerprints are already current;
    only the others get a run (`every_partition` launches a run for all of them regardless,
    and the cache answers inside each run).
    """
    from intelligence_assets.assets.target_analysis import TARGET_ANALYSIS_ASSETS
    from intelligence_assets.definitions import LEADERBOARD_JOB, MARKET_DATA_JOB, PREDICTIONS_JOB, REGISTRY_JOB, TRAINING_JOB, build_assets
    from intelligence_assets.deployment import DeploymentSettings
    from intelligence_assets.partitions import register_symbols
    from intelligence_assets.planning import code_versions_of, partition_ranges, plan_runs, training_ranges

    added = register_symbols(dg.DagsterInstance.get(), universe.symbols)
    print(f"Universe: {len(universe.symbols)} symbols x {len(universe.targets)} targets x {len(universe.model_families)} model families; "
          f"registered {len(added)} new symbol partitions. Workers: {workers}", flush=True)
    deployment = DeploymentSettings.from_environment()
    store = deployment.artifact_store()
    code_versions = code_versions_of(build_assets(universe))
    started = time.perf_counter()
    bars_source = deployment.bars_source(universe)
    plan = plan_runs(universe, store, code_versions, universe.symbols, bars_source)
    print(f"Plan ({time.perf_counter() - started:.1f}s): {len(plan.stale)} asset partitions need a run, "
          f"{len(plan.fresh)} are current in the artifact store", flush=True)
    cells = [cell_key(symbol, target) for symbol in universe.symbols for target in universe.target_names]
    model_assets = [f"models/{family}" for family in universe.model_families]
    stale_cells = cells if every_partition else plan.partitions([*TARGET_ANALYSIS_ASSETS, *model_assets])
    per_run = universe.automation.backfill_partitions_per_run
    ordered = dg.DagsterInstance.get().get_dynamic_partitions(SYMBOL_DIMENSION)  # ranges follow the partitions' own order
    stages = [
        (MARKET_DATA_JOB, list(universe.symbols) if every_partition else plan.partitions(["bars", "features"])),
        (TRAINING_JOB, training_ranges(ordered, universe.target_names, stale_cells, per_run, plan.bars_rows)),
        (LEADERBOARD_JOB, [None] if every_partition or plan.needs_run("model_leaderboard") else []),
        (REGISTRY_JOB, [None] if every_partition or plan.needs_run("model_registry") else []),
    ]
    if not any(keys for _, keys in stages) and not plan.partitions(["predictions"]):
        print("Nothing to run: every partition is current.", flush=True)
        return [StageTiming(job, 0, 0.0, {}) for job, _ in stages]
    with worker_pool(workers, worker_libraries(universe)) as pool:
        # While the workers' server imports, this process creates (or migrates) the MLflow store
        # and reaches it once, rather than a worker's first run waiting on it. Only then the
        # first runs: queueing one waits until the server can fork a worker.
        deployment.mlflow_tracking_resource().tracker().client.search_experiments(max_results=1)
        timings = [run_stage(pool, job, keys, log_level) for job, keys in stages]
        # Which predictions are stale depends on what the registry step just decided.
        after_registry = plan_runs(universe, store, code_versions, universe.symbols, bars_source)
        keys = list(universe.symbols) if every_partition else after_registry.partitions(["predictions"])
        # predictions carry a BackfillPolicy: chunks of symbols per run, as a Dagster backfill
        # runs them, no bigger than an equal share per worker so that every worker gets one.
        per_worker = max(1, -(-len(keys) // workers))
        timings.append(run_stage(pool, PREDICTIONS_JOB, partition_ranges(ordered, keys, min(per_run, per_worker)), log_level))
    return timings


def print_results(leaderboard: pl.DataFrame, registry: pl.DataFrame) -> None:
    from intelligence_assets.assets.leaderboard import cells_without_candidate

    columns = ["symbol", "target", "family", "metric", "score", "sharpe", "buy_and_hold_sharpe", "test_rows"]
    with pl.Config(tbl_rows=200, tbl_cols=20, tbl_width_chars=200, fmt_str_lengths=80, float_precision=4, tbl_hide_dataframe_shape=True):
        trained = leaderboard.filter(pl.col("trained"))
        print(f"\nAll trained models ({trained.height}), best first within each symbol x target:")
        print(trained.select(columns + ["leakage_suspect"]))
        champions = registry.filter(pl.col("champion_version").is_not_null())
        print(f"\nChampions in the MLflow registry ({champions.height}; load with mlflow.pyfunc.load_model(<uri>)):")
        print(champions.select("symbol", "target", "champion_family", "champion_version", "metric", "champion_score", "champion_uri", "action"))
        without_skill = cells_without_candidate(leaderboard)
        if without_skill.height:
            print(f"\nNo champion: {without_skill.height} trained cells where no model beats no skill on held-out data:")
            print(without_skill.select("symbol", "target", "best_score"))
        gated = leaderboard.filter(~pl.col("trained")).select("symbol", "target", "reason").unique().sort("symbol", "target")
        if gated.height:
            print(f"\nNot trained: {gated.height} symbol x target cells below the ranking bar, e.g.")
            print(gated.head(8))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=available_cores())
    parser.add_argument("--every-partition", action="store_true", help="launch a run for every partition, not only the stale ones")
    args = parser.parse_args(argv)
    if not os.environ.get("DAGSTER_HOME"):
        raise SystemExit("DAGSTER_HOME is not set; run `make demo`, which sets it to .dagster_home/")

    from intelligence_assets.deployment import DeploymentSettings
    from intelligence_assets.resources.artifacts import read_value

    started = time.perf_counter()
    materialize_universe(load_universe(), args.workers, every_partition=args.every_partition)

    store = DeploymentSettings.from_environment().artifact_store()
    print_results(read_value(store, "model_leaderboard"), read_value(store, "model_registry"))
    print(f"\nDemo finished in {time.perf_counter() - started:.0f}s.")
    print("Where to look next:")
    print("  make ui              Dagster UI on http://127.0.0.1:3000 : asset graph, runs, metadata, checks, lineage")
    print("  make mlflow-ui       MLflow UI on http://127.0.0.1:5000 : experiments per target, runs, registry and aliases")
    print(f"  artifacts            {store.location}")
    print("  leaderboard          model_leaderboard/<fingerprint>/data.parquet in the artifact store (current.json names the fingerprint)")
    print("  a rerun              `make demo` again: unchanged partitions are cache hits")


if __name__ == "__main__":
    main()
