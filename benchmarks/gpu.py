"""GPU training benchmark (issue: scale-out): the GPU families trained on a GPU against the same
work on 16 CPU cores, GPU busy % sampled with nvidia-smi, and many trainings at once on one GPU.

Three steps, because the GPU machine has torch and numpy but not polars:

    .venv/bin/python -m benchmarks.gpu prepare          # here: datasets through the real pipeline
    python3 -m benchmarks.gpu run --out DIR             # on the GPU machine (device tool)
    .venv/bin/python -m benchmarks.gpu report DIR/gpu.json ...   # here: benchmarks/results/gpu.md

The slice: SYMBOLS synthetic symbols x BARS 5-minute bars (about 3 years of regular sessions),
features from `ml/features.py`, labels for two bundled targets (y_up_5b, y_return_5b), the
chronological development split (85% train, 15% validation of the first 80%). Features travel as
float16 to fit the transfer limit (the numbers are throughput, not skill).

Every fit does a fixed amount of work (patience above the epoch/round count), so GPU and CPU
do the same work. samples/s = training rows x epochs (or boosting rounds) / fit seconds.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
DATA = REPOSITORY_ROOT / "benchmarks" / "gpu_data" / "datasets.npz"
RESULTS = REPOSITORY_ROOT / "benchmarks" / "results" / "gpu.md"
SYMBOLS = 4
BARS = 60_000
TARGETS = {"y_up_5b": "classification", "y_return_5b": "regression"}

# Sizes a GPU pod would use; the same params on the CPU (torch threads, xgboost nthread = cores).
FAMILY_PARAMS = {
    "torch_mlp": {"hidden_sizes": [256, 128], "batch_size": 1024, "max_epochs": 20, "patience": 1000},
    "torch_tcn": {"window": 64, "channels": 128, "levels": 4, "batch_size": 4096, "max_epochs": 30, "patience": 1000},
    "xgboost": {"num_boost_round": 300, "early_stopping_rounds": 1000, "max_depth": 8},
}
ITERATIONS = {"torch_mlp": "max_epochs", "torch_tcn": "max_epochs", "xgboost": "num_boost_round"}


# ---------------------------------------------------------------- here: datasets


def prepare() -> None:
    from intelligence_assets.config.universe import load_universe
    from intelligence_assets.ml.dataset import build_dataset
    from intelligence_assets.ml.features import FeatureSettings, build_features
    from intelligence_assets.ml.synthetic import synthetic_bars
    from intelligence_assets.ml.targets import build_labels

    universe = load_universe()
    arrays: dict[str, np.ndarray] = {}
    for index in range(SYMBOLS):
        bars = synthetic_bars(n_bars=BARS, seed=500 + index, signal_strength=0.5)
        features = build_features(bars, FeatureSettings())
        for target, task in TARGETS.items():
            spec = universe.target(target)
            assert spec.task == task
            dataset = build_dataset(features, build_labels(bars, spec))
            development = int(len(dataset.y) * 0.8)
            cell = f"SYN{index}|{target}"
            # Targets of one symbol share its feature rows but for the last `horizon` ones: keep
            # the symbol's matrix once, and each target's row count.
            arrays[f"SYN{index}|x"] = (
                dataset.x[:development].astype(np.float16) if f"SYN{index}|x" not in arrays else arrays[f"SYN{index}|x"]
            )
            rows = min(development, arrays[f"SYN{index}|x"].shape[0])
            assert np.allclose(
                dataset.x[:rows],
                arrays[f"SYN{index}|x"][:rows].astype(np.float64),
                rtol=1e-2,
                atol=1e-2,
                equal_nan=False,
            )
            arrays[f"{cell}|y"] = dataset.y[:rows].astype(np.float32)
            arrays[f"{cell}|train_rows"] = np.array(int(rows * 0.85))
    DATA.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(DATA, **arrays)
    print(f"{DATA}: {SYMBOLS * len(TARGETS)} cells, {DATA.stat().st_size / 1e6:.1f} MB")


# ---------------------------------------------------------------- GPU machine: runs


class GpuSampler:
    """nvidia-smi every 100 ms: (monotonic time, busy %, memory used MiB)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float, float]] = []
        self.process = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-lms", "100"],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            busy, memory = (float(value) for value in line.strip().split(","))
            self.samples.append((time.monotonic(), busy, memory))

    def window(self, start: float, end: float) -> dict[str, float]:
        inside = [(busy, memory) for t, busy, memory in self.samples if start <= t <= end]
        if not inside:
            return {
                "busy_mean": float("nan"),
                "busy_median": float("nan"),
                "memory_peak_mib": float("nan"),
                "samples": 0,
            }
        busy = np.array([b for b, _ in inside])
        return {
            "busy_mean": float(busy.mean()),
            "busy_median": float(np.median(busy)),
            "memory_peak_mib": float(max(m for _, m in inside)),
            "samples": len(inside),
        }

    def stop(self) -> None:
        self.process.terminate()


