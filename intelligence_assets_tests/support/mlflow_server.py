"""A real MLflow tracking server for tests: `mlflow server` on loopback, SQLite backend store,
run artifacts proxied by the server into a bucket of the session's moto S3 server (as a
production MLflow server keeps them in MinIO).

    from intelligence_assets_tests.support.mlflow_server import mlflow_server  # noqa: F401
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from intelligence_assets_tests.support.services import (
    LOOPBACK,
    S3Endpoint,
    free_port,
    stop_process,
    unique_bucket_name,
    wait_until_serving,
)

SERVER_START_TIMEOUT_SECONDS = 90.0


@dataclass(frozen=True)
class MlflowServer:
    host: str
    port: int
    bucket: str
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _healthy(host: str, port: int) -> bool:
    connection = http.client.HTTPConnection(host, port, timeout=1.0)
    try:
        connection.request("GET", "/health")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def start_mlflow_server(directory: Path, s3: S3Endpoint, bucket: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    environment = {
        **os.environ,
        "MLFLOW_S3_ENDPOINT_URL": s3.url,
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{directory / 'mlflow.db'}",
        "--serve-artifacts",
        "--artifacts-destination",
        f"s3://{bucket}/mlflow",
    ]
    log_path = directory / "mlflow_server.log"
    with open(log_path, "ab") as log:
        # A process group of its own: `mlflow server` runs uvicorn as a child, and pausing the
        # server (pause_server) must pause both.
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environment, process_group=0
        )
    if wait_until_serving(process, lambda: _healthy(LOOPBACK, port), SERVER_START_TIMEOUT_SECONDS, poll_seconds=0.25):
        return process, port
    raise RuntimeError(
        f"mlflow server did not become healthy on {LOOPBACK}:{port} within {SERVER_START_TIMEOUT_SECONDS:.0f}s; log "
        f"tail:\n{log_path.read_text(errors='replace')[-3000:]}"
    )


def pause_server(process: subprocess.Popen) -> None:
    """SIGSTOP the server and its workers: connections are still accepted by the kernel and
    requests buffered, but nothing answers until resume_server."""
    os.killpg(process.pid, signal.SIGSTOP)


def resume_server(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGCONT)


@contextlib.contextmanager
def running_mlflow_server(directory: Path, s3_endpoint: S3Endpoint) -> Iterator[MlflowServer]:
    """A tracking server of its own, its artifacts in a new bucket of `s3_endpoint`."""
    bucket = unique_bucket_name("mlflow")
    s3_endpoint.client().make_bucket(bucket)
    process, port = start_mlflow_server(directory, s3_endpoint, bucket)
    try:
        yield MlflowServer(LOOPBACK, port, bucket, directory / "mlflow_server.log")
    finally:
        stop_process(process, grace_seconds=10.0)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: S3Endpoint) -> Iterator[MlflowServer]:
    """One MLflow server for the session; tests keep apart by using their own symbols/targets.
    A test that needs the whole registry to itself (the registry step reads every registered
    model) starts its own with `running_mlflow_server`."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow_server"), s3_endpoint) as server:
        yield server
