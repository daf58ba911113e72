"""Orchestration-overhead benchmark (issue: measured and seen), `make bench`.

(a) The same core work on the bundled universe three ways:
    sequential  a plain Python loop over partitions, as the seed's script ran it;
    ideal       the same work in a process pool of `workers` (measured wall), and its floor,
                the loop's summed compute / workers;
    dagster     `make demo`'s runner on a fresh embedded instance (planner, in-process runs in a
                pool of workers, artifact store, MLflow tracking, leaderboard, registry,
                predictions).
    The core work of a partition is what its assets compute: bars validation and features per
    symbol; labels, target ranking, feature selection and every family's training (walk-forward
    folds included) per symbol x target. Storage, tracking, the registry and predictions are
    counted as Dagster's side: they are what the platform adds to the seed's loop.
(b) Definitions load time (fresh interpreter) and the time to plan a backfill of 100, 1,000 and
    12,500 partitions per asset (synthetic universes; 12,500 = 500 symbols x 25 targets).
(c) Peak RSS per step: each asset step of one partition in its own `dagster asset materialize`
    process, the child's peak resident set.

Writes benchmarks/results/overhead.md and PNG plots beside it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median

import yaml

from benchmarks.homes import fresh_home
from benchmarks.machine import describe_machine
from intelligence_assets.config.universe import DEFAULT_UNIVERSE_PATH, REPOSITORY_ROOT, load_universe
from intelligence_assets.defs.processes import (
    available_cores,
    forked_pool,
    prepare_worker,
    worker_libraries,
    worker_threads,
)

RESULTS = REPOSITORY_ROOT / "benchmarks" / "results"
NOTES = REPOSITORY_ROOT / "benchmarks" / "overhead_notes.md"
PYTHON = sys.executable


# ---------------------------------------------------------------- (a) the core work, without Dagster


@dataclass
class TaskTime:
    kind: str  # "symbol" or "cell"
    key: str
    seconds: float


def symbol_work(universe_path: str, symbol: str) -> tuple[TaskTime, object]:
    from intelligence_assets.ml.bars import validate_bars
    from intelligence_assets.ml.features import build_features
    from intelligence_assets.store.bars_source import LocalBarsSource

    universe = load_universe(Path(universe_path))
    started = time.perf_counter()
    bars = LocalBarsSource(universe.bars_directory).read(symbol)
    validate_bars(bars, min_history=universe.bars.min_history)
    features = build_features(bars, universe.features)
    return TaskTime("symbol", symbol, time.perf_counter() - started), (bars, features)


class PlatformWork:
    """What the platform adds to the core work, without Dagster: every result committed to an
    artifact store, every model (gated ones too) tracked in MLflow with its flavour, importance
    plot and registry version, through the same functions the assets call."""

    def __init__(self, root: str) -> None:
        from intelligence_assets.defs.resources.deployment import Deployment

        deployment = Deployment(artifact_root=Path(root))
        self.store = deployment.artifact_store()
        self.tracker = deployment.mlflow_tracking_resource().tracker()

    def commit(self, prefix: str, value: object) -> str:
        import hashlib

        from intelligence_assets.store.artifacts import Manifest, commit_artifact, point_to

        fingerprint = hashlib.sha256(prefix.encode()).hexdigest()[:32]
        manifest = commit_artifact(
            self.store, prefix, value, Manifest(fingerprint=fingerprint, data_version=fingerprint, files={})
        )
        point_to(self.store, prefix, manifest)
        return fingerprint

    def track(
        self, universe: object, symbol: str, target: str, trained_model: object, prefix: str, fingerprint: str
    ) -> None:
        from intelligence_assets.store.keys import fingerprint_directory
        from intelligence_assets.tracking import names
        from intelligence_assets.tracking.tracker import TrainingRecord

        metric = (
            universe.leaderboard.classification_metric
            if trained_model.summary.get("task") == "classification"
            else universe.leaderboard.regression_metric
        )
        record = TrainingRecord(
            symbol=symbol,
            target=target,
            trained_model=trained_model,
            score_metric=metric,
            eligible=trained_model.trained,
            provenance_tags={
                names.FINGERPRINT_TAG: fingerprint,
                names.ARTIFACT_URI_TAG: self.store.uri(fingerprint_directory(prefix, fingerprint)),
            },
            config={"params": universe.model_families[trained_model.family].params, "seed": universe.seed},
        )
        self.tracker.track_training(record)


def cell_work(
    universe_path: str, symbol: str, target: str, bars: object, features: object, platform_root: str | None = None
) -> TaskTime:
    """One symbol x target: labels, ranking, selection and every family. With `platform_root`,
    also what the platform does around it (see PlatformWork)."""
    from intelligence_assets.cells.training import Cell, train_cell
    from intelligence_assets.defs.assets.models import model_key
    from intelligence_assets.defs.assets.target_analysis import FEATURE_SETS, LABELS, TARGET_RANKINGS
    from intelligence_assets.ml.dataset import build_dataset
    from intelligence_assets.ml.ranking import rank_target
    from intelligence_assets.ml.selection import select_features
    from intelligence_assets.ml.targets import build_labels, label_horizon
    from intelligence_assets.ml.walk_forward import WalkForwardProblem
    from intelligence_assets.store.keys import artifact_prefix

    universe = load_universe(Path(universe_path))
    platform = PlatformWork(platform_root) if platform_root else None
    spec = universe.target(target)
    horizon = label_horizon(spec)
    started = time.perf_counter()
    labels = build_labels(bars, spec)
    dataset = build_dataset(features, labels)
    problem = WalkForwardProblem.from_dataset(dataset, spec.task, horizon, universe.split, universe.seed)
    ranking = rank_target(problem, universe.ranking)
    selection = None
    if ranking.passed:
        selection = select_features(problem, universe.selection)
    if platform:
        platform.commit(artifact_prefix(LABELS, symbol, target), labels)
        platform.commit(artifact_prefix(TARGET_RANKINGS, symbol, target), ranking.to_dict())
        platform.commit(
            artifact_prefix(FEATURE_SETS, symbol, target),
            selection.to_dict() if selection else {"gated": True, "selected": []},
        )
    # The feature_sets value the models asset reads, then the models asset's own recipe.
    chosen = (
        {"gated": False, "reason": "", "selected": selection.selected}
        if selection
        else {"gated": True, "reason": ranking.reason, "selected": []}
    )
    for family in universe.model_families:
        trained = train_cell(Cell(universe, family, symbol, target), chosen, lambda: features, lambda: labels).model
        if platform:
            prefix = artifact_prefix(model_key(family), symbol, target)
            platform.track(universe, symbol, target, trained, prefix, platform.commit(prefix, trained))
    return TaskTime("cell", f"{symbol}|{target}", time.perf_counter() - started)


def sequential(universe_path: Path) -> tuple[float, list[TaskTime]]:
    universe = load_universe(universe_path)
    started = time.perf_counter()
    times = []
    for symbol in universe.symbols:
        symbol_time, (bars, features) = symbol_work(str(universe_path), symbol)
        times.append(symbol_time)
        for target in universe.target_names:
            times.append(cell_work(str(universe_path), symbol, target, bars, features))
    return time.perf_counter() - started, times


def ideal_pool(universe_path: Path, workers: int, platform_root: Path | None = None) -> float:
    """Measured: symbols in the pool, then every cell in the pool (one task each). With
    `platform_root`, each task also stores and tracks what it computed (PlatformWork).

    Its workers are prepared as make demo prepares its own: forked from a server that has
    imported the libraries once, native thread pools capped to a worker's share of the cores
    (without the cap the pool ran slower)."""
    universe = load_universe(universe_path)
    libraries = worker_libraries(universe, tracking=platform_root is not None)
    started = time.perf_counter()
    with forked_pool(workers, libraries, prepare_worker, (libraries, worker_threads(workers))) as pool:
        if platform_root:  # the MLflow store created once while the server imports, as make demo does
            PlatformWork(str(platform_root)).tracker.client.search_experiments(max_results=1)
        symbol_results = dict(
            zip(
                universe.symbols,
                pool.map(symbol_work, [str(universe_path)] * len(universe.symbols), universe.symbols),
                strict=True,
            )
        )
        cells = [(symbol, target) for symbol in universe.symbols for target in universe.target_names]
        root = str(platform_root) if platform_root else None
        list(
            pool.map(
                cell_work,
                *zip(*[(str(universe_path), s, t, *symbol_results[s][1], root) for s, t in cells], strict=False),
            )
        )
    return time.perf_counter() - started


def ideal_pool_in_child(universe_path: Path, workers: int, platform_root: Path | None = None) -> float:
    """`ideal_pool` in a fresh process of its own, as each `make demo` is: a process has one
    forkserver, started by its first pool with that pool's imports."""
    completed = subprocess.run(
        [
            PYTHON,
            "-c",
            f"from benchmarks.overhead import ideal_pool; from pathlib import Path; "
            f"print('SECONDS', ideal_pool(Path({str(universe_path)!r}), {workers}, "
            f"{f'Path({str(platform_root)!r})' if platform_root else None}))",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPOSITORY_ROOT,
    )
    if completed.returncode != 0:
        raise SystemExit(f"the pool failed:\n{completed.stderr[-3000:]}")
    return float(next(line for line in completed.stdout.splitlines() if line.startswith("SECONDS")).split()[1])


def dagster_run(universe_path: Path, workers: int, scratch: Path) -> tuple[float, float, list]:
    """`make demo`'s runner on a fresh embedded instance, in a child process (its own DAGSTER_HOME).

    Returns the seconds until that process exits (what `make demo` takes: its command returns
    then), the seconds until its workers' forkserver has exited too (it finishes exiting in the
    background, holding the output pipes; waited for here so the next measurement starts on an
    idle machine), and the stages."""
    import json
    from concurrent.futures import ThreadPoolExecutor

    env = fresh_home(scratch / "dagster_home", universe_path)
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            PYTHON,
            "-c",
            "from intelligence_assets.cli.demo import materialize_universe; "
            "from intelligence_assets.config.universe import load_universe; "
            f"import json; t = materialize_universe(load_universe(), {workers}, log_level='WARNING'); "
            f"print('STAGES', json.dumps([(s.job_name, s.runs, s.seconds) for s in t.stages]))",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with ThreadPoolExecutor(max_workers=1) as reader:
        output = reader.submit(process.communicate)  # drains both pipes until every holder has exited
        returncode = process.wait()
        seconds = time.perf_counter() - started
        stdout, stderr = output.result()
    all_exited = time.perf_counter() - started
    if returncode != 0:
        raise SystemExit(f"the Dagster run failed:\n{stderr[-3000:]}")
    stages = json.loads(next(line for line in stdout.splitlines() if line.startswith("STAGES"))[len("STAGES ") :])
    return seconds, all_exited, stages


@dataclass
class PoolsAndDagster:
    pool: float  # the ideal pool, compute only
    platform: float  # the pool that also stores and tracks
    dagster: float  # make demo's runner, until its process exits
    all_exited: float  # ... and its workers' forkserver too
    stages: list


def pools_and_dagster(universe_path: Path, workers: int, scratch: Path, label: str) -> PoolsAndDagster:
    """One round of the ideal pool, the pool that stores and tracks, and Dagster, one after the
    other, each in a fresh process on a fresh store under `scratch`."""
    scratch.mkdir(parents=True, exist_ok=True)
    print(f"{label}: ideal pool ...", flush=True)
    pool = ideal_pool_in_child(universe_path, workers)
    print(f"    {pool:.1f}s; pool that stores and tracks ...", flush=True)
    platform = ideal_pool_in_child(universe_path, workers, scratch / "platform")
    print(f"    {platform:.1f}s; Dagster ...", flush=True)
    seconds, all_exited, stages = dagster_run(universe_path, workers, scratch / "dagster")
    print(f"    {seconds:.1f}s", flush=True)
    return PoolsAndDagster(pool, platform, seconds, all_exited, stages)


# ---------------------------------------------------------------- (b) definitions load and planning


def definitions_load_seconds(universe_path: Path, repeats: int = 3) -> float:
    """Median wall of a fresh interpreter importing the definitions (what every run worker,
    code server and CLI call pays)."""
    env = {**os.environ, "INTELLIGENCE_UNIVERSE": str(universe_path)}
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(
            [PYTHON, "-c", "import intelligence_assets.definitions"], env=env, check=True, capture_output=True
        )
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def synthetic_universe(directory: Path, symbols: int, targets: int) -> Path:
    from intelligence_assets.ml.synthetic import synthetic_bars

    bars = directory / "bars"
    bars.mkdir(parents=True)
    names = [f"SYN{index:04d}" for index in range(symbols)]
    for index, symbol in enumerate(names):
        synthetic_bars(n_bars=700, seed=index).write_parquet(bars / f"{symbol}.parquet")
    kinds = [("direction", {}), ("forward_return", {}), ("forward_volatility", {})]
    specs = []
    for index in range(targets):
        kind, extra = kinds[index % len(kinds)]
        specs.append({"name": f"t{index:02d}_{kind}", "kind": kind, "horizon": 1 + index // len(kinds), **extra})
    config = {
        "symbols": names,
        "bars": {"directory": "bars", "min_history": 500},
        "targets": specs,
        "model_families": {"linear": {"params": {}}},
    }
    path = directory / "universe.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def plan_seconds(universe_path: Path, store_root: Path) -> tuple[float, int]:
    """Our planner (what `make demo`, the backfill runner and the retrain schedule launch from)
    over every asset partition of the universe, against an empty store: every partition needs a run."""
    from intelligence_assets.definitions import build_assets
    from intelligence_assets.defs.planner import plan_runs
    from intelligence_assets.store.artifact_store import LocalArtifactStore

    universe = load_universe(universe_path)
    assets = build_assets(universe)
    started = time.perf_counter()
    plan = plan_runs(universe, LocalArtifactStore(store_root), assets, universe.symbols)
    return time.perf_counter() - started, len(plan.stale)


# ---------------------------------------------------------------- (c) peak RSS per step

# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec from the forking parent, so every
# child would report at least this benchmark's own peak.
PEAK_RSS = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])"
STEP_SCRIPT = (
    """
import sys
import dagster as dg
from intelligence_assets.definitions import defs
key, partition = sys.argv[1], sys.argv[2] or None
if partition and "|" in partition:
    symbol, target = partition.split("|")
    partition = dg.MultiPartitionKey({"symbol": symbol, "target": target})
job = defs.get_implicit_global_asset_job_def()
result = job.execute_in_process(
    instance=dg.DagsterInstance.get(),
    asset_selection=[dg.AssetKey.from_user_string(key)],
    partition_key=partition,
    raise_on_error=False,
)
print("RSS_KB", """
    + PEAK_RSS
    + """, "OK" if result.success else "FAILED")
"""
)


def step_peak_rss(universe_path: Path, scratch: Path) -> list[tuple[str, float, bool]]:
    """Each step of one partition, upstream first, in its own process on a fresh instance."""
    universe = load_universe(universe_path)
    env = fresh_home(scratch / "rss_home", universe_path)
    symbol = universe.symbols[0]
    # A target that passes the ranking bar on the bundled data, so the model steps train.
    target = "y_volatility_10b" if "y_volatility_10b" in universe.target_names else universe.target_names[0]
    cell = f"{symbol}|{target}"
    subprocess.run(
        [
            PYTHON,
            "-c",
            f"import dagster as dg; from intelligence_assets.defs.partitions import register_symbols; "
            f"register_symbols(dg.DagsterInstance.get(), {[symbol]!r})",
        ],
        env=env,
        check=True,
    )
    from intelligence_assets.defs.assets.leaderboard import MODEL_LEADERBOARD
    from intelligence_assets.defs.assets.market_data import BARS, FEATURES
    from intelligence_assets.defs.assets.models import model_key
    from intelligence_assets.defs.assets.predictions import PREDICTIONS
    from intelligence_assets.defs.assets.registry import MODEL_REGISTRY
    from intelligence_assets.defs.assets.target_analysis import FEATURE_SETS, LABELS, TARGET_RANKINGS

    keyed = [(BARS, symbol), (FEATURES, symbol), (LABELS, cell), (TARGET_RANKINGS, cell), (FEATURE_SETS, cell)]
    keyed += [(model_key(family), cell) for family in universe.model_families]
    keyed += [(MODEL_LEADERBOARD, None), (MODEL_REGISTRY, None), (PREDICTIONS, symbol)]
    steps = [("(definitions only)", None), *((key.to_user_string(), partition) for key, partition in keyed)]
    rows = []
    for key, partition in steps:
        if partition is None and key.startswith("("):
            command = [PYTHON, "-c", f"import intelligence_assets.definitions; print('RSS_KB', {PEAK_RSS}, 'OK')"]
        else:
            command = [PYTHON, "-c", STEP_SCRIPT, key, partition or ""]
        completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        line = next((text for text in completed.stdout.splitlines() if text.startswith("RSS_KB")), None)
        if line is None:
            raise SystemExit(f"step {key} {partition} failed:\n{completed.stderr[-2000:]}")
        _, kilobytes, status = line.split()
        rows.append((key, int(kilobytes) / 1024, status == "OK"))
        print(f"  {key:<22} {int(kilobytes) / 1024:7.0f} MiB {status}", flush=True)
    return rows


# ---------------------------------------------------------------- the tables and plots


def new_figure(size: tuple[float, float]) -> tuple[object, object]:
    """A matplotlib figure and axis on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size)


def save_figure(figure: object, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_bars(path: Path, labels: list[str], values: list[float], ylabel: str, title: str) -> None:
    figure, axis = new_figure((max(6, 0.7 * len(labels)), 4))
    axis.bar(labels, values, color="#4C72B0")
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    for index, value in enumerate(values):
        axis.text(index, value, f"{value:.0f}" if value >= 10 else f"{value:.2f}", ha="center", va="bottom", fontsize=8)
    for label in axis.get_xticklabels():
        label.set_rotation(30)
        label.set_horizontalalignment("right")
    save_figure(figure, path)


def plot_planning(path: Path, partitions: list[int], seconds: list[float]) -> None:
    figure, axis = new_figure((6, 4))
    axis.loglog(partitions, seconds, marker="o")
    axis.set_xlabel("partitions per symbol x target asset")
    axis.set_ylabel("plan seconds")
    axis.set_title("Planning a backfill (empty store)")
    axis.grid(True, which="both", alpha=0.3)
    save_figure(figure, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=available_cores())
    parser.add_argument(
        "--plan-sizes",
        type=int,
        nargs="+",
        default=[100, 1000, 12500],
        help="partitions per symbol x target asset (25 targets each)",
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=["core", "planning", "rss"])
    parser.add_argument(
        "--repeats", type=int, default=2, help="rounds of the four ways in (a); the tables take medians"
    )
    args = parser.parse_args(argv)
    universe_path = Path(os.environ.get("INTELLIGENCE_UNIVERSE") or DEFAULT_UNIVERSE_PATH)
    universe = load_universe(universe_path)
    machine = describe_machine()
    scratch = Path(tempfile.mkdtemp(prefix="intelligence-overhead-"))
    lines = [
        "# Orchestration overhead",
        "",
        f"`make bench` (`benchmarks/overhead.py`) on {machine}. Bundled universe: {len(universe.symbols)} symbols x "
        f"{len(universe.targets)} targets x {len(universe.model_families)} families "
        f"({', '.join(universe.model_families)}).",
        "",
    ]
    try:
        if "core" not in args.skip:
            # Each way --repeats times, interleaved, so that a slow spell of a shared machine hits
            # every way alike; the tables take each way's median.
            measured: dict[str, list[float]] = {"sequential": [], "pool": [], "platform": [], "dagster": []}
            computes, all_stages, exits = [], [], []
            for repeat in range(args.repeats):
                print(f"(a) round {repeat + 1}/{args.repeats}: sequential loop ...", flush=True)
                seconds, times = sequential(universe_path)
                measured["sequential"].append(seconds)
                computes.append(sum(t.seconds for t in times))
                print(f"    {seconds:.1f}s", flush=True)
                measurement = pools_and_dagster(
                    universe_path, args.workers, scratch / f"round_{repeat}", f"(a) round {repeat + 1}/{args.repeats}"
                )
                for way in ("pool", "platform", "dagster"):
                    measured[way].append(getattr(measurement, way))
                exits.append(measurement.all_exited)
                all_stages.append((measurement.dagster, measurement.stages))
            sequential_seconds, pool_seconds, platform_seconds, dagster_seconds = (
                median(measured[way]) for way in ("sequential", "pool", "platform", "dagster")
            )
            compute = median(computes)
            stages = min(all_stages, key=lambda entry: abs(entry[0] - dagster_seconds))[1]
            runs_of = {way: ", ".join(f"{value:.1f}" for value in values) for way, values in measured.items()}
            floor = compute / args.workers
            lines += [
                "## (a) The same core work three ways",
                "",
                f"Median of {args.repeats} interleaved round(s); every round's value in brackets.",
                "",
                "| way | wall s | note |",
                "|---|---:|---|",
                f"| sequential Python loop (the seed's script) | {sequential_seconds:.1f} | compute only; {len(times)} "
                f"tasks [{runs_of['sequential']}] |",
                f"| ideal floor: summed compute / {args.workers} workers | {floor:.1f} | no pool could beat it |",
                f"| ideal parallel pool ({args.workers} processes) | {pool_seconds:.1f} | measured: the same tasks in "
                f"a process pool, from creating it to its shutdown [{runs_of['pool']}] |",
                f"| the pool, also storing and tracking | {platform_seconds:.1f} | each task also commits its results "
                "to an artifact store and tracks every model in MLflow (flavour, importance plot, registry version), "
                f"through the functions the assets call; no Dagster [{runs_of['platform']}] |",
                f"| Dagster (`make demo`'s runner, cold) | {dagster_seconds:.1f} | from launching its interpreter to "
                f"its exit; {'; '.join(f'{job} {runs} runs {seconds:.0f}s' for job, runs, seconds in stages if runs)}; "
                f"its workers' forkserver had finished exiting in the background {median(exits) - dagster_seconds:.1f} "
                f"s later [{runs_of['dagster']}] |",
                "",
                f"**Dagster / ideal pool = {dagster_seconds / pool_seconds:.2f}** (goal <= 1.15); Dagster / ideal "
                f"floor = {dagster_seconds / floor:.2f}; "
                f"sequential / Dagster = {sequential_seconds / dagster_seconds:.2f}.",
                "",
                "**Dagster / the pool doing the same storing and tracking = "
                f"{dagster_seconds / platform_seconds:.2f}**: what orchestration itself costs "
                "(runs, steps, event log, definitions in every worker); storing and tracking cost "
                f"{platform_seconds - pool_seconds:.1f} s of wall time without Dagster.",
                "",
                "![core work](overhead_core.png)",
                "",
            ]
            plot_bars(
                RESULTS / "overhead_core.png",
                ["sequential", "ideal floor", "ideal pool", "pool + storing + tracking", "Dagster"],
                [sequential_seconds, floor, pool_seconds, platform_seconds, dagster_seconds],
                "wall seconds",
                f"Bundled universe, {args.workers} workers",
            )
        if "planning" not in args.skip:
            print("(b) definitions load and planning ...", flush=True)
            load = definitions_load_seconds(universe_path)
            rows = []
            for size in args.plan_sizes:
                symbols = max(1, size // 25)
                directory = scratch / f"plan_{size}"
                path = synthetic_universe(directory, symbols, 25)
                load_size = definitions_load_seconds(path, repeats=1)
                seconds, stale = plan_seconds(path, directory / "store")
                rows.append((symbols * 25, symbols, seconds, stale, load_size))
                print(
                    f"    {symbols * 25} partitions per asset: plan {seconds:.1f}s ({stale} asset partitions), "
                    f"definitions load {load_size:.1f}s",
                    flush=True,
                )
            lines += [
                "## (b) Definitions load and backfill planning",
                "",
                f"Definitions load (fresh interpreter, median of 3, bundled universe): **{load:.2f} s**.",
                "",
                "| partitions per symbol x target asset | symbols x targets | asset partitions planned | plan s | "
                "definitions load s |",
                "|---:|---|---:|---:|---:|",
                *[
                    f"| {partitions:,} | {symbols} x 25 | {stale:,} | {seconds:.2f} | {load_size:.2f} |"
                    for partitions, symbols, seconds, stale, load_size in rows
                ],
                "",
                "Planning reads each symbol's bars once (its content hash is the bars' data version) and each asset "
                "partition's pointer in the store.",
                "",
                "![planning](overhead_planning.png)",
                "",
            ]
            plot_planning(RESULTS / "overhead_planning.png", [r[0] for r in rows], [r[2] for r in rows])
        if "rss" not in args.skip:
            print("(c) peak RSS per step ...", flush=True)
            rss = step_peak_rss(universe_path, scratch)
            lines += [
                "## (c) Peak RSS per step",
                "",
                "Each step of one partition in its own process (`execute_in_process` of that asset alone), upstream "
                "first; the first row is a process that only loads the definitions.",
                "",
                "| step | peak RSS MiB | succeeded |",
                "|---|---:|---|",
                *[f"| {key} | {mib:.0f} | {'yes' if ok else 'no'} |" for key, mib, ok in rss],
                "",
                "![rss](overhead_rss.png)",
                "",
            ]
            plot_bars(
                RESULTS / "overhead_rss.png",
                [key for key, _, _ in rss],
                [mib for _, mib, _ in rss],
                "peak RSS MiB",
                "One step per process",
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    # The reading of these numbers is written by hand and kept across runs.
    if NOTES.exists():
        lines += ["", NOTES.read_text().strip()]
    (RESULTS / "overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
