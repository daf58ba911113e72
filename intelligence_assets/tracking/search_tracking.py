"""A hyperparameter search in MLflow: one parent run per search, one child run per trial, in the
target's experiment beside its models, so a quant sees what was tried next to what was trained.

Same rules as `ModelTracker`: only client calls with explicit run ids, every request through
`tracker.call` (an outage is a TrackingError naming the step), idempotent by the search
artifact's fingerprint. The parent is finished last, so a FINISHED parent means its children and
artifacts are all there; any other parent with the fingerprint is what a crash left, and it is
deleted with its children before logging again.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from intelligence_assets.ml.hyperparameter_search import COMPLETE, FAILED, PRUNED, SearchResult
from intelligence_assets.tracking import names
from intelligence_assets.tracking.tracker import ModelTracker, TrackingError, flatten, sqlite_database

HISTORY_CHART = "optimization_history.png"
TRIALS_FILE = "trials.json"
SCORE_LABEL = "mean walk-forward fold score (AUC-0.5 or IC)"
# A trial's run ends as its trial did: pruned trials were stopped, not broken.
TRIAL_STATUS = {COMPLETE: "FINISHED", PRUNED: "KILLED", FAILED: "FAILED"}
PAGE_SIZE = 1000
# log_batch's limits: 100 params, 1000 entries in all (see ModelTracker._log_contents).
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 890


@dataclass(frozen=True)
class SearchRecord:
    """Everything one search logs."""

    family: str
    symbol: str
    target: str
    fingerprint: str  # the search artifact's: what finds the parent run again
    result: SearchResult
    settings: dict[str, Any]  # SearchSettings.model_dump(mode="json"): the parent's params, flattened
    provenance_tags: dict[str, str] = field(default_factory=dict)  # Dagster run, asset, partition, ...


@dataclass(frozen=True)
class TrackedSearch:
    """Where a search is tracked; plain values, so `dataclasses.asdict` stores it as JSON and
    `TrackedSearch(**stored)` reads it back."""

    experiment_id: str
    run_id: str  # the parent
    run_url: str
    child_run_ids: list[str]  # one per trial, by trial number


def track_search(
    tracker: ModelTracker, record: SearchRecord, log: Callable[[str], None] = lambda _: None
) -> TrackedSearch:
    """Log a search (idempotent by `record.fingerprint`): a finished parent is returned as it is."""
    experiment_id = tracker.experiment_id(record.target)
    parents = _parents(tracker, experiment_id, record)
    finished = next((run for run in parents if run.info.status == "FINISHED"), None)
    if finished is not None:
        run_id = finished.info.run_id
        tracked = TrackedSearch(
            experiment_id,
            run_id,
            tracker.run_url(experiment_id, run_id),
            [child.info.run_id for child in _children(tracker, experiment_id, run_id)],
        )
        log(f"MLflow run {run_id} already tracks search fingerprint {record.fingerprint}: {tracked.run_url}")
        return tracked
    for run in parents:
        log(f"removing incomplete MLflow search run {run.info.run_id} (status {run.info.status}) before logging again")
        _discard(tracker, experiment_id, run.info.run_id, run.info.status)

    result = record.result
    tags = {
        **record.provenance_tags,
        names.FINGERPRINT_TAG: record.fingerprint,
        names.RUN_KIND_TAG: names.SEARCH_RUN_KIND,
        names.SYMBOL_TAG: record.symbol,
        names.TARGET_TAG: record.target,
        names.FAMILY_TAG: record.family,
        "study_name": result.study_name,
    }
    # Duck-typed: it reads only `provenance_tags` and `fingerprint`, which a SearchRecord has.
    if back_links := tracker.dagster_back_links(record):
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

        tags[MLFLOW_RUN_NOTE] = back_links
    parent = tracker.call(
        "creating the search run",
        lambda: tracker.client.create_run(experiment_id, run_name=f"search/{record.family}/{record.symbol}", tags=tags),
    )
    run_id = parent.info.run_id
    try:
        _log_parent(tracker, run_id, parent.info.artifact_uri, record)
        child_ids = [_log_trial(tracker, experiment_id, run_id, record, trial) for trial in _by_number(result)]
        _sweep_ghosts(tracker, experiment_id, record, run_id, child_ids, log)
        # Last: a finished parent is a complete record (see the module docstring).
        tracker.call("finishing the search run", lambda: tracker.client.set_terminated(run_id, "FINISHED"))
    except Exception:
        # Leave nothing half-logged; if MLflow is down, the next attempt cleans up.
        with contextlib.suppress(TrackingError):
            _discard(tracker, experiment_id, run_id, "RUNNING")
        raise
    tracked = TrackedSearch(experiment_id, run_id, tracker.run_url(experiment_id, run_id), child_ids)
    log(
        f"{record.family} {record.symbol} {record.target}: search best {result.best_value:.4f} ({SCORE_LABEL}) "
        f"at trial {result.best_trial}; {result.count(COMPLETE)} complete, {result.count(PRUNED)} pruned, "
        f"{result.count(FAILED)} failed trials; MLflow run {tracked.run_url}"
    )
    return tracked


def optimization_history_png(result: SearchResult, title: str) -> bytes:
    """Each finished trial's score by trial number and the best so far: whether more trials would
    still have helped. A pruned trial sits at the last mean it reported, which is what the pruner
    judged it by."""
    # Agg without pyplot: no process-global figure state, safe beside other steps in one process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(8, 4.5), dpi=100, layout="tight")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    complete = [
        (trial.number, trial.value)
        for trial in _by_number(result)
        if trial.state == COMPLETE and trial.value is not None and math.isfinite(trial.value)
    ]
    pruned = [
        (trial.number, sum(trial.fold_scores) / len(trial.fold_scores))
        for trial in _by_number(result)
        if trial.state == PRUNED and trial.fold_scores
    ]
    axes.axhline(0.0, color="#999999", linewidth=0.8, label="no skill")
    if complete:
        numbers, values = zip(*complete, strict=True)
        axes.scatter(numbers, values, s=24, color="#3b6ea8", zorder=3, label="complete")
        best_so_far = [max(values[: index + 1]) for index in range(len(values))]
        last = max(number for number, _ in complete + pruned)
        axes.step([*numbers, last], [*best_so_far, best_so_far[-1]], where="post", color="#2a9d4a", label="best so far")
    if pruned:
        numbers, values = zip(*pruned, strict=True)
        axes.scatter(numbers, values, s=30, marker="x", color="#c0504d", zorder=3, label="pruned (last reported mean)")
    axes.scatter(
        [result.best_trial],
        [result.best_value],
        s=160,
        marker="*",
        color="#f2b705",
        edgecolors="black",
        zorder=4,
        label=f"best: trial {result.best_trial}",
    )
    failed = result.count(FAILED)
    axes.set_title(title + (f"\n({failed} failed trial{'s' if failed != 1 else ''} not shown)" if failed else ""))
    axes.set_xlabel("trial")
    axes.set_ylabel(SCORE_LABEL)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


# -- logging ------------------------------------------------------------------------------


def _by_number(result: SearchResult) -> list[Any]:
    return sorted(result.trials, key=lambda trial: trial.number)


def _log_parent(tracker: ModelTracker, run_id: str, artifact_uri: str, record: SearchRecord) -> None:
    from mlflow.entities import Metric
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    result = record.result
    timestamp = int(time.time() * 1000)
    params = flatten(record.settings) | flatten(result.best_params, "best.")
    values = {
        "best_value": result.best_value,
        "best_trial": result.best_trial,
        "trials_complete": result.count(COMPLETE),
        "trials_pruned": result.count(PRUNED),
        "trials_failed": result.count(FAILED),
    }
    metrics = [Metric(key, float(value), timestamp, 0) for key, value in values.items() if math.isfinite(value)]
    _log_batch(tracker, run_id, "logging the search's params and metrics", params, metrics)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        title = f"{record.family} {record.symbol} {record.target}: hyperparameter search"
        (folder / HISTORY_CHART).write_bytes(optimization_history_png(result, title))
        (folder / TRIALS_FILE).write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True, default=str))
        # Straight to the run's artifact location, as ModelTracker does: one request fewer.
        tracker.call(
            "uploading the search's artifacts",
            lambda: get_artifact_repository(artifact_uri, tracking_uri=tracker.tracking_uri).log_artifacts(scratch),
        )


def _log_trial(tracker: ModelTracker, experiment_id: str, parent_id: str, record: SearchRecord, trial: Any) -> str:
    """One trial as a child run: create, one log_batch, terminate."""
    from mlflow.entities import Metric
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    tags = {
        MLFLOW_PARENT_RUN_ID: parent_id,
        names.RUN_KIND_TAG: names.TRIAL_RUN_KIND,
        names.SYMBOL_TAG: record.symbol,
        names.TARGET_TAG: record.target,
        names.FAMILY_TAG: record.family,
        names.TRIAL_NUMBER_TAG: str(trial.number),
        names.TRIAL_STATE_TAG: trial.state,
    }
    run = tracker.call(
        f"creating the run of trial {trial.number}",
        lambda: tracker.client.create_run(experiment_id, run_name=f"trial {trial.number}", tags=tags),
    )
    run_id = run.info.run_id
    timestamp = int(time.time() * 1000)
    metrics = [
        Metric("fold_score", float(score), timestamp, step)
        for step, score in enumerate(trial.fold_scores)
        if math.isfinite(score)
    ]
    if trial.state == COMPLETE and trial.value is not None and math.isfinite(trial.value):
        metrics.append(Metric("mean_fold_score", float(trial.value), timestamp, 0))
    if trial.seconds is not None and math.isfinite(trial.seconds):
        metrics.append(Metric("seconds", float(trial.seconds), timestamp, 0))
    _log_batch(tracker, run_id, f"logging trial {trial.number}", flatten(trial.params), metrics)
    tracker.call(
        f"finishing the run of trial {trial.number}",
        lambda: tracker.client.set_terminated(run_id, TRIAL_STATUS.get(trial.state, "FAILED")),
    )
    return run_id


def _log_batch(tracker: ModelTracker, run_id: str, step: str, params: Mapping[str, str], metrics: list[Any]) -> None:
    """One request per run unless log_batch's limits need more."""
    from mlflow.entities import Param

    items = [Param(key, value) for key, value in sorted(params.items())]
    param_batches = [items[start : start + PARAMS_PER_BATCH] for start in range(0, len(items), PARAMS_PER_BATCH)]
    metric_batches = [metrics[start : start + METRICS_PER_BATCH] for start in range(0, len(metrics), METRICS_PER_BATCH)]
    for index in range(max(len(param_batches), len(metric_batches))):
        batch_params = param_batches[index] if index < len(param_batches) else []
        batch_metrics = metric_batches[index] if index < len(metric_batches) else []
        tracker.call(
            step,
            lambda p=batch_params, m=batch_metrics: tracker.client.log_batch(run_id, metrics=m, params=p),
        )


