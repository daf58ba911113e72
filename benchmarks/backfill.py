"""Backfill benchmark (issue: automation, orchestration speed) on the embedded default (SQLite
instance, local store; or a PostgreSQL instance), synthetic symbols, the `linear` family. Runs
go through the same runner as `make demo` (planner, then in-process runs in a pool of workers,
each stage cut into ranged runs as the assets' BackfillPolicies cut a backfill), which is how a
whole-universe backfill launches here.

Three measurements:

- `--partitions N` (`make bench-backfill PARTITIONS=N`): N symbols x 1 target, so every asset
  has N partitions: a cold backfill, a rerun with nothing changed, and what the
  BackfillPolicy saves per run. Appends a row to the first table of
  benchmarks/results/backfill.md.

      .venv/bin/python -m benchmarks.backfill --partitions 1000

- `--market-data-cuts --partitions N`: the market-data stage of N symbols, cold, as one run per
  symbol and as ranged runs, back to back. Appends a row to the second table.

- `--hits --symbols S --targets T`: the orchestration overhead of a backfill whose every
  partition is a cache hit, so that compute is near zero. A cold pass materializes everything
  (the cheapest honest settings: `linear` only, 2 folds, small ranking and selection, 700 bars
  a symbol), then `make demo --every-partition`'s pass launches runs for every partition and
  the store answers each. Appends a row to the third table.

      .venv/bin/python -m benchmarks.backfill --hits --symbols 500 --targets 25

  Where one command may not run as long as both passes (a lent machine's limit per command),
  `--home DIR` keeps the scratch home in DIR: `--cold-pass-only` stops once the cold pass is
  stored and timed (`DIR/cold_pass.json`), and a later `--hits --home DIR` times the cache-hit
  pass alone. A cold pass cut short resumes where it stopped (the planner skips what is stored),
  and `cold_pass.json` then holds the seconds of the part resumed only.

  `--instance postgres` puts the instance's runs and event log in a new database of a
  PostgreSQL server (the `postgres` deployment's dagster.yaml): the one the DAGSTER_PG_* variables
  name, else the one scripts/start_postgres.sh starts. Dagster's DAGSTER_EVENT_BATCH_SIZE, when
  set, is named in the row too (on PostgreSQL it writes a ranged output's materializations in
  batches).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from benchmarks.homes import fresh_home, fresh_postgres_home, home_environment, postgres_server
from benchmarks.machine import describe_machine
from benchmarks.summary import record
from intelligence_assets.config.universe import REPOSITORY_ROOT, load_universe

RESULTS = REPOSITORY_ROOT / "benchmarks" / "results" / "backfill.md"
BARS_PER_SYMBOL = 700
# The settings of the first table's rows since it began: changing them breaks the comparison.
BACKFILL_SETTINGS = {
    "split": {"folds": 2, "embargo": 2, "test_fraction": 0.2, "min_train_rows": 60, "score_models_on_folds": False},
    "ranking": {"quick_lightgbm_rounds": 20},
    "selection": {"max_features": 5, "min_features": 3, "permutation_repeats": 1, "lightgbm_rounds": 20},
}
# The cold pass of the cache-hit measurement only has to leave every partition stored: the
# smallest settings the universe accepts.
CHEAPEST_SETTINGS = {
    "split": {"folds": 2, "embargo": 2, "test_fraction": 0.2, "min_train_rows": 60, "score_models_on_folds": False},
    "ranking": {"quick_lightgbm_rounds": 5},
    "selection": {"max_features": 3, "min_features": 2, "permutation_repeats": 1, "lightgbm_rounds": 5},
}
# Every target kind, at short horizons (a long horizon needs more bars for its splits).
TARGET_KINDS = [
    ("up", {"kind": "direction"}),
    ("return", {"kind": "forward_return"}),
    ("volatility", {"kind": "forward_volatility"}),
    ("peak", {"kind": "barrier", "side": "peak", "atr_multiple": 1.5}),
    ("valley", {"kind": "barrier", "side": "valley", "atr_multiple": 1.5}),
]


def target_specs(count: int) -> list[dict]:
    """`count` targets: y_up_1b alone for one, else the kinds in turn at horizons 1, 2, 3..."""
    if count == 1:
        return [{"name": "y_up_1b", "kind": "direction", "horizon": 1}]
    specs = []
    for index in range(count):
        name, spec = TARGET_KINDS[index % len(TARGET_KINDS)]
        horizon = index // len(TARGET_KINDS) + (2 if spec["kind"] == "forward_volatility" else 1)
        specs.append({"name": f"y_{name}_{horizon}b", **spec, "horizon": horizon})
    return specs


def write_universe(directory: Path, symbols: int, targets: int = 1, settings: dict | None = None) -> Path:
    from intelligence_assets.ml.synthetic import synthetic_bars

    bars = directory / "bars"
    bars.mkdir(parents=True)
    names = [f"SYN{index:05d}" for index in range(symbols)]
    for index, symbol in enumerate(names):
        synthetic_bars(
            n_bars=BARS_PER_SYMBOL, seed=index, signal_strength=1.0 if index % 2 == 0 else 0.0
        ).write_parquet(bars / f"{symbol}.parquet")
    config = {
        "symbols": names,
        "bars": {"directory": "bars", "min_history": 500},
        "targets": target_specs(targets),
        "model_families": {"linear": {"params": {}}},
        **(settings or BACKFILL_SETTINGS),
        "leakage_sentinel": {"max_auc": 0.9, "max_ic": 0.5},
    }
    path = directory / "universe.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@contextmanager
def scratch_home(
    symbols: int, targets: int, settings: dict, kept: Path | None = None, instance: str = "sqlite"
) -> Iterator[Path]:
    """A DAGSTER_HOME, artifact store and universe, set in the environment the runner reads: in
    a temporary folder removed afterwards, or in `kept`, reused as it was left. The instance is
    the embedded default (`sqlite`) or a new database of a PostgreSQL server (`postgres`,
    `homes.fresh_postgres_home`); a kept home remembers which in `instance.json`."""
    scratch = kept or Path(tempfile.mkdtemp(prefix="intelligence-backfill-"))
    try:
        universe_path = scratch / "universe" / "universe.yaml"
        if not universe_path.exists():  # a kept home's bars stay as its cold pass stored them
            universe_path = write_universe(scratch / "universe", symbols, targets, settings)
        home = scratch / "home"
        chosen = scratch / "instance.json"
        if not home.exists():
            environment = (fresh_postgres_home if instance == "postgres" else fresh_home)(home, universe_path)
            chosen.write_text(json.dumps({"instance": instance, "database": environment.get("DAGSTER_PG_DB")}))
        else:
            was = json.loads(chosen.read_text()) if chosen.exists() else {"instance": "sqlite"}
            if was["instance"] != instance:
                raise SystemExit(
                    f"{scratch} holds a {was['instance']} instance, not {instance}: pass --instance {was['instance']}"
                )
            environment = home_environment(home, universe_path)
            if instance == "postgres":
                environment.update(postgres_server(), DAGSTER_PG_DB=was["database"])
        os.environ.update(environment)
        yield universe_path
    finally:
        if kept is None:
            shutil.rmtree(scratch, ignore_errors=True)


def measure_policy_overhead(universe, workers: int) -> str:
    """What the BackfillPolicy saves per run: every `predictions` partition again (all cache hits,
    so almost no compute), once as one run per partition and once in the policy's ranged runs."""
    import dagster as dg

    from intelligence_assets.cli.demo import UniverseRun, partition_ranges, run_stage, worker_pool
    from intelligence_assets.definitions import PREDICTIONS_JOB

    symbols = list(universe.symbols)
    ranges = partition_ranges(
        dg.DagsterInstance.get().get_dynamic_partitions("symbol"),
        symbols,
        universe.automation.backfill_partitions_per_run,
    )
    with worker_pool(workers) as pool:
        single = run_stage(pool, PREDICTIONS_JOB, symbols, "WARNING", UniverseRun())
        ranged = run_stage(pool, PREDICTIONS_JOB, ranges, "WARNING", UniverseRun())
    return (
        f"predictions, all hits: {single.runs} single-partition runs {single.seconds:.0f}s "
        f"vs {ranged.runs} ranged runs {ranged.seconds:.1f}s"
    )


