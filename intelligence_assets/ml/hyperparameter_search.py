"""Hyperparameter search for one model family on one symbol x target: an Optuna study (TPE
sampler, median pruner) scored on the walk-forward folds of the development period only.

The held-out test period never reaches the search: trials fit and score on `problem.folds()`,
which end before it (`ml/splits.py`). A trial reports its running mean fold score after each
fold, so the pruner stops a trial whose first folds already trail the median of earlier trials.

The study lives in a database (`storage`, a SQLAlchemy URL) under a name the caller derives from
everything that decides the result, so a search that was killed resumes with the trials it had
finished, and several processes can run trials of one study side by side (`workers`).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import socket
import time
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from intelligence_assets.ml.families import load_family
from intelligence_assets.ml.walk_forward import WalkForwardProblem

# The trial's fold scores, kept on the trial in the study (user attribute) for tracking and reports.
FOLD_SCORES_ATTRIBUTE = "fold_scores"
# Which process ran the trial (host:pid): trials of one study may run in several workers or pods.
WORKER_ATTRIBUTE = "worker"
# Trial states as the search result names them.
COMPLETE, PRUNED, FAILED = "complete", "pruned", "failed"
# A trial whose process died stops sending heartbeats; after the grace period another worker
# (or the resumed search) marks it failed, so it neither blocks nor counts towards the budget.
HEARTBEAT_SECONDS = 10
HEARTBEAT_GRACE_SECONDS = 30


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class ParameterRange(_Strict):
    """One parameter's search range: `low`/`high` (integers when both are integers), optionally
    `log` or `step`; or `choices`."""

    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    """Sample on a log scale (learning rates, regularisation strengths)."""
    step: int | float | None = Field(default=None, gt=0)
    """Sample on a grid from `low` with this spacing."""
    choices: list[Any] | None = Field(default=None, min_length=1)
    """Categorical: one of these values (numbers, strings, booleans or lists)."""
    integer: bool = Field(default=False, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _integer_when_bounds_are(cls, data: Any) -> Any:
        # YAML reads `low: 2` as an int and `low: 2.0` as a float: the bounds say the type.
        if isinstance(data, dict) and "integer" not in data:
            bounds = [data.get("low"), data.get("high"), data.get("step")]
            present = [bound for bound in bounds if bound is not None]
            integer = bool(present) and all(isinstance(b, int) and not isinstance(b, bool) for b in present)
            return {**data, "integer": integer}
        return data

    @model_validator(mode="after")
    def _one_kind(self) -> ParameterRange:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log or self.step is not None:
                raise ValueError("give either `choices` or `low`/`high` (with `log` or `step`), not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs both `low` and `high` (or `choices`)")
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise ValueError(f"`low` ({self.low}) must be finite and below `high` ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs `low` > 0, not {self.low}")
        if self.log and self.step is not None:
            raise ValueError("`log` and `step` cannot be combined (Optuna samples one or the other)")
        return self

    def values_to_check(self) -> list[Any]:
        """The values a configuration check tries: each choice, or both bounds."""
        if self.choices is not None:
            return list(self.choices)
        cast = int if self.integer else float
        return [cast(self.low), cast(self.high)]

    def suggest(self, trial: Any, name: str) -> Any:
        if self.choices is not None:
            # Optuna stores categorical values as given; lists are not hashable choices, so their
            # positions are sampled instead.
            if any(isinstance(choice, (list, dict)) for choice in self.choices):
                return self.choices[trial.suggest_categorical(name, list(range(len(self.choices))))]
            return trial.suggest_categorical(name, self.choices)
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)


class SearchSettings(_Strict):
    """`model_families.<name>.search` in universe.yaml: what to search and for how long."""

    space: dict[str, ParameterRange] | None = Field(default=None, min_length=1)
    """Parameter name -> range; the other params keep their configured values. Default: the
    family's own `search_space`."""
    trials: int | None = Field(default=20, ge=1)
    """Finished trials (complete or pruned) the study stops at, counting those of earlier, killed attempts."""
    seconds: float | None = Field(default=None, gt=0)
    """Wall-clock budget of one attempt; with `trials`, whichever comes first."""
    workers: int = Field(default=1, ge=1, le=64)
    """Processes running trials of the study side by side (sharing its storage)."""
    startup_trials: int = Field(default=5, ge=1)
    """Random trials before the TPE sampler models the space and before the pruner prunes."""

    def with_space_of(self, family: Any) -> SearchSettings:
        """These settings, with the family's own `search_space` where they give none."""
        if self.space is not None:
            return self
        if not family.search_space:
            raise ValueError(f"model family {family.name!r} has no default search space; give `space`")
        space = {name: ParameterRange.model_validate(values) for name, values in family.search_space.items()}
        return self.model_copy(update={"space": space})

    @property
    def ranges(self) -> dict[str, ParameterRange]:
        """The space, once resolved (`with_space_of`)."""
        if self.space is None:
            raise ValueError("the search space is not resolved: call with_space_of(family) first")
        return self.space

    @model_validator(mode="after")
    def _some_budget(self) -> SearchSettings:
        if self.trials is None and self.seconds is None:
            raise ValueError("a search needs a budget: `trials`, `seconds` or both")
        return self


