"""Orchestration-overhead benchmark, `make bench`.

(a) The same work four ways, at one or several worker counts (`--workers 1 2 4 8 16`):
    sequential  a plain Python loop, as the seed's script ran it, that also stores every result
                and tracks every model, then ranks the models, moves the champion aliases and
                predicts with the champions, as a real script would;
    ideal pool  the core work alone in a process pool (and its floor: summed compute / workers);
    same-duty   the sequential loop's whole work in a process pool, without Dagster;
    dagster     `make demo`'s runner on a fresh embedded instance.
    The core work: bars validation and features per symbol; labels, target ranking, feature
    selection and every family's training (walk-forward folds included) per symbol x target.
    Storing, tracking, the leaderboard, the registry and predictions go through the functions
    the assets call. Peak memory of each way's process tree. `--copies N` repeats the universe's
    symbols N times, for machines with many cores. Each way is timed from launching its process
    to its exit. `--ways` picks ways and `--measurements FILE` keeps every measurement, so a
    table too long for one command (a lent machine's limit) is measured over several.
(b) Definitions load time (fresh interpreter) and the time to plan a backfill of 100, 1,000 and
    12,500 partitions per asset (synthetic universes; 12,500 = 500 symbols x 25 targets).
(c) Peak RSS per step: each asset step of one partition in its own process.
(d) Cold `make demo` runs with the instance on SQLite and on PostgreSQL, alternated.

Writes benchmarks/results/overhead.md, PNG plots beside it, and the headline ratios at the
machine's own core count into benchmarks/results/summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import median

import yaml

from benchmarks.homes import fresh_home, fresh_postgres_home
from benchmarks.machine import describe_machine, described_date
from intelligence_assets.config.universe import DEFAULT_UNIVERSE_PATH, REPOSITORY_ROOT, load_universe
from intelligence_assets.defs.processes import (
    available_cores,
    forked_pool,
    prepare_worker,
    worker_libraries,
    worker_threads,
)

RESULTS = REPOSITORY_ROOT / "benchmarks" / "results"
PYTHON = sys.executable


# ---------------------------------------------------------------- (a) the core work, without Dagster


@dataclass
class TaskTime:
    kind: str  # "symbol" or "cell"
    key: str
    compute: float  # the core work
    duty: float = 0.0  # storing and tracking its results, when the way does
    # Each model a storing way tracked: (family, "symbol|target", summary, fingerprint).
    models: list = field(default_factory=list)


def symbol_work(universe_path: str, symbol: str, platform_root: str | None = None) -> tuple[TaskTime, object]:
    """One symbol's bars, validated, and its features. With `platform_root`, both are also
    committed to the artifact store, as the bars and features assets commit them."""
    from intelligence_assets.defs.assets.market_data import BARS, FEATURES
    from intelligence_assets.ml.bars import validate_bars
    from intelligence_assets.ml.features import build_features
    from intelligence_assets.store.bars_source import LocalBarsSource
    from intelligence_assets.store.keys import artifact_prefix

    universe = load_universe(Path(universe_path))
    started = time.perf_counter()
    bars = LocalBarsSource(universe.bars_directory).read(symbol)
    validate_bars(bars, min_history=universe.bars.min_history)
    features = build_features(bars, universe.features)
    compute = time.perf_counter() - started
    duty = 0.0
    if platform_root:
        started = time.perf_counter()
        platform = PlatformWork(platform_root)
        platform.commit(artifact_prefix(BARS, symbol), bars)
        platform.commit(artifact_prefix(FEATURES, symbol), features)
        duty = time.perf_counter() - started
    return TaskTime("symbol", symbol, compute, duty), (bars, features)


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
    duty_started = 0.0
    labels = build_labels(bars, spec)
    dataset = build_dataset(features, labels)
    problem = WalkForwardProblem.from_dataset(dataset, spec.task, horizon, universe.split, universe.seed)
    ranking = rank_target(problem, universe.ranking)
    selection = None
    if ranking.passed:
        selection = select_features(problem, universe.selection)
    duty = 0.0
    if platform:
        duty_started = time.perf_counter()
        platform.commit(artifact_prefix(LABELS, symbol, target), labels)
        platform.commit(artifact_prefix(TARGET_RANKINGS, symbol, target), ranking.to_dict())
        platform.commit(
            artifact_prefix(FEATURE_SETS, symbol, target),
            selection.to_dict() if selection else {"gated": True, "selected": []},
        )
        duty += time.perf_counter() - duty_started
    # The feature_sets value the models asset reads, then the models asset's own recipe.
    chosen = (
        {"gated": False, "reason": "", "selected": selection.selected}
        if selection
        else {"gated": True, "reason": ranking.reason, "selected": []}
    )
    models = []
    for family in universe.model_families:
        trained = train_cell(Cell(universe, family, symbol, target), chosen, lambda: features, lambda: labels).model
        if platform:
            duty_started = time.perf_counter()
            prefix = artifact_prefix(model_key(family), symbol, target)
            fingerprint = platform.commit(prefix, trained)
            platform.track(universe, symbol, target, trained, prefix, fingerprint)
            summary = {**trained.summary, "family": trained.family, "trained": trained.trained}
            models.append((family, f"{symbol}|{target}", summary, fingerprint))
            duty += time.perf_counter() - duty_started
    return TaskTime("cell", f"{symbol}|{target}", time.perf_counter() - started - duty, duty, models)


def champions_and_predictions(universe_path: str, platform_root: str, cells: list[TaskTime], map_each=map) -> float:
    """What the platform does after training, without Dagster: the leaderboard of every tracked
    model, the registry pass that moves the champion aliases, and each symbol's predictions by
    its champions, each committed to the store, through the functions the assets call.
    `map_each` runs the symbols' predictions (a pool's map). Returns the seconds it took."""
    from intelligence_assets.cells.leaderboard import rank_models
    from intelligence_assets.cells.registry import update_registry
    from intelligence_assets.defs.assets.leaderboard import MODEL_LEADERBOARD
    from intelligence_assets.defs.assets.registry import MODEL_REGISTRY
    from intelligence_assets.store.keys import artifact_prefix

    started = time.perf_counter()
    universe = load_universe(Path(universe_path))
    platform = PlatformWork(platform_root)
    summaries: dict[str, dict[str, dict]] = {}
    fingerprints: dict[str, dict[str, str]] = {}
    for task in cells:
        for family, partition, summary, fingerprint in task.models:
            summaries.setdefault(family, {})[partition] = summary
            fingerprints.setdefault(family, {})[partition] = fingerprint
    board = rank_models(summaries, universe, fingerprints)
    platform.commit(artifact_prefix(MODEL_LEADERBOARD), board.table)
    update = update_registry(
        platform.tracker, platform.store, board.table, universe.promotion, universe.symbols, run_id="benchmark"
    )
    platform.commit(artifact_prefix(MODEL_REGISTRY), update.table)
    count = len(universe.symbols)
    list(
        map_each(
            symbol_predictions,
            [universe_path] * count,
            [platform_root] * count,
            universe.symbols,
            [update.table] * count,
        )
    )
    return time.perf_counter() - started


def symbol_predictions(universe_path: str, platform_root: str, symbol: str, registry: object) -> None:
    from intelligence_assets.cells.predictions import predict_champions, symbol_champions
    from intelligence_assets.defs.assets.predictions import PREDICTIONS
    from intelligence_assets.ml.features import build_features
    from intelligence_assets.store.bars_source import LocalBarsSource
    from intelligence_assets.store.keys import artifact_prefix

    universe = load_universe(Path(universe_path))
    platform = PlatformWork(platform_root)
    # Computed again, where the asset loads them from the store: about as cheap for these sizes.
    features = build_features(LocalBarsSource(universe.bars_directory).read(symbol), universe.features)
    predicted = predict_champions(symbol_champions(registry, symbol), features, platform.tracker)
    platform.commit(artifact_prefix(PREDICTIONS, symbol), predicted.table)


def sequential(universe_path: Path, platform_root: Path | None = None) -> tuple[float, list[TaskTime]]:
    """The seed's script: every symbol, then each of its targets, one after the other in one
    process. With `platform_root` it stores and tracks as it goes, as a real script would."""
    universe = load_universe(universe_path)
    root = str(platform_root) if platform_root else None
    started = time.perf_counter()
    times = []
    for symbol in universe.symbols:
        symbol_time, (bars, features) = symbol_work(str(universe_path), symbol, root)
        times.append(symbol_time)
        for target in universe.target_names:
            times.append(cell_work(str(universe_path), symbol, target, bars, features, root))
    if root:
        final = champions_and_predictions(str(universe_path), root, times)
        times.append(TaskTime("final", "leaderboard, registry, predictions", 0.0, final))
    return time.perf_counter() - started, times


def sequential_in_child(universe_path: Path, platform_root: Path) -> tuple[float, float, float, int, float]:
    """`sequential`, storing and tracking, in a fresh process: its wall seconds (launch to exit),
    summed compute and duty seconds, its task count and the process's peak memory (MiB)."""
    code = (
        "from benchmarks.overhead import sequential; from pathlib import Path; "
        f"seconds, times = sequential(Path({str(universe_path)!r}), Path({str(platform_root)!r})); "
        "print('SECONDS', seconds, sum(t.compute for t in times), sum(t.duty for t in times), len(times))"
    )
    (_, compute, duty, tasks), seconds, peak = run_measured(code, "the sequential loop")
    return seconds, float(compute), float(duty), int(tasks), peak