def load_cells() -> dict[str, tuple[np.ndarray, ...]]:
    data = np.load(DATA)
    cells = {}
    for key in data.files:
        if key.endswith("|y"):
            cell = key[:-2]
            y, train = data[key], int(data[f"{cell}|train_rows"])
            x = data[f"{cell.split('|')[0]}|x"][: len(y)].astype(np.float32)
            cells[cell] = (x[:train], y[:train], x[train : len(y)], y[train:])
    return cells


def fit_once(
    family: str, task: str, data: tuple[np.ndarray, ...], device: str, threads: int, iterations: int | None = None
) -> dict[str, float]:
    """One fit; `iterations` overrides the epochs / rounds (CPU runs of the slow families)."""
    from intelligence_assets.ml.families import load_family

    params = dict(FAMILY_PARAMS[family])
    if iterations is not None:
        params[ITERATIONS[family]] = iterations
    if family == "xgboost":
        params |= {"device": device, "nthread": threads}
    else:
        params |= {"device": device, "num_threads": threads}
    model = load_family(family)(task, params, seed=1)
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
    started, monotonic_start = time.perf_counter(), time.monotonic()
    model.fit(*data)
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    rows = data[0].shape[0]
    work = rows * int(params[ITERATIONS[family]])
    # monotonic clock: system-wide on Linux, so fits in other processes line up with the sampler.
    return {
        "seconds": seconds,
        "rows": rows,
        "iterations": int(params[ITERATIONS[family]]),
        "samples_per_second": work / seconds,
        "started": monotonic_start,
        "ended": time.monotonic(),
    }


def _concurrent_worker(family: str, task: str, cell: str, queue: multiprocessing.Queue) -> None:
    try:
        result = fit_once(family, task, load_cells()[cell], "cuda", 1)
        queue.put({"cell": cell, "ok": True, **result})
    except Exception as error:  # an out-of-memory error must be reported, not hang the benchmark
        queue.put({"cell": cell, "ok": False, "error": f"{type(error).__name__}: {error}"})


