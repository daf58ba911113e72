"""`make demo`: materialize the whole graph for the bundled universe on the embedded default.

Runs go through the persistent Dagster instance in DAGSTER_HOME, so the UI (`make ui`) shows
every run, materialization, check and lineage afterwards. Partitions run in-process, spread over
a small pool of worker processes (one per core): a per-step subprocess would cost more than
most steps compute.
"""

from __future__ import annotations

import argparse
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import dagster as dg
import polars as pl

from intelligence_assets.cli.home import (
    event_log_kept_open,
    hold_storage_connections,
    holding_home,
    open_instance_or_explain,
)
from intelligence_assets.config.universe import Universe, exit_on_configuration_error, load_universe
from intelligence_assets.defs.partitions import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    SYMBOL_DIMENSION,
    TARGET_DIMENSION,
    cell_key,
    cell_of,
)
from intelligence_assets.defs.processes import (
    available_cores,
    collector_paused,
    forked_pool,
    prepare_worker,
    worker_libraries,
    worker_threads,
)


@dataclass
class _Worker:
    definitions: dg.Definitions
    instance: dg.DagsterInstance


_worker: _Worker | None = None


class _BarsChecksGatedInTheirStep(logging.Filter):
    """Drops Dagster's warning that a ranged `bars` step's blocking checks emitted no result, so
    `features` "will proceed without gating on it", once per check and run: the step reports
    each symbol's checks under its partition and fails the blocked symbols itself, which keeps
    everything below them from running (`caching.materialize_partitions`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "emitted no result in step 'bars'" not in record.getMessage()


def _load_worker(libraries: tuple[str, ...], threads: int) -> None:
    global _worker  # one Definitions and one instance per worker process, for all its runs
    from intelligence_assets.definitions import defs

    _worker = _Worker(defs, hold_storage_connections(dg.DagsterInstance.get()))
    logging.getLogger("dagster._core.execution.plan.active").addFilter(_BarsChecksGatedInTheirStep())
    prepare_worker(libraries, threads)


# A run's partitions: one key, a (first, last) range of partitions (`symbol`, or a rectangle of
# `symbol|target` keys), or None (unpartitioned).
RunPartitions = str | tuple[str, str] | None


# The demo cuts its own ranged runs, rather than launching Dagster backfills, to run them on its
# pool of in-process workers; the retrain schedule leaves the cutting to Dagster.
def partition_ranges(ordered_keys: list[str], stale: Collection[str], max_per_run: int) -> list[tuple[str, str]]:
    """What Dagster's multi-run BackfillPolicy launches: contiguous runs of stale keys (in the
    partitions' own order), cut into chunks of at most `max_per_run`."""
    stale_set = stale if isinstance(stale, (set, frozenset)) else set(stale)
    ranges: list[tuple[str, str]] = []
    chunk: list[str] = []
    for key in ordered_keys:
        if key in stale_set and len(chunk) < max_per_run:
            chunk.append(key)
            continue
        if chunk:
            ranges.append((chunk[0], chunk[-1]))
        chunk = [key] if key in stale_set else []
    if chunk:
        ranges.append((chunk[0], chunk[-1]))
    return ranges


