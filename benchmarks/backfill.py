"""Backfill benchmark (issue: automation): launch and finish a backfill of N partitions per asset
on the embedded default (SQLite instance, local store), synthetic symbols, the `linear` family.

One target, so every asset has N partitions: N bars/features (symbol) and N of each symbol x
target asset. Runs go through the same runner as `make demo` (planner, then one in-process run
per stage partition in a pool of workers), which is how a whole-universe backfill launches here.

    .venv/bin/python -m benchmarks.backfill --partitions 100      (make bench-backfill)

Appends a row to benchmarks/results/backfill.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.machine import describe_machine
from intelligence_assets.config.universe import REPOSITORY_ROOT, load_universe

RESULTS = REPOSITORY_ROOT / "benchmarks" / "results" / "backfill.md"
BARS_PER_SYMBOL = 700


def write_universe(directory: Path, partitions: int) -> Path:
    from intelligence_assets.ml.synthetic import synthetic_bars

    bars = directory / "bars"
    bars.mkdir(parents=True)
    symbols = [f"SYN{index:05d}" for index in range(partitions)]
    for index, symbol in enumerate(symbols):
        synthetic_bars(
            n_bars=BARS_PER_SYMBOL, seed=index, signal_strength=1.0 if index % 2 == 0 else 0.0
        ).write_parquet(bars / f"{symbol}.parquet")
    config = {
        "symbols": symbols,
        "bars": {"directory": "bars", "min_history": 500},
        "targets": [{"name": "y_up_1b", "kind": "direction", "horizon": 1}],
        "model_families": {"linear": {"params": {}}},
        "split": {"folds": 2, "embargo": 2, "test_fraction": 0.2, "min_train_rows": 60, "score_models_on_folds": False},
        "ranking": {"quick_lightgbm_rounds": 20},
        "selection": {"max_features": 5, "min_features": 3, "permutation_repeats": 1, "lightgbm_rounds": 20},
        "leakage_sentinel": {"max_auc": 0.9, "max_ic": 0.5},
    }
    path = directory / "universe.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def measure_policy_overhead(universe, workers: int) -> str:
    """What the BackfillPolicy saves per run: every `predictions` partition again (all cache hits,
    so almost no compute), once as one run per partition and once in the policy's ranged runs."""
    import dagster as dg

    from intelligence_assets.cli.demo import partition_ranges, run_stage, worker_pool
    from intelligence_assets.definitions import PREDICTIONS_JOB

    symbols = list(universe.symbols)
    ranges = partition_ranges(
        dg.DagsterInstance.get().get_dynamic_partitions("symbol"),
        symbols,
        universe.automation.backfill_partitions_per_run,
    )
    with worker_pool(workers) as pool:
        single = run_stage(pool, PREDICTIONS_JOB, symbols, "WARNING")
        ranged = run_stage(pool, PREDICTIONS_JOB, ranges, "WARNING")
    return (
        f"predictions, all hits: {single.runs} single-partition runs {single.seconds:.0f}s "
        f"vs {ranged.runs} ranged runs {ranged.seconds:.1f}s"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=100)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="intelligence-backfill-"))
    try:
        home = scratch / "home"
        home.mkdir()
        shutil.copy(REPOSITORY_ROOT / "dagster.yaml", home / "dagster.yaml")
        universe_path = write_universe(scratch / "universe", args.partitions)
        os.environ.update(
            {
                "DAGSTER_HOME": str(home),
                "INTELLIGENCE_UNIVERSE": str(universe_path),
                "INTELLIGENCE_ARTIFACT_ROOT": str(home / "artifacts"),
            }
        )

        from intelligence_assets.cli.demo import materialize_universe

        universe = load_universe(universe_path)
        started = time.perf_counter()
        stages = materialize_universe(universe, args.workers, log_level="WARNING")
        total = time.perf_counter() - started
        runs = sum(stage.runs for stage in stages)
        rerun_started = time.perf_counter()
        materialize_universe(universe, args.workers, log_level="WARNING")
        rerun = time.perf_counter() - rerun_started
        overhead = measure_policy_overhead(universe, args.workers)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    per_stage = "; ".join(f"{stage.job_name} {stage.runs} runs {stage.seconds:.0f}s" for stage in stages if stage.runs)
    row = (
        f"| {args.partitions} | {args.workers} | {runs} | {total:.0f} | {total / args.partitions:.2f} | {rerun:.1f} "
        f"| {per_stage} | {overhead} |"
    )
    header = (
        "# Backfill benchmark\n\n"
        "`make bench-backfill` (`.venv/bin/python -m benchmarks.backfill --partitions N`): N synthetic symbols x 1 "
        "target, "
        "`linear` family, 700 bars each, embedded default. Runs: in-process Dagster runs in a pool of workers, cut as "
        "`make demo` "
        "cuts them: one `bars`/`features` run per symbol; training (labels to models) and `predictions` in ranged runs "
        "of up to "
        "`backfill_partitions_per_run`, as their BackfillPolicy launches them; one leaderboard and one registry "
        "run.\n\n"
        "| partitions per asset | workers | runs launched | wall s (plan + all runs) | s per partition | no-change "
        "rerun s | stages | BackfillPolicy: per-run overhead | machine |\n"
        "|---:|---:|---:|---:|---:|---:|---|---|---|\n"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    existing = RESULTS.read_text() if RESULTS.exists() else header
    RESULTS.write_text(existing + row + f" {describe_machine()} |\n")
    print(row)
    print(f"Machine: {describe_machine()}")


if __name__ == "__main__":
    main()