def run(out: Path, families: list[str], cpu_cells: int, concurrent: int, cpu_iterations: dict[str, int]) -> None:
    import torch

    cells = load_cells()
    task_of = {cell: TARGETS[cell.split("|")[1]] for cell in cells}
    sampler = GpuSampler()
    time.sleep(1.0)
    results: dict = {
        "device": torch.cuda.get_device_name(0),
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "families": {},
        "cells": len(cells),
    }
    # Warm-up: CUDA context, cuDNN and cuBLAS handles stay out of the timings.
    first = next(iter(cells))
    for family in families:
        fit_once(family, task_of[first], tuple(a[:4096] for a in cells[first]), "cuda", 1)

    for family in families:
        start = time.monotonic()
        gpu_fits = {cell: fit_once(family, task_of[cell], data, "cuda", 1) for cell, data in cells.items()}
        end = time.monotonic()
        usage = sampler.window(start, end)
        compared = list(cells)[:cpu_cells]
        cpu_fits = {
            cell: fit_once(family, task_of[cell], cells[cell], "cpu", os.cpu_count() or 1, cpu_iterations.get(family))
            for cell in compared
        }
        gpu_seconds = sum(fit["seconds"] for fit in gpu_fits.values())
        # CPU seconds for the GPU's work: per-sample throughput is flat across epochs / rounds.
        cpu_seconds_same_work = sum(
            cpu_fits[c]["seconds"] * gpu_fits[c]["iterations"] / cpu_fits[c]["iterations"] for c in compared
        )
        results["families"][family] = {
            "gpu_wall_seconds": end - start,
            "gpu_fit_seconds": gpu_seconds,
            "gpu_samples_per_second": sum(f["rows"] for f in gpu_fits.values())
            * int(FAMILY_PARAMS[family][ITERATIONS[family]])
            / gpu_seconds,
            "gpu_usage": usage,
            "cpu_cells": compared,
            "cpu_fit_seconds": cpu_seconds_same_work,
            "cpu_iterations_measured": cpu_fits[compared[0]]["iterations"],
            "gpu_fit_seconds_same_cells": sum(gpu_fits[c]["seconds"] for c in compared),
            "cpu_samples_per_second": sum(cpu_fits[c]["rows"] * cpu_fits[c]["iterations"] for c in compared)
            / sum(cpu_fits[c]["seconds"] for c in compared),
            "params": FAMILY_PARAMS[family],
        }
        print(json.dumps({family: results["families"][family]}, default=str), flush=True)

    if concurrent:
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        chosen = [list(cells)[i % len(cells)] for i in range(concurrent)]
        start = time.monotonic()
        workers = [
            context.Process(target=_concurrent_worker, args=("torch_tcn", task_of[cell], cell, queue))
            for cell in chosen
        ]
        for worker in workers:
            worker.start()
        outcomes = [queue.get() for _ in workers]
        for worker in workers:
            worker.join()
        end = time.monotonic()
        fits = [o for o in outcomes if o["ok"]]
        training = (min(o["started"] for o in fits), max(o["ended"] for o in fits)) if fits else (start, end)
        all_training = (max(o["started"] for o in fits), min(o["ended"] for o in fits)) if fits else (start, end)
        results["concurrent"] = {
            "family": "torch_tcn",
            "trainings": concurrent,
            "wall_seconds": end - start,
            "outcomes": outcomes,
            "succeeded": len(fits),
            "training_seconds": training[1] - training[0],
            # busy while any fit ran (process start and CUDA init excluded), and while all ran at once
            "gpu_usage": sampler.window(*training),
            "gpu_usage_all_at_once": sampler.window(*all_training),
            "samples_per_second_together": sum(o["rows"] * o["iterations"] for o in fits) / (training[1] - training[0])
            if fits
            else 0.0,
        }
        print(json.dumps({"concurrent": results["concurrent"]}, default=str), flush=True)
    sampler.stop()
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(results, indent=2, default=str))


# ---------------------------------------------------------------- here: the table


