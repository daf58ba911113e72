"""Storage benchmark (issue: cache-aware rematerialization).

1. Cold full run vs no-change rerun of the bundled universe, through the same runner as
   `make demo` (SQLite instance, local artifact store). Goal: rerun <= 3% of cold.
2. Load + store time as a share of each model step (load the step's inputs, train, store the
   model), on the local directory and on an S3 endpoint (moto server on loopback, minio SDK),
   with and without the store's read cache, and the S3 requests of each step by kind.
   Goal: <= 5%.

    .venv/bin/python -m benchmarks.storage        (make bench-storage)

Writes benchmarks/results/storage.md (keeping its "## Before ..." sections) and the headline
figures to benchmarks/results/summary.json.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import tempfile
import time
from pathlib import Path

import polars as pl

from benchmarks.machine import describe_machine
from benchmarks.summary import record
from intelligence_assets.config.universe import REPOSITORY_ROOT, load_universe

RESULTS = REPOSITORY_ROOT / "benchmarks" / "results" / "storage.md"
BEFORE_HEADING = "\n## Before"
# Each S3 variant on its own bucket of one moto server: variant -> (bucket, with a read cache).
S3_VARIANTS = {
    "S3 endpoint, read cache": ("bench-storage-cached", True),
    "S3 endpoint, no read cache": ("bench-storage", False),
}


def timed(universe, workers: int, every_partition: bool) -> tuple[list, float]:
    from intelligence_assets.cli.demo import materialize_universe

    started = time.perf_counter()
    stages = materialize_universe(universe, workers, log_level="WARNING", every_partition=every_partition)
    return stages.stages, time.perf_counter() - started


REQUEST_KINDS = ("GET", "PUT", "HEAD", "LIST", "DELETE")


def model_step_io(source_root: Path, store, families: list[str], limit: int, requests=None) -> pl.DataFrame:
    """Per trained model partition: seconds to load inputs, train, and store the result, and,
    given the S3 server's request log (`S3RequestLog`), the requests each phase sent."""
    from intelligence_assets.cells.training import Cell, train_cell
    from intelligence_assets.defs.assets.market_data import FEATURES
    from intelligence_assets.defs.assets.models import model_key
    from intelligence_assets.defs.assets.target_analysis import FEATURE_SETS, LABELS
    from intelligence_assets.store.artifact_store import LocalArtifactStore
    from intelligence_assets.store.artifacts import ArtifactHandle, Manifest, write_artifact
    from intelligence_assets.store.keys import artifact_prefix

    universe = load_universe()
    source = LocalArtifactStore(source_root)
    # Put the inputs in the store under test first, as the upstream steps would have.
    cells = []
    for symbol in universe.symbols:
        for target in universe.target_names:
            selection = ArtifactHandle.current(source, artifact_prefix(FEATURE_SETS, symbol, target)).load()
            if not selection["gated"]:
                cells.append((symbol, target))
    cells = cells[:limit]
    inputs = {artifact_prefix(FEATURES, s) for s, _ in cells} | {
        artifact_prefix(key, s, t) for s, t in cells for key in (LABELS, FEATURE_SETS)
    }
    for prefix in inputs:
        handle = ArtifactHandle.current(source, prefix)
        manifest = Manifest(fingerprint=handle.fingerprint, data_version=handle.data_version, files={})
        write_artifact(store, prefix, handle.load(), manifest)

    rows = []
    for symbol, target in cells:
        for position, family in enumerate(families):
            # Marks in the server's log (a file size: microseconds), read after the loop.
            marks = [requests.mark()] if requests else []
            started = time.perf_counter()
            features = ArtifactHandle.current(store, artifact_prefix(FEATURES, symbol)).load()
            labels = ArtifactHandle.current(store, artifact_prefix(LABELS, symbol, target)).load()
            selection = ArtifactHandle.current(store, artifact_prefix(FEATURE_SETS, symbol, target)).load()
            loaded = time.perf_counter()
            marks += [requests.mark()] if requests else []
            # The models asset's own recipe, on the inputs loaded above.
            value = train_cell(
                Cell(universe, family, symbol, target),
                selection,
                lambda table=features: table,
                lambda table=labels: table,
            ).model
            trained = time.perf_counter()
            marks += [requests.mark()] if requests else []
            write_artifact(
                store,
                artifact_prefix(["benchmark", *model_key(family).path], symbol, target),
                value,
                Manifest(fingerprint="bench", data_version="bench", files={}),
            )
            stored = time.perf_counter()
            marks += [requests.mark()] if requests else []
            rows.append(
                {
                    "family": family,
                    "symbol": symbol,
                    "target": target,
                    # The first family of a cell is the first step to read its labels and feature set.
                    "first_of_cell": position == 0,
                    "load": loaded - started,
                    "compute": trained - loaded,
                    "store": stored - trained,
                    "marks": marks,
                }
            )
    for row in rows:
        marks = row.pop("marks")
        load = requests.counts_since(marks[0], marks[1]) if requests else {}
        store_phase = requests.counts_since(marks[2], marks[3]) if requests else {}
        row["load_requests"] = sum(load.values())
        row["store_requests"] = sum(store_phase.values())
        row["training_requests"] = sum(requests.counts_since(marks[1], marks[2]).values()) if requests else 0
        for kind in REQUEST_KINDS:
            row[kind] = load.get(kind, 0) + store_phase.get(kind, 0)
    return pl.DataFrame(rows)


