"""The run queue puts production before exploration, under the real `dagster-daemon`: with a
hyperparameter search running and another one already queued, a production retrain submitted
after it starts first, and the queued search starts only once the retrain has finished.

Runs are submitted as `dagster job launch` does (QUEUED by the instance's QueuedRunCoordinator),
with the priority and purpose tags the jobs and the platform's own triggers give them; the
daemon's queue alone decides the order. With equal priorities it would start them first in,
first out, and this test would fail.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._cli.job import _create_run
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import ModuleTarget

from intelligence_assets.config.universe import REPOSITORY_ROOT, Universe, load_universe
from intelligence_assets.definitions import SEARCH_JOB, TRAINING_JOB, build_assets
from intelligence_assets.defs.assets.hyperparameter_search import search_key
from intelligence_assets.defs.assets.market_data import BARS, FEATURES
from intelligence_assets.defs.automation.sensors import TRIGGER_TAG, production_tags
from intelligence_assets.defs.partitions import register_symbols, symbol_target_partitions
from intelligence_assets_tests.conftest import fresh_home, home_environment, write_small_universe
from intelligence_assets_tests.support.daemon import running_daemon
from intelligence_assets_tests.support.pipeline import local_resources

pytestmark = pytest.mark.long_running

SYMBOL, TARGET = "SIGNAL", "y_up_1b"
CELL = dg.MultiPartitionKey({"symbol": SYMBOL, "target": TARGET})
# The search's wall-clock budget: it keeps run A in its slot well past the moment B and P are
# queued (a second after A starts), so both wait in the queue together.
SEARCH_SECONDS = 8
FAMILIES = {
    "linear": {
        "params": {},
        # `trials` far beyond what fits in the time: the `seconds` budget ends the search.
        "search": {"trials": 100_000, "seconds": SEARCH_SECONDS, "startup_trials": 3},
    }
}
DEADLINE_SECONDS = 360
# `dagster-daemon run -m intelligence_assets.definitions` names its code location after the module.
LOCATION = "intelligence_assets.definitions"
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def single_slot_home(directory: Path) -> Path:
    """The embedded default's DAGSTER_HOME with one run slot instead of two: with a single slot
    each run waits for the one before it, so the order the queue dequeues in is the order the
    runs start in (with two, the production run would take the free slot at once and prove
    nothing about priority). The exploratory tag limit and everything else stay as shipped."""
    home = fresh_home(directory)
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    config["run_coordinator"]["config"]["max_concurrent_runs"] = 1
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return home


def use_environment(monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]) -> None:
    """This process on the daemon's environment, for the code server the test's workspace starts
    (it inherits it): the same universe, home and artifact root."""
    for name in [name for name in os.environ if name.startswith("INTELLIGENCE_")]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        if os.environ.get(name) != value:
            monkeypatch.setenv(name, value)


def stop_automation(instance: dg.DagsterInstance, repository) -> None:
    """Sensors and schedules off, so that the runs this test submits are the only ones: `new_bars`
    and declarative automation would otherwise launch production runs of their own."""
    for sensor in repository.get_sensors():
        instance.stop_sensor(sensor.get_remote_origin_id(), sensor.selector_id, sensor)
    for schedule in repository.get_schedules():
        instance.stop_schedule(schedule.get_remote_origin_id(), schedule.selector_id, schedule)


def submit(
    instance: dg.DagsterInstance, workspace, universe: Universe, job_name: str, tags: dict[str, str]
) -> dg.DagsterRun:
    """A run of `job_name` for CELL, queued as `dagster job launch` queues one (the job's own tags,
    then `tags`); the daemon launches it when the queue lets it."""
    code_location = workspace.get_code_location(LOCATION)
    repository = code_location.get_repository("__repository__")
    partition_tags = symbol_target_partitions(universe).get_tags_for_partition_key(str(CELL))
    run = _create_run(
        instance=instance,
        code_location=code_location,
        remote_repo=repository,
        remote_job=repository.get_full_job(job_name),
        run_config={},
        tags={**partition_tags, **tags},
        op_selection=None,
        run_id=None,
    )
    return instance.submit_run(run.run_id, workspace)


def test_a_production_retrain_queued_behind_a_search_starts_before_the_next_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = single_slot_home(tmp_path)
    universe_path = write_small_universe(tmp_path / "universe", families=FAMILIES)
    universe = load_universe(universe_path)
    environment = home_environment(home, universe_path)
    use_environment(monkeypatch, environment)
    log_path = tmp_path / "daemon.log"
    started = time.monotonic()
    deadline = started + DEADLINE_SECONDS
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.run_coordinator.get_run_queue_config().max_concurrent_runs == 1

        def report(what: str) -> str:
            lines = [f"{what} (after {time.monotonic() - started:.0f}s); runs, oldest first:"]
            for record in reversed(instance.get_run_records()):
                run = record.dagster_run
                priority = run.tags.get("dagster/priority")
                created = record.create_timestamp.timestamp()
                lines.append(
                    f"  {run.run_id[:8]} {run.status.value:<9} {run.job_name} priority={priority}"
                    f" created={created:.1f} start={record.start_time} end={record.end_time}"
                )
                for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)[:2]:
                    error = entry.dagster_event.step_failure_data.error
                    lines.append(f"      {entry.step_key}: {(error.message if error else '?')[:400].strip()}")
            tail = log_path.read_text(errors="replace")[-4000:] if log_path.exists() else "(no log)"
            return "\n".join([*lines, "daemon log (tail):", tail])

        def wait_for(what: str, condition) -> None:
            while not condition():
                assert daemon.poll() is None, report(f"dagster-daemon exited with {daemon.returncode}")
                assert time.monotonic() < deadline, report(f"no {what} within {DEADLINE_SECONDS}s")
                time.sleep(0.5)

        def status(run: dg.DagsterRun) -> dg.DagsterRunStatus:
            return instance.get_run_by_id(run.run_id).status

        target = ModuleTarget(
            module_name="intelligence_assets.definitions",
            attribute=None,
            working_directory=str(REPOSITORY_ROOT),
            location_name=None,
        )
        with WorkspaceProcessContext(instance, target) as context:
            workspace = context.create_request_context()
            assert not workspace.has_code_location_error(LOCATION), workspace.get_code_location_error(LOCATION)
            stop_automation(instance, workspace.get_code_location(LOCATION).get_repository("__repository__"))

            # The search's inputs come from bars and features, materialized here into the same instance.
            register_symbols(instance, universe.symbols)
            market_data = dg.materialize(
                build_assets(universe),
                selection=dg.AssetSelection.assets(BARS, FEATURES),
                partition_key=SYMBOL,
                instance=instance,
                resources=local_resources(home / "artifacts", universe),
            )
            assert market_data.success

            with running_daemon(home, environment, log_path) as daemon:
                search_a = submit(instance, workspace, universe, SEARCH_JOB, {TRIGGER_TAG: "search_a"})
                assert search_a.status == dg.DagsterRunStatus.QUEUED
                wait_for("STARTED search A", lambda: status(search_a) in {dg.DagsterRunStatus.STARTED, *FINISHED})
                assert status(search_a) == dg.DagsterRunStatus.STARTED, report("search A ended at once")

                # Another search, then a production retrain of the cell, both queued behind A.
                search_b = submit(instance, workspace, universe, SEARCH_JOB, {TRIGGER_TAG: "search_b"})
                retrain = submit(instance, workspace, universe, TRAINING_JOB, production_tags(universe, "retrain"))
                queued_behind_a = status(search_a) == dg.DagsterRunStatus.STARTED
                assert queued_behind_a, report("search A finished before both runs were queued: nothing to order")

                runs = (search_a, search_b, retrain)
                wait_for("end of all three runs", lambda: all(status(run) in FINISHED for run in runs))
                assert all(status(run) == dg.DagsterRunStatus.SUCCESS for run in runs), report("a run failed")

        a, b, p = (instance.get_run_record_by_id(run.run_id) for run in runs)
        print(f"\n{report('done')}")
        # No sensor or schedule launched anything: the queue held these runs only.
        launched = {run.run_id for run in instance.get_runs()} - {market_data.run_id}
        assert launched == {run.run_id for run in runs}, report("runs this test did not submit")

        # The tags the queue orders and limits by: the search job's own, and production's.
        assert a.dagster_run.tags["dagster/priority"] == b.dagster_run.tags["dagster/priority"] == "-10"
        assert a.dagster_run.tags["intelligence/purpose"] == "exploratory"
        assert p.dagster_run.tags["dagster/priority"] == "10"
        assert p.dagster_run.tags["intelligence/purpose"] == "production"
        # B was queued before P, both while A held the only slot; then P ran, and only then B.
        assert a.start_time < b.create_timestamp.timestamp() < p.create_timestamp.timestamp() < a.end_time
        assert a.end_time <= p.start_time < p.end_time <= b.start_time, "the search queued first started first"
        # B searched the same cell as A with the same budget and inputs: A's result, a cache hit.
        [materialization] = [
            record.asset_materialization
            for record in instance.fetch_materializations(search_key("linear"), limit=10, ascending=True).records
            if record.run_id == b.dagster_run.run_id and "cache" in record.asset_materialization.metadata
        ]
        assert materialization.metadata["cache"].value == "hit"
