"""A hyperparameter search tracked in a real embedded MLflow store: a parent run with one child run
per trial, found again by fingerprint, and what a crash or an outage leaves behind cleaned up."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from matplotlib.image import imread

from intelligence_assets.config.universe import REPOSITORY_ROOT
from intelligence_assets.ml.hyperparameter_search import (
    COMPLETE,
    FAILED,
    PRUNED,
    SearchResult,
    SearchSettings,
    TrialOutcome,
)
from intelligence_assets.tracking import names, search_tracking
from intelligence_assets.tracking.search_tracking import (
    SearchRecord,
    TrackedSearch,
    optimization_history_png,
    track_search,
)
from intelligence_assets.tracking.tracker import ModelTracker, TrackingError

FAMILY = "lightgbm"
TARGET = "y_up_5b"
PARENT_TAG = "mlflow.parentRunId"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def quiet_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> ModelTracker:
    """One embedded store for the module; tests keep apart by symbol."""
    home: Path = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        return ModelTracker(f"sqlite:///{home / 'mlflow.db'}", experiment_root=home)


def search_result() -> SearchResult:
    """Trials in every state; trial 2 is the best."""
    trials = [
        TrialOutcome(0, COMPLETE, {"learning_rate": 0.05, "num_leaves": 31}, [0.02, 0.03, 0.04], 0.03, 1.5),
        TrialOutcome(1, PRUNED, {"learning_rate": 0.25, "num_leaves": 8}, [-0.01, -0.02], None, 0.5),
        TrialOutcome(2, COMPLETE, {"learning_rate": 0.01, "num_leaves": 63}, [0.05, 0.06, 0.07], 0.06, 2.0),
        TrialOutcome(3, FAILED, {"learning_rate": 0.1, "num_leaves": 16}, [0.01], None, 0.1),
    ]
    return SearchResult(
        study_name="search-lightgbm-study",
        best_params={"learning_rate": 0.01, "num_leaves": 63, "min_data_in_leaf": 20},
        searched_params={"learning_rate": 0.01, "num_leaves": 63},
        best_value=0.06,
        best_trial=2,
        trials=trials,
    )


def search_record(symbol: str, fingerprint: str) -> SearchRecord:
    settings = SearchSettings(
        space={"learning_rate": {"low": 0.005, "high": 0.3, "log": True}, "num_leaves": {"low": 8, "high": 64}},
        trials=4,
    )
    return SearchRecord(
        family=FAMILY,
        symbol=symbol,
        target=TARGET,
        fingerprint=fingerprint,
        result=search_result(),
        settings=settings.model_dump(mode="json"),
        provenance_tags={
            names.DAGSTER_RUN_TAG: "0123456789abcdef",
            names.DAGSTER_ASSET_TAG: f"searches/{FAMILY}",
            names.DAGSTER_PARTITION_TAG: f"{symbol}|{TARGET}",
        },
    )


def active_runs(tracker: ModelTracker, symbol: str) -> list[Any]:
    experiment_id = tracker.experiment_id(TARGET)
    return tracker.client.search_runs([experiment_id], filter_string=f"tags.{names.SYMBOL_TAG} = '{symbol}'")


def children_of(tracker: ModelTracker, run_id: str) -> list[Any]:
    experiment_id = tracker.experiment_id(TARGET)
    return tracker.client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{run_id}'")


def test_a_search_is_a_finished_parent_run_with_one_child_run_per_trial(tracker: ModelTracker, tmp_path: Path) -> None:
    record = search_record("PARENT", "fp-parent")
    lines: list[str] = []
    tracked = track_search(tracker, record, log=lines.append)
    client = tracker.client

    parent = client.get_run(tracked.run_id)
    assert parent.info.experiment_id == tracked.experiment_id == tracker.experiment_id(TARGET)
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == f"search/{FAMILY}/PARENT"
    tags = parent.data.tags
    assert tags[names.FINGERPRINT_TAG] == "fp-parent"
    assert tags[names.RUN_KIND_TAG] == names.SEARCH_RUN_KIND
    assert (tags[names.FAMILY_TAG], tags[names.SYMBOL_TAG], tags[names.TARGET_TAG]) == (FAMILY, "PARENT", TARGET)
    assert tags[names.DAGSTER_RUN_TAG] == "0123456789abcdef"
    assert tags[names.DAGSTER_PARTITION_TAG] == f"PARENT|{TARGET}"
    assert PARENT_TAG not in tags

    params = parent.data.params
    assert params["best.learning_rate"] == "0.01"
    assert params["best.num_leaves"] == "63"
    assert params["best.min_data_in_leaf"] == "20"
    assert params["space.learning_rate.log"] == "true"
    assert float(params["space.num_leaves.high"]) == 64
    assert (params["trials"], params["workers"], params["seconds"]) == ("4", "1", "null")
    assert parent.data.metrics == pytest.approx(
        {"best_value": 0.06, "best_trial": 2, "trials_complete": 2, "trials_pruned": 1, "trials_failed": 1}
    )

    assert len(tracked.child_run_ids) == 4
    assert {run.info.run_id for run in children_of(tracker, tracked.run_id)} == set(tracked.child_run_ids)
    expected_status = {COMPLETE: "FINISHED", PRUNED: "KILLED", FAILED: "FAILED"}
    for trial, child_id in zip(record.result.trials, tracked.child_run_ids, strict=True):
        child = client.get_run(child_id)
        assert child.info.run_name == f"trial {trial.number}"
        assert child.data.tags[PARENT_TAG] == tracked.run_id
        assert child.data.tags[names.TRIAL_STATE_TAG] == trial.state
        assert child.info.status == expected_status[trial.state]
        assert child.data.params == {name: json.dumps(value) for name, value in trial.params.items()}
        history = sorted((metric.step, metric.value) for metric in client.get_metric_history(child_id, "fold_score"))
        assert [step for step, _ in history] == list(range(len(trial.fold_scores)))
        assert [value for _, value in history] == pytest.approx(trial.fold_scores)
        if trial.state == COMPLETE:
            assert child.data.metrics["mean_fold_score"] == pytest.approx(trial.value)
        else:
            assert "mean_fold_score" not in child.data.metrics

    assert {artifact.path for artifact in client.list_artifacts(tracked.run_id)} == {
        "optimization_history.png",
        "trials.json",
    }
    trials_path = client.download_artifacts(tracked.run_id, "trials.json", str(tmp_path))
    assert SearchResult.from_dict(json.loads(Path(trials_path).read_text())) == record.result
    chart_path = client.download_artifacts(tracked.run_id, "optimization_history.png", str(tmp_path))
    assert Path(chart_path).read_bytes().startswith(PNG_MAGIC)

    assert len(lines) == 1
    for part in (FAMILY, "PARENT", TARGET, "0.0600", "2 complete, 1 pruned, 1 failed", tracked.run_url):
        assert part in lines[0]
    stored = json.loads(json.dumps(dataclasses.asdict(tracked)))
    assert TrackedSearch(**stored) == tracked


def test_tracking_a_search_again_returns_its_runs_and_logs_nothing(tracker: ModelTracker) -> None:
    record = search_record("AGAIN", "fp-again")
    first = track_search(tracker, record)
    runs_before = {run.info.run_id for run in active_runs(tracker, "AGAIN")}
    lines: list[str] = []
    second = track_search(tracker, record, log=lines.append)

    assert second == first
    assert {run.info.run_id for run in active_runs(tracker, "AGAIN")} == runs_before
    assert len(runs_before) == 5  # the parent and four trials
    assert len(tracker.client.get_metric_history(first.run_id, "best_value")) == 1
    assert len(lines) == 1 and "already tracks" in lines[0]


def test_a_parent_left_running_is_replaced_with_its_children(tracker: ModelTracker) -> None:
    record = search_record("STALE", "fp-stale")
    experiment_id = tracker.experiment_id(TARGET)
    stale_tags = {
        names.FINGERPRINT_TAG: "fp-stale",
        names.RUN_KIND_TAG: names.SEARCH_RUN_KIND,
        names.FAMILY_TAG: FAMILY,
        names.SYMBOL_TAG: "STALE",
        names.TARGET_TAG: TARGET,
    }
    stale = tracker.client.create_run(experiment_id, run_name="search/lightgbm/STALE", tags=stale_tags).info.run_id
    stale_child = tracker.client.create_run(
        experiment_id, run_name="trial 0", tags={PARENT_TAG: stale, names.SYMBOL_TAG: "STALE"}
    ).info.run_id
    lines: list[str] = []
    tracked = track_search(tracker, record, log=lines.append)

    assert tracked.run_id != stale
    for run_id in (stale, stale_child):
        run = tracker.client.get_run(run_id)
        assert (run.info.lifecycle_stage, run.info.status) == ("deleted", "KILLED")
    assert {run.info.run_id for run in active_runs(tracker, "STALE")} == {tracked.run_id, *tracked.child_run_ids}
    assert any("removing incomplete" in line and stale in line for line in lines)


class Crash(BaseException):
    """A killed process: nothing runs after it, no cleanup included."""


def test_a_search_whose_tracking_crashed_midway_is_logged_again_in_full(
    tracker: ModelTracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = search_record("CRASH", "fp-crash")
    create_run = tracker.client.create_run

    def crash_at_trial_2(experiment_id: str, run_name: str | None = None, **kwargs: Any) -> Any:
        if run_name == "trial 2":
            raise Crash
        return create_run(experiment_id, run_name=run_name, **kwargs)

    with monkeypatch.context() as patch, pytest.raises(Crash):
        patch.setattr(tracker.client, "create_run", crash_at_trial_2)
        track_search(tracker, record)
    left = active_runs(tracker, "CRASH")
    assert sorted(run.info.run_name for run in left) == ["search/lightgbm/CRASH", "trial 0", "trial 1"]

    tracked = track_search(tracker, record)
    assert {run.info.run_id for run in active_runs(tracker, "CRASH")} == {tracked.run_id, *tracked.child_run_ids}
    assert tracker.client.get_run(tracked.run_id).info.status == "FINISHED"
    assert len(tracked.child_run_ids) == 4


def test_an_outage_names_its_step_and_leaves_no_half_logged_search(
    tracker: ModelTracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = search_record("OUTAGE", "fp-outage")
    log_batch = tracker.client.log_batch
    calls = []

    def fail_on_third_trial(run_id: str, **kwargs: Any) -> Any:
        calls.append(run_id)
        if len(calls) == 4:  # the parent's batch, then trials 0, 1 and 2
            raise ConnectionError("connection refused")
        return log_batch(run_id, **kwargs)

    with monkeypatch.context() as patch, pytest.raises(TrackingError, match="logging trial 2.*connection refused"):
        patch.setattr(tracker.client, "log_batch", fail_on_third_trial)
        track_search(tracker, record)
    assert active_runs(tracker, "OUTAGE") == []

    tracked = track_search(tracker, record)
    assert len(active_runs(tracker, "OUTAGE")) == 5 == 1 + len(tracked.child_run_ids)


def test_runs_left_by_retried_requests_are_swept_before_the_parent_finishes(
    tracker: ModelTracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a tracking server a timed-out create_run may land twice: the second copy is a ghost."""
    record = search_record("GHOST", "fp-ghost")
    create_run = tracker.client.create_run

    def land_twice(experiment_id: str, run_name: str | None = None, **kwargs: Any) -> Any:
        if run_name in (f"search/{FAMILY}/GHOST", "trial 1"):
            create_run(experiment_id, run_name=run_name, **kwargs)  # the ghost, its answer lost
        return create_run(experiment_id, run_name=run_name, **kwargs)

    monkeypatch.setattr(search_tracking, "sqlite_database", lambda _uri: None)  # as for an http:// tracker
    monkeypatch.setattr(tracker.client, "create_run", land_twice)
    lines: list[str] = []
    tracked = track_search(tracker, record, log=lines.append)

    assert {run.info.run_id for run in active_runs(tracker, "GHOST")} == {tracked.run_id, *tracked.child_run_ids}
    assert len(tracked.child_run_ids) == 4
    assert sum("duplicate" in line for line in lines) == 2


def test_the_optimization_history_is_a_png_chart() -> None:
    result = search_result()
    image = imread(io.BytesIO(optimization_history_png(result, "lightgbm SP500 y_up_5b")), format="png")
    assert image.shape[0] > 200 and image.shape[1] > 400

    only_complete = dataclasses.replace(result, trials=[t for t in result.trials if t.state == COMPLETE])
    assert optimization_history_png(only_complete, "title").startswith(PNG_MAGIC)


def test_search_tracking_imports_no_dagster() -> None:
    check = (
        "import sys, intelligence_assets.tracking.search_tracking; "
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'dagster'); "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", check], cwd=REPOSITORY_ROOT, check=True, timeout=120)