def stage_summary(outcome) -> str:
    """Each stage's runs and seconds; a stage run again after failures is added up."""
    runs: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    for stage in outcome.stages:
        runs[stage.job_name] += stage.runs
        seconds[stage.job_name] += stage.seconds
    return "; ".join(f"{name} {runs[name]} runs {seconds[name]:.0f}s" for name in runs if runs[name])


def append_row(table_header: str, row: str) -> None:
    """Append `row` to the table that starts with `table_header` (created at the end if absent)."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Backfill benchmark\n"
    if table_header not in text:
        text = text.rstrip("\n") + "\n\n" + table_header
    before, after = text.split(table_header, 1)
    # The table's rows run to the first line that is not a table line.
    lines = after.split("\n")
    end = next((index for index, line in enumerate(lines) if not line.startswith("|")), len(lines))
    lines.insert(end, row)
    RESULTS.write_text(before + table_header + "\n".join(lines))


BACKFILL_TABLE = (
    "| partitions per asset | workers | runs launched | wall s (plan + all runs) | s per partition | no-change "
    "rerun s | stages | BackfillPolicy: per-run overhead | machine |\n"
    "|---:|---:|---:|---:|---:|---:|---|---|---|\n"
)
MARKET_DATA_TABLE = (
    "| symbols | workers | one run per symbol | ranged runs | faster | machine |\n|---:|---:|---|---|---:|---|\n"
)
HITS_TABLE = (
    "| symbols x targets | workers | cold pass s | asset partitions | hit pass s | s per asset partition | "
    "s per symbol x target | stages (hit pass) | machine |\n"
    "|---|---:|---:|---:|---:|---:|---:|---|---|\n"
)


def backfill(partitions: int, workers: int) -> None:
    from intelligence_assets.cli.demo import materialize_universe

    with scratch_home(partitions, 1, BACKFILL_SETTINGS) as universe_path:
        universe = load_universe(universe_path)
        started = time.perf_counter()
        outcome = materialize_universe(universe, workers, log_level="WARNING")
        total = time.perf_counter() - started
        rerun_started = time.perf_counter()
        materialize_universe(universe, workers, log_level="WARNING")
        rerun = time.perf_counter() - rerun_started
        overhead = measure_policy_overhead(universe, workers)
    runs = sum(stage.runs for stage in outcome.stages)
    failed = f"; {len(outcome.failures)} partitions FAILED" if outcome.failures else ""
    row = (
        f"| {partitions} | {workers} | {runs} | {total:.0f} | {total / partitions:.2f} | {rerun:.1f} "
        f"| {stage_summary(outcome)}{failed} | {overhead} | {describe_machine()} |"
    )
    append_row(BACKFILL_TABLE, row)
    record(f"{partitions:,}-partition backfill (symbols x 1 target), wall s", total, goal=None, better="lower")
    print(row)


def cold_pass(universe, workers: int, kept: Path | None) -> float:
    """Seconds of the pass that stores every partition; taken from `kept` when a command before
    this one stored and timed it there."""
    from intelligence_assets.cli.demo import materialize_universe

    timed = kept / "cold_pass.json" if kept else None
    if timed is not None and timed.exists():
        seconds = float(json.loads(timed.read_text())["seconds"])
        print(f"cold pass: {seconds:.0f}s, timed by an earlier command in {kept}", flush=True)
        return seconds
    started = time.perf_counter()
    cold = materialize_universe(universe, workers, log_level="WARNING")
    seconds = time.perf_counter() - started
    print(f"cold pass: {seconds:.0f}s; {stage_summary(cold)}", flush=True)
    if cold.failures:
        raise SystemExit(f"the cold pass failed {len(cold.failures)} partitions, e.g. {cold.failures[0]}")
    if timed is not None:
        timed.write_text(json.dumps({"seconds": seconds, "stages": stage_summary(cold)}))
    return seconds


def hits(
    symbols: int,
    targets: int,
    workers: int,
    kept: Path | None = None,
    cold_pass_only: bool = False,
    instance: str = "sqlite",
) -> None:
    from intelligence_assets.cli.demo import materialize_universe

    with scratch_home(symbols, targets, CHEAPEST_SETTINGS, kept, instance) as universe_path:
        universe = load_universe(universe_path)
        cold_seconds = cold_pass(universe, workers, kept)
        if cold_pass_only:
            return
        started = time.perf_counter()
        hit = materialize_universe(universe, workers, log_level="WARNING", every_partition=True)
        hit_seconds = time.perf_counter() - started
    outcomes = sum((Counter(stage.cache) for stage in hit.stages), Counter())
    partitions = sum(outcomes.values())
    cells = symbols * targets
    # The registry decides from the MLflow registry each time: it always recomputes.
    computed = {outcome: count for outcome, count in outcomes.items() if outcome != "hit"}
    stages = stage_summary(hit) + f"; not hits: {computed or 'none'}"
    label = instance_label(instance)
    size = f"{symbols} symbols x {targets} targets{label}"
    row = (
        f"| {symbols} x {targets}{label} | {workers} | {cold_seconds:.0f} | {partitions} | {hit_seconds:.0f} | "
        f"{hit_seconds / partitions:.4f} | {hit_seconds / cells:.4f} | {stages} | {describe_machine()} |"
    )
    append_row(HITS_TABLE, row)
    record(
        f"backfill orchestration overhead per asset partition, all cache hits ({size}), s",
        hit_seconds / partitions,
        goal=0.05,
        better="lower",
    )
    record(
        f"backfill orchestration overhead per symbol x target, all cache hits ({size}), s",
        hit_seconds / cells,
        goal=0.05,
        better="lower",
    )
    print(row)


def instance_label(instance: str) -> str:
    """What tells a row and a summary name off the embedded default's: the instance, and
    Dagster's batched event writes when DAGSTER_EVENT_BATCH_SIZE turns them on."""
    batch = os.environ.get("DAGSTER_EVENT_BATCH_SIZE")
    return (", PostgreSQL instance" if instance == "postgres" else "") + (
        f", DAGSTER_EVENT_BATCH_SIZE={batch}" if batch else ""
    )


