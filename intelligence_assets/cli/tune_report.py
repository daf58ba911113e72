"""`make tune-report`: does hyperparameter search pay off out of sample on the bundled real data?

Per model family and symbol x target that ranking let through: an Optuna search on the
walk-forward folds of the development period (as `hyperparameter_search/<family>` runs it), then
the family trained twice, with its configured params and with the searched ones, both scored on
the same held-out test rows, beside naive baselines. The best fold score is picked from many
trials and so flatters itself; only the held-out difference says whether tuning helped. Reads
features, labels and feature sets from the artifact store `make demo` wrote; writes
reports/tune_report.md.

    python -m intelligence_assets.cli.tune_report [--trials 15] [--families lightgbm linear]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from intelligence_assets.cells.training import Cell
from intelligence_assets.config.universe import REPOSITORY_ROOT, Universe, exit_on_configuration_error, load_universe
from intelligence_assets.ml.baselines import linear_on_all_features
from intelligence_assets.ml.dataset import Dataset, build_dataset
from intelligence_assets.ml.families import load_family
from intelligence_assets.ml.hyperparameter_search import (
    COMPLETE,
    PRUNED,
    SearchFailedError,
    SearchSettings,
    configured_values,
    search_hyperparameters,
)
from intelligence_assets.ml.metrics import backtest_sharpe, evaluate, no_skill_score, positions_from_predictions
from intelligence_assets.ml.splits import held_out_split
from intelligence_assets.ml.targets import label_horizon
from intelligence_assets.ml.training import TrainingResult, train_and_evaluate
from intelligence_assets.ml.walk_forward import WalkForwardProblem

REPORT_PATH = REPOSITORY_ROOT / "reports" / "tune_report.md"
DEFAULT_FAMILIES = ("lightgbm", "xgboost", "linear")
DEFAULT_TRIALS = 15
# A mean difference within this many standard errors of zero is no evidence either way.
NOISE_STANDARD_ERRORS = 2.0


@dataclass(frozen=True)
class CellData:
    """What one symbol x target's comparison needs from the store."""

    symbol: str
    target: str
    features: pl.DataFrame
    labels: pl.DataFrame
    selected: list[str]  # the cell's feature set


@dataclass
class CellComparison:
    """One family on one symbol x target: configured params against searched ones, held out."""

    family: str
    symbol: str
    target: str
    task: str
    metric: str  # the leaderboard metric of the target's task
    test_rows: int
    default_score: float  # held-out, in `metric`
    searched_score: float
    no_skill_score: float  # a constant prediction (majority class, training mean) in `metric`
    linear_all_features_score: float  # NaN when its test rows do not match the cell's
    default_fold_score: float  # mean walk-forward fold score (AUC - 0.5 or IC) of the configured params
    best_fold_score: float  # the search's best mean fold score
    default_held_out_fold_score: float  # the held-out score in fold units, to set beside the fold scores
    searched_held_out_fold_score: float
    searched_params: dict[str, Any]
    configured_among_trials: bool  # whether the configured values were the search's first trial
    trials_complete: int
    trials_pruned: int
    seconds: float

    @property
    def difference(self) -> float:
        """Searched minus configured, held out: what tuning bought."""
        return self.searched_score - self.default_score

    @property
    def fold_gain(self) -> float:
        """Best minus configured mean fold score: what the search believed it bought."""
        return self.best_fold_score - self.default_fold_score

    @property
    def held_out_gain(self) -> float:
        """`difference` in fold units (AUC - 0.5 or IC), comparable with `fold_gain`."""
        return self.searched_held_out_fold_score - self.default_held_out_fold_score


@dataclass(frozen=True)
class SkippedCell:
    family: str
    symbol: str
    target: str
    reason: str


