"""The search core on its own: a real Optuna study in a real SQLite file, on synthetic bars."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from intelligence_assets.config.universe import Universe
from intelligence_assets.ml.dataset import build_dataset
from intelligence_assets.ml.features import build_features, drop_unusable_features
from intelligence_assets.ml.hyperparameter_search import (
    COMPLETE,
    PRUNED,
    SearchSettings,
    search_hyperparameters,
)
from intelligence_assets.ml.metrics import roc_auc
from intelligence_assets.ml.splits import held_out_split
from intelligence_assets.ml.synthetic import PLANTED_FEATURE, synthetic_bars
from intelligence_assets.ml.targets import build_labels, label_horizon
from intelligence_assets.ml.training import train_and_evaluate
from intelligence_assets.ml.walk_forward import WalkForwardProblem

TARGET = "y_up_1b"
FEATURES = [PLANTED_FEATURE, "ret_1", "vol_21"]
SPACE = {
    "learning_rate": {"low": 0.01, "high": 0.3, "log": True},
    "num_leaves": {"low": 4, "high": 48},
    "min_data_in_leaf": {"choices": [20, 50, 100]},
}
CONFIGURED = {"num_boost_round": 60, "learning_rate": 0.05, "num_leaves": 15}


def _problem(
    universe: Universe, n_bars: int, seed: int = 100, shuffle: bool = False
) -> tuple[WalkForwardProblem, np.ndarray]:
    bars = synthetic_bars(n_bars=n_bars, seed=seed, signal_strength=1.0)
    features = drop_unusable_features(build_features(bars, universe.features)).table
    spec = universe.target(TARGET)
    dataset = build_dataset(features, build_labels(bars, spec), FEATURES)
    y = dataset.y.copy()
    if shuffle:
        np.random.default_rng(seed).shuffle(y)
    problem = WalkForwardProblem(dataset.x, y, FEATURES, spec.task, label_horizon(spec), universe.split, universe.seed)
    return problem, dataset.forward_return_1


def _settings(**budget) -> SearchSettings:
    return SearchSettings.model_validate({"space": SPACE, "startup_trials": 3, **budget})


def test_a_search_counts_its_budget_prunes_on_folds_and_starts_from_the_configuration(
    small_universe: Universe, tmp_path: Path
) -> None:
    problem, _ = _problem(small_universe, 1600)
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    result = search_hyperparameters(problem, "lightgbm", CONFIGURED, _settings(trials=10), storage, "planted")
    assert result.count(COMPLETE) + result.count(PRUNED) == 10
    complete = [trial for trial in result.trials if trial.state == COMPLETE]
    folds = len(problem.folds())
    assert all(len(trial.fold_scores) == folds for trial in complete)
    assert all(0 < len(trial.fold_scores) <= folds for trial in result.trials)
    assert result.best_value == max(trial.value for trial in complete)
    assert result.best_value > 0.05, "the planted signal is found on the folds"
    assert result.best_params == {**CONFIGURED, **result.searched_params}
    assert set(result.searched_params) == set(SPACE)
    assert 4 <= result.searched_params["num_leaves"] <= 48 and isinstance(result.searched_params["num_leaves"], int)


def test_the_configured_values_are_the_first_trial_when_they_lie_in_the_space(
    small_universe: Universe, tmp_path: Path
) -> None:
    problem, _ = _problem(small_universe, 1600)
    configured = {**CONFIGURED, "min_data_in_leaf": 20}
    result = search_hyperparameters(
        problem, "lightgbm", configured, _settings(trials=3), f"sqlite:///{tmp_path / 's.db'}", "configured"
    )
    assert result.trials[0].params == {"learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 20}
    assert result.best_value >= result.trials[0].value


def test_a_searched_param_left_unconfigured_starts_from_the_familys_default(
    small_universe: Universe, tmp_path: Path
) -> None:
    """CONFIGURED leaves min_data_in_leaf to LightGBM's family default (50), which training then uses."""
    problem, _ = _problem(small_universe, 1600)
    result = search_hyperparameters(
        problem, "lightgbm", CONFIGURED, _settings(trials=3), f"sqlite:///{tmp_path / 's.db'}", "defaults"
    )
    assert result.trials[0].params == {"learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 50}


def test_the_held_out_period_never_reaches_the_search(small_universe: Universe, tmp_path: Path) -> None:
    """Two problems equal on the development period and different after it search alike."""
    problem, _ = _problem(small_universe, 1600)
    test_rows = held_out_split(problem.x.shape[0], problem.label_horizon, problem.split).test
    scrambled_x, scrambled_y = problem.x.copy(), problem.y.copy()
    rng = np.random.default_rng(0)
    scrambled_x[test_rows] = rng.normal(size=scrambled_x[test_rows].shape)
    scrambled_y[test_rows] = rng.integers(0, 2, size=test_rows.size)
    scrambled = WalkForwardProblem(
        scrambled_x, scrambled_y, FEATURES, problem.task, problem.label_horizon, problem.split, problem.seed
    )
    storage = f"sqlite:///{tmp_path / 's.db'}"
    first = search_hyperparameters(problem, "lightgbm", CONFIGURED, _settings(trials=6), storage, "original")
    second = search_hyperparameters(scrambled, "lightgbm", CONFIGURED, _settings(trials=6), storage, "scrambled")
    assert [trial.fold_scores for trial in first.trials] == [trial.fold_scores for trial in second.trials]
    assert first.searched_params == second.searched_params


def test_a_search_on_shuffled_labels_finds_no_skill_out_of_sample(small_universe: Universe, tmp_path: Path) -> None:
    problem, forward_return_1 = _problem(small_universe, 30_000, shuffle=True)
    result = search_hyperparameters(
        problem, "lightgbm", CONFIGURED, _settings(trials=8), f"sqlite:///{tmp_path / 's.db'}", "shuffled"
    )
    trained = train_and_evaluate(
        "lightgbm",
        result.best_params,
        problem.x,
        problem.y,
        forward_return_1,
        task="classification",
        spec_kind="direction",
        label_horizon=problem.label_horizon,
        split=problem.split,
        seed=problem.seed,
        bars_per_year=252,
    )
    held_out_auc = roc_auc(problem.y[trained.test_index], trained.test_predictions)
    print(f"held-out AUC on shuffled labels: {held_out_auc:.4f}")
    assert abs(held_out_auc - 0.5) <= 0.02, held_out_auc


def test_trials_of_one_study_run_in_several_worker_processes(small_universe: Universe, tmp_path: Path) -> None:
    problem, _ = _problem(small_universe, 1600)
    result = search_hyperparameters(
        problem, "lightgbm", CONFIGURED, _settings(trials=8, workers=2), f"sqlite:///{tmp_path / 's.db'}", "parallel"
    )
    assert result.count(COMPLETE) + result.count(PRUNED) >= 8
    assert len({trial.worker for trial in result.trials}) == 2
    assert all(trial.worker.rsplit(":", 1)[1] != str(os.getpid()) for trial in result.trials)


SEARCH_SCRIPT = textwrap.dedent(
    """
    import sys
    from intelligence_assets.config.universe import load_universe
    from intelligence_assets_tests.ml.test_hyperparameter_search import CONFIGURED, _problem, _settings
    from intelligence_assets.ml.hyperparameter_search import search_hyperparameters

    universe = load_universe(sys.argv[1])
    problem, _ = _problem(universe, 1600)
    search_hyperparameters(problem, "lightgbm", CONFIGURED, _settings(trials=int(sys.argv[3])), sys.argv[2], "killed")
    """
)


def _finished_trials(storage: str) -> int:
    import optuna

    study = optuna.load_study(study_name="killed", storage=storage)
    return len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)))


