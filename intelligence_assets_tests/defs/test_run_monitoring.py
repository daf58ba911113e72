"""Run monitoring with the shipped dagster.yaml fails a run whose worker process died.

A real code server (`dagster api grpc`, in its own process group) runs a real run worker that
the instance's run launcher launched. The tests SIGKILL the code server with its worker (the
OOM killer, `kill -9`, a crash of `make ui`), then Dagster's own monitoring runs: one step of it
(`monitor_started_run`) from a second instance object, and the real `dagster-daemon` with a
2 s poll. A code server that stays alive notices its dead worker and fails the run itself, so
only a dead code server leaves the outcome to the launcher's check. With Dagster's
`DefaultRunLauncher` the killed run stays STARTED and these tests fail.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.events import EngineEventData
from dagster._core.launcher import WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import GrpcServerTarget
from dagster._daemon.monitoring.run_monitoring import monitor_started_run
from dagster._grpc.client import DagsterGrpcClient
from dagster._grpc.server import wait_for_grpc_server
from dagster_shared.utils import find_free_port

from intelligence_assets.config.universe import REPOSITORY_ROOT
from intelligence_assets_tests.conftest import fresh_home
from intelligence_assets_tests.support.daemon import running_daemon

DAGSTER = str(Path(sys.executable).parent / "dagster")
LOCATION = "run_monitoring_test"
DEADLINE_SECONDS = 90
# The test daemon's run monitoring poll (the shipped dagster.yaml polls every 30 s).
POLL_SECONDS = 2
logger = logging.getLogger(__name__)


@dg.op
def wait_to_be_killed() -> None:
    time.sleep(600)


@dg.job
def long_job() -> None:
    wait_to_be_killed()


# The code location the code server loads (this module: no project definitions to import).
defs = dg.Definitions(jobs=[long_job])


@contextmanager
def code_server(home: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    """`dagster api grpc` over this module on a free port, in its own process group (with the run
    workers it starts), killed on exit."""
    port = find_free_port()
    command = [
        DAGSTER,
        "api",
        "grpc",
        "-m",
        __name__,
        "-a",
        "defs",
        "--host",
        "localhost",
        "--port",
        str(port),
        "--location-name",
        LOCATION,
    ]
    with open(home / "code_server.log", "wb") as log:
        server = subprocess.Popen(
            command,
            cwd=REPOSITORY_ROOT,
            env={**os.environ, "DAGSTER_HOME": str(home)},
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_grpc_server(server, DagsterGrpcClient(port=port, host="localhost"), command, timeout=DEADLINE_SECONDS)
        yield server, port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


@contextmanager
def monitoring_daemon(home: Path) -> Iterator[Path]:
    """`dagster-daemon run` on `home` (over this module, through its own code server); yields
    its log; its process group is stopped on exit."""
    log_path = home / "daemon.log"
    environment = {**os.environ, "DAGSTER_HOME": str(home)}
    with running_daemon(home, environment, log_path, code_location=("-m", __name__, "-a", "defs")):
        yield log_path


def wait_for(what: str, condition, deadline: float):
    while (value := condition()) is None or value is False:
        assert time.monotonic() < deadline, f"no {what} within {DEADLINE_SECONDS} s"
        time.sleep(0.2)
    return value


def worker_pid_from_events(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid of "Started process for run (pid: N)." as Dagster's run worker wrote it."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        if entry.message.startswith("Started process for run (pid:"):
            return int(entry.dagster_event.engine_event_data.metadata["pid"].value)
    return None


def is_running(pid: int) -> bool:
    """Alive and not a zombie (a container's init may never reap the orphaned worker)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def children(pid: int) -> set[int]:
    listed = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return {int(child) for child in listed.split()}


def launch_long_run(
    instance: dg.DagsterInstance, workspace, server: subprocess.Popen, deadline: float
) -> tuple[dg.DagsterRun, int]:
    """`long_job` launched through the instance's run launcher, as the daemon's queue launches
    runs; once STARTED, with the pid of its run worker."""
    remote_job = workspace.get_code_location(LOCATION).get_repository("__repository__").get_full_job("long_job")
    run = instance.create_run_for_job(
        job_def=long_job,
        remote_job_origin=remote_job.get_remote_origin(),
        job_code_origin=remote_job.get_python_origin(),
    )
    instance.launch_run(run.run_id, workspace)
    pid = wait_for("run worker event", lambda: worker_pid_from_events(instance, run.run_id), deadline)
    wait_for("STARTED run", lambda: instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED, deadline)
    # The worker is its own process, a child of the code server.
    assert pid != server.pid and pid in children(server.pid) and is_running(pid)
    return run, pid


def failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    return "\n".join(entry.message for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE))