@dataclass(frozen=True)
class Verdict:
    """Whether a set of held-out differences (searched - configured) shows tuning helping."""

    cells: int
    wins: int  # cells where searched beat configured
    mean: float
    standard_error: float  # of the mean difference across cells; NaN with fewer than two
    conclusion: str  # "helped", "hurt", "no evidence" or "too few cells"

    def describe(self, metric: str) -> str:
        if self.cells == 0:
            return "no cells to judge"
        base = f"searched beat configured on {self.wins} of {self.cells} cells; mean change {self.mean:+.4f} {metric}"
        if self.conclusion == "too few cells":
            return f"{base}; too few cells to tell it from noise"
        band = f"±{NOISE_STANDARD_ERRORS:g} SE = ±{NOISE_STANDARD_ERRORS * self.standard_error:.4f}"
        if self.conclusion == "no evidence":
            return f"{base}, within noise ({band}): no evidence that tuning helps"
        return f"{base}, beyond noise ({band}): tuning {self.conclusion} out of sample"


def judge(differences: Iterable[float]) -> Verdict:
    """The verdict on held-out differences: a mean within ±2 standard errors of zero is noise."""
    values = np.array([value for value in differences if math.isfinite(value)], dtype=np.float64)
    if values.size == 0:
        return Verdict(0, 0, math.nan, math.nan, "too few cells")
    wins, mean = int((values > 0).sum()), float(values.mean())
    if values.size < 2:
        return Verdict(1, wins, mean, math.nan, "too few cells")
    standard_error = float(values.std(ddof=1) / math.sqrt(values.size))
    if abs(mean) <= NOISE_STANDARD_ERRORS * standard_error:
        conclusion = "no evidence"
    else:
        conclusion = "helped" if mean > 0 else "hurt"
    return Verdict(int(values.size), wins, mean, standard_error, conclusion)


def search_settings_for(universe: Universe, family: str, trials: int) -> SearchSettings:
    """The family's `search:` from the universe, else `trials` trials over its default space."""
    configured = universe.model_families[family].search
    return (configured or SearchSettings(trials=trials)).with_space_of(load_family(family))