@dataclass
class Measured:
    output: str  # what the process printed after its marker, on the marker's line
    seconds: float  # from launching the process to its exit
    all_exited: float  # ... to the exit of every process holding its output pipes (forked workers)
    peak_mib: float  # peak memory of the process and its children


def launch_measured(code: str, what: str, marker: str, env: dict[str, str] | None = None) -> Measured:
    """Python `code` in a fresh process from the repository root, timed from launch to exit (what
    a command takes, interpreter start and imports included), its memory watched."""
    from concurrent.futures import ThreadPoolExecutor

    with PeakMemory() as memory:
        started = time.perf_counter()
        process = subprocess.Popen(
            [PYTHON, "-c", code],
            cwd=REPOSITORY_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        memory.watch(process.pid)
        with ThreadPoolExecutor(max_workers=1) as reader:
            output = reader.submit(process.communicate)  # drains both pipes until every holder has exited
            process.wait()
            seconds = time.perf_counter() - started
            stdout, stderr = output.result()
        all_exited = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{what} failed:\n{stderr[-3000:]}")
    line = next(line for line in stdout.splitlines() if line.startswith(marker))
    return Measured(line[len(marker) :].strip(), seconds, all_exited, memory.peak_mib)


def run_measured(code: str, what: str) -> tuple[list[str], float, float]:
    """`launch_measured` for code that prints its figures after `SECONDS`: those fields, the wall
    seconds and the peak memory (MiB)."""
    measured = launch_measured(code, what, "SECONDS")
    return measured.output.split(), measured.seconds, measured.peak_mib


class PeakMemory:
    """The peak, over the life of a process and its descendants, of their summed proportional
    set size (PSS: a page shared by forked workers counts once in total, not once per worker),
    sampled twice a second from /proc."""

    def __init__(self) -> None:
        import threading

        self._root: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.peak_mib = 0.0

    def watch(self, pid: int) -> None:
        self._root = pid

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _children() -> dict[int, list[int]]:
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(parent, []).append(int(entry.name))
        return children

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            if self._root is None:
                continue
            children, total_kb, pending = self._children(), 0, [self._root]
            while pending:
                pid = pending.pop()
                pending += children.get(pid, [])
                try:
                    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
                    total_kb += int(next(line for line in rollup.splitlines() if line.startswith("Pss:")).split()[1])
                except (OSError, StopIteration, ValueError):
                    continue
            self.peak_mib = max(self.peak_mib, total_kb / 1024)


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
        root = str(platform_root) if platform_root else None
        count = len(universe.symbols)
        symbol_results = dict(
            zip(
                universe.symbols,
                pool.map(symbol_work, [str(universe_path)] * count, universe.symbols, [root] * count),
                strict=True,
            )
        )
        cells = [(symbol, target) for symbol in universe.symbols for target in universe.target_names]
        trained = list(
            pool.map(
                cell_work,
                *zip(*[(str(universe_path), s, t, *symbol_results[s][1], root) for s, t in cells], strict=False),
            )
        )
        if root:
            champions_and_predictions(str(universe_path), root, trained, pool.map)
    return time.perf_counter() - started


def ideal_pool_in_child(universe_path: Path, workers: int, platform_root: Path | None = None) -> tuple[float, float]:
    """`ideal_pool` in a fresh process of its own, as each `make demo` is: a process has one
    forkserver, started by its first pool with that pool's imports. Its seconds from launching
    the process to its exit and the peak memory (MiB) of the process and its workers."""
    code = (
        f"from benchmarks.overhead import ideal_pool; from pathlib import Path; "
        f"print('SECONDS', ideal_pool(Path({str(universe_path)!r}), {workers}, "
        f"{f'Path({str(platform_root)!r})' if platform_root else None}))"
    )
    _, seconds, peak = run_measured(code, "the pool")
    return seconds, peak


def dagster_run(
    universe_path: Path, workers: int, scratch: Path, instance: str = "sqlite"
) -> tuple[float, float, list, float]:
    """`make demo`'s runner on a fresh instance, in a child process (its own DAGSTER_HOME): the
    embedded default (SQLite), or with `instance="postgres"` runs and event log in PostgreSQL.

    Returns the seconds until that process exits (what `make demo` takes: its command returns
    then), the seconds until its workers' forkserver has exited too (it finishes exiting in the
    background, holding the output pipes; waited for here so the next measurement starts on an
    idle machine), the stages, and the peak memory (MiB) of the process and its workers."""
    make_home = fresh_postgres_home if instance == "postgres" else fresh_home
    env = make_home(scratch / "dagster_home", universe_path)
    measured = launch_measured(
        "from intelligence_assets.cli.demo import materialize_universe; "
        "from intelligence_assets.config.universe import load_universe; "
        f"import json; t = materialize_universe(load_universe(), {workers}, log_level='WARNING'); "
        f"print('STAGES', json.dumps([(s.job_name, s.runs, s.seconds) for s in t.stages]))",
        "the Dagster run",
        "STAGES",
        env,
    )
    return measured.seconds, measured.all_exited, json.loads(measured.output), measured.peak_mib


@dataclass
class PoolsAndDagster:
    pool: float  # the ideal pool, compute only
    platform: float  # the pool that also stores and tracks
    dagster: float  # make demo's runner, until its process exits
    all_exited: float  # ... and its workers' forkserver too
    stages: list
    memory: dict[str, float]  # way -> peak MiB


def pools_and_dagster(universe_path: Path, workers: int, scratch: Path, label: str) -> PoolsAndDagster:
    """One round of the ideal pool, the pool that stores and tracks, and Dagster, one after the
    other, each in a fresh process on a fresh store under `scratch`."""
    scratch.mkdir(parents=True, exist_ok=True)
    print(f"{label}: ideal pool ...", flush=True)
    pool, pool_memory = ideal_pool_in_child(universe_path, workers)
    print(f"    {pool:.1f}s; pool that stores and tracks ...", flush=True)
    platform, platform_memory = ideal_pool_in_child(universe_path, workers, scratch / "platform")
    print(f"    {platform:.1f}s; Dagster ...", flush=True)
    seconds, all_exited, stages, dagster_memory = dagster_run(universe_path, workers, scratch / "dagster")
    print(f"    {seconds:.1f}s", flush=True)
    memory = {"pool": pool_memory, "platform": platform_memory, "dagster": dagster_memory}
    return PoolsAndDagster(pool, platform, seconds, all_exited, stages, memory)


SEQUENTIAL_GOALS = {2: 1.5, 16: 12.0}  # sequential / Dagster, by core count (the goals)
SAME_DUTY_GOAL = 1.15  # Dagster / the pool that stores and tracks


def replicated_universe(universe_path: Path, directory: Path, copies: int) -> Path:
    """The universe with each symbol `copies` times (`AAPL`, `AAPL-2`, ...), each copy's bars a
    copy of the symbol's file: as many real series as a larger universe, the same work each."""
    universe = load_universe(universe_path)
    raw = yaml.safe_load(universe_path.read_text())
    bars = directory / "bars"
    bars.mkdir(parents=True)
    symbols = []
    for copy in range(1, copies + 1):
        for symbol in universe.symbols:
            name = symbol if copy == 1 else f"{symbol}-{copy}"
            shutil.copy(universe.bars_directory / f"{symbol}.parquet", bars / f"{name}.parquet")
            symbols.append(name)
    raw["symbols"] = symbols
    raw.setdefault("bars", {})["directory"] = str(bars)
    path = directory / "universe.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


WAYS = ("sequential", "pool", "platform", "dagster")
WAY_NAMES = {
    "sequential": "sequential loop (storing and tracking)",
    "pool": "ideal pool",
    "platform": "pool that stores and tracks",
    "dagster": "Dagster",
}


@dataclass
class Measurement:
    """One way measured once: wall seconds from launching its process to its exit, and the
    peak memory of its process tree. `details`: the sequential loop's compute and duty seconds
    and task count; Dagster's stages and when its forkserver had exited."""

    way: str
    workers: int  # 1 for the sequential loop
    seconds: float
    peak_mib: float
    cores: int
    machine: str
    commit: str
    details: dict = field(default_factory=dict)


def load_measurements(path: Path | None) -> list[Measurement]:
    if path is None or not path.exists():
        return []
    return [Measurement(**entry) for entry in json.loads(path.read_text())]


def save_measurements(path: Path | None, measurements: list[Measurement]) -> None:
    """Written after every measurement, so that a command stopped by a time limit keeps what it
    measured and the next command (`--measurements` again) goes on from there."""
    if path is None:
        return
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps([asdict(entry) for entry in measurements], indent=1) + "\n")
    temporary.replace(path)


