"""Ranged runs of `make demo`: the chunks a multi-run BackfillPolicy launches."""

from __future__ import annotations

import gc
import os

import dagster as dg
import pytest
from dagster._core.definitions.automation_tick_evaluation_context import build_run_requests_with_backfill_policies
from dagster._core.definitions.events import AssetKeyPartitionKey

from intelligence_assets.cli.demo import partition_ranges, training_ranges
from intelligence_assets.defs.partitions import RANGE_END_TAG, RANGE_START_TAG

KEYS = [f"S{index}" for index in range(10)]


def test_contiguous_stale_keys_become_chunks_of_at_most_max_per_run() -> None:
    assert partition_ranges(KEYS, KEYS, 4) == [("S0", "S3"), ("S4", "S7"), ("S8", "S9")]
    assert partition_ranges(KEYS, KEYS, 100) == [("S0", "S9")]


def test_fresh_keys_split_ranges_so_no_fresh_partition_is_rerun() -> None:
    assert partition_ranges(KEYS, ["S1", "S2", "S5", "S9"], 100) == [("S1", "S2"), ("S5", "S5"), ("S9", "S9")]
    assert partition_ranges(KEYS, [], 100) == []


def test_training_runs_one_symbol_each_biggest_symbol_first() -> None:
    symbols, targets = ["SMALL", "BIG", "MID"], ["t1", "t2", "t3"]
    cells = [f"{s}|{t}" for s in symbols for t in targets]
    rows = {"SMALL": 500, "BIG": 8000, "MID": 3000}
    assert training_ranges(symbols, targets, cells, 100, rows) == [
        ("BIG|t1", "BIG|t3"),
        ("MID|t1", "MID|t3"),
        ("SMALL|t1", "SMALL|t3"),
    ]


def test_a_large_pool_gets_about_two_equal_training_runs_per_worker() -> None:
    symbols, targets = ["BIG", "SMALL"], [f"t{index}" for index in range(1, 7)]
    cells = [f"{s}|{t}" for s in symbols for t in targets]
    rows = {"BIG": 8000, "SMALL": 500}
    assert training_ranges(symbols, targets, cells, 100, rows, workers=1) == [
        ("BIG|t1", "BIG|t6"),
        ("SMALL|t1", "SMALL|t6"),
    ]
    # 12 cells on 4 workers: at most 2 cells a run, each symbol's 6 targets in 3 equal runs.
    assert training_ranges(symbols, targets, cells, 100, rows, workers=4) == [
        ("BIG|t1", "BIG|t2"),
        ("BIG|t3", "BIG|t4"),
        ("BIG|t5", "BIG|t6"),
        ("SMALL|t1", "SMALL|t2"),
        ("SMALL|t3", "SMALL|t4"),
        ("SMALL|t5", "SMALL|t6"),
    ]
    # Uneven counts are cut as evenly as they allow: 5 cells in runs of at most 2 make 2, 2 and 1.
    five = [f"t{index}" for index in range(1, 6)]
    assert training_ranges(["A"], five, [f"A|{t}" for t in five], 100, {}, workers=2) == [
        ("A|t1", "A|t2"),
        ("A|t3", "A|t4"),
        ("A|t5", "A|t5"),
    ]
    # With a run per worker already, nothing is cut finer.
    assert training_ranges(["A"], five, [f"A|{t}" for t in five], 100, {}, workers=1) == [("A|t1", "A|t5")]
    assert training_ranges(symbols, targets, cells, 100, rows, workers=2) == [
        ("BIG|t1", "BIG|t6"),
        ("SMALL|t1", "SMALL|t6"),
    ]


def test_training_ranges_leave_current_cells_out_and_respect_max_per_run() -> None:
    targets = ["t1", "t2", "t3", "t4"]
    stale = ["A|t1", "A|t2", "A|t4", "B|t1", "B|t2", "B|t3", "B|t4"]
    assert training_ranges(["A", "B"], targets, stale, 3, {"A": 1, "B": 1}) == [
        ("A|t1", "A|t2"),
        ("A|t4", "A|t4"),
        ("B|t1", "B|t3"),
        ("B|t4", "B|t4"),
    ]


def test_with_more_symbols_than_targets_a_run_covers_many_symbols_of_one_target() -> None:
    symbols = [f"S{index}" for index in range(5)]
    cells = [f"{s}|t1" for s in symbols] + ["S0|t2", "S1|t2", "S3|t2"]
    assert training_ranges(symbols, ["t1", "t2"], cells, 3, {}) == [
        ("S0|t1", "S2|t1"),
        ("S3|t1", "S4|t1"),
        ("S0|t2", "S1|t2"),
        ("S3|t2", "S3|t2"),
    ]


