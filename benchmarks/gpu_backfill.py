"""GPU backfill benchmark (issue 27): the bundled universe's GPU-family cells trained as Dagster's
multiprocess executor trains them (a fresh process per step, one step per family x symbol, its
targets in turn), each step leasing its GPU slot through `intelligence_assets.devices`, with
every GPU's busy % sampled by nvidia-smi.

    .venv/bin/python -m benchmarks.gpu_backfill prepare                  # here: the cells
    python3 -m benchmarks.gpu_backfill run --out DIR --steps-per-gpu 1 4  # on the GPU machine
    .venv/bin/python -m benchmarks.gpu_backfill report DIR/backfill.json   # here: gpu.md, summary.json

The machine that runs it needs torch, numpy, pydantic and nvidia-ml-py, not polars: the cells
(features, labels and the development split of the real pipeline, with the universe's params)
travel as one .npz.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
DATA = REPOSITORY_ROOT / "benchmarks" / "gpu_data" / "backfill.npz"
RESULTS = REPOSITORY_ROOT / "benchmarks" / "results" / "gpu.md"
GPU_FAMILIES = ("torch_mlp", "torch_tcn")
SECTION = "## Backfill of the bundled universe on leased GPU slots"


# ---------------------------------------------------------------- here: the cells


def prepare() -> None:
    import polars as pl

    from intelligence_assets.config.universe import load_universe
    from intelligence_assets.ml.dataset import build_dataset
    from intelligence_assets.ml.features import build_features, drop_unusable_features
    from intelligence_assets.ml.splits import held_out_split
    from intelligence_assets.ml.targets import build_labels, label_horizon

    universe = load_universe()
    arrays: dict[str, np.ndarray] = {}
    cells = []
    for symbol in universe.symbols:
        bars = pl.read_parquet(universe.bars_directory / f"{symbol}.parquet")
        features = drop_unusable_features(build_features(bars, universe.features)).table
        for spec in universe.targets:
            dataset = build_dataset(features, build_labels(bars, spec))
            fold = held_out_split(len(dataset.y), label_horizon(spec), universe.split)
            cell = f"{symbol}|{spec.name}"
            arrays[f"{cell}|x"] = dataset.x.astype(np.float32)
            arrays[f"{cell}|y"] = dataset.y.astype(np.float32)
            arrays[f"{cell}|train"] = fold.train
            arrays[f"{cell}|validation"] = fold.validation
            cells.append({"cell": cell, "symbol": symbol, "task": spec.task, "rows": int(len(dataset.y))})
    meta = {
        "cells": cells,
        "params": {family: dict(universe.model_families[family].params) for family in GPU_FAMILIES},
        "seed": universe.seed,
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    DATA.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(DATA, **arrays)
    print(f"{DATA}: {len(cells)} cells, {DATA.stat().st_size / 2**20:.1f} MiB")


# ---------------------------------------------------------------- on the GPU machine


class GpuSampler:
    """nvidia-smi every 100 ms, per GPU: (monotonic time, GPU index, busy %, memory used MiB)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int, float, float]] = []
        self.process = subprocess.Popen(
            [
                "nvidia-smi",
                "--query-gpu=index,utilization.gpu,memory.used",
                "--format=csv,noheader,nounits",
                "-lms",
                "100",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            index, busy, memory = (value.strip() for value in line.split(","))
            self.samples.append((time.monotonic(), int(index), float(busy), float(memory)))

    def busy(self, start: float, end: float) -> dict[int, dict[str, float]]:
        by_gpu: dict[int, list[tuple[float, float]]] = defaultdict(list)
        for moment, index, busy, memory in self.samples:
            if start <= moment <= end:
                by_gpu[index].append((busy, memory))
        return {
            index: {
                "busy_mean": float(np.mean([busy for busy, _ in values])),
                "memory_peak_mib": float(max(memory for _, memory in values)),
                "samples": len(values),
            }
            for index, values in sorted(by_gpu.items())
        }

    def stop(self) -> None:
        self.process.terminate()


def _step(family: str, symbol: str, steps_per_gpu: int, leases_directory: str) -> dict:
    """One Dagster step's share: lease a GPU slot, then train the symbol's cells of the family."""
    from intelligence_assets.devices.inventory import discover_gpus
    from intelligence_assets.devices.leases import GpuLeases, exposed

    data = np.load(DATA)
    meta = json.loads(bytes(data["meta"]).decode())
    leases = GpuLeases(Path(leases_directory), discover_gpus(), steps_per_gpu, poll_seconds=0.05)
    queued = time.monotonic()
    with leases.lease(f"{family} {symbol} pid {os.getpid()}") as slot, exposed(slot):
        leased = time.monotonic()
        from intelligence_assets.ml.families import load_family

        trained, errors = 0, []
        for cell in meta["cells"]:
            if cell["symbol"] != symbol:
                continue
            name = cell["cell"]
            x, y = data[f"{name}|x"], data[f"{name}|y"]
            train, validation = data[f"{name}|train"], data[f"{name}|validation"]
            try:
                model = load_family(family)(cell["task"], meta["params"][family], meta["seed"])
                model.fit(x[train], y[train], x[validation], y[validation])
                model.predict(x[validation])
                trained += 1
            except Exception as error:  # an out-of-memory error is a result to report, not a crash
                errors.append(f"{name}: {type(error).__name__}: {str(error)[:200]}")
        ended = time.monotonic()
    return {
        "family": family,
        "symbol": symbol,
        "gpu": str(slot.gpu.index),
        "gpu_name": slot.gpu.name,
        "slot": slot.slot,
        "queued": queued,
        "leased": leased,
        "ended": ended,
        "cells": trained,
        "errors": errors,
    }


def _peak_steps_per_gpu(steps: list[dict]) -> dict[str, int]:
    peaks: dict[str, int] = {}
    for gpu in {step["gpu"] for step in steps}:
        events = sorted(
            [(step["leased"], 1) for step in steps if step["gpu"] == gpu]
            + [(step["ended"], -1) for step in steps if step["gpu"] == gpu],
            key=lambda event: (event[0], event[1]),
        )
        running = peak = 0
        for _, change in events:
            running += change
            peak = max(peak, running)
        peaks[gpu] = peak
    return peaks


def backfill(families: list[str], steps_per_gpu: int, sampler: GpuSampler) -> dict:
    from intelligence_assets.devices.inventory import discover_gpus

    inventory = discover_gpus()
    symbols = sorted({cell["symbol"] for cell in json.loads(bytes(np.load(DATA)["meta"]).decode())["cells"]})
    workers = max(1, len(inventory.gpus)) * steps_per_gpu
    leases_directory = tempfile.mkdtemp(prefix="gpu-leases-")
    # A fresh process per step, as the multiprocess executor starts one: CUDA starts in each.
    context = multiprocessing.get_context("spawn")
    started = time.monotonic()
    with ProcessPoolExecutor(workers, mp_context=context, max_tasks_per_child=1) as pool:
        futures = [
            pool.submit(_step, family, symbol, steps_per_gpu, leases_directory)
            for symbol in symbols
            for family in families
        ]
        steps = [future.result() for future in futures]
    ended = time.monotonic()
    training = (min(step["leased"] for step in steps), max(step["ended"] for step in steps))
    cells = sum(step["cells"] for step in steps)
    return {
        "families": families,
        "gpus": [gpu.describe() for gpu in inventory.gpus],
        "steps_per_gpu": steps_per_gpu,
        "workers": workers,
        "steps": steps,
        "cells": cells,
        "errors": [error for step in steps for error in step["errors"]],
        "wall_seconds": ended - started,
        "cells_per_hour": cells / (ended - started) * 3600,
        "gpu_busy_while_training": sampler.busy(*training),
        "peak_steps_per_gpu": _peak_steps_per_gpu(steps),
    }


def run(out: Path, steps_per_gpu: list[int], families: list[str]) -> None:
    import torch

    sampler = GpuSampler()
    time.sleep(1.0)
    results = {
        "device": torch.cuda.get_device_name(0),
        "gpus": torch.cuda.device_count(),
        "cpu_cores": os.cpu_count(),
        "runs": [],
    }
    for per_gpu in steps_per_gpu:
        for chosen in [[family] for family in families] + [families]:
            outcome = backfill(chosen, per_gpu, sampler)
            results["runs"].append(outcome)
            print(json.dumps({key: value for key, value in outcome.items() if key != "steps"}, default=str), flush=True)
    sampler.stop()
    out.mkdir(parents=True, exist_ok=True)
    (out / "backfill.json").write_text(json.dumps(results, indent=2, default=str))


# ---------------------------------------------------------------- here: the table


def report(path: Path) -> None:
    from benchmarks.summary import record

    results = json.loads(path.read_text())
    gpus = results["gpus"]
    lines = [
        SECTION,
        "",
        f"`benchmarks/gpu_backfill.py` on **{gpus} x {results['device']}**, through the `device` tool: the bundled "
        "universe's cells of each GPU family, a fresh process per step (a family x a symbol's targets, as the "
        "multiprocess executor runs a ranged training run), each step leasing its GPU slot "
        "(`intelligence_assets.devices`); busy % is nvidia-smi's utilization.gpu every 100 ms while steps trained.",
        "",
        "| families | GPUs | steps per GPU | steps at once | cells | wall s | cells / hour | "
        "GPU busy % (mean, per GPU) | peak steps per GPU | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for run_result in results["runs"]:
        busy = ", ".join(
            f"GPU {index}: {usage['busy_mean']:.0f}%" for index, usage in run_result["gpu_busy_while_training"].items()
        )
        peaks = ", ".join(f"GPU {gpu}: {peak}" for gpu, peak in sorted(run_result["peak_steps_per_gpu"].items()))
        lines.append(
            f"| {' + '.join(run_result['families'])} | {len(run_result['gpus'])} | {run_result['steps_per_gpu']} | "
            f"{run_result['workers']} | {run_result['cells']} | {run_result['wall_seconds']:.1f} | "
            f"{run_result['cells_per_hour']:,.0f} | {busy} | {peaks} | {len(run_result['errors'])} |"
        )
    text = RESULTS.read_text() if RESULTS.exists() else "# GPU training benchmark\n"
    if SECTION in text:
        text = text[: text.index(SECTION)].rstrip() + "\n"
    RESULTS.write_text(text.rstrip() + "\n\n" + "\n".join(lines) + "\n")
    machine = f"{gpus} x {results['device']}"
    cores = results.get("cpu_cores")
    for run_result in results["runs"]:
        if len(run_result["families"]) < 2:
            continue
        per_gpu = run_result["steps_per_gpu"]
        busy = min(usage["busy_mean"] for usage in run_result["gpu_busy_while_training"].values())
        record(
            f"gpu_backfill_cells_per_hour_{gpus}_gpu_{per_gpu}_per_gpu",
            run_result["cells_per_hour"],
            goal=None,
            better="higher",
            cores=cores,
            machine=machine,
        )
        record(
            f"gpu_backfill_busy_percent_{gpus}_gpu_{per_gpu}_per_gpu",
            busy,
            goal=80,
            better="higher",
            cores=cores,
            machine=machine,
        )
        record(
            f"gpu_backfill_peak_steps_per_gpu_{per_gpu}_per_gpu",
            max(run_result["peak_steps_per_gpu"].values()),
            goal=per_gpu,
            better="lower",
            cores=cores,
            machine=machine,
        )
    print(f"{RESULTS}: {len(results['runs'])} runs")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("prepare")
    run_parser = commands.add_parser("run")
    run_parser.add_argument("--out", type=Path, required=True)
    run_parser.add_argument("--steps-per-gpu", type=int, nargs="+", default=[1, 4])
    run_parser.add_argument("--families", nargs="+", default=list(GPU_FAMILIES))
    report_parser = commands.add_parser("report")
    report_parser.add_argument("path", type=Path)
    arguments = parser.parse_args(argv)
    if arguments.command == "prepare":
        prepare()
    elif arguments.command == "run":
        run(arguments.out, arguments.steps_per_gpu, arguments.families)
    else:
        report(arguments.path)


if __name__ == "__main__":
    sys.exit(main())
