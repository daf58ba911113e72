"""Where a cold `make demo` spends its time, `make profile`.

Samples `make demo`'s process, its workers and their server with py-spy (50 samples a second,
idle threads left out) on a fresh embedded instance, then sorts every sample by the innermost
frame it passes through that belongs to one of the platform's duties: the event-log writes,
MLflow tracking, the artifact store, the model compute, imports; the rest is Dagster's own run
and step machinery or other. Writes benchmarks/results/profile.md and the samples themselves
(collapsed stacks, gzipped: flamegraph.pl or speedscope.app read them) beside it. Every process
also times its garbage collector's passes (`collector_probe/`), which no sample can show.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks.homes import fresh_home
from benchmarks.machine import describe_machine
from intelligence_assets.config.universe import DEFAULT_UNIVERSE_PATH, REPOSITORY_ROOT

RESULTS = REPOSITORY_ROOT / "benchmarks" / "results"
COLLECTOR_PROBE = Path(__file__).parent / "collector_probe"
RATE = 50

# Innermost match wins: a log line written inside the training code counts as an event-log write.
DUTIES = (
    ("event-log writes (Dagster's instance storage)", ("handle_new_event (dagster",)),
    ("MLflow tracking", ("(mlflow/", "tracking/tracker.py")),
    ("artifact store I/O", ("(intelligence_assets/store/",)),
    ("lineage reads (the instance's event log)", ("defs/assets/lineage.py",)),
    ("model compute (ml core)", ("(intelligence_assets/ml/", "(intelligence_assets/cells/training.py")),
    ("imports", ("_find_and_load (<frozen",)),
)


def duty_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, markers in DUTIES:
            if any(marker in frame for marker in markers):
                return name
    return "Dagster run and step machinery" if any("(dagster/" in frame for frame in frames) else "other"


def account(raw: Path) -> Counter:
    """CPU seconds by (process, duty) from py-spy's raw output (one collapsed stack and its
    sample count per line; each stack starts with its process chain)."""
    seconds: Counter = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        processes = sum(frame.startswith("process ") for frame in frames)
        process = "main process" if processes == 1 else "workers and their server"
        seconds[(process, duty_of(frames))] += int(count) / RATE
    return seconds


def stored_events(home: Path) -> Counter:
    """Events the demo stored, by type (log lines as `log line`), read from the embedded
    instance's per-run SQLite event logs."""
    import sqlite3

    counts: Counter = Counter()
    for database in (home / "history" / "runs").glob("*.db"):
        if database.name == "index.db":
            continue
        with sqlite3.connect(database) as connection:
            for event_type, count in connection.execute(
                "SELECT dagster_event_type, COUNT(*) FROM event_logs GROUP BY dagster_event_type"
            ):
                counts[event_type or "log line"] += count
    return counts


def collector_seconds(directory: Path) -> list[tuple[float, int]]:
    """(seconds, passes) of each process's garbage collector, most first (`collector_probe`)."""
    totals = [path.read_text().split() for path in directory.glob("*.txt")]
    return sorted(((float(seconds), int(passes)) for seconds, passes in totals), reverse=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("py-spy is not installed: make install (it is a dev dependency)")
    scratch = Path(tempfile.mkdtemp(prefix="intelligence-profile-"))
    try:
        env = fresh_home(scratch / "home", DEFAULT_UNIVERSE_PATH)
        probe = scratch / "collector"
        probe.mkdir()
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(COLLECTOR_PROBE), env.get("PYTHONPATH")]))
        env["COLLECTOR_PROBE_DIRECTORY"] = str(probe)
        raw = scratch / "demo.raw"
        started = time.perf_counter()
        subprocess.run(
            [py_spy, "record", "--subprocesses", "--rate", str(RATE), "--format", "raw", "-o", str(raw), "--",
             sys.executable, "-m", "intelligence_assets.cli.demo", "--workers", str(args.workers)],
            env=env, check=True, stdout=subprocess.DEVNULL, cwd=REPOSITORY_ROOT,
        )  # fmt: skip
        wall = time.perf_counter() - started
        seconds = account(raw)
        events = stored_events(scratch / "home")
        collector = collector_seconds(probe)
        with raw.open("rb") as source, gzip.open(RESULTS / "profile_demo.collapsed.gz", "wb") as target:
            shutil.copyfileobj(source, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    total = sum(seconds.values())
    rows = [
        f"| {process} | {duty} | {value:.1f} | {100 * value / total:.1f}% |"
        for (process, duty), value in sorted(seconds.items(), key=lambda item: (item[0][0], -item[1]))
    ]
    text = "\n".join(
        [
            "# Where a cold `make demo` spends its time",
            "",
            f"`make profile` (`benchmarks/profile_demo.py`, py-spy at {RATE} Hz, {args.workers} workers) on "
            f"{describe_machine()}. The demo took {wall:.1f} s under the profiler. Samples of threads that were not "
            "idle, as CPU seconds, sorted by the innermost platform duty each passed through: "
            "`profile_demo.collapsed.gz` holds every sample.",
            "",
            "| process | where | CPU s | share |",
            "|---|---|---:|---:|",
            *rows,
            f"| all | | {total:.1f} | |",
            "",
            f"Python's garbage collector, timed in every process (not in the samples above): "
            f"{sum(seconds for seconds, _ in collector):.1f} s in all; by process, most first: "
            + ", ".join(f"{seconds:.2f} s in {passes:,} passes" for seconds, passes in collector)
            + ".",
            "",
            f"Events stored in the instance's event log: {sum(events.values()):,}.",
            "",
            "| event | stored |",
            "|---|---:|",
            *(f"| {event} | {count:,} |" for event, count in events.most_common()),
            "",
        ]
    )
    (RESULTS / "profile.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