def _cut_by_dagster(
    symbols: list[str], targets: list[str], cells: list[str], max_per_run: int
) -> tuple[set[tuple[str, str]], dict[tuple[str, str], set[str]]]:
    """The ranges Dagster cuts for a backfill of `cells` of an asset with a multi-run
    BackfillPolicy, and the cells Dagster reads each range as."""
    partitions = dg.MultiPartitionsDefinition(
        {"symbol": dg.DynamicPartitionsDefinition(name="symbol"), "target": dg.StaticPartitionsDefinition(targets)}
    )

    @dg.asset(partitions_def=partitions, backfill_policy=dg.BackfillPolicy.multi_run(max_per_run))
    def stage() -> None: ...

    graph = dg.Definitions(assets=[stage]).resolve_asset_graph()
    with dg.instance_for_test() as instance, dg.partition_loading_context(dynamic_partitions_store=instance):
        instance.add_dynamic_partitions("symbol", symbols)
        requests = build_run_requests_with_backfill_policies(
            [AssetKeyPartitionKey(stage.key, cell) for cell in cells], graph, instance
        )
        ranges = {(request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) for request in requests}
        read = {
            (start, end): {str(key) for key in partitions.get_partition_keys_in_range(dg.PartitionKeyRange(start, end))}
            for start, end in ranges
        }
    return ranges, read


def test_the_demo_cuts_the_ranges_dagster_cuts_and_each_covers_only_its_cells() -> None:
    symbols, targets = ["A", "B", "C", "D", "E"], ["t1", "t2", "t3"]
    for cells, max_per_run in [
        (["A|t1", "A|t2", "C|t3"], 100),
        ([f"{s}|{t}" for s in symbols for t in targets], 2),
        ([f"{s}|t1" for s in symbols] + ["A|t2", "B|t2", "D|t2"], 3),
    ]:
        ours = training_ranges(symbols, targets, cells, max_per_run, {})
        dagsters, read = _cut_by_dagster(symbols, targets, cells, max_per_run)
        assert set(ours) == dagsters
        assert set().union(*read.values()) == set(cells)
        assert all(cells_read <= set(cells) for cells_read in read.values())


def _native_thread_pools() -> list[tuple[str, str, int]]:
    from threadpoolctl import threadpool_info

    return [(pool["internal_api"], pool["filepath"], pool["num_threads"]) for pool in threadpool_info()]


def test_a_worker_has_its_libraries_loaded_and_its_thread_pools_capped_to_its_share_of_the_cores() -> None:
    from intelligence_assets.defs.processes import available_cores, forked_pool, prepare_worker, worker_threads
    from intelligence_assets.ml.families import libraries_of

    workers = available_cores()
    assert worker_threads(workers) == 1
    assert worker_threads(1) == available_cores()
    libraries = tuple(libraries_of(["linear", "lightgbm", "torch_mlp"]))
    # Forked from a server that imported the libraries, as the demo's workers are: the caps must
    # cover every native pool the server's imports brought along.
    with forked_pool(1, libraries, prepare_worker, (libraries, 1)) as pool:
        pools = pool.submit(_native_thread_pools).result(timeout=300)
    apis = {api for api, _, _ in pools}
    assert {"openmp", "openblas"} <= apis, pools  # torch and LightGBM bring OpenMP; numpy and scipy OpenBLAS
    assert all(threads == 1 for _, _, threads in pools), pools


def _collector_state() -> tuple[bool, int]:
    return gc.isenabled(), gc.get_freeze_count()


def test_a_forked_worker_collects_garbage_but_not_what_its_server_imported() -> None:
    """The server imports with the collector paused; each worker it forks freezes what it
    inherited (Dagster, polars, pyarrow: a few hundred thousand objects), then collects again."""
    from intelligence_assets.defs.processes import forked_pool

    with forked_pool(1, ("polars",)) as pool:
        enabled, frozen = pool.submit(_collector_state).result(timeout=120)
    assert enabled
    assert frozen > 100_000, frozen


def test_the_collector_resumes_after_a_paused_block_even_when_it_fails() -> None:
    from intelligence_assets.defs.processes import collector_paused

    frozen_before = gc.get_freeze_count()
    try:
        with pytest.raises(ValueError), collector_paused():
            assert not gc.isenabled()
            # Lists, which the collector tracks (a dict of plain values it does not), so that
            # each one counts among the frozen.
            kept = [[index] for index in range(1000)]
            raise ValueError("failed while loading")
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen_before + len(kept)
    finally:
        gc.unfreeze()  # the test process's other tests collect as usual


def _environment_and_parent(name: str) -> tuple[str | None, int]:
    return os.environ.get(name), os.getppid()


def test_a_forked_worker_sees_the_environment_of_its_pool_not_of_the_server(monkeypatch) -> None:
    """The forkserver outlives a pool and keeps the environment it started with; a later pool of
    the same process (another DAGSTER_HOME, another universe) must not run in that one."""
    from intelligence_assets.defs.processes import forked_pool

    name = "INTELLIGENCE_TEST_POOL_ENVIRONMENT"
    monkeypatch.setenv(name, "first")
    with forked_pool(1, ("polars",)) as pool:
        first, first_parent = pool.submit(_environment_and_parent, name).result(timeout=120)
    monkeypatch.setenv(name, "second")
    with forked_pool(1, ("polars",)) as pool:
        second, second_parent = pool.submit(_environment_and_parent, name).result(timeout=120)
    assert (first, second) == ("first", "second")
    # Both forked by the same server, which was started once, before the variable changed.
    assert first_parent == second_parent != os.getpid()
