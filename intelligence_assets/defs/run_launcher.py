"""A run launcher whose run workers the daemon's run monitoring can check.

We wrote it because Dagster's `DefaultRunLauncher` does not check its workers: run monitoring
skipped its runs, and a run whose worker died with its code server (a live code server notices
its dead worker itself) stayed STARTED for ever.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import NamedTuple

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG

# The engine event the run worker writes before it executes anything, with metadata `pid`
# (`EngineEventData.in_process`): from the code server (dagster/_grpc/impl.py) and from
# `dagster api execute_run` / `resume_run` (dagster/_cli/api.py).
WORKER_STARTED_MESSAGES = ("Started process for run (pid:", "Started process for resuming job (pid:")
# A process with the worker's pid created later than this after the worker's event is another
# process (the pid was reused, e.g. after a reboot). /proc's start times are only as exact as
# the whole-second boot time they are counted from.
PID_REUSE_SLACK_SECONDS = 5.0
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", ""})


class WorkerProcess(NamedTuple):
    """The run worker as its own event recorded it."""

    pid: int
    started: float  # epoch seconds of the event


class ProcessCheckingRunLauncher(dg.DefaultRunLauncher):
    """Dagster's `DefaultRunLauncher` (each run in a subprocess of its code server), plus a
    check of the run worker that run monitoring calls, so that a run whose worker died is failed.

    Use it where the daemon and the code servers, and so the run workers, share one host: the
    embedded default under `make ui` (`dagster dev`), or the PostgreSQL instance on one machine.
    The shipped `dagster.yaml` and `deploy/postgres/dagster.yaml` select it. On Kubernetes the
    chart's `K8sRunLauncher` checks its own Jobs. Configuration (none) and launching are the
    default launcher's.

    The monitoring daemon calls `check_run_worker_health` for each STARTED run every
    `run_monitoring.poll_interval_seconds`. It reads the worker's pid from the run's
    "Started process for run (pid: N)." engine event, which the worker writes before it executes
    anything, and answers

    - `RUNNING` while that process exists (and is no zombie);
    - `FAILED`, naming the pid, once it is gone, or when the pid now belongs to a process
      started after the event (a reused pid, e.g. after a reboot). The daemon then marks the
      run failed; it is not resumed (`supports_resume_run` stays False, so
      `run_monitoring.max_resume_run_attempts` must be 0);
    - `RUNNING`, with a "Not checked" message, for a run with no such event (executed in
      process, by `make demo` or `dagster job execute`: there is no run worker) or whose code
      server is on another host, where the pid means nothing. Dagster's monitor fails a run on
      any other answer, `UNKNOWN` included.

    The worker's host is its code server's (the run's `.dagster/grpc_info` tag): `localhost`, a
    loopback address, this host's name and a Unix socket count as this host. A run without the
    tag is taken to be on this host. Processes are read from `/proc` (Linux); elsewhere
    `kill(pid, 0)` tells only whether the pid exists (no zombie or reused-pid check).
    """

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        host = _code_server_host(run)
        if host is not None:
            return CheckRunHealthResult(
                WorkerStatus.RUNNING, f"Not checked: the run worker runs on host {host!r}, not here."
            )
        worker = run_worker_process(self._instance, run.run_id)
        if worker is None:
            return CheckRunHealthResult(
                WorkerStatus.RUNNING, "Not checked: no run worker process recorded (executed in process)."
            )
        problem = _process_problem(worker)
        if problem is None:
            return CheckRunHealthResult(
                WorkerStatus.RUNNING,
                f"Run worker process (pid {worker.pid}) is running.",
                run_worker_id=str(worker.pid),
            )
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"Run worker process (pid {worker.pid}) on {socket.gethostname()} {problem}; it ended without "
            "reporting the run's end (killed, e.g. by the OOM killer, or crashed).",
            run_worker_id=str(worker.pid),
        )


def run_worker_process(instance: dg.DagsterInstance, run_id: str) -> WorkerProcess | None:
    """The latest run worker of `run_id`, as its "Started process ..." engine event names it."""
    worker = None
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        if not entry.message.startswith(WORKER_STARTED_MESSAGES) or entry.dagster_event is None:
            continue
        pid = entry.dagster_event.engine_event_data.metadata.get("pid")
        try:
            worker = WorkerProcess(int(pid.value), entry.timestamp)
        except (AttributeError, TypeError, ValueError):
            continue
    return worker


def _code_server_host(run: dg.DagsterRun) -> str | None:
    """The host of the code server that started the run's worker when it is not this one."""
    try:
        grpc_info = json.loads(run.tags.get(GRPC_INFO_TAG) or "{}")
    except ValueError:
        return None
    host = str(grpc_info.get("host") or "")
    if grpc_info.get("socket") or host.lower() in LOCAL_HOSTS or host == socket.gethostname():
        return None
    return host


def _process_problem(worker: WorkerProcess) -> str | None:
    """None while `worker` runs; otherwise what is wrong with it, for the failure message."""
    if not sys.platform.startswith("linux"):
        try:
            os.kill(worker.pid, 0)
        except ProcessLookupError:
            return "is gone"
        except PermissionError:  # exists, another user's
            pass
        return None
    try:
        with open(f"/proc/{worker.pid}/stat") as file:
            stat = file.read()
    except (FileNotFoundError, ProcessLookupError):
        return "is gone"
    # Fields after the parenthesised command (which may itself hold spaces): state is the first,
    # the start time in clock ticks after boot the 20th.
    fields = stat.rpartition(")")[2].split()
    if fields[0] in ("Z", "X"):
        return "is gone (a zombie, not yet reaped)"
    started = _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    if started > worker.started + PID_REUSE_SLACK_SECONDS:
        return (
            f"is gone: pid {worker.pid} now belongs to a process started {started - worker.started:.0f} s after the "
            "worker"
        )
    return None


def _boot_time() -> float:
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith("btime "):
                return float(line.split()[1])
    raise RuntimeError("/proc/stat has no btime line")