def study_name_for(family: str, data: CellData, params: Mapping[str, Any], settings: SearchSettings) -> str:
    """A name that changes with whatever decides the search, so a kept `--storage` never resumes a stale study."""
    decided = {
        "params": params,
        "settings": settings.model_dump(mode="json", exclude={"workers"}),
        "selected": data.selected,
        "rows": data.labels.height,
        "last": str(data.features["timestamp"].max()),
    }
    digest = hashlib.sha256(json.dumps(decided, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"tune_report-{family}-{data.symbol}-{data.target}-{digest}"


@dataclass(frozen=True)
class HeldOutRows:
    """A cell's held-out test rows, as a baseline's predictions are scored on them."""

    y: np.ndarray
    returns: np.ndarray  # forward_return_1: the PnL of a position held over each row
    reference: float  # the neutral prediction a backtest trades around
    bars_per_year: float

    def score(self, metric: str, task: str, spec: Any, predictions: np.ndarray) -> float:
        """`predictions` by `metric` (a leaderboard metric); NaN where undefined."""
        if metric != "sharpe":
            return float(evaluate(task, self.y, predictions)[metric])
        side = getattr(spec, "side", None)
        positions = positions_from_predictions(spec.kind, task, predictions, self.reference, side=side)
        return math.nan if positions is None else backtest_sharpe(positions, self.returns, self.bars_per_year)


def _metric(result: TrainingResult, metric: str) -> float:
    value = result.metrics.get(metric)
    return math.nan if value is None else float(value)


def _fold_units(result: TrainingResult, task: str) -> float:
    return _metric(result, "auc") - 0.5 if task == "classification" else _metric(result, "ic")


def _mean_fold_score(problem: WalkForwardProblem, family: str, params: Mapping[str, Any]) -> float:
    """The configured params' mean fold score, scored as a search trial is (undefined folds count 0)."""
    model_family = load_family(family)
    scores = []
    for fold in problem.folds():
        if problem.learnable(fold):
            score = problem.test_score(problem.fit(model_family, dict(params), fold), fold)
            scores.append(float(score) if np.isfinite(score) else 0.0)
    return float(np.mean(scores)) if scores else math.nan


def _linear_all_features(
    universe: Universe, task: str, data: CellData, chosen: Dataset, fold: Any
) -> np.ndarray | None:
    """The linear family on every feature, fitted on the development rows and predicting the
    cell's test rows (matched by timestamp: the all-features rows start later), or None."""
    everything = build_dataset(data.features, data.labels)
    test_times = chosen.timestamps[fold.test]
    test_rows = np.isin(everything.timestamps, test_times)
    if test_rows.sum() != fold.test.size:
        return None
    train_rows = everything.timestamps < chosen.timestamps[fold.train[-1]] + np.timedelta64(1, "us")
    return linear_on_all_features(
        task, everything.x[train_rows], everything.y[train_rows], everything.x[test_rows], universe.seed
    )


def compare_cell(
    universe: Universe,
    family: str,
    data: CellData,
    settings: SearchSettings,
    storage: str,
    log: Callable[[str], None] = lambda _: None,
) -> CellComparison:
    """Search `family` on the cell's walk-forward folds, then train it with the configured and
    with the searched params and score both, and the baselines, on the same held-out rows."""
    started = time.perf_counter()
    cell = Cell(universe, family, data.symbol, data.target)
    spec, metric = cell.spec, cell.score_metric
    horizon = label_horizon(spec)
    configured = dict(universe.model_families[family].params)
    chosen = build_dataset(data.features, data.labels, data.selected)
    problem = WalkForwardProblem.from_dataset(chosen, spec.task, horizon, universe.split, universe.seed)
    result = search_hyperparameters(
        problem, family, configured, settings, storage, study_name_for(family, data, configured, settings), log=log
    )
    bars_per_year = universe.bars_per_year(data.symbol, data.features["timestamp"])

    def train(params: Mapping[str, Any]) -> TrainingResult:
        return train_and_evaluate(
            family,
            dict(params),
            chosen.x,
            chosen.y,
            chosen.forward_return_1,
            task=spec.task,
            spec_kind=spec.kind,
            label_horizon=horizon,
            split=universe.split,
            seed=universe.seed,
            bars_per_year=bars_per_year,
            side=getattr(spec, "side", None),
        )

    default, searched = train(configured), train(result.best_params)
    if not np.array_equal(default.test_index, searched.test_index):
        raise AssertionError("configured and searched params were scored on different test rows")
    fold = held_out_split(len(chosen.y), horizon, universe.split)
    held_out = HeldOutRows(
        chosen.y[fold.test],
        chosen.forward_return_1[fold.test],
        default.train_base_rate if default.train_base_rate is not None else 0.0,
        bars_per_year,
    )
    linear = _linear_all_features(universe, spec.task, data, chosen, fold)
    return CellComparison(
        family=family,
        symbol=data.symbol,
        target=data.target,
        task=spec.task,
        metric=metric,
        test_rows=int(fold.test.size),
        default_score=_metric(default, metric),
        searched_score=_metric(searched, metric),
        no_skill_score=no_skill_score(metric, default.baseline.get("majority_accuracy")),
        linear_all_features_score=(math.nan if linear is None else held_out.score(metric, spec.task, spec, linear)),
        default_fold_score=_mean_fold_score(problem, family, configured),
        best_fold_score=result.best_value,
        default_held_out_fold_score=_fold_units(default, spec.task),
        searched_held_out_fold_score=_fold_units(searched, spec.task),
        searched_params=result.searched_params,
        configured_among_trials=bool(result.trials)
        and result.trials[0].params == configured_values(family, configured, settings.ranges),
        trials_complete=result.count(COMPLETE),
        trials_pruned=result.count(PRUNED),
        seconds=time.perf_counter() - started,
    )


# ---------------------------------------------------------------- the report


def number(value: float, digits: int = 3, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _mean(values: Iterable[float]) -> float:
    finite = [value for value in values if math.isfinite(value)]
    return float(np.mean(finite)) if finite else math.nan


def _grouped(comparisons: Sequence[CellComparison], key: Callable[[CellComparison], Any]) -> dict[Any, list]:
    groups: dict[Any, list[CellComparison]] = {}
    for comparison in comparisons:
        groups.setdefault(key(comparison), []).append(comparison)
    return groups


def headline(comparisons: Sequence[CellComparison]) -> str:
    """How many family x metric verdicts found help, and how far the fold gains shrank held out."""
    verdicts = list(family_verdicts(comparisons).values())
    if not verdicts:
        return "No cell was compared."
    count = {conclusion: sum(v.conclusion == conclusion for v in verdicts) for conclusion in ("helped", "hurt")}
    quiet = len(verdicts) - count["helped"] - count["hurt"]
    return (
        f"Of {len(verdicts)} family x metric verdicts, tuning helped beyond noise in {count['helped']}, hurt in "
        f"{count['hurt']} and showed no evidence either way (or had too few cells) in {quiet}. Over all "
        f"{len(comparisons)} cells the search's best trial beat the configured params on the walk-forward folds "
        f"by {_mean(c.fold_gain for c in comparisons):+.4f} on average (AUC - 0.5 or IC), and on the held-out "
        f"rows by {_mean(c.held_out_gain for c in comparisons):+.4f}."
    )


def family_verdicts(comparisons: Sequence[CellComparison]) -> dict[tuple[str, str], Verdict]:
    """(family, metric) -> the verdict over every cell of that family scored by that metric."""
    return {
        group: judge(c.difference for c in cells)
        for group, cells in _grouped(comparisons, lambda c: (c.family, c.metric)).items()
    }


def render_report(
    comparisons: Sequence[CellComparison],
    skipped: Sequence[SkippedCell],
    families: Sequence[str],
    settings: Mapping[str, SearchSettings],
    seconds: float,
    gated: int = 0,
) -> str:
    """reports/tune_report.md: headline verdicts, then family x target, the fold-vs-held-out gap, every cell."""
    verdicts = family_verdicts(comparisons)
    budgets = "; ".join(
        f"{family}: {settings[family].trials or '∞'} trials"
        + (f" or {settings[family].seconds:g}s" if settings[family].seconds else "")
        + f" over {', '.join(settings[family].ranges)}"
        for family in families
        if family in settings
    )
    lines = [
        "# Tuning report: searched against configured hyperparameters",
        "",
        "Each family's search (Optuna TPE, median pruning) sees only the walk-forward folds of the development "
        "period; the family is then trained on the whole development period twice, with its configured params "
        "and with the search's best, and both are scored once on the same held-out test rows (the last "
        "part of each symbol's history, as the models of `make demo` are). Metric: the leaderboard's per task. "
        f"A mean difference within ±{NOISE_STANDARD_ERRORS:g} standard errors (of the mean difference across "
        "cells) of zero is called no evidence of help. That yardstick treats cells as independent, which they "
        "are not quite (one symbol's targets share its bars and test period), and with several verdicts one "
        "may cross it by chance: read a lone *helped* or *hurt* with that in mind. "
        f"Cells: the symbol x targets the ranking let through ({gated} gated ones are not searched). "
        f"Budget: {budgets}. Runtime {seconds / 60:.1f} min.",
        "",
        f"**Headline.** {headline(comparisons)}",
        "",
        "## Verdict per family",
        "",
    ]
    for family in families:
        for (name, metric), verdict in sorted(verdicts.items()):
            if name == family:
                lines.append(f"- **{family}** ({metric}): {verdict.describe(metric)}.")
        if not any(name == family for name, _ in verdicts):
            lines.append(f"- **{family}**: no cell compared.")
    lines += [
        "",
        "## Per family x target (held out, mean over symbols)",
        "",
        "| family | target | metric | cells | configured | searched | difference | ±2 SE | searched better "
        "| no skill | linear, all features | verdict |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for (family, target), cells in sorted(
        _grouped(comparisons, lambda c: (c.family, c.target)).items(),
        key=lambda item: (families.index(item[0][0]) if item[0][0] in families else len(families), item[0][1]),
    ):
        verdict = judge(c.difference for c in cells)
        band = NOISE_STANDARD_ERRORS * verdict.standard_error
        lines.append(
            f"| {family} | {target} | {cells[0].metric} | {len(cells)} "
            f"| {number(_mean(c.default_score for c in cells))} "
            f"| {number(_mean(c.searched_score for c in cells))} | {number(verdict.mean, 4, signed=True)} "
            f"| {number(band, 4)} | {verdict.wins} of {verdict.cells} "
            f"| {number(_mean(c.no_skill_score for c in cells))} "
            f"| {number(_mean(c.linear_all_features_score for c in cells))} | {verdict.conclusion} |"
        )
    lines += [
        "",
        "## What the search believed against what it got",
        "",
        "In fold units (AUC - 0.5, or IC), mean over cells. *Fold gain*: the best trial's mean walk-forward fold "
        "score minus the configured params' (picked as the best of many trials on those same folds, so biased "
        "upwards). *Held-out gain*: the same difference on the held-out test rows. The gap between them is the "
        "search fitting the folds' noise.",
        "",
        "| family | task | cells | configured, folds | best found, folds | fold gain | configured, held out "
        "| searched, held out | held-out gain | configured params among trials |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for (family, task), cells in sorted(_grouped(comparisons, lambda c: (c.family, c.task)).items()):
        among = sum(c.configured_among_trials for c in cells)
        lines.append(
            f"| {family} | {task} | {len(cells)} | {number(_mean(c.default_fold_score for c in cells), 4)} "
            f"| {number(_mean(c.best_fold_score for c in cells), 4)} "
            f"| {number(_mean(c.fold_gain for c in cells), 4, signed=True)} "
            f"| {number(_mean(c.default_held_out_fold_score for c in cells), 4)} "
            f"| {number(_mean(c.searched_held_out_fold_score for c in cells), 4)} "
            f"| {number(_mean(c.held_out_gain for c in cells), 4, signed=True)} | {among} of {len(cells)} |"
        )
    lines += [
        "",
        "## Every cell",
        "",
        "| family | symbol | target | metric | test rows | configured | searched | difference | no skill "
        "| linear, all features | folds: configured | folds: best | trials (pruned) | searched params |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in comparisons:
        params = ", ".join(f"{name}={_short(value)}" for name, value in c.searched_params.items())
        lines.append(
            f"| {c.family} | {c.symbol} | {c.target} | {c.metric} | {c.test_rows} | {number(c.default_score)} "
            f"| {number(c.searched_score)} | {number(c.difference, 4, signed=True)} | {number(c.no_skill_score)} "
            f"| {number(c.linear_all_features_score)} | {number(c.default_fold_score, 4)} "
            f"| {number(c.best_fold_score, 4)} | {c.trials_complete + c.trials_pruned} ({c.trials_pruned}) | {params} |"
        )
    if skipped:
        lines += ["", "## Not compared", ""]
        lines += [f"- {s.family} {s.symbol} {s.target}: {s.reason}" for s in skipped]
    return "\n".join(lines) + "\n"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def summary_lines(comparisons: Sequence[CellComparison], families: Sequence[str]) -> list[str]:
    verdicts = family_verdicts(comparisons)
    return [
        f"{family} ({metric}): {verdict.describe(metric)}"
        for family in families
        for (name, metric), verdict in sorted(verdicts.items())
        if name == family
    ]


# ---------------------------------------------------------------- reading the store


def load_cells(
    store: Any, universe: Universe, symbols: Sequence[str], targets: Sequence[str]
) -> tuple[list[CellData], int]:
    """The cells ranking let through, with their inputs, and how many it gated; SystemExit when
    `make demo` has not stored them."""
    from intelligence_assets.defs.assets.market_data import FEATURES
    from intelligence_assets.defs.assets.target_analysis import FEATURE_SETS, LABELS
    from intelligence_assets.store.artifact_store import ArtifactStoreError
    from intelligence_assets.store.artifacts import read_value
    from intelligence_assets.store.keys import artifact_prefix

    cells, gated, features = [], 0, {}
    try:
        for symbol in symbols:
            for target in targets:
                selection = read_value(store, artifact_prefix(FEATURE_SETS, symbol, target))
                if selection.get("gated"):
                    gated += 1
                    continue
                if symbol not in features:
                    features[symbol] = read_value(store, artifact_prefix(FEATURES, symbol))
                labels = read_value(store, artifact_prefix(LABELS, symbol, target))
                cells.append(CellData(symbol, target, features[symbol], labels, list(selection["selected"])))
    except ArtifactStoreError as error:
        raise SystemExit(
            f"the artifact store lacks the demo's features, labels or feature sets ({error}); run `make demo` first"
        ) from None
    return cells, gated


def build_tune_report(
    cells: Sequence[CellData],
    universe: Universe,
    families: Sequence[str],
    trials: int,
    storage: str,
    path: Path,
    gated: int = 0,
    log: Callable[[str], None] = print,
) -> tuple[Path, list[CellComparison]]:
    """Compare every family on every cell and write the report; a cell the search cannot run on
    (too short, one class in every fold) is listed as not compared rather than failing the rest."""
    started = time.perf_counter()
    settings = {family: search_settings_for(universe, family, trials) for family in families}
    comparisons: list[CellComparison] = []
    skipped: list[SkippedCell] = []
    for family in families:
        for data in cells:
            try:
                comparison = compare_cell(universe, family, data, settings[family], storage)
            except (SearchFailedError, ValueError) as error:
                skipped.append(SkippedCell(family, data.symbol, data.target, str(error)))
                log(f"{family} {data.symbol} {data.target}: skipped ({error})")
                continue
            comparisons.append(comparison)
            log(
                f"{family} {data.symbol} {data.target}: {comparison.metric} configured "
                f"{comparison.default_score:.4f}, searched {comparison.searched_score:.4f} "
                f"({comparison.difference:+.4f}; folds {comparison.default_fold_score:.4f} -> "
                f"{comparison.best_fold_score:.4f}) in {comparison.seconds:.0f}s"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render_report(comparisons, skipped, families, settings, time.perf_counter() - started, gated)
    path.write_text(text)
    return path, comparisons


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(DEFAULT_FAMILIES), help="families to tune")
    parser.add_argument(
        "--trials",
        type=int,
        default=DEFAULT_TRIALS,
        help="trials per study, for families whose universe entry has no `search:`",
    )
    parser.add_argument("--symbols", nargs="+", help="only these symbols")
    parser.add_argument("--targets", nargs="+", help="only these targets")
    parser.add_argument(
        "--storage", help="Optuna storage URL to keep (and resume) the studies; default a temporary one"
    )
    parser.add_argument("--out", type=Path, default=REPORT_PATH)
    args = parser.parse_args(argv)
    universe = load_universe()
    unknown = [name for name in (args.families or []) if name not in universe.model_families]
    unknown += [name for name in (args.symbols or []) if name not in universe.symbols]
    unknown += [name for name in (args.targets or []) if name not in universe.target_names]
    if unknown:
        parser.error(f"not in the universe: {', '.join(unknown)}")
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    from intelligence_assets.cli.home import holding_home
    from intelligence_assets.defs.resources.deployment import Deployment

    started = time.perf_counter()
    # Only while reading: `make demo` may rewrite the store once the inputs are in memory.
    with holding_home("make tune-report"):
        cells, gated = load_cells(
            Deployment.from_environment().artifact_store(),
            universe,
            args.symbols or universe.symbols,
            args.targets or universe.target_names,
        )
    print(f"{len(cells)} cells to compare ({gated} gated by the ranking), families {', '.join(args.families)}")
    with tempfile.TemporaryDirectory(prefix="tune-report-") as directory:
        storage = args.storage or f"sqlite:///{Path(directory) / 'studies.db'}"
        path, comparisons = build_tune_report(cells, universe, args.families, args.trials, storage, args.out, gated)
    print(f"\n{headline(comparisons)}\nVerdicts (held out, searched - configured):")
    for line in summary_lines(comparisons, args.families):
        print(f"  {line}")
    print(f"wrote {path} in {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    exit_on_configuration_error(main)
