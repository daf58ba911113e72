"""Storage benchmark (issue: cache-aware rematerialization).

1. Cold full run vs no-change rerun of the bundled universe, through the same runner as
   `make demo` (SQLite instance, local artifact store). Goal: rerun <= 3% of cold.
2. Load + store time as a share of each model step (load the step's inputs, train, store the
   model), on the local directory and on an S3 endpoint (moto server on loopback, minio SDK).
   Goal: <= 5%.

    .venv/bin/python -m benchmarks.storage        (make bench-storage)

Writes benchmarks/results/storage.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import polars as pl

from benchmarks.machine import describe_machine
from intelligence_assets.config.universe import REPOSITORY_ROOT, load_universe

RESULTS = REPOSITORY_ROOT / "benchmarks" / "results" / "storage.md"


def timed(universe, workers: int, every_partition: bool) -> tuple[list, float]:
    from intelligence_assets.cli.demo import materialize_universe

    started = time.perf_counter()
    stages = materialize_universe(universe, workers, log_level="WARNING", every_partition=every_partition)
    return stages.stages, time.perf_counter() - started


def model_step_io(source_root: Path, store, families: list[str], limit: int) -> pl.DataFrame:
    """Per trained model partition: seconds to load inputs, train, and store the result."""
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
        for family in families:
            started = time.perf_counter()
            features = ArtifactHandle.current(store, artifact_prefix(FEATURES, symbol)).load()
            labels = ArtifactHandle.current(store, artifact_prefix(LABELS, symbol, target)).load()
            selection = ArtifactHandle.current(store, artifact_prefix(FEATURE_SETS, symbol, target)).load()
            loaded = time.perf_counter()
            # The models asset's own recipe, on the inputs loaded above.
            value = train_cell(
                Cell(universe, family, symbol, target),
                selection,
                lambda table=features: table,
                lambda table=labels: table,
            ).model
            trained = time.perf_counter()
            write_artifact(
                store,
                artifact_prefix(["benchmark", *model_key(family).path], symbol, target),
                value,
                Manifest(fingerprint="bench", data_version="bench", files={}),
            )
            stored = time.perf_counter()
            rows.append(
                {
                    "family": family,
                    "symbol": symbol,
                    "target": target,
                    "load": loaded - started,
                    "compute": trained - loaded,
                    "store": stored - trained,
                }
            )
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
        from intelligence_assets.store.s3 import S3ArtifactStore
        from intelligence_assets_tests.support.services import (
            OPEN_ACCESS_KEY,
            OPEN_SECRET_KEY,
            start_moto_server,
            stop_process,
        )

        families = list(load_universe().model_families)
        local = model_step_io(
            home / "artifacts", LocalArtifactStore(Path(scratch) / "io-local"), families, args.io_partitions
        )
        process, port = start_moto_server(Path(scratch) / "moto.log")
        try:
            s3 = S3ArtifactStore(f"127.0.0.1:{port}", "bench-storage", OPEN_ACCESS_KEY, OPEN_SECRET_KEY)
            remote = model_step_io(home / "artifacts", s3, families, args.io_partitions)
        finally:
            stop_process(process)

    stages = pl.DataFrame(
        [
            {
                "stage": c.job_name,
                "cold_runs": c.runs,
                "cold_s": c.seconds,
                "cold_misses": c.cache.get("miss", 0),
                "rerun_runs": r.runs,
                "rerun_s": r.seconds,
                "every_partition_runs": f.runs,
                "every_partition_s": f.seconds,
                "every_partition_hits": f.cache.get("hit", 0),
                "every_partition_misses": f.cache.get("miss", 0),
            }
            for c, r, f in zip(cold, rerun, forced, strict=False)
        ]
    )
    ratio = rerun_seconds / cold_seconds
    local_share = io_table(local)
    s3_share = io_table(remote)
    overall_local = float(
        (local["load"].sum() + local["store"].sum())
        / (local["load"].sum() + local["compute"].sum() + local["store"].sum())
    )
    overall_s3 = float(
        (remote["load"].sum() + remote["store"].sum())
        / (remote["load"].sum() + remote["compute"].sum() + remote["store"].sum())
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
the model: {args.io_partitions} trained symbol x target cells x {len(families)} families.

Local directory (overall share {overall_local:.2%}, goal <= 5%):

{markdown(local_share)}
S3 endpoint (moto server on 127.0.0.1, minio SDK; overall share {overall_s3:.2%}, goal <= 5%):

{markdown(s3_share)}"""  # noqa: E501 -- markdown table rows of the written report
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