def measure_core_work(
    universe_path: Path,
    worker_counts: list[int],
    repeats: int,
    scratch: Path,
    ways: list[str],
    measurements: list[Measurement],
    measurements_path: Path | None,
) -> None:
    """(a), measured: the sequential loop once a round, then at each worker count the ideal
    pool, the pool that stores and tracks, and Dagster (those of `ways`); rounds interleaved so
    that a slow spell of a shared machine hits every way alike. Appends to `measurements`."""
    from benchmarks.summary import current_commit

    machine, cores, commit = describe_machine(), available_cores(), current_commit()

    def keep(way: str, workers: int, seconds: float, peak: float, details: dict | None = None) -> None:
        measurements.append(Measurement(way, workers, seconds, peak, cores, machine, commit, details or {}))
        save_measurements(measurements_path, measurements)
        print(f"    {seconds:.1f}s", flush=True)

    for repeat in range(repeats):
        label = f"(a) round {repeat + 1}/{repeats}"
        directory = scratch / f"round_{repeat}"
        if "sequential" in ways:
            print(f"{label}: sequential loop (storing and tracking) ...", flush=True)
            seconds, compute, duty, tasks, peak = sequential_in_child(universe_path, directory / "sequential")
            keep("sequential", 1, seconds, peak, {"compute": compute, "duty": duty, "tasks": tasks})
        for workers in worker_counts:
            where = directory / f"workers_{workers}"
            where.mkdir(parents=True, exist_ok=True)
            if "pool" in ways:
                print(f"{label}, {workers} workers: ideal pool ...", flush=True)
                keep("pool", workers, *ideal_pool_in_child(universe_path, workers))
            if "platform" in ways:
                print(f"{label}, {workers} workers: pool that stores and tracks ...", flush=True)
                keep("platform", workers, *ideal_pool_in_child(universe_path, workers, where / "platform"))
            if "dagster" in ways:
                print(f"{label}, {workers} workers: Dagster ...", flush=True)
                seconds, all_exited, stages, peak = dagster_run(universe_path, workers, where / "dagster")
                keep("dagster", workers, seconds, peak, {"all_exited": all_exited, "stages": stages})