def io_table(frame: pl.DataFrame) -> pl.DataFrame:
    return (
        frame.with_columns(
            ((pl.col("load") + pl.col("store")) / (pl.col("load") + pl.col("compute") + pl.col("store"))).alias(
                "io_share"
            )
        )
        .group_by("family")
        .agg(
            pl.len().alias("steps"),
            pl.col("load").median().alias("load_s"),
            pl.col("compute").median().alias("train_s"),
            pl.col("store").median().alias("store_s"),
            pl.col("io_share").median().alias("median_io_share"),
            (
                (pl.col("load").sum() + pl.col("store").sum())
                / (pl.col("load").sum() + pl.col("compute").sum() + pl.col("store").sum())
            ).alias("total_io_share"),
        )
        .sort("family")
    )


def request_table(frame: pl.DataFrame) -> pl.DataFrame:
    """Mean S3 requests per model step, by phase and by kind."""
    return (
        frame.with_columns(pl.col("load_requests").add(pl.col("store_requests")).alias("requests"))
        .group_by("family")
        .agg(
            pl.col("requests").mean(),
            pl.col("load_requests").mean().alias("load"),
            pl.col("store_requests").mean().alias("store"),
            *(pl.col(kind).mean() for kind in REQUEST_KINDS),
        )
        .sort("family")
    )


def overall_share(frame: pl.DataFrame) -> float:
    io = frame["load"].sum() + frame["store"].sum()
    return float(io / (io + frame["compute"].sum()))


def requests_per_step(frame: pl.DataFrame) -> dict[str, float]:
    return {kind: float(frame[kind].mean()) for kind in REQUEST_KINDS} | {
        "all": float((frame["load_requests"] + frame["store_requests"]).mean())
    }


def describe_requests(frame: pl.DataFrame) -> str:
    """One line: requests per model step by kind, for all steps and split by whether the step
    was the first of its cell (the first to read that cell's labels and feature set)."""

    def line(part: pl.DataFrame) -> str:
        counts = requests_per_step(part)
        kinds = ", ".join(f"{kind} {counts[kind]:.2f}" for kind in REQUEST_KINDS if counts[kind])
        return f"{counts['all']:.2f} ({kinds or 'none'})"

    first, later = frame.filter(pl.col("first_of_cell")), frame.filter(~pl.col("first_of_cell"))
    return (
        f"requests per model step {line(frame)}; first step of a cell {line(first)}, "
        f"later steps of the cell {line(later)}; during training {frame['training_requests'].sum()}"
    )


def stage_table(cold: list, rerun: list, forced: list) -> pl.DataFrame:
    """One row per stage of the cold run; a rerun that launched nothing for a stage has no entry
    for it (0 runs)."""
    rows = []
    for c, r, f in itertools.zip_longest(cold, rerun, forced):
        rows.append(
            {
                "stage": next(s.job_name for s in (c, r, f) if s is not None),
                "cold_runs": c.runs if c else 0,
                "cold_s": c.seconds if c else 0.0,
                "cold_misses": c.cache.get("miss", 0) if c else 0,
                "rerun_runs": r.runs if r else 0,
                "rerun_s": r.seconds if r else 0.0,
                "every_partition_runs": f.runs if f else 0,
                "every_partition_s": f.seconds if f else 0.0,
                "every_partition_hits": f.cache.get("hit", 0) if f else 0,
                "every_partition_misses": f.cache.get("miss", 0) if f else 0,
            }
        )
    return pl.DataFrame(rows)


def kept_sections(path: Path) -> str:
    """The part of the results file from its first "## Before" heading on: measurements of
    earlier code, kept by hand for comparison, which a new run must not overwrite."""
    if not path.exists():
        return ""
    text = path.read_text()
    start = text.find(BEFORE_HEADING)
    return text[start:] if start >= 0 else ""