def market_data_cuts(symbols: int, workers: int) -> None:
    """The market-data stage cold, cut both ways on the same machine back to back: one run per
    symbol (how `bars`' blocking checks cut it before they were reported per partition) and the
    ranged runs `make demo` launches now, each into an empty artifact store."""
    import dagster as dg

    from intelligence_assets.cli.demo import UniverseRun, run_stage, symbol_ranges, worker_pool
    from intelligence_assets.definitions import MARKET_DATA_JOB
    from intelligence_assets.defs.partitions import register_symbols

    with scratch_home(symbols, 1, BACKFILL_SETTINGS) as universe_path:
        universe = load_universe(universe_path)
        register_symbols(dg.DagsterInstance.get(), universe.symbols)
        artifacts = Path(os.environ["INTELLIGENCE_ARTIFACT_ROOT"])
        # A pool's workers take the environment as it is when the pool starts: each cut its own store.
        os.environ["INTELLIGENCE_ARTIFACT_ROOT"] = str(artifacts / "one-run-per-symbol")
        with worker_pool(workers) as pool:
            single = run_stage(pool, MARKET_DATA_JOB, list(universe.symbols), "WARNING", UniverseRun())
        os.environ["INTELLIGENCE_ARTIFACT_ROOT"] = str(artifacts / "ranged")
        ranges = symbol_ranges(
            list(universe.symbols), set(universe.symbols), universe.automation.backfill_partitions_per_run, workers
        )
        with worker_pool(workers) as pool:
            ranged = run_stage(pool, MARKET_DATA_JOB, list(ranges), "WARNING", UniverseRun())
    row = (
        f"| {symbols} | {workers} | {single.runs} runs {single.seconds:.0f}s | {ranged.runs} runs "
        f"{ranged.seconds:.0f}s | {single.seconds / ranged.seconds:.1f}x | {describe_machine()} |"
    )
    append_row(MARKET_DATA_TABLE, row)
    print(row)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=100, help="symbols (x 1 target) of the backfill")
    parser.add_argument(
        "--hits", action="store_true", help="measure a backfill of every partition as cache hits instead"
    )
    parser.add_argument(
        "--market-data-cuts",
        action="store_true",
        help="compare the market-data stage of --partitions symbols in one run each and in ranged runs instead",
    )
    parser.add_argument("--symbols", type=int, default=100, help="with --hits")
    parser.add_argument("--targets", type=int, default=25, help="with --hits")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--home", type=Path, help="with --hits: keep the scratch home here, reused by a later command")
    parser.add_argument("--cold-pass-only", action="store_true", help="with --hits --home: stop after the cold pass")
    parser.add_argument(
        "--instance",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="with --hits: the embedded default, or runs and event log in a new database of the PostgreSQL "
        "server that the DAGSTER_PG_* variables name (else the one scripts/start_postgres.sh starts)",
    )
    args = parser.parse_args(argv)
    if args.cold_pass_only and not (args.hits and args.home):
        parser.error("--cold-pass-only needs --hits and --home")
    if args.instance != "sqlite" and not args.hits:
        parser.error("--instance needs --hits")
    if args.hits:
        hits(args.symbols, args.targets, args.workers, args.home, args.cold_pass_only, args.instance)
    elif args.market_data_cuts:
        market_data_cuts(args.partitions, args.workers)
    else:
        backfill(args.partitions, args.workers)
    print(f"Machine: {describe_machine()}")


if __name__ == "__main__":
    main()