def report(paths: list[Path]) -> None:
    """One table from one or more runs (families measured in separate device calls)."""
    results: dict = {}
    history = []
    for path in paths:
        run_results = json.loads(Path(path).read_text())
        for family, row in run_results["families"].items():
            history.append(
                f"- `{Path(path).name}`: {family} `{json.dumps(row['params'])}`: GPU busy "
                f"{row['gpu_usage']['busy_mean']:.0f}% mean, "
                f"{row['gpu_samples_per_second']:,.0f} samples/s"
            )
        families = {**results.get("families", {}), **run_results["families"]}
        results = {**results, **run_results, "families": families}
    lines = [
        "# GPU training benchmark",
        "",
        f"`benchmarks/gpu.py` on **{results['device']}** ({results['cpu_cores']} CPU cores, torch {results['torch']}), "
        "run through the `device` tool. "
        f"{results['cells']} symbol x target cells: {SYMBOLS} synthetic symbols x {BARS:,} five-minute bars, targets "
        f"{', '.join(TARGETS)}; "
        "features and labels from the real pipeline. Each fit does a fixed amount of work (no early stop). "
        "GPU busy % is nvidia-smi's utilization.gpu sampled every 100 ms while the family trained its cells one after "
        "another. "
        "CPU: the same params on all cores (torch threads / xgboost nthread), on the first cells only; the ratio "
        "compares the same cells.",
        "",
        "| family | params | GPU wall s (all cells) | GPU busy % mean (median) | GPU memory peak MiB | GPU samples/s | "
        "CPU samples/s (epochs or rounds measured) | CPU s / GPU s (same work) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for family, row in results["families"].items():
        usage = row["gpu_usage"]
        cpu_iterations = row.get(
            "cpu_iterations_measured", row["params"].get("max_epochs", row["params"].get("num_boost_round"))
        )
        lines.append(
            f"| {family} | `{json.dumps(row['params'])}` | {row['gpu_wall_seconds']:.1f} | {usage['busy_mean']:.0f} "
            f"({usage['busy_median']:.0f}) | {usage['memory_peak_mib']:.0f} | "
            f"{row['gpu_samples_per_second']:,.0f} | {row['cpu_samples_per_second']:,.0f} "
            f"({cpu_iterations}) | "
            f"{row['cpu_fit_seconds'] / row['gpu_fit_seconds_same_cells']:.1f} |"
        )
    if "concurrent" in results:
        concurrent = results["concurrent"]
        usage, together = concurrent["gpu_usage"], concurrent["gpu_usage_all_at_once"]
        errors = [o["error"] for o in concurrent["outcomes"] if not o["ok"]]
        lines += [
            "",
            f"**{concurrent['trainings']} `{concurrent['family']}` trainings at once on one GPU** (one process each, "
            "as step pods sharing a GPU would be; "
            f"same params as above): {concurrent['succeeded']} of {concurrent['trainings']} succeeded"
            f"{'; errors: ' + '; '.join(errors) if errors else ', no out-of-memory'}; GPU memory peak "
            f"{usage['memory_peak_mib']:.0f} MiB. "
            f"From the first fit's start to the last fit's end ({concurrent['training_seconds']:.1f} s): GPU busy "
            f"{usage['busy_mean']:.0f}% mean "
            f"({usage['busy_median']:.0f}% median), {concurrent['samples_per_second_together']:,.0f} samples/s "
            "together; "
            f"while all {concurrent['trainings']} trained at once: {together['busy_mean']:.0f}% mean "
            f"({together['busy_median']:.0f}% median). "
            f"Wall with process start and CUDA init: {concurrent['wall_seconds']:.1f} s.",
        ]
    lines += [
        "",
        "Every run, in order (raw numbers in `benchmarks/results/gpu_runs/`; the table keeps each family's last run):",
        *history,
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("prepare")
    run_parser = commands.add_parser("run")
    run_parser.add_argument("--out", type=Path, required=True)
    run_parser.add_argument("--families", nargs="+", default=list(FAMILY_PARAMS))
    run_parser.add_argument("--cpu-cells", type=int, default=2)
    run_parser.add_argument("--concurrent", type=int, default=8)
    run_parser.add_argument(
        "--cpu-epochs", type=int, default=3, help="epochs of the torch families' CPU fits (throughput is per sample)"
    )
    report_parser = commands.add_parser("report")
    report_parser.add_argument("paths", type=Path, nargs="+")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare()
    elif args.command == "run":
        run(
            args.out,
            args.families,
            args.cpu_cells,
            args.concurrent,
            {"torch_mlp": args.cpu_epochs, "torch_tcn": args.cpu_epochs},
        )
    else:
        report(args.paths)


if __name__ == "__main__":
    sys.exit(main())
