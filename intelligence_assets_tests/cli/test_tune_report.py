"""`make tune-report`'s computing part on synthetic bars: the verdict separates noise from a
real change, configured and searched params are scored on the same held-out rows as the
pipeline's own training scores them, and the report has a row per family x target."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from intelligence_assets.cells.training import Cell, train_cell
from intelligence_assets.cli.tune_report import (
    CellData,
    build_tune_report,
    compare_cell,
    judge,
    load_cells,
    search_settings_for,
)
from intelligence_assets.config.universe import Universe, load_universe
from intelligence_assets.store.artifact_store import LocalArtifactStore
from intelligence_assets_tests.cells.conftest import DIRECTION, SELECTED, VOLATILITY, planted  # noqa: F401
from intelligence_assets_tests.conftest import write_small_universe

FAMILIES = {"linear": {"params": {"C": 1.0, "alpha": 1.0}}, "lightgbm": {"params": {"num_boost_round": 40}}}


@pytest.fixture(scope="module")
def universe(tmp_path_factory: pytest.TempPathFactory) -> Universe:
    """The small universe with the configured values of linear's searched params given, so the
    search's first trial is the configuration itself."""
    return load_universe(write_small_universe(tmp_path_factory.mktemp("universe"), families=FAMILIES))


def test_the_verdict_calls_noise_no_evidence_and_a_steady_change_help_or_harm() -> None:
    noise = np.random.default_rng(0).normal(0.0, 0.01, 12)
    noise -= noise.mean() - 0.001  # a small mean, well inside two standard errors
    verdict = judge(noise)
    assert verdict.conclusion == "no evidence" and verdict.cells == 12
    assert "no evidence that tuning helps" in verdict.describe("auc")

    helped = judge([0.011, 0.009, 0.012, 0.010, 0.008])
    assert helped.conclusion == "helped" and helped.wins == 5
    assert math.isclose(helped.mean, 0.01) and helped.standard_error < 0.001
    assert judge([-0.02, -0.018, -0.021]).conclusion == "hurt"
    # One cell has no spread to measure noise by; undefined differences are not counted.
    assert judge([0.05, math.nan]).conclusion == "too few cells"


def test_a_cell_scores_configured_and_searched_params_on_the_pipelines_held_out_rows(
    universe: Universe,
    planted,  # noqa: F811
    tmp_path: Path,
) -> None:
    data = CellData("SIGNAL", DIRECTION, planted.features, planted.labels[DIRECTION], SELECTED)
    settings = search_settings_for(universe, "linear", trials=4)
    comparison = compare_cell(universe, "linear", data, settings, f"sqlite:///{tmp_path / 'studies.db'}")

    # The configured side is what the pipeline's own training of this cell scores.
    trained = train_cell(
        Cell(universe, "linear", "SIGNAL", DIRECTION),
        {"gated": False, "reason": "", "selected": SELECTED},
        lambda: planted.features,
        lambda: planted.labels[DIRECTION],
    )
    assert comparison.metric == "auc"
    assert math.isclose(comparison.default_score, trained.metrics["auc"], abs_tol=1e-12)
    assert comparison.test_rows == trained.model.summary["test_rows"]
    # The planted signal is found by both, out of sample.
    assert comparison.default_score > 0.55 and comparison.searched_score > 0.55
    assert comparison.no_skill_score == 0.5 and comparison.linear_all_features_score > 0.55
    # The configured params were trial 0, so the best found is no worse on the folds.
    assert comparison.configured_among_trials
    assert comparison.best_fold_score >= comparison.default_fold_score - 1e-12
    assert comparison.trials_complete + comparison.trials_pruned == 4
    assert set(comparison.searched_params) == set(settings.ranges)
    assert math.isclose(comparison.difference, comparison.searched_score - comparison.default_score, abs_tol=1e-15)


def test_the_report_has_a_row_per_family_and_target(universe: Universe, planted, tmp_path: Path) -> None:  # noqa: F811
    cells = [
        CellData(symbol, target, planted.features, planted.labels[target], SELECTED)
        for symbol in ("SIGNAL", "COPY")
        for target in (DIRECTION, VOLATILITY)
    ]
    path, comparisons = build_tune_report(
        cells,
        universe,
        ["linear", "lightgbm"],
        trials=2,
        storage=f"sqlite:///{tmp_path / 'studies.db'}",
        path=tmp_path / "tune_report.md",
        log=lambda _: None,
    )
    assert len(comparisons) == 8
    text = path.read_text()
    table = text.split("## Per family x target")[1].split("##")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| family")]
    assert sorted(tuple(cell.strip() for cell in row.split("|")[1:3]) for row in rows) == sorted(
        (family, target) for family in ("linear", "lightgbm") for target in (DIRECTION, VOLATILITY)
    )
    # The regression target is judged by the leaderboard's rank IC, classification by AUC.
    assert all(f"| {VOLATILITY} | rank_ic |" in row for row in rows if VOLATILITY in row)
    assert "**Headline.** Of 4 family x metric verdicts" in text
    assert "- **linear** (auc):" in text and "- **lightgbm** (rank_ic):" in text
    assert all(row.split("|")[4].strip() == "2" for row in rows)  # both symbols averaged


def test_a_store_without_the_demo_says_to_run_it(universe: Universe, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="run `make demo` first"):
        load_cells(LocalArtifactStore(tmp_path / "artifacts"), universe, universe.symbols, universe.target_names)
