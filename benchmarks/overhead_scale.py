"""How orchestration overhead shrinks as the work per model grows, `make bench-scale`.

Part (a) of `make bench` (the ideal pool, the pool that also stores and tracks, and Dagster as
`make demo` runs it) on the bundled data with the model families trained `effort` times longer:
boosting at learning rate / effort over effort x the rounds, networks over effort x the epochs,
early-stopping patience x effort (the linear family is unchanged). Ranking and selection use
their own settings, so the same cells pass and the number of models, runs, Dagster events and
MLflow runs stays the same; only the compute per model grows. The bundled universe's models are
tiny (about a core-second each); the seed's take about 120 s each. This measures where between the
two the overhead stops mattering.

Writes benchmarks/results/overhead_scale.md and overhead_scale.png.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from importlib import import_module
from pathlib import Path
from statistics import median

import yaml

from benchmarks.machine import describe_machine
from benchmarks.overhead import new_figure, pools_and_dagster, save_figure
from intelligence_assets.config.universe import DEFAULT_UNIVERSE_PATH, REPOSITORY_ROOT, load_universe
from intelligence_assets.defs.processes import available_cores

RESULTS = REPOSITORY_ROOT / "benchmarks" / "results"


# Parameters that count iterations, and the step size those iterations take.
ITERATIONS = ("num_boost_round", "early_stopping_rounds", "max_epochs", "patience")


def family_defaults(family: str) -> dict:
    from intelligence_assets.ml.families import load_family

    family_class = load_family(family)
    return getattr(family_class, "default_params", None) or import_module(family_class.__module__).DEFAULT_PARAMS


def longer_training(family: str, params: dict, effort: float) -> dict:
    """`params` trained `effort` times longer: effort x the iterations at learning rate / effort."""
    settings = family_defaults(family) | params
    scaled = dict(params)
    for key in ITERATIONS:
        if key in settings:
            scaled[key] = max(1, round(int(settings[key]) * effort))
    if "learning_rate" in settings and any(key in settings for key in ITERATIONS):
        scaled["learning_rate"] = float(settings["learning_rate"]) / effort
    return scaled


def universe_with_effort(directory: Path, effort: float, symbols: list[str]) -> Path:
    """The bundled universe, restricted to `symbols`, with every family trained `effort` times longer."""
    raw = yaml.safe_load(DEFAULT_UNIVERSE_PATH.read_text())
    bundled = load_universe(DEFAULT_UNIVERSE_PATH)
    unknown = sorted(set(symbols) - set(bundled.symbols))
    if unknown:
        raise SystemExit(f"unknown symbols {unknown}: the bundled universe has {bundled.symbols}")
    raw["symbols"] = symbols
    raw["bars"]["directory"] = str(bundled.bars_directory)
    for family, settings in raw["model_families"].items():
        settings["params"] = longer_training(family, settings.get("params") or {}, effort)
    directory.mkdir(parents=True)
    path = directory / "universe.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    load_universe(path)  # fails here, naming the field, if a scaled parameter is out of range
    return path


def plot(path: Path, rows: list[dict]) -> None:
    figure, axis = new_figure((6.5, 4))
    per_model = [row["core_seconds_per_model"] for row in rows]
    axis.plot(per_model, [row["dagster"] / row["pool"] for row in rows], marker="o", label="Dagster / ideal pool")
    axis.plot(
        per_model,
        [row["dagster"] / row["platform"] for row in rows],
        marker="s",
        label="Dagster / pool that stores and tracks",
    )
    axis.axhline(1.15, color="grey", linestyle="--", linewidth=1, label="goal 1.15")
    for row, x in zip(rows, per_model, strict=True):
        axis.annotate(
            f"effort {row['effort']:g}",
            (x, row["dagster"] / row["pool"]),
            textcoords="offset points",
            xytext=(4, 6),
            fontsize=8,
        )
    axis.set_xlabel("ideal pool core-seconds per model")
    axis.set_ylabel("wall-time ratio")
    axis.set_title("Orchestration overhead as the work per model grows")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    save_figure(figure, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=available_cores())
    parser.add_argument(
        "--effort",
        type=float,
        nargs="+",
        default=[1, 3, 6],
        help="how many times longer every family trains, one setting each (1 = the bundled universe)",
    )
    parser.add_argument(
        "--symbols",
        nargs="+",
        default=["NASDAQ", "SP500"],
        help="bundled symbols to use (default: two of equal length, one per worker)",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="interleaved rounds per setting; the table takes medians"
    )
    args = parser.parse_args(argv)
    machine = describe_machine()
    bundled = load_universe(DEFAULT_UNIVERSE_PATH)
    models = len(args.symbols) * len(bundled.targets) * len(bundled.model_families)
    scratch = Path(tempfile.mkdtemp(prefix="intelligence-overhead-scale-"))
    rows = []
    try:
        for effort in args.effort:
            universe_path = universe_with_effort(scratch / f"effort_{effort:g}", effort, args.symbols)
            measured: dict[str, list[float]] = {"pool": [], "platform": [], "dagster": []}
            for repeat in range(args.repeats):
                label = f"effort {effort:g}, round {repeat + 1}/{args.repeats}"
                measurement = pools_and_dagster(
                    universe_path, args.workers, scratch / f"effort_{effort:g}_round_{repeat}", label
                )
                for way in measured:
                    measured[way].append(getattr(measurement, way))
            row = {"effort": effort, **{way: median(values) for way, values in measured.items()}, "rounds": measured}
            row["core_seconds_per_model"] = row["pool"] * args.workers / models
            rows.append(row)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    def bracket(values: list[float]) -> str:
        return "" if len(values) < 2 else " [" + ", ".join(f"{value:.1f}" for value in values) + "]"

    lines = [
        "# Orchestration overhead as the work per model grows",
        "",
        f"`make bench-scale` (`benchmarks/overhead_scale.py`) on {machine}. The bundled data for "
        f"{', '.join(args.symbols)}: "
        f"{len(bundled.targets)} targets x {len(bundled.model_families)} families = {models} models per setting, "
        f"{args.workers} workers, "
        f"median of {args.repeats} round(s). Effort k: every family trained k times longer (boosting at learning rate "
        "/ k over k x the rounds, "
        "networks over k x the epochs, early-stopping patience x k; linear unchanged). Ranking and selection are "
        "unchanged, so the same cells "
        "train and the models, runs, events and MLflow runs stay the same; only the compute per model grows.",
        "",
        "| effort | ideal pool core-s per model | ideal pool s | pool that stores and tracks s | Dagster s | Dagster / "
        "ideal pool | Dagster / pool that stores and tracks |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {row['effort']:g} | {row['core_seconds_per_model']:.2f} | "
            f"{row['pool']:.1f}{bracket(row['rounds']['pool'])} | "
            f"{row['platform']:.1f}{bracket(row['rounds']['platform'])} | "
            f"{row['dagster']:.1f}{bracket(row['rounds']['dagster'])} | "
            f"**{row['dagster'] / row['pool']:.2f}** | {row['dagster'] / row['platform']:.2f} |"
            for row in rows
        ],
        "",
        "What Dagster adds beyond the ideal pool, in seconds of wall time: "
        + "; ".join(f"effort {row['effort']:g}: {row['dagster'] - row['pool']:.1f} s" for row in rows)
        + ". A fixed cost per model, run and command shrinks as a share of the work as each model's work grows.",
        "",
        "![scale](overhead_scale.png)",
        "",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(RESULTS / "overhead_scale.png", rows)
    (RESULTS / "overhead_scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