# -- finding and removing -----------------------------------------------------------------


def _quoted(value: str) -> str:
    # MLflow's filter grammar has no escape for quotes.
    if "'" in value:
        raise ValueError(f"{value!r} contains a single quote, which MLflow filter strings cannot express")
    return f"'{value}'"


def _search(tracker: ModelTracker, experiment_id: str, query: str, step: str) -> Iterator[Any]:
    token = None
    while True:
        page = tracker.call(
            step,
            lambda token=token: tracker.client.search_runs(
                [experiment_id], filter_string=query, max_results=PAGE_SIZE, page_token=token
            ),
        )
        yield from page
        token = getattr(page, "token", None)
        if not token:
            return


def _parents(tracker: ModelTracker, experiment_id: str, record: SearchRecord) -> list[Any]:
    query = (
        f"tags.{names.RUN_KIND_TAG} = {_quoted(names.SEARCH_RUN_KIND)} "
        f"and tags.{names.FINGERPRINT_TAG} = {_quoted(record.fingerprint)} "
        f"and tags.{names.FAMILY_TAG} = {_quoted(record.family)} and tags.{names.SYMBOL_TAG} = {_quoted(record.symbol)}"
    )
    return list(_search(tracker, experiment_id, query, "searching search runs by fingerprint"))