def monitor(home: Path, run_id: str, workspace) -> dg.DagsterRun:
    """One pass of the monitoring daemon over the run, from a fresh instance object (the daemon
    is another process: nothing may come from the launcher that launched it)."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        monitor_started_run(instance, workspace, instance.get_run_record_by_id(run_id), logger)
        return instance.get_run_by_id(run_id)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_live_worker_is_left_running_and_a_killed_one_fails_its_run_naming_its_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = fresh_home(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    deadline = time.monotonic() + DEADLINE_SECONDS
    with dg.DagsterInstance.from_config(str(home)) as instance, code_server(home) as (server, port):
        assert instance.run_monitoring_enabled and instance.run_monitoring_poll_interval_seconds == 30
        with WorkspaceProcessContext(
            instance, GrpcServerTarget(host="localhost", port=port, socket=None, location_name=LOCATION)
        ) as context:
            workspace = context.create_request_context()
            run, pid = launch_long_run(instance, workspace, server, deadline)

            # Alive: the launcher says RUNNING and the monitor leaves the run alone.
            health = instance.run_launcher.check_run_worker_health(instance.get_run_by_id(run.run_id))
            assert health.status == WorkerStatus.RUNNING and f"pid {pid}" in health.msg, health
            assert monitor(home, run.run_id, workspace).status == dg.DagsterRunStatus.STARTED

            # Killed with its code server: nothing reports the run's end; the monitor fails it.
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
            wait_for("dead worker", lambda: not is_running(pid), deadline)
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
            assert monitor(home, run.run_id, workspace).status == dg.DagsterRunStatus.FAILURE
            message = failure_message(instance, run.run_id)
            assert f"Run worker process (pid {pid})" in message and "is gone" in message, message


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_under_the_daemon_a_run_whose_worker_was_killed_is_failed_at_the_next_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = fresh_home(tmp_path)
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    config["run_monitoring"]["poll_interval_seconds"] = POLL_SECONDS  # the rest as shipped
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    # Storage first: two processes creating a fresh SQLite home at once stamp its schema twice.
    dg.DagsterInstance.from_config(str(home)).dispose()
    deadline = time.monotonic() + DEADLINE_SECONDS
    with (
        dg.DagsterInstance.from_config(str(home)) as instance,
        code_server(home) as (server, port),
        monitoring_daemon(home) as log,
    ):

        def daemon_log() -> str:
            return log.read_text(errors="replace")

        with WorkspaceProcessContext(
            instance, GrpcServerTarget(host="localhost", port=port, socket=None, location_name=LOCATION)
        ) as context:
            run, pid = launch_long_run(instance, context.create_request_context(), server, deadline)
            # The daemon checks the live run on two polls and leaves it running.
            wait_for(
                "two checks of the live run", lambda: daemon_log().count(f"Checking run {run.run_id}") >= 2, deadline
            )
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED, daemon_log()[-3000:]

            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
            wait_for("dead worker", lambda: not is_running(pid), deadline)
            killed = time.monotonic()
            wait_for("failed run", lambda: instance.get_run_by_id(run.run_id).is_finished, deadline)
            failed_after = time.monotonic() - killed
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE, daemon_log()[-3000:]
            # One poll, and a slow iteration on a loaded machine.
            assert failed_after < 5 * POLL_SECONDS + 5, f"failed {failed_after:.0f} s after the kill"
            message = failure_message(instance, run.run_id)
            assert f"Run worker process (pid {pid})" in message and "is gone" in message, message


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_run_executed_in_process_has_no_worker_to_check_and_is_left_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make demo` and `dagster job execute` execute runs in their own process, with no run
    worker event: Dagster's monitor would fail such a run on any answer but RUNNING."""
    home = fresh_home(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    dg.DagsterInstance.from_config(str(home)).dispose()
    deadline = time.monotonic() + DEADLINE_SECONDS
    with dg.DagsterInstance.from_config(str(home)) as instance:
        execute = subprocess.Popen(
            [DAGSTER, "job", "execute", "-m", __name__, "-a", "defs", "-j", "long_job"],
            cwd=REPOSITORY_ROOT,
            env={**os.environ, "DAGSTER_HOME": str(home)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            run = wait_for(
                "STARTED run",
                lambda: next(iter(instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))), None),
                deadline,
            )
            # Its executor's events carry pids too; none is a run worker's.
            wait_for(
                "step process",
                lambda: any(
                    entry.dagster_event.engine_event_data.metadata.get("pid")
                    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
                ),
                deadline,
            )
            assert worker_pid_from_events(instance, run.run_id) is None
            health = instance.run_launcher.check_run_worker_health(run)
            assert health.status == WorkerStatus.RUNNING and health.msg.startswith("Not checked"), health
            assert monitor(home, run.run_id, workspace=None).status == dg.DagsterRunStatus.STARTED
        finally:
            os.killpg(execute.pid, signal.SIGKILL)
            execute.wait(timeout=30)


def report_worker_started(
    instance: dg.DagsterInstance, run: dg.DagsterRun, pid: int, timestamp: float | None = None
) -> None:
    """The run worker's event as `instance.report_engine_event` writes it, at `timestamp`."""
    event = dg.DagsterEvent(
        event_type_value=dg.DagsterEventType.ENGINE_EVENT.value,
        job_name=run.job_name,
        message=f"Started process for run (pid: {pid}).",
        event_specific_data=EngineEventData.in_process(pid),
    )
    instance.report_dagster_event(event, run_id=run.run_id, timestamp=timestamp)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_pid_now_held_by_a_newer_process_is_a_dead_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a reboot, say, the worker's pid may belong to another process: one started after
    the worker's event is not the worker."""
    home = fresh_home(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.from_config(str(home)) as instance, subprocess.Popen(["sleep", "60"]) as newcomer:
        try:
            run = instance.create_run_for_job(job_def=long_job, status=dg.DagsterRunStatus.STARTED)
            report_worker_started(instance, run, newcomer.pid, timestamp=time.time() - 3600)
            assert worker_pid_from_events(instance, run.run_id) == newcomer.pid
            health = instance.run_launcher.check_run_worker_health(run)
            assert (
                health.status == WorkerStatus.FAILED
                and f"pid {newcomer.pid} now belongs to a process started" in health.msg
            ), health
            assert monitor(home, run.run_id, workspace=None).status == dg.DagsterRunStatus.FAILURE
        finally:
            newcomer.kill()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_on_another_host_is_not_judged_by_pids_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = fresh_home(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    dead = subprocess.Popen(["true"])
    dead.wait()  # reaped: its pid names no process
    with dg.DagsterInstance.from_config(str(home)) as instance:
        health = {}
        for host in ("user-code.example", "localhost"):
            tags = {GRPC_INFO_TAG: json.dumps({"host": host, "port": 4000})}
            run = instance.create_run_for_job(job_def=long_job, status=dg.DagsterRunStatus.STARTED, tags=tags)
            report_worker_started(instance, run, dead.pid)
            health[host] = instance.run_launcher.check_run_worker_health(instance.get_run_by_id(run.run_id))
    assert (
        health["user-code.example"].status == WorkerStatus.RUNNING
        and "user-code.example" in health["user-code.example"].msg
    ), health
    assert health["localhost"].status == WorkerStatus.FAILED and f"pid {dead.pid}" in health["localhost"].msg, health