@dataclass(frozen=True)
class TrialOutcome:
    """One trial as the study recorded it."""

    number: int
    state: str  # COMPLETE, PRUNED or FAILED
    params: dict[str, Any]  # the searched values only
    fold_scores: list[float]  # mean-0 skill per fold scored (AUC - 0.5, or IC), in fold order
    value: float | None  # mean fold score; None unless complete
    seconds: float | None
    worker: str = ""  # host:pid of the process that ran it


@dataclass(frozen=True)
class SearchResult:
    """What a study found: the best trial's params merged over the configured ones."""

    study_name: str
    best_params: dict[str, Any]  # configured params with the best trial's values
    searched_params: dict[str, Any]  # the best trial's values alone
    best_value: float
    best_trial: int
    trials: list[TrialOutcome] = field(default_factory=list)

    def count(self, state: str) -> int:
        return sum(1 for trial in self.trials if trial.state == state)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SearchResult:
        trials = [TrialOutcome(**trial) for trial in values.get("trials", [])]
        return cls(**{**values, "trials": trials})


class SearchFailedError(RuntimeError):
    """No trial of the study completed: every one failed or was pruned."""


def _objective(
    problem: WalkForwardProblem, family_name: str, params: Mapping[str, Any], space: Mapping[str, ParameterRange]
) -> Callable[[Any], float]:
    import optuna

    family = load_family(family_name)
    folds = [fold for fold in problem.folds() if problem.learnable(fold)]
    if not folds:
        raise ValueError("no walk-forward fold has both classes in its training rows: nothing to search on")

    def objective(trial: Any) -> float:
        searched = {name: parameter_range.suggest(trial, name) for name, parameter_range in space.items()}
        trial.set_user_attr("searched_params", searched)
        trial.set_user_attr(WORKER_ATTRIBUTE, f"{socket.gethostname()}:{os.getpid()}")
        scores: list[float] = []
        for step, fold in enumerate(folds):
            score = problem.test_score(problem.fit(family, {**params, **searched}, fold), fold)
            scores.append(float(score) if np.isfinite(score) else 0.0)
            trial.set_user_attr(FOLD_SCORES_ATTRIBUTE, scores)
            trial.report(float(np.mean(scores)), step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"mean score {np.mean(scores):.4f} after {step + 1} folds trails the median")
        return float(np.mean(scores))

    return objective


def _open_study(storage: str, study_name: str, settings: SearchSettings, seed: int) -> Any:
    import optuna

    connect_args = {"timeout": 60} if storage.startswith("sqlite") else {}
    with warnings.catch_warnings():
        # Heartbeats are marked experimental; they are what frees a killed worker's trial.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        database = optuna.storages.RDBStorage(
            storage,
            engine_kwargs={"connect_args": connect_args, "pool_pre_ping": True},
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=HEARTBEAT_GRACE_SECONDS,
        )
    return optuna.create_study(
        storage=database,
        study_name=study_name,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=settings.startup_trials),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=settings.startup_trials, n_warmup_steps=0),
        load_if_exists=True,
    )


def _finished(study: Any) -> int:
    import optuna

    return len(
        study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    )


# How long a worker waits for another to take the enqueued trial (`_run_trials`).
ENQUEUED_TRIAL_WAIT_SECONDS = 60.0