def training_ranges(
    symbols: list[str],
    target_names: list[str],
    stale_cells: list[str],
    max_per_run: int,
    bars_rows: dict[str, int],
    workers: int = 1,
) -> list[tuple[str, str]]:
    """The training stage (symbol x target) as ranged runs, cut as Dagster's multi-run
    BackfillPolicy cuts a backfill of a two-dimensional subset: grouped by whichever dimension
    has fewer stale keys (symbol on a tie), each group's contiguous stale keys in chunks of at
    most `max_per_run`. `symbols` in the partitions' own order. Grouped by symbol, the biggest
    symbols (most bars) go first: a pool hands runs out in order, so the long ones start early.

    When that leaves fewer runs than workers, each group is cut into equal chunks instead, about
    two runs per worker: one run per symbol would leave most of a large pool idle while the
    biggest symbol trains. (With at least a run per worker, cutting finer cost as much in runs as
    it saved at the end.)"""
    stale = set(stale_cells)
    stale_symbols = {cell_of(cell)[0] for cell in stale}
    stale_targets = {cell_of(cell)[1] for cell in stale}
    if len(stale_symbols) <= len(stale_targets):
        groups = [
            [cell_key(symbol, target) for target in target_names]
            for symbol in sorted(symbols, key=lambda s: -bars_rows.get(s, 0))
        ]
    else:
        groups = [[cell_key(symbol, target) for symbol in symbols] for target in target_names]
    ranges = [chunk for keys in groups for chunk in partition_ranges(keys, stale, max_per_run)]
    balanced = max(1, -(-len(stale) // (2 * workers)))
    if len(ranges) >= workers or balanced >= max_per_run:
        return ranges
    return [chunk for keys in groups for chunk in partition_ranges(keys, stale, even_chunk(keys, stale, balanced))]


def even_chunk(keys: list[str], stale: Collection[str], max_per_run: int) -> int:
    """The chunk size that cuts a group's stale keys into as few runs of at most `max_per_run`
    as possible, all of about the same size (6 keys at most 5 a run: 3 and 3, not 5 and 1)."""
    count = sum(key in stale for key in keys)
    runs = max(1, -(-count // max_per_run))
    return max(1, -(-count // runs))


def symbol_ranges(
    ordered: list[str], symbols: Collection[str], max_per_run: int, workers: int
) -> list[tuple[str, str]]:
    """A per-symbol stage (`bars` and `features`) as ranged runs of at most `max_per_run`
    symbols, in as many runs of about equal size as a multiple of `workers` allows, so that no
    worker is left with one run more than the others (500 symbols of at most 100 on 2 workers:
    6 runs of about 84, not 5 of 100). `ordered`: the partitions' own order."""
    count = sum(symbol in symbols for symbol in ordered)
    runs = -(-max(1, count) // max_per_run)
    runs = -(-runs // workers) * workers
    return partition_ranges(ordered, symbols, max(1, -(-count // runs)))


@dataclass(frozen=True)
class PartitionFailure:
    """One asset partition that failed (or the whole run, when the failure names none)."""

    symbol: str
    asset: str
    partition: str
    reason: str
    run_id: str

    def symbols_of_range(self) -> set[str]:
        """The symbols at both ends of the partition or range ("A|t1..B|t6" -> A, B)."""
        return {end.split("|")[0] for end in self.partition.split("..") if end and end != "-"}


# The asset of a failure that is a whole run a dead worker held.
KILLED = "(worker died)"


@dataclass
class PartitionRun:
    job_name: str
    partition_key: str | None
    success: bool
    seconds: float
    run_id: str
    cache: dict[str, int]  # "hit" / "miss" -> materializations
    started_at: float  # wall clock (time.time), comparable across workers
    failures: list[PartitionFailure] = field(default_factory=list)


@dataclass
class StageTiming:
    job_name: str
    runs: int
    seconds: float
    cache: dict[str, int]


@dataclass
class UniverseRun:
    """What `materialize_universe` did: each stage's timing, and every partition that failed."""

    stages: list[StageTiming] = field(default_factory=list)
    failures: list[PartitionFailure] = field(default_factory=list)
    session: str = field(default_factory=lambda: uuid.uuid4().hex)
    interrupted: str | None = None  # why the demo stopped before its last stage
    # The assets of the stage before training (market_data_job's): a symbol failing there has
    # nothing below it to run.
    market_data_assets: frozenset[str] = frozenset()

    @property
    def failed_symbols(self) -> set[str]:
        """Symbols that failed before the training stage (nothing below their bars can run), and
        those whose run a dead worker held (resumed by the next `make demo`)."""
        killed = {
            symbol for failure in self.failures if failure.asset == KILLED for symbol in failure.symbols_of_range()
        }
        return killed | {failure.symbol for failure in self.failures if failure.asset in self.market_data_assets}

    @property
    def failed_cells(self) -> set[str]:
        return {failure.partition for failure in self.failures if "|" in failure.partition}


def _reason(result: dg.ExecuteInProcessResult, error: object) -> str:
    """The innermost error's message (ours, not Dagster's wrapper), or for a failed blocking
    check the checks' own details."""
    failed_checks = [
        f"{check.check_name}: {check.description}" for check in result.get_asset_check_evaluations() if not check.passed
    ]
    while getattr(error, "cause", None) is not None:
        error = error.cause
    message = (getattr(error, "message", "") or "failed").strip().splitlines()[-1]
    return "; ".join(failed_checks) if failed_checks else message


def _failures_of(result: dg.ExecuteInProcessResult, label: str | None) -> list[PartitionFailure]:
    """Each failed step's partitions: named one by one when the step isolated them
    (`PartitionsFailed`), otherwise the run's own partitions."""
    from intelligence_assets.defs.assets.caching import FAILED_PARTITIONS

    failures = []
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        asset = (event.step_key or "").replace("__", "/")
        metadata = data.user_failure_data.metadata if data.user_failure_data else {}
        if FAILED_PARTITIONS in metadata:
            by_partition = metadata[FAILED_PARTITIONS].value
        else:
            by_partition = {label or "-": _reason(result, data.error)}
        for partition, reason in by_partition.items():
            failures.append(
                PartitionFailure(partition.split("|")[0].split("..")[0], asset, partition, reason, result.run_id)
            )
    if not result.success and not failures:
        failures.append(
            PartitionFailure(
                (label or "-").split("|")[0],
                "(run)",
                label or "-",
                "the run failed; open it in `make ui`",
                result.run_id,
            )
        )
    return failures


# On every run `make demo` launches: which demo launched it, so that the runs a dead worker held
# can be found and ended.
DEMO_SESSION_TAG = "intelligence/demo_session"


class WorkerDied(RuntimeError):
    """A worker process of the pool died mid-run (killed, out of memory)."""


def _run_partition(job_name: str, partitions: RunPartitions, log_level: str, session: str) -> PartitionRun:
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
    run_id = str(uuid.uuid4())  # as Dagster names runs; known before the run, to keep its event log open
    with event_log_kept_open(_worker.instance, run_id):
        result = job.execute_in_process(
            instance=_worker.instance,
            partition_key=partition_key,
            tags={**tags, DEMO_SESSION_TAG: session},
            raise_on_error=False,
            run_id=run_id,
            # Our own progress lines (INFO) on the console; Dagster's event stream stays in the UI.
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        )
    # A ranged run's partitions each log their own record (with `cache`) after the range's.
    cache = Counter(
        str(event.materialization.metadata["cache"].value)
        for event in result.get_asset_materialization_events()
        if "cache" in event.materialization.metadata
    )
    label = "..".join(partitions) if isinstance(partitions, tuple) else partitions
    return PartitionRun(
        job_name,
        label,
        result.success,
        time.perf_counter() - started,
        result.run_id,
        dict(cache),
        started_at,
        _failures_of(result, label),
    )


def run_stage(
    pool: ProcessPoolExecutor, job_name: str, partition_keys: list[RunPartitions], log_level: str, outcome: UniverseRun
) -> StageTiming:
    """Queue a stage's runs on the pool and wait for them; failures go into `outcome`, and the
    stage's healthy partitions stand whatever failed beside them."""
    if not partition_keys:
        print(f"  {job_name}: nothing to run", flush=True)
        return StageTiming(job_name, 0, 0.0, {})
    queued = [pool.submit(_run_partition, job_name, key, log_level, outcome.session) for key in partition_keys]
    results = []
    for run in queued:
        try:
            results.append(run.result())
        except BrokenProcessPool:
            outcome.failures += end_runs_of_dead_workers(outcome.session)
            raise WorkerDied(f"a worker process died during {job_name}") from None
    cache = sum((Counter(run.cache) for run in results), Counter())
    # From the first run's start, not from queueing: the first stage's runs wait for the workers
    # to be forked, which is not the stage's own time.
    seconds = max(run.started_at + run.seconds for run in results) - min(run.started_at for run in results)
    timing = StageTiming(job_name, len(results), seconds, dict(cache))
    failures = [failure for run in results for failure in run.failures]
    outcome.failures += failures
    summary = f", {len(failures)} partition(s) FAILED (summary at the end)" if failures else ""
    print(
        f"  {job_name}: {timing.runs} runs in {timing.seconds:.1f}s (cache hits {cache['hit']}, misses "
        f"{cache['miss']}){summary}",
        flush=True,
    )
    return timing


def run_market_data_stage(
    pool: ProcessPoolExecutor,
    job_name: str,
    symbols: list[str],
    ordered: list[str],
    max_per_run: int,
    workers: int,
    log_level: str,
    outcome: UniverseRun,
    still_stale: Callable[[], list[str]],
) -> None:
    """`bars` and `features` of `symbols` in ranged runs, as their BackfillPolicies launch them.

    A symbol whose bars fail (a blocking check, an unreadable file) fails alone in the `bars`
    step, but Dagster then skips the `features` step of the whole run; the healthy symbols' bars
    are committed, so the stage runs again over what is still stale (`still_stale`: a new plan)
    without the failed symbols, until nothing new fails (their bars are then cache hits). A run
    that failed without naming its partitions ends the repeats: running its other symbols again
    would most likely fail the same way."""
    while symbols:
        failures_before = len(outcome.failures)
        runs = symbol_ranges(
            ordered, {symbol for symbol in symbols if symbol not in outcome.failed_symbols}, max_per_run, workers
        )
        outcome.stages.append(run_stage(pool, job_name, list(runs), log_level, outcome))
        new_failures = outcome.failures[failures_before:]
        if not new_failures or any(".." in failure.partition for failure in new_failures):
            return
        symbols = [symbol for symbol in still_stale() if symbol not in outcome.failed_symbols]


def end_runs_of_dead_workers(session: str) -> list[PartitionFailure]:
    """Runs of this demo that a dead worker left STARTED (or never started): marked failed, so
    none stays STARTED for good, and reported with their partitions."""
    instance = dg.DagsterInstance.get()
    unfinished = instance.get_runs(
        filters=dg.RunsFilter(
            tags={DEMO_SESSION_TAG: session},
            statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING],
        )
    )
    failures = []
    for run in unfinished:
        reason = "its make demo worker process died (killed or out of memory) while running it"
        instance.report_run_failed(run, message=reason)
        tags = run.tags
        partition = (
            tags.get("dagster/partition")
            or "..".join(filter(None, (tags.get(RANGE_START_TAG), tags.get(RANGE_END_TAG))))
            or "-"
        )
        failures.append(
            PartitionFailure(partition.split("|")[0], KILLED, partition, f"{run.job_name}: {reason}", run.run_id)
        )
    return failures


def worker_pool(workers: int, libraries: tuple[str, ...] = ()) -> ProcessPoolExecutor:
    """Worker processes that run in-process Dagster runs: forked from a server that has imported
    Dagster and `libraries` once; each loads the Definitions and an instance for all its runs,
    and caps its native thread pools (`prepare_worker`)."""
    return forked_pool(workers, libraries, _load_worker, (libraries, worker_threads(workers)))


def materialize_universe(
    universe: Universe, workers: int, log_level: str = "INFO", every_partition: bool = False
) -> UniverseRun:
    """Every stale partition of every asset, stage by stage, on the instance in DAGSTER_HOME.

    The planner asks the artifact store which partitions' fingerprints are already current;
    only the others get a run (`every_partition` launches a run for all of them regardless,
    and the cache answers inside each). A partition that fails is left out of the later stages'
    runs and reported in the result; every healthy partition is still materialized.
    """
    with collector_paused():  # the definitions and the asset graph live until the demo ends
        from intelligence_assets.definitions import (
            LEADERBOARD_JOB,
            MARKET_DATA_JOB,
            PREDICTIONS_JOB,
            REGISTRY_JOB,
            SEARCH_JOB,
            TRAINING_JOB,
            build_assets,
            build_jobs,
        )
        from intelligence_assets.defs.assets.market_data import BARS
        from intelligence_assets.defs.gpus import GpuPlacement
        from intelligence_assets.defs.partitions import register_symbols, remove_symbols_not_in
        from intelligence_assets.defs.planner import asset_graph_of, plan_runs
        from intelligence_assets.defs.resources.deployment import Deployment

        deployment = Deployment.from_environment()
        assets = build_assets(universe)
        graph = asset_graph_of(assets)
        # Each stage runs its job's assets, read from the job's selection.
        stage_assets = {
            job.name: [key.to_user_string() for key in job.selection.resolve(graph)]
            for job in build_jobs(universe, deployment)
        }
    outcome = UniverseRun(market_data_assets=frozenset(stage_assets[MARKET_DATA_JOB]))
    bars_source = deployment.bars_source(universe)
    # Reported before anything is registered: a symbol without bars gets no partitions at all.
    with_files = {bars_file.symbol for bars_file in bars_source.files()}
    for symbol in universe.symbols:
        if symbol not in with_files:
            outcome.failures.append(
                PartitionFailure(
                    symbol, BARS.to_user_string(), symbol, f"no bars file: expected {bars_source.location(symbol)}", "-"
                )
            )
    symbols = [symbol for symbol in universe.symbols if symbol in with_files]
    instance = open_instance_or_explain()
    added = register_symbols(instance, symbols)
    # Symbols dropped from universe.yaml stop counting: the registry then retires their champions.
    removed = remove_symbols_not_in(instance, universe.symbols)
    print(
        f"Universe: {len(universe.symbols)} symbols x {len(universe.targets)} targets x "
        f"{len(universe.model_families)} model families; "
        f"registered {len(added)} new symbol partitions"
        + (f", removed {removed}" if removed else "")
        + f". Workers: {workers}"
        + (
            f". GPUs: {GpuPlacement(universe).inventory().describe()}"
            if any(universe.trains_on_gpu(family) for family in universe.model_families)
            else ""
        ),
        flush=True,
    )
    for failure in outcome.failures:
        print(f"  {failure.symbol}: {failure.reason}; left out", flush=True)
    store = deployment.artifact_store()
    started = time.perf_counter()
    plan = plan_runs(universe, store, assets, symbols, bars_source)
    print(
        f"Plan ({time.perf_counter() - started:.1f}s): {len(plan.stale)} asset partitions need a run, "
        f"{len(plan.fresh)} are current in the artifact store",
        flush=True,
    )
    for (asset, partition), state in sorted(plan.damaged.items(), key=str):
        print(f"  {asset} {partition}: stored artifact unusable ({state[:160]}); recomputing it", flush=True)
    training_assets = stage_assets[TRAINING_JOB]
    per_run = universe.automation.backfill_partitions_per_run
    ordered = [
        symbol for symbol in instance.get_dynamic_partitions(SYMBOL_DIMENSION) if symbol in symbols
    ]  # the partitions' own order

    def stale_cells(current_plan) -> list[str]:
        cells = (
            [cell_key(symbol, target) for symbol in symbols for target in universe.target_names]
            if every_partition
            else current_plan.partitions(training_assets)
        )
        return [
            cell
            for cell in cells
            if cell_of(cell)[0] not in outcome.failed_symbols and cell not in outcome.failed_cells
        ]

    def needs_run(current_plan, job_name: str) -> bool:  # an unpartitioned stage
        return bool(current_plan.partitions(stage_assets[job_name]))

    market_data = list(symbols) if every_partition else plan.partitions(stage_assets[MARKET_DATA_JOB])
    if (
        not removed
        and not market_data
        and not stale_cells(plan)
        and not needs_run(plan, LEADERBOARD_JOB)
        and not needs_run(plan, REGISTRY_JOB)
        and not plan.partitions(stage_assets[PREDICTIONS_JOB])
    ):
        print("Nothing to run: every partition is current.", flush=True)
        return outcome
    # A worker that dies breaks the pool: its runs are ended and reported, and the rest goes on
    # in a fresh pool once; a second death ends the demo.
    for pool_life in range(2):
        try:
            with worker_pool(workers, worker_libraries(universe)) as pool:
                # While the workers' server imports, this process creates (or migrates) the MLflow
                # store and reaches it once, rather than a worker's first run waiting on it. Only
                # then the first runs: queueing one waits until the server can fork a worker.
                deployment.mlflow_tracking_resource().tracker().client.search_experiments(max_results=1)
                run_market_data_stage(
                    pool,
                    MARKET_DATA_JOB,
                    market_data,
                    ordered,
                    per_run,
                    workers,
                    log_level,
                    outcome,
                    lambda: plan_runs(universe, store, assets, symbols, bars_source).partitions(
                        stage_assets[MARKET_DATA_JOB]
                    ),
                )
                # A failed partition stops its run's later steps for every partition of the range;
                # the healthy ones are committed, so the stage runs again without the failed cells
                # until nothing new fails (each round's earlier steps are cache hits).
                cells = stale_cells(plan)
                if SEARCH_JOB in stage_assets:
                    # Searches first: the searched families' models train with what they found.
                    searches = [
                        cell
                        for cell in plan.partitions(stage_assets[SEARCH_JOB])
                        if cell and cell_of(cell)[0] not in outcome.failed_symbols
                    ]
                    outcome.stages.append(
                        run_stage(
                            pool,
                            SEARCH_JOB,
                            training_ranges(
                                ordered,
                                universe.target_names,
                                searches,
                                per_run,
                                plan.sizes.get(BARS.to_user_string(), {}),
                                workers,
                            ),
                            log_level,
                            outcome,
                        )
                    )
                while cells:
                    failures_before = len(outcome.failures)
                    outcome.stages.append(
                        run_stage(
                            pool,
                            TRAINING_JOB,
                            training_ranges(
                                ordered,
                                universe.target_names,
                                cells,
                                per_run,
                                plan.sizes.get(BARS.to_user_string(), {}),
                                workers,
                            ),
                            log_level,
                            outcome,
                        )
                    )
                    if len(outcome.failures) == failures_before:
                        break
                    plan = plan_runs(universe, store, assets, symbols, bars_source)
                    cells = stale_cells(plan)
                after_training = plan_runs(universe, store, assets, symbols, bars_source)
                leaderboard = every_partition or bool(removed) or needs_run(after_training, LEADERBOARD_JOB)
                outcome.stages.append(
                    run_stage(pool, LEADERBOARD_JOB, [None] if leaderboard else [], log_level, outcome)
                )
                registry = leaderboard or needs_run(after_training, REGISTRY_JOB)
                outcome.stages.append(run_stage(pool, REGISTRY_JOB, [None] if registry else [], log_level, outcome))
                # Which predictions are stale depends on what the registry step just decided.
                after_registry = plan_runs(universe, store, assets, symbols, bars_source)
                keys = list(symbols) if every_partition else after_registry.partitions(stage_assets[PREDICTIONS_JOB])
                keys = [key for key in keys if key not in outcome.failed_symbols]
                # predictions carry a BackfillPolicy: chunks of symbols per run, as a Dagster
                # backfill runs them, no bigger than an equal share per worker so every worker gets one.
                per_worker = max(1, -(-len(keys) // workers))
                outcome.stages.append(
                    run_stage(
                        pool,
                        PREDICTIONS_JOB,
                        partition_ranges(ordered, keys, min(per_run, per_worker)),
                        log_level,
                        outcome,
                    )
                )
            return outcome
        except WorkerDied as error:
            outcome.interrupted = str(error)
            if pool_life == 0:
                print(
                    f"  {error}; the runs it held are marked failed. Going on with a fresh pool without them.",
                    flush=True,
                )
                plan = plan_runs(universe, store, assets, symbols, bars_source)
                market_data = [
                    symbol
                    for symbol in plan.partitions(stage_assets[MARKET_DATA_JOB])
                    if symbol not in outcome.failed_symbols
                ]
    return outcome


def print_failures(failures: list[PartitionFailure]) -> None:
    if not failures:
        return
    with pl.Config(tbl_rows=200, tbl_width_chars=260, fmt_str_lengths=200, tbl_hide_dataframe_shape=True):
        print(
            f"\nFailed: {len(failures)} asset partition(s); every other partition was materialized (open a run with "
            "`make ui`):"
        )
        table = pl.DataFrame([failure.__dict__ for failure in failures]).select(
            "symbol", "asset", "partition", "reason", "run_id"
        )
        print(table.with_columns(pl.col("reason").str.slice(0, 200)))


def print_results(leaderboard: pl.DataFrame, registry: pl.DataFrame) -> None:
    from intelligence_assets.cells.leaderboard import cells_without_candidate
    from intelligence_assets.defs.assets.leaderboard import SUMMARY_COLUMNS
    from intelligence_assets.defs.assets.registry import CHAMPION_COLUMNS

    with pl.Config(
        tbl_rows=200,
        tbl_cols=20,
        tbl_width_chars=200,
        fmt_str_lengths=80,
        float_precision=4,
        tbl_hide_dataframe_shape=True,
    ):
        trained = leaderboard.filter(pl.col("trained"))
        print(f"\nAll trained models ({trained.height}), best first within each symbol x target:")
        print(trained.select([*SUMMARY_COLUMNS, "leakage_suspect"]))
        champions = registry.filter(pl.col("champion_version").is_not_null())
        print(f"\nChampions in the MLflow registry ({champions.height}; load with mlflow.pyfunc.load_model(<uri>)):")
        print(champions.select([*CHAMPION_COLUMNS, "champion_uri", "action"]))
        without_skill = cells_without_candidate(leaderboard)
        if without_skill.height:
            print(
                f"\nNo champion: {without_skill.height} trained cells where no model beats no skill on held-out data:"
            )
            print(without_skill.select("symbol", "target", "best_score"))
        gated = (
            leaderboard.filter(~pl.col("trained"))
            .select("symbol", "target", "reason")
            .unique()
            .sort("symbol", "target")
        )
        if gated.height:
            print(f"\nNot trained: {gated.height} symbol x target cells below the ranking bar, e.g.")
            print(gated.head(8))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=available_cores())
    parser.add_argument(
        "--every-partition", action="store_true", help="launch a run for every partition, not only the stale ones"
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another command using DAGSTER_HOME to finish",
    )
    args = parser.parse_args(argv)
    with holding_home("make demo", args.wait):
        demo(args)


def demo(args: argparse.Namespace) -> None:
    from intelligence_assets.defs.assets.leaderboard import MODEL_LEADERBOARD
    from intelligence_assets.defs.assets.registry import MODEL_REGISTRY
    from intelligence_assets.defs.resources.deployment import Deployment
    from intelligence_assets.store.artifact_store import ArtifactStoreError
    from intelligence_assets.store.artifacts import TABLE_FILE, read_value
    from intelligence_assets.store.keys import POINTER_FILE, artifact_prefix, file_key

    started = time.perf_counter()
    outcome = materialize_universe(load_universe(), args.workers, every_partition=args.every_partition)

    store = Deployment.from_environment().artifact_store()
    try:
        print_results(
            read_value(store, artifact_prefix(MODEL_LEADERBOARD)), read_value(store, artifact_prefix(MODEL_REGISTRY))
        )
    except ArtifactStoreError as error:
        print(f"\nNo leaderboard to show: {error}")
    print_failures(outcome.failures)
    if outcome.interrupted:
        print(
            f"\nInterrupted: {outcome.interrupted}. The runs it held are marked failed above; everything else that "
            "could run "
            "did. Run `make demo` again to resume them: finished partitions are cache hits."
        )
    print(f"\nDemo finished in {time.perf_counter() - started:.0f}s.")
    print("Where to look next:")
    print("  make ui              Dagster UI on http://127.0.0.1:3000 : asset graph, runs, metadata, checks, lineage")
    print(
        "  make mlflow-ui       MLflow UI on http://127.0.0.1:5000 : experiments per target, runs, registry and aliases"
    )
    print(f"  artifacts            {store.location}")
    leaderboard_file = file_key(artifact_prefix(MODEL_LEADERBOARD), "<fingerprint>", TABLE_FILE)
    print(f"  leaderboard          {leaderboard_file} in the artifact store ({POINTER_FILE} names the fingerprint)")
    print("  a rerun              `make demo` again: unchanged partitions are cache hits")
    if outcome.failures:
        raise SystemExit(1)


if __name__ == "__main__":
    exit_on_configuration_error(main)