def _children(tracker: ModelTracker, experiment_id: str, parent_id: str) -> list[Any]:
    """The parent's trial runs, by trial number."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    query = f"tags.`{MLFLOW_PARENT_RUN_ID}` = {_quoted(parent_id)}"
    runs = _search(tracker, experiment_id, query, f"searching the trial runs of {parent_id}")

    def number(run: Any) -> tuple[int, str]:
        text = run.data.tags.get(names.TRIAL_NUMBER_TAG, "")
        return (int(text) if text.lstrip("-").isdigit() else -1, run.info.run_id)

    return sorted(runs, key=number)


def _delete(tracker: ModelTracker, run_id: str, status: str) -> None:
    # A run deleted while RUNNING reads as still being written to: killed first.
    if status in ("RUNNING", "SCHEDULED"):
        tracker.call(f"marking run {run_id} killed", lambda: tracker.client.set_terminated(run_id, "KILLED"))
    tracker.call(f"deleting run {run_id}", lambda: tracker.client.delete_run(run_id))


def _discard(tracker: ModelTracker, experiment_id: str, run_id: str, status: str) -> None:
    """An incomplete search: its trial runs, then the parent."""
    for child in _children(tracker, experiment_id, run_id):
        _delete(tracker, child.info.run_id, child.info.status)
    _delete(tracker, run_id, status)


def _sweep_ghosts(
    tracker: ModelTracker,
    experiment_id: str,
    record: SearchRecord,
    run_id: str,
    child_ids: list[str],
    log: Callable[[str], None],
) -> None:
    """Delete runs left by retried create_run requests (see tracker.py's docstring): other parents
    with this fingerprint, and trial runs of this parent that we did not create. Before the parent
    is finished, so a finished search has no duplicates beside it. The embedded store has no
    retried requests, so it is skipped there."""
    if sqlite_database(tracker.tracking_uri) is not None:
        return
    for run in _parents(tracker, experiment_id, record):
        if run.info.run_id != run_id:
            log(f"removing MLflow search run {run.info.run_id}: a duplicate of {run_id} left by a retried request")
            _discard(tracker, experiment_id, run.info.run_id, run.info.status)
    kept = set(child_ids)
    for child in _children(tracker, experiment_id, run_id):
        if child.info.run_id not in kept:
            log(f"removing MLflow trial run {child.info.run_id}: a duplicate left by a retried request")
            _delete(tracker, child.info.run_id, child.info.status)
