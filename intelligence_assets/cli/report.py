"""`make report`: what the models trained by `make demo` are worth on the bundled real data.

Per symbol: the target ranking, the selected features, every family's held-out metric against
naive baselines on the same test rows (majority class, sign of the last return, a linear model on
all features), and the backtest Sharpe with and without a cost per trade; over all symbols, a
calibration plot per family. Reads the artifact store only (models are reloaded and re-scored on
their own test rows); writes reports/report.md and PNGs beside it.

    python -m intelligence_assets.cli.report [--cost-bps 5]
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from intelligence_assets.cli.home import holding_home
from intelligence_assets.config.universe import REPOSITORY_ROOT, Universe, exit_on_configuration_error, load_universe
from intelligence_assets.defs.assets.leaderboard import MODEL_LEADERBOARD
from intelligence_assets.defs.assets.market_data import FEATURES
from intelligence_assets.defs.assets.models import model_key
from intelligence_assets.defs.assets.target_analysis import FEATURE_SETS, LABELS, TARGET_RANKINGS
from intelligence_assets.ml.baselines import (
    calibration_bins,
    last_return_sign_scores,
    linear_on_all_features,
    majority_class_scores,
)
from intelligence_assets.ml.dataset import build_dataset
from intelligence_assets.ml.metrics import backtest_sharpe, evaluate, positions_from_predictions
from intelligence_assets.ml.splits import held_out_split
from intelligence_assets.ml.targets import label_horizon
from intelligence_assets.store.artifact_store import ArtifactStore, ArtifactStoreError
from intelligence_assets.store.artifacts import read_value
from intelligence_assets.store.keys import artifact_prefix

REPORT_DIRECTORY = REPOSITORY_ROOT / "reports"
METRIC = {"classification": "auc", "regression": "ic"}
EDGE = 0.01  # how much a model's metric must exceed the best baseline's to count as an edge


@dataclass
class Scored:
    name: str
    score: float
    sharpe: float | None
    sharpe_net: float | None


@dataclass
class CellReport:
    symbol: str
    target: str
    task: str
    ranking: dict
    selected: list[str]
    test_rows: int = 0
    rows: list[Scored] = field(default_factory=list)
    models: list[str] = field(default_factory=list)  # the trained families among `rows`
    probabilities: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # family -> (y, p)


def score_cell(store: ArtifactStore, universe: Universe, symbol: str, target: str, cost: float) -> CellReport:
    spec = universe.target(target)
    ranking = read_value(store, artifact_prefix(TARGET_RANKINGS, symbol, target))
    selection = read_value(store, artifact_prefix(FEATURE_SETS, symbol, target))
    report = CellReport(symbol, target, spec.task, ranking, list(selection.get("selected", [])))
    if selection.get("gated"):
        return report
    features, labels = (
        read_value(store, artifact_prefix(FEATURES, symbol)),
        read_value(store, artifact_prefix(LABELS, symbol, target)),
    )
    bars_per_year = universe.bars_per_year(symbol, features["timestamp"])
    chosen = build_dataset(features, labels, report.selected)
    fold = held_out_split(len(chosen.y), label_horizon(spec), universe.split)
    y_test, returns = chosen.y[fold.test], chosen.forward_return_1[fold.test]
    test_times = chosen.timestamps[fold.test]
    report.test_rows = int(fold.test.size)
    classification = spec.task == "classification"
    reference = float(np.mean(chosen.y[fold.train])) if classification else 0.0
    side = getattr(spec, "side", None)

    def add(name: str, scores: np.ndarray) -> None:
        positions = positions_from_predictions(spec.kind, spec.task, scores, reference, side=side)
        gross = None if positions is None else backtest_sharpe(positions, returns, bars_per_year)
        net = None if positions is None else backtest_sharpe(positions, returns, bars_per_year, cost)
        report.rows.append(Scored(name, evaluate(spec.task, y_test, scores)[METRIC[spec.task]], gross, net))

    for family in universe.model_families:
        try:
            trained = read_value(store, artifact_prefix(model_key(family), symbol, target))
        except ArtifactStoreError:
            continue
        if not trained.trained:
            continue
        predictions = trained.predict(chosen.x[fold.test])
        add(family, predictions)
        report.models.append(family)
        if classification:
            report.probabilities[family] = (y_test, predictions)

    # Baselines on the same test rows (matched by timestamp for the all-features matrix, whose
    # longest windows start later).
    everything = build_dataset(features, labels)
    test_rows = np.isin(everything.timestamps, test_times)
    train_rows = everything.timestamps < chosen.timestamps[fold.train[-1]] + np.timedelta64(1, "us")
    if classification:
        add("baseline: majority class", majority_class_scores(chosen.y[fold.train], fold.test.size))
    last_return = features.select("ret_1").to_numpy().ravel()[np.isin(features["timestamp"].to_numpy(), test_times)]
    add("baseline: sign of last return", last_return_sign_scores(last_return, spec.task))
    if test_rows.sum() == fold.test.size:
        add(
            "baseline: linear, all features",
            linear_on_all_features(
                spec.task, everything.x[train_rows], everything.y[train_rows], everything.x[test_rows], universe.seed
            ),
        )
    if spec.kind != "forward_volatility":
        report.rows.append(
            Scored(
                "buy and hold",
                math.nan,
                backtest_sharpe(np.ones(returns.size), returns, bars_per_year),
                backtest_sharpe(np.ones(returns.size), returns, bars_per_year, cost),
            )
        )
    return report


def number(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def verdict(cell: CellReport) -> str:
    models = [row for row in cell.rows if row.name in cell.models]
    baselines = [row for row in cell.rows if row.name.startswith("baseline") and math.isfinite(row.score)]
    if not models:
        return f"not trained: {cell.ranking.get('reason', '')}"
    best = max(models, key=lambda row: row.score if math.isfinite(row.score) else -math.inf)
    no_skill = 0.5 if cell.task == "classification" else 0.0
    best_baseline = max((row.score for row in baselines), default=no_skill)
    # A margin, so that a third-decimal win over a baseline is not called predictability.
    if best.score < max(no_skill, best_baseline) + EDGE:
        return (
            f"no real edge: best model {best.name} {METRIC[cell.task]} {best.score:.3f} against the best baseline's "
            f"{best_baseline:.3f}"
        )
    return (
        f"{best.name} {METRIC[cell.task]} {best.score:.3f} beats the best baseline ({best_baseline:.3f}) by "
        f"{best.score - best_baseline:.3f}"
    )


def mean_net_sharpe(cells: list[CellReport]) -> dict[str, float]:
    """Mean Sharpe after cost per model or baseline, over the tradable trained cells."""
    values: dict[str, list[float]] = {}
    for cell in cells:
        for row in cell.rows:
            if row.sharpe_net is not None:
                values.setdefault(row.name, []).append(row.sharpe_net)
    return {name: float(np.mean(v)) for name, v in values.items()}


def sharpe_headline(cells: list[CellReport], cost_bps: float) -> str:
    means = mean_net_sharpe(cells)
    if "buy and hold" not in means:
        return ""
    families = {name: value for name, value in means.items() if not name.startswith(("baseline", "buy"))}
    better = [name for name, value in families.items() if value > means["buy and hold"]]
    listed = ", ".join(f"{name} {value:.2f}" for name, value in sorted(families.items()))
    return f"After {cost_bps:g} bp per unit traded the families' mean Sharpe ({listed}) " + (
        f"is above buy and hold's {means['buy and hold']:.2f} for {', '.join(better)}."
        if better
        else f"is below buy and hold's {means['buy and hold']:.2f} for every family: no model pays for its trading."
    )


def plots(cells: list[CellReport], universe: Universe, directory: Path, cost_bps: float) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    symbols, targets = universe.symbols, universe.target_names
    grid = np.full((len(symbols), len(targets)), np.nan)
    for cell in cells:
        grid[symbols.index(cell.symbol), targets.index(cell.target)] = cell.ranking.get("score") or np.nan
    figure, axis = plt.subplots(figsize=(1.6 * len(targets) + 2, 0.5 * len(symbols) + 2))
    image = axis.imshow(grid, cmap="RdYlGn", vmin=-0.1, vmax=0.1)
    axis.set_xticks(range(len(targets)), targets, rotation=30, ha="right")
    axis.set_yticks(range(len(symbols)), symbols)
    for (i, j), value in np.ndenumerate(grid):
        passed = next(
            (c.ranking.get("passed") for c in cells if c.symbol == symbols[i] and c.target == targets[j]), False
        )
        axis.text(j, i, f"{value:.3f}{' *' if passed else ''}", ha="center", va="center", fontsize=8)
    axis.set_title("Target ranking score (AUC - 0.5 or IC; * passed the bar)")
    figure.colorbar(image)
    figure.tight_layout()
    figure.savefig(directory / "ranking.png", dpi=100)
    plt.close(figure)
    written.append("ranking.png")

    pooled: dict[str, tuple[list, list]] = {}
    for cell in cells:
        for family, (y, p) in cell.probabilities.items():
            pooled.setdefault(family, ([], []))
            pooled[family][0].append(y)
            pooled[family][1].append(p)
    if pooled:
        figure, axis = plt.subplots(figsize=(6, 5))
        axis.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfectly calibrated")
        for family, (ys, ps) in pooled.items():
            bins = calibration_bins(np.concatenate(ys), np.concatenate(ps))
            axis.plot([b[0] for b in bins], [b[1] for b in bins], marker="o", label=family)
        axis.set_xlabel("predicted probability")
        axis.set_ylabel("observed frequency")
        axis.set_title("Calibration on held-out rows, all classification cells")
        axis.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(directory / "calibration.png", dpi=100)
        plt.close(figure)
        written.append("calibration.png")

    names = sorted({row.name for cell in cells for row in cell.rows if row.sharpe is not None})
    if names:
        gross = [
            np.mean([r.sharpe for c in cells for r in c.rows if r.name == n and r.sharpe is not None]) for n in names
        ]
        net = [
            np.mean([r.sharpe_net for c in cells for r in c.rows if r.name == n and r.sharpe_net is not None])
            for n in names
        ]
        figure, axis = plt.subplots(figsize=(max(7, 0.9 * len(names)), 4.5))
        positions = np.arange(len(names))
        axis.bar(positions - 0.2, gross, 0.4, label="no cost")
        axis.bar(positions + 0.2, net, 0.4, label=f"{cost_bps:g} bp per unit traded")
        axis.axhline(0, color="black", linewidth=0.8)
        axis.set_xticks(positions, names, rotation=30, ha="right", fontsize=8)
        axis.set_ylabel("mean annualised Sharpe (tradable trained cells)")
        axis.legend()
        figure.tight_layout()
        figure.savefig(directory / "sharpe.png", dpi=100)
        plt.close(figure)
        written.append("sharpe.png")
    return written


def build_report(store: ArtifactStore, universe: Universe, directory: Path, cost_bps: float) -> Path:
    try:
        read_value(store, artifact_prefix(MODEL_LEADERBOARD))
    except ArtifactStoreError as error:
        raise SystemExit(f"no trained models to report on ({error}); run `make demo` first") from None
    cells = [
        score_cell(store, universe, s, t, cost_bps / 10_000) for s in universe.symbols for t in universe.target_names
    ]
    directory.mkdir(parents=True, exist_ok=True)
    images = plots(cells, universe, directory, cost_bps)
    trained = [c for c in cells if c.models]
    beating = [c for c in trained if "beats" in verdict(c)]
    lines = [
        "# Report: the bundled real data",
        "",
        f"{len(universe.symbols)} symbols x {len(universe.targets)} targets x {len(universe.model_families)} "
        "families, daily bars. "
        f"Held-out test rows: the last {universe.split.test_fraction:.0%} of each symbol's history, never seen in "
        "training or selection. "
        f"Cost: {cost_bps:g} bp per unit of position change. Sharpe is annualised with each symbol's own bars per "
        "year (set in universe.yaml or inferred from its timestamps); "
        "positions follow each target's rule (direction: long/short; barrier peak: long/flat; barrier valley: "
        "short/flat; forward return: sign).",
        "",
        f"**Headline.** {len(trained)} of {len(cells)} symbol x target cells passed the ranking bar and were trained; "
        f"in {len(beating)} of them the best model beats every naive baseline by at least {EDGE} "
        f"{'/'.join(sorted(set(METRIC.values())))} on its held-out rows. "
        "Every other cell is marked: nothing there is predictable from these features beyond what a naive rule gets. "
        + sharpe_headline(cells, cost_bps),
        "",
        *[f"![{image}]({image})" for image in images],
        "",
    ]
    for symbol in universe.symbols:
        lines += [
            f"## {symbol}",
            "",
            "| target | ranking score | stability | passed | selected features | verdict |",
            "|---|---:|---:|---|---|---|",
        ]
        for cell in (c for c in cells if c.symbol == symbol):
            lines.append(
                f"| {cell.target} | {number(cell.ranking.get('score'))} | {number(cell.ranking.get('stability'), 2)} "
                f"| {'yes' if cell.ranking.get('passed') else 'no'} "
                f"| {', '.join(cell.selected) or '—'} | {verdict(cell)} |"
            )
        for cell in (c for c in cells if c.symbol == symbol and c.rows):
            lines += [
                "",
                f"**{cell.target}** ({cell.test_rows} test rows, metric {METRIC[cell.task]})",
                "",
                f"| model or baseline | {METRIC[cell.task]} | Sharpe | Sharpe after cost |",
                "|---|---:|---:|---:|",
            ]
            lines += [
                f"| {row.name} | {number(row.score)} | {number(row.sharpe, 2)} | {number(row.sharpe_net, 2)} |"
                for row in cell.rows
            ]
        lines.append("")
    path = directory / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cost-bps", type=float, default=5.0, help="cost per unit of position change, in basis points")
    parser.add_argument("--out", type=Path, default=REPORT_DIRECTORY)
    args = parser.parse_args(argv)
    from intelligence_assets.defs.resources.deployment import Deployment

    # Not while `make demo` writes the store it reads.
    with holding_home("make report"):
        path = build_report(Deployment.from_environment().artifact_store(), load_universe(), args.out, args.cost_bps)
    print(f"wrote {path}")


if __name__ == "__main__":
    exit_on_configuration_error(main)