def _run_trials(
    problem: WalkForwardProblem,
    family_name: str,
    params: Mapping[str, Any],
    settings: SearchSettings,
    storage: str,
    study_name: str,
    seed: int,
    deadline: float | None,
    after_the_enqueued: bool = False,
) -> None:
    """One worker's share: trials until the study holds `settings.trials` finished ones or the deadline passes.
    `after_the_enqueued`: start once no trial waits in the queue (another worker takes it)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _open_study(storage, study_name, settings, seed)
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    callbacks = [optuna.study.MaxTrialsCallback(settings.trials, states=states)] if settings.trials else []
    if settings.trials and _finished(study) >= settings.trials:
        return
    # SQLite has no row locks: two workers could both take the one enqueued trial, and the
    # second to finish it fails ("Cannot tell a COMPLETE trial"). Bounded, should its taker die.
    waited_until = time.time() + ENQUEUED_TRIAL_WAIT_SECONDS
    while (
        after_the_enqueued
        and time.time() < waited_until
        and study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    ):
        time.sleep(0.1)
    timeout = None if deadline is None else max(0.0, deadline - time.time())
    study.optimize(
        _objective(problem, family_name, params, settings.ranges),
        timeout=timeout,
        callbacks=callbacks,
        catch=(ValueError, ArithmeticError),
    )


def search_hyperparameters(
    problem: WalkForwardProblem,
    family_name: str,
    params: Mapping[str, Any],
    settings: SearchSettings,
    storage: str,
    study_name: str,
    log: Callable[[str], None] = lambda _: None,
) -> SearchResult:
    """Search `settings.space` for `family_name` on `problem`'s walk-forward folds, the other
    params kept at `params`; resume the study `study_name` in `storage` if it exists.

    The configured values of the searched params are the first trial (when they fall inside
    the space), so the best trial is never worse on the folds than the configuration itself.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed = problem.seed
    study = _open_study(storage, study_name, settings, seed)
    finished = _finished(study)
    if not study.trials:
        configured = configured_values(family_name, params, settings.ranges)
        if configured:
            study.enqueue_trial(_as_suggested(configured, settings.ranges), skip_if_exists=True)
    done = settings.trials is not None and finished >= settings.trials
    log(
        f"study {study_name}: {finished} finished trials stored"
        + ("; budget reached" if done else f", resuming towards {settings.trials}" if finished else "")
        + (f"; {settings.workers} workers" if settings.workers > 1 and not done else "")
    )
    deadline = None if settings.seconds is None else time.time() + settings.seconds
    arguments = (problem, family_name, dict(params), settings, storage, study_name)
    if not done and settings.workers == 1:
        _run_trials(*arguments, seed, deadline)
    elif not done:
        # Fresh interpreters (not fork): the parent may hold threads and open database connections.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(settings.workers, mp_context=context) as pool:
            futures = [
                pool.submit(_run_trials, *arguments, seed + worker, deadline, worker > 0)
                for worker in range(settings.workers)
            ]
            for future in futures:
                future.result()
    # The study reads its trials from the storage, so it sees those of every worker.
    return _result(study_name, study, params)


def configured_values(
    family_name: str, params: Mapping[str, Any], space: Mapping[str, ParameterRange]
) -> dict[str, Any]:
    """The values training would use for the searched params (the configured ones over the
    family's defaults); {} when one has none or lies outside its range, so it cannot be a trial."""
    values = {**load_family(family_name).default_params, **params}
    trial: dict[str, Any] = {}
    for name, parameter_range in space.items():
        value = values.get(name)
        if parameter_range.choices is not None:
            inside = value in parameter_range.choices
        else:
            inside = (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and parameter_range.low <= value <= parameter_range.high
            )
        if not inside:
            return {}
        trial[name] = value
    return trial


def _as_suggested(values: Mapping[str, Any], space: Mapping[str, ParameterRange]) -> dict[str, Any]:
    """Values as Optuna stores them: a list-valued choice by its position (see `suggest`)."""
    suggested = {}
    for name, value in values.items():
        choices = space[name].choices
        listed = choices is not None and any(isinstance(choice, (list, dict)) for choice in choices)
        suggested[name] = choices.index(value) if listed else value
    return suggested


def _outcome(trial: Any) -> TrialOutcome:
    import optuna

    states = {
        optuna.trial.TrialState.COMPLETE: COMPLETE,
        optuna.trial.TrialState.PRUNED: PRUNED,
    }
    seconds = trial.duration.total_seconds() if trial.duration is not None else None
    return TrialOutcome(
        number=trial.number,
        state=states.get(trial.state, FAILED),
        params=dict(trial.user_attrs.get("searched_params", trial.params)),
        fold_scores=[float(score) for score in trial.user_attrs.get(FOLD_SCORES_ATTRIBUTE, [])],
        value=float(trial.value) if trial.state == optuna.trial.TrialState.COMPLETE else None,
        seconds=seconds,
        worker=str(trial.user_attrs.get(WORKER_ATTRIBUTE, "")),
    )


def _result(study_name: str, study: Any, params: Mapping[str, Any]) -> SearchResult:
    import optuna

    trials = [
        _outcome(trial) for trial in study.get_trials(deepcopy=False) if trial.state != optuna.trial.TrialState.RUNNING
    ]
    complete = [trial for trial in trials if trial.state == COMPLETE]
    if not complete:
        raise SearchFailedError(
            f"study {study_name}: none of its {len(trials)} trials completed "
            f"({sum(t.state == PRUNED for t in trials)} pruned, {sum(t.state == FAILED for t in trials)} failed)"
        )
    # The earliest of equal bests: a rerun of the same study picks the same trial.
    best = max(complete, key=lambda trial: (trial.value, -trial.number))
    return SearchResult(
        study_name=study_name,
        best_params={**params, **best.params},
        searched_params=dict(best.params),
        best_value=float(best.value),
        best_trial=best.number,
        trials=trials,
    )
