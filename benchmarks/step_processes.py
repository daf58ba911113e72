"""Step processes benchmark (issue: measured and seen), part of `make bench`.

One symbol's training stage as one ranged run through Dagster's multiprocess executor: what a
run launched from the UI, a schedule or a sensor does on the embedded default, one process per
step. Three ways to start those processes:

    spawn                      Dagster's default: every step imports the definitions and its
                               libraries in a fresh interpreter;
    forkserver, definitions    steps fork from a server that imported the definitions once
                               (every job but training_job);
    forkserver, + libraries    ... and sklearn, LightGBM, XGBoost, torch and MLflow (training_job).

Each way runs on its own copy of one prepared instance (the symbol's bars and features stored, the
MLflow store created), so every run computes the same cells from scratch.

Writes benchmarks/results/step_processes.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

from benchmarks.homes import fresh_home, home_environment
from benchmarks.machine import describe_machine
from intelligence_assets.config.universe import DEFAULT_UNIVERSE_PATH, REPOSITORY_ROOT, load_universe
from intelligence_assets.defs.partitions import cell_key
from intelligence_assets.defs.processes import available_cores

RESULTS = REPOSITORY_ROOT / "benchmarks" / "results" / "step_processes.md"
JOB_NAME = "training_stage_by_start_method"


def training_stage_job():
    """training_job's assets under Dagster's plain multiprocess executor, whose start method the
    run config chooses (training_job's own executor fixes it)."""
    import dagster as dg

    from intelligence_assets.definitions import TRAINING_SELECTION, defs

    job = dg.define_asset_job(JOB_NAME, selection=TRAINING_SELECTION, executor_def=dg.multiprocess_executor)
    return dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def(JOB_NAME)


def start_methods(universe_path: Path) -> dict[str, dict]:
    from intelligence_assets.defs.processes import DEFINITIONS_MODULE, worker_libraries

    libraries = worker_libraries(load_universe(universe_path))
    return {
        "spawn (Dagster's default)": {"spawn": {}},
        "forkserver, definitions preloaded": {"forkserver": {"preload_modules": [DEFINITIONS_MODULE]}},
        "forkserver, definitions and training libraries preloaded (training_job)": {
            "forkserver": {"preload_modules": [DEFINITIONS_MODULE, *libraries]}
        },
    }


PREPARE = """
import dagster as dg
from intelligence_assets.definitions import MARKET_DATA_JOB, defs
from intelligence_assets.defs.resources.deployment import Deployment
from intelligence_assets.defs.partitions import register_symbols
symbol = {symbol!r}
instance = dg.DagsterInstance.get()
register_symbols(instance, [symbol])
assert defs.resolve_job_def(MARKET_DATA_JOB).execute_in_process(instance=instance, partition_key=symbol).success
Deployment.from_environment().mlflow_tracking_resource().tracker().client.search_experiments(max_results=1)
"""

RUN = """
import json, sys, time
import dagster as dg
from dagster import reconstructable
from benchmarks.step_processes import training_stage_job
from intelligence_assets.defs.partitions import RANGE_END_TAG, RANGE_START_TAG
start_method, first, last = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
started = time.perf_counter()
with dg.DagsterInstance.get() as instance:
    result = dg.execute_job(
        reconstructable(training_stage_job),
        instance=instance,
        tags={{RANGE_START_TAG: first, RANGE_END_TAG: last}},
        run_config={{"execution": {{"config": {{"max_concurrent": {workers}, "start_method": start_method}}}}}},
    )
    print("SECONDS", time.perf_counter() - started, "OK" if result.success else "FAILED")
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbol", default="AAPL")
    parser.add_argument("--workers", type=int, default=available_cores(), help="the executor's max_concurrent")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    universe_path = Path(os.environ.get("INTELLIGENCE_UNIVERSE") or DEFAULT_UNIVERSE_PATH)
    universe = load_universe(universe_path)
    first, last = cell_key(args.symbol, universe.target_names[0]), cell_key(args.symbol, universe.target_names[-1])
    scratch = Path(tempfile.mkdtemp(prefix="intelligence-step-processes-"))
    try:
        prepared = scratch / "prepared"
        subprocess.run(
            [sys.executable, "-c", PREPARE.format(symbol=args.symbol)],
            env=fresh_home(prepared, universe_path),
            cwd=REPOSITORY_ROOT,
            check=True,
            capture_output=True,
        )
        methods = start_methods(universe_path)
        seconds: dict[str, list[float]] = {way: [] for way in methods}
        for repeat in range(args.repeats):  # interleaved, so a slow spell hits every way alike
            for way, start_method in methods.items():
                home = scratch / f"{len(seconds[way])}_{list(methods).index(way)}"
                shutil.copytree(prepared, home)
                completed = subprocess.run(
                    [sys.executable, "-c", RUN.format(workers=args.workers), json.dumps(start_method), first, last],
                    env=home_environment(home, universe_path),
                    cwd=REPOSITORY_ROOT,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                line = next((line for line in completed.stdout.splitlines() if line.startswith("SECONDS")), "")
                if not line.endswith("OK"):
                    raise SystemExit(f"{way}: the run failed\n{completed.stdout[-2000:]}\n{completed.stderr[-3000:]}")
                seconds[way].append(float(line.split()[1]))
                print(f"round {repeat + 1}: {way}: {seconds[way][-1]:.1f}s", flush=True)
                shutil.rmtree(home, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    baseline = median(seconds[next(iter(methods))])
    steps = 3 + len(universe.model_families)
    lines = [
        "# Step processes: how the multiprocess executor starts a step",
        "",
        f"`make bench` (`benchmarks/step_processes.py`) on {describe_machine()}.",
        f"One ranged training run of {args.symbol} ({len(universe.target_names)} targets, {steps} steps: labels, "
        "target_rankings, feature_sets and "
        f"{len(universe.model_families)} families) through Dagster's multiprocess executor, max_concurrent "
        f"{args.workers}, as a run launched from the UI, "
        f"a schedule or a sensor executes on the embedded default. Median of {args.repeats} interleaved rounds; every "
        "round in brackets.",
        "",
        "| step processes | run wall s | vs spawn |",
        "|---|---:|---:|",
        *[
            f"| {way} | {median(values):.1f} [{', '.join(f'{value:.1f}' for value in values)}] | "
            f"{median(values) / baseline:.2f} |"
            for way, values in seconds.items()
        ],
        "",
        "`make demo` does not use this executor: its workers run whole runs in-process "
        "(`benchmarks/results/overhead.md`).",
    ]
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