def _finished_trials_while_running(database: Path) -> int:
    """Read-only, while the worker writes: opening Optuna's storage creates its tables when they
    are missing, and doing that beside the worker creating them made the worker fail (a second
    `alembic_version` row)."""
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)) as connection:
        try:
            (count,) = connection.execute(
                "SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')"
            ).fetchone()
        except sqlite3.OperationalError:  # the worker has not created the tables yet
            return 0
    return count


def test_a_killed_search_resumes_with_the_trials_it_finished(
    small_universe_path: Path, small_universe: Universe, tmp_path: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    budget = 200
    worker = subprocess.Popen(
        [sys.executable, "-c", SEARCH_SCRIPT, str(small_universe_path), storage, str(budget)],
        cwd=Path(__file__).resolve().parents[2],
    )
    deadline = time.monotonic() + 120
    finished = 0
    while time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.5)
        if (tmp_path / "s.db").exists():
            finished = _finished_trials_while_running(tmp_path / "s.db")
            if finished >= 4:
                break
    assert worker.poll() is None, "the search ended before it could be killed"
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    kept = _finished_trials(storage)
    assert kept >= 4

    problem, _ = _problem(small_universe, 1600)
    resumed = search_hyperparameters(problem, "lightgbm", CONFIGURED, _settings(trials=kept + 3), storage, "killed")
    finished_now = [trial for trial in resumed.trials if trial.state in (COMPLETE, PRUNED)]
    assert len(finished_now) == kept + 3, "the resumed study ran only what the budget still allowed"
    assert len({trial.worker for trial in finished_now}) == 2, "trials from before the kill are kept"


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"learning_rate": {"low": 0.3, "high": 0.01}}, "below `high`"),
        ({"learning_rate": {"low": 0.0, "high": 0.3, "log": True}}, "log range needs `low` > 0"),
        ({"num_leaves": {"low": 4, "high": 48, "choices": [1, 2]}}, "not both"),
        ({"num_leaves": {"low": 4}}, "needs both"),
    ],
)
def test_a_bad_range_is_refused_naming_what_is_wrong(space: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SearchSettings.model_validate({"space": space})


def test_a_search_needs_a_budget() -> None:
    with pytest.raises(ValueError, match="needs a budget"):
        SearchSettings.model_validate({"space": SPACE, "trials": None})