def core_work_section(measurements: list[Measurement], plot_path: Path) -> list[str]:
    """(a), the tables: medians of every measurement of each way and worker count (a way not
    measured at a worker count reads "not run"). The largest worker count is the headline; at
    the measuring machine's own core count the ratios go into summary.json."""
    from benchmarks.summary import record

    def of(way: str, workers: int) -> list[Measurement]:
        return [entry for entry in measurements if entry.way == way and entry.workers == workers]

    def seconds(way: str, workers: int) -> float | None:
        found = of(way, workers)
        return median(entry.seconds for entry in found) if found else None

    def peak(way: str, workers: int) -> str:
        found = of(way, workers)
        return f"{max(entry.peak_mib for entry in found):.0f}" if found else "not run"

    def shown(value: float | None) -> str:
        return f"{value:.1f}" if value is not None else "not run"

    def ratio(numerator: float | None, denominator: float | None, bold: bool = False) -> str:
        if numerator is None or denominator is None:
            return ""
        return f"**{numerator / denominator:.2f}**" if bold else f"{numerator / denominator:.2f}"

    def rounds(way: str, workers: int) -> str:
        return ", ".join(f"{entry.seconds:.1f}" for entry in of(way, workers))

    sequential_runs = of("sequential", 1)
    sequential_seconds = seconds("sequential", 1)
    compute = median(entry.details["compute"] for entry in sequential_runs) if sequential_runs else None
    duty = median(entry.details["duty"] for entry in sequential_runs) if sequential_runs else None
    worker_counts = sorted({entry.workers for entry in measurements if entry.way != "sequential"})
    if not worker_counts:
        return []
    machines = sorted({entry.machine.split(";")[0] for entry in measurements})

    scaling = [
        "| workers | ideal floor s | ideal pool s | pool that stores and tracks s | Dagster s | sequential / Dagster | "
        "Dagster / pool that stores and tracks | Dagster / ideal pool | peak MiB: pool, storing pool, Dagster |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for workers in worker_counts:
        pool, platform, dagster = seconds("pool", workers), seconds("platform", workers), seconds("dagster", workers)
        floor = compute / workers if compute is not None else None
        scaling.append(
            f"| {workers} | {shown(floor)} | {shown(pool)} | {shown(platform)} | {shown(dagster)} | "
            f"{ratio(sequential_seconds, dagster, bold=True)} | {ratio(dagster, platform, bold=True)} | "
            f"{ratio(dagster, pool)} | {peak('pool', workers)}, {peak('platform', workers)}, "
            f"{peak('dagster', workers)} |"
        )
        dagster_runs = of("dagster", workers)
        if not dagster_runs or workers != dagster_runs[0].cores:
            continue
        measured = dagster_runs[0]
        where = {
            "cores": workers,
            "machine": measured.machine,
            "date": described_date(measured.machine),
            "commit": measured.commit,
        }
        if sequential_seconds is not None:
            record(
                "sequential loop (storing and tracking) / Dagster",
                sequential_seconds / dagster,
                goal=SEQUENTIAL_GOALS.get(workers),
                better="higher",
                **where,
            )
        if platform is not None:
            record(
                "Dagster / pool that stores and tracks",
                dagster / platform,
                goal=SAME_DUTY_GOAL,
                better="lower",
                **where,
            )
        if pool is not None:
            record("Dagster / ideal pool (compute only)", dagster / pool, goal=None, better="lower", **where)
    headline = worker_counts[-1]
    pool, platform, dagster = seconds("pool", headline), seconds("platform", headline), seconds("dagster", headline)
    dagster_runs = of("dagster", headline)
    dagster_note = ""
    if dagster_runs:
        typical = min(dagster_runs, key=lambda entry: abs(entry.seconds - dagster))
        exits = median(entry.details["all_exited"] for entry in dagster_runs)
        dagster_note = (
            "; ".join(f"{job} {runs} runs {spent:.0f}s" for job, runs, spent in typical.details["stages"] if runs)
            + f"; its workers' forkserver had finished exiting in the background {exits - dagster:.1f} s later"
        )
    plot_scaling(plot_path, worker_counts, sequential_seconds, compute, seconds)
    sequential_row = (
        f"| sequential loop (the seed's script, storing and tracking) | {shown(sequential_seconds)} | "
        f"{peak('sequential', 1)} | {sequential_runs[0].details['tasks']} tasks, one process; {compute:.1f} s "
        f"computing, {duty:.1f} s storing and tracking [{rounds('sequential', 1)}] |"
        if sequential_runs
        else "| sequential loop (the seed's script, storing and tracking) | not run | | |"
    )
    floor_row = (
        f"| ideal floor: summed compute / {headline} workers | {compute / headline:.1f} | | no pool could beat it |"
        if compute is not None
        else ""
    )
    return [
        "## (a) The same work four ways",
        "",
        f"Measured on {'; '.join(machines)}. Median of every round; every round's value in brackets. Each way "
        "is timed from launching its process to its exit (interpreter start and imports included). Every way but "
        "the ideal pool stores and tracks: each task commits its results to an artifact store and tracks every "
        "model in MLflow (flavour, importance chart, registry version) through the functions the assets call.",
        "",
        f"| way ({headline} workers) | wall s | peak MiB | note |",
        "|---|---:|---:|---|",
        sequential_row,
        *([floor_row] if floor_row else []),
        f"| ideal parallel pool ({headline} processes) | {shown(pool)} | {peak('pool', headline)} | compute only "
        f"[{rounds('pool', headline)}] |",
        f"| the pool, also storing and tracking | {shown(platform)} | {peak('platform', headline)} | the same tasks, "
        f"each also storing and tracking; no Dagster [{rounds('platform', headline)}] |",
        f"| Dagster (`make demo`'s runner, cold) | {shown(dagster)} | {peak('dagster', headline)} | "
        f"{dagster_note} [{rounds('dagster', headline)}] |",
        "",
        f"**Sequential / Dagster = {ratio(sequential_seconds, dagster) or 'not measured'}** (goal >= "
        f"{SEQUENTIAL_GOALS.get(headline, 'none at this core count')}); **Dagster / the pool that stores and tracks "
        f"= {ratio(dagster, platform) or 'not measured'}** (goal <= {SAME_DUTY_GOAL}); Dagster / ideal pool = "
        f"{ratio(dagster, pool) or 'not measured'}.",
        "",
        "Peak memory: the summed proportional set size (PSS) of the process and its workers, sampled twice a second.",
        "",
        "### By worker count",
        "",
        *scaling,
        "",
        f"![scaling]({plot_path.name})",
        "",
    ]


KEPT_NOTE = "*Kept from an earlier run"


def earlier_section(path: Path, heading: str) -> list[str]:
    """A section ("## (b) ...") of the results file as an earlier run wrote it, for a run that
    skips it: skipping a section keeps its last measurement rather than dropping it."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(f"## {heading}")), None)
    if start is None:
        return []
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    body = lines[start + 1 : end]
    if any(line.startswith(KEPT_NOTE) for line in body):
        return [lines[start], *body]
    # The file's header (before its first section) names the run that measured this section.
    header = lines[: next(i for i, line in enumerate(lines) if line.startswith("## "))]
    measured = re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", "\n".join(header))
    when = f" ({measured.group()})" if measured else ""
    return [lines[start], "", f"{KEPT_NOTE}{when}: the run that wrote this file skipped this section.*", *body]


def plot_scaling(
    path: Path,
    worker_counts: list[int],
    sequential_seconds: float | None,
    compute: float | None,
    seconds: Callable[[str, int], float | None],
) -> None:
    figure, axis = new_figure((6.5, 4.2))
    if sequential_seconds is not None:
        axis.axhline(sequential_seconds, color="#888888", linestyle="--", label=WAY_NAMES["sequential"])
    if compute is not None:
        axis.plot(worker_counts, [compute / workers for workers in worker_counts], color="#BBBBBB", label="ideal floor")
    for way in ("pool", "platform", "dagster"):
        measured = [(workers, seconds(way, workers)) for workers in worker_counts]
        measured = [(workers, value) for workers, value in measured if value is not None]
        if measured:
            axis.plot(*zip(*measured, strict=True), marker="o", label=WAY_NAMES[way])
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_xticks(worker_counts, [str(workers) for workers in worker_counts])
    axis.set_xlabel("workers")
    axis.set_ylabel("wall seconds")
    axis.set_title("The same work by worker count")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    save_figure(figure, path)


def instance_section(universe_path: Path, workers: int, repeats: int, scratch: Path) -> list[str]:
    """(d): cold `make demo` runs with the instance on SQLite (the embedded default) and on
    PostgreSQL (the `postgres` deployment's dagster.yaml, a local server), alternated."""
    seconds: dict[str, list[float]] = {"sqlite": [], "postgres": []}
    for repeat in range(repeats):
        for instance in ("sqlite", "postgres") if repeat % 2 == 0 else ("postgres", "sqlite"):
            print(f"(d) round {repeat + 1}/{repeats}: Dagster on {instance} ...", flush=True)
            measured = dagster_run(universe_path, workers, scratch / f"instance_{repeat}_{instance}", instance)[0]
            seconds[instance].append(measured)
            print(f"    {measured:.1f}s", flush=True)
    sqlite, postgres = median(seconds["sqlite"]), median(seconds["postgres"])
    return [
        "## (d) The instance's storage: SQLite against PostgreSQL",
        "",
        f"Cold `make demo` runs ({workers} workers), alternated, median of {repeats}; runs, event log and "
        "schedules in SQLite files under DAGSTER_HOME (the embedded default) or in a PostgreSQL 15 server on "
        "this machine (`deploy/postgres/dagster.yaml`); artifacts and MLflow local in both.",
        "",
        "| instance | wall s | every run |",
        "|---|---:|---|",
        f"| SQLite | {sqlite:.1f} | {', '.join(f'{value:.1f}' for value in seconds['sqlite'])} |",
        f"| PostgreSQL | {postgres:.1f} | {', '.join(f'{value:.1f}' for value in seconds['postgres'])} |",
        "",
        f"PostgreSQL / SQLite = {postgres / sqlite:.2f}.",
        "",
    ]


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
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[available_cores()],
        help="worker counts to measure the pools and Dagster at (e.g. 1 2 4 8 16); the last is the headline",
    )
    parser.add_argument(
        "--copies",
        type=int,
        default=1,
        help="the universe's symbols this many times over (renamed copies of their bars), to keep many workers busy",
    )
    parser.add_argument(
        "--plan-sizes",
        type=int,
        nargs="+",
        default=[100, 1000, 12500],
        help="partitions per symbol x target asset (25 targets each)",
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=["core", "planning", "rss", "instance"])
    parser.add_argument(
        "--repeats", type=int, default=2, help="rounds of the four ways in (a); the tables take medians"
    )
    parser.add_argument(
        "--ways",
        nargs="*",
        default=list(WAYS),
        choices=WAYS,
        help="which ways (a) measures (none: only render the tables from --measurements)",
    )
    parser.add_argument(
        "--measurements",
        type=Path,
        help="a JSON file of (a)'s measurements, read first and written after each one: a table too long for one "
        "command (a machine's time limit) is measured over several, each adding what it measured",
    )
    parser.add_argument(
        "--output",
        default="overhead.md",
        help="the results file under benchmarks/results/ (its plots are named after it); hand-written notes "
        "in benchmarks/<its name>_notes.md are appended",
    )
    args = parser.parse_args(argv)
    universe_path = Path(os.environ.get("INTELLIGENCE_UNIVERSE") or DEFAULT_UNIVERSE_PATH)
    # Rendering another machine's measurements (no ways measured here) names none of this one's.
    renders_only = not args.ways and {"planning", "rss", "instance"} <= set(args.skip)
    machine = None if renders_only else describe_machine()
    scratch = Path(tempfile.mkdtemp(prefix="intelligence-overhead-"))
    if args.copies > 1:
        universe_path = replicated_universe(universe_path, scratch / "universe", args.copies)
    universe = load_universe(universe_path)
    lines = [
        "# Orchestration overhead",
        "",
        f"`make bench` (`benchmarks/overhead.py {' '.join(argv if argv is not None else sys.argv[1:])}`)"
        + (f" on {machine}." if machine else ".")
        + " "
        f"Universe: {len(universe.symbols)} symbols x "
        f"{len(universe.targets)} targets x {len(universe.model_families)} families "
        f"({', '.join(universe.model_families)}).",
        "",
    ]
    output = RESULTS / args.output
    sections = {"core": "(a)", "planning": "(b)", "rss": "(c)", "instance": "(d)"}
    kept = {name: earlier_section(output, heading) for name, heading in sections.items() if name in args.skip}
    try:
        if "core" not in args.skip:
            measurements = load_measurements(args.measurements)
            measure_core_work(
                universe_path, args.workers, args.repeats, scratch, args.ways, measurements, args.measurements
            )
            lines += core_work_section(measurements, output.with_name(f"{output.stem}_scaling.png"))
        else:
            lines += kept["core"]
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
        else:
            lines += kept["planning"]
        if "instance" not in args.skip:
            lines += instance_section(universe_path, args.workers[-1], args.repeats, scratch)
        else:
            lines += kept["instance"]
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
        else:
            lines += kept["rss"]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    # The reading of these numbers is written by hand and kept across runs.
    notes = REPOSITORY_ROOT / "benchmarks" / f"{output.stem}_notes.md"
    if notes.exists():
        lines += ["", notes.read_text().strip()]
    output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