def markdown(frame: pl.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    body = ""
    for row in frame.iter_rows():
        body += "| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |\n"
    return header + body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--io-partitions", type=int, default=8, help="symbol x target cells for the IO-share measurement"
    )
    args = parser.parse_args()
    machine = describe_machine()

    with tempfile.TemporaryDirectory(prefix="bench-storage-") as scratch:
        home = Path(scratch) / "home"
        home.mkdir()
        shutil.copy(REPOSITORY_ROOT / "dagster.yaml", home / "dagster.yaml")
        os.environ["DAGSTER_HOME"] = str(home)  # read by the spawned workers
        os.environ.pop("INTELLIGENCE_ARTIFACT_ROOT", None)
        os.environ.pop("INTELLIGENCE_DEPLOYMENT", None)
        universe = load_universe()
        cold, cold_seconds = timed(universe, args.workers, every_partition=False)
        rerun, rerun_seconds = timed(universe, args.workers, every_partition=False)
        forced, forced_seconds = timed(universe, args.workers, every_partition=True)

        from intelligence_assets.store.artifact_store import LocalArtifactStore
        from intelligence_assets.store.read_cache import ReadCache
        from intelligence_assets.store.s3 import S3ArtifactStore
        from intelligence_assets_tests.support.services import (
            OPEN_ACCESS_KEY,
            OPEN_SECRET_KEY,
            S3RequestLog,
            start_moto_server,
            stop_process,
        )

        families = list(load_universe().model_families)
        local = model_step_io(
            home / "artifacts", LocalArtifactStore(Path(scratch) / "io-local"), families, args.io_partitions
        )
        log_path = Path(scratch) / "moto.log"
        process, port = start_moto_server(log_path)
        remote = {}
        try:
            for variant, (bucket, cached) in S3_VARIANTS.items():
                # Empty at the start, as on a machine (or in a step pod) that has read nothing yet.
                cache = ReadCache(Path(scratch) / f"read-cache-{bucket}") if cached else None
                store = S3ArtifactStore(f"127.0.0.1:{port}", bucket, OPEN_ACCESS_KEY, OPEN_SECRET_KEY, read_cache=cache)
                remote[variant] = model_step_io(
                    home / "artifacts", store, families, args.io_partitions, S3RequestLog(log_path, bucket)
                )
        finally:
            stop_process(process)

    stages = stage_table(cold, rerun, forced)
    ratio = rerun_seconds / cold_seconds
    overall_local = overall_share(local)
    s3_sections = ""
    for variant, frame in remote.items():
        s3_sections += (
            f"{variant} (moto server on 127.0.0.1, minio SDK; overall share {overall_share(frame):.2%}, goal <= 5%; "
            f"{describe_requests(frame)}):\n\n{markdown(io_table(frame))}\n{markdown(request_table(frame))}\n"
        )
    text = f"""# Storage benchmark

Machine: {machine}.
Command: `make bench-storage` (`.venv/bin/python -m benchmarks.storage --workers {args.workers}`).

## Cold full run vs no-change rerun (bundled universe, SQLite instance, local artifact store)

| | wall seconds |
|---|---|
| cold full run | {cold_seconds:.1f} |
| no-change rerun, as `make demo` runs it (the planner finds every fingerprint current: no run launched) | {rerun_seconds:.1f} |
| rerun / cold | {ratio:.1%} (goal <= 3%) |
| no-change rerun launching a run for every partition (`--every-partition`: each step a cache hit inside Dagster) | {forced_seconds:.1f} |
| that rerun / cold | {forced_seconds / cold_seconds:.1%} |

The rerun times include planning (reading every partition's pointer and each symbol's bars).

{markdown(stages)}
## Load + store as a share of each model step

Each step loads its inputs (features, labels, feature set) from the store, trains, and stores
the model: {args.io_partitions} trained symbol x target cells x {len(families)} families, the
families of a cell one after another. Shares are of the summed seconds (load + store over load +
train + store); per family, the median step's share and the summed share.

Requests are counted from the moto server's access log (`S3RequestLog`: the requests the server
answered, by kind; LIST is a GET of the bucket). The inputs are written to the bucket before
the steps run; the read cache starts empty, so the first step to read an input fetches it (a
cell's first family reads its labels and feature set, and its features unless another cell of
the symbol came first) and later steps find it cached. The pointer (`current.json`) is read
from the bucket by every step: it is never cached.

Local directory (overall share {overall_local:.2%}, goal <= 5%):

{markdown(io_table(local))}
{s3_sections}"""  # noqa: E501 -- markdown table rows of the written report
    RESULTS.write_text(text + kept_sections(RESULTS))
    print(text)
    cached = remote["S3 endpoint, read cache"]
    record("S3 load+store share of a model step, %", 100 * overall_share(cached), goal=5, better="lower")
    record("S3 requests per model step", requests_per_step(cached)["all"], goal=None, better="lower")
    record("local load+store share of a model step, %", 100 * overall_local, goal=5, better="lower")


if __name__ == "__main__":
    main()
