"""Real services for tests: an S3 server (moto) over HTTP, and a TCP proxy that can fail on demand.

Import the fixtures into a conftest (or a test module) to use them:

    from intelligence_assets_tests.support.services import s3_endpoint, s3_endpoint_with_auth  # noqa: F401

Nothing here patches S3 calls in-process: the code under test talks HTTP to a moto server
subprocess exactly as it talks to MinIO in production.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import os
import re
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from minio import Minio

from intelligence_assets.store.s3 import S3ArtifactStore

LOOPBACK = "127.0.0.1"
SERVER_START_TIMEOUT_SECONDS = 30.0
# Moto accepts any credentials unless authentication is enabled; these are just well-formed.
OPEN_ACCESS_KEY = "intelligence-test-access-key"
OPEN_SECRET_KEY = "intelligence-test-secret-key"
ALLOW_ALL_S3 = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on right now (another process could still take it before you do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def unique_bucket_name(prefix: str = "test") -> str:
    """A fresh, valid bucket name, so tests sharing one server never see each other's objects."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


@dataclass(frozen=True)
class S3Endpoint:
    """A running S3-compatible server and credentials it accepts."""

    host: str
    port: int
    access_key: str
    secret_key: str
    log_path: Path
    # Only on a server that enforces authentication: a valid identity with no S3 permission.
    unprivileged_access_key: str | None = None
    unprivileged_secret_key: str | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def client(self) -> Minio:
        """A plain minio client with the valid credentials, for inspecting the server in tests."""
        return Minio(self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False)

    def store(
        self, bucket: str | None = None, retry_seconds: float = 5.0, endpoint: str | None = None
    ) -> S3ArtifactStore:
        """An artifact store on this server (or on `endpoint`, e.g. a FaultProxy in front of it)."""
        return S3ArtifactStore(
            endpoint=endpoint or self.endpoint,
            bucket=bucket or unique_bucket_name(),
            access_key=self.access_key,
            secret_key=self.secret_key,
            retry_seconds=retry_seconds,
        )


# One request as the moto server's (werkzeug's) access log writes it, colours and all:
# 127.0.0.1 - - [06/Dec/2026 09:43:40] "\x1b[33mGET /bucket/key HTTP/1.1\x1b[0m" 404 -
_ACCESS_LOG_LINE = re.compile(r'"(?:\x1b\[[0-9;]*m)*([A-Z]+) (/\S*) HTTP/[0-9.]+(?:\x1b\[[0-9;]*m)*" (\d{3})')


@dataclass(frozen=True)
class S3Request:
    """One request the S3 server answered."""

    method: str
    path: str  # with its query string
    status: int

    @property
    def bucket(self) -> str:
        return self.path.split("?", 1)[0].split("/")[1]

    @property
    def kind(self) -> str:
        """GET, PUT, HEAD, DELETE, POST, or LIST: a GET of the bucket itself other than its
        location (minio asks a bucket's region once per client, a GET like any other)."""
        path, _, query = self.path.partition("?")
        on_bucket = "/" not in path.strip("/")
        if self.method == "GET" and on_bucket and "location" not in query.split("&")[0]:
            return "LIST"
        return self.method


class S3RequestLog:
    """The requests a moto server answered for one bucket, read from the server's access log:
    what the code under test really sent, not what it meant to send. The server writes a line
    before it answers, so a request whose answer came back is already counted.

        requests = S3RequestLog(endpoint.log_path, store.bucket)
        mark = requests.mark()
        ...
        requests.counts_since(mark)   # Counter({"GET": 3, "PUT": 2})
    """

    def __init__(self, log_path: Path, bucket: str) -> None:
        self.log_path = log_path
        self.bucket = bucket

    def mark(self) -> int:
        """A point in the log: the requests after it are those answered from now on."""
        return self.log_path.stat().st_size

    def since(self, mark: int, until: int | None = None) -> list[S3Request]:
        with self.log_path.open("rb") as log:
            log.seek(mark)
            text = log.read(None if until is None else until - mark).decode(errors="replace")
        requests = [S3Request(match[1], match[2], int(match[3])) for match in _ACCESS_LOG_LINE.finditer(text)]
        return [request for request in requests if request.path.startswith("/") and request.bucket == self.bucket]

    def counts_since(self, mark: int, until: int | None = None) -> Counter[str]:
        """Requests by kind (GET, PUT, HEAD, LIST, DELETE, POST) between two marks."""
        return Counter(request.kind for request in self.since(mark, until))


def moto_server_command(host: str, port: int) -> list[str]:
    executable = Path(sys.executable).parent / "moto_server"
    if executable.exists():
        return [str(executable), "-H", host, "-p", str(port)]
    return [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)]


def _answers_http(host: str, port: int) -> bool:
    connection = http.client.HTTPConnection(host, port, timeout=1.0)
    try:
        connection.request("GET", "/moto-api/")
        connection.getresponse().read()
        return True
    except OSError:
        return False
    finally:
        connection.close()


def stop_process(process: subprocess.Popen, grace_seconds: float = 5.0) -> None:
    """Terminate, then kill if it has not exited within the grace period."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace_seconds)


def wait_until_serving(
    process: subprocess.Popen, answers: Callable[[], bool], timeout_seconds: float, poll_seconds: float = 0.1
) -> bool:
    """True once `answers()` does; False (with the process stopped) if it exits or the time runs out."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline and process.poll() is None:
        if answers():
            return True
        time.sleep(poll_seconds)
    stop_process(process)
    return False


def start_moto_server(log_path: Path, host: str = LOOPBACK, attempts: int = 3) -> tuple[subprocess.Popen, int]:
    """Start `moto_server` on a free port, logging to `log_path`; returns once it answers HTTP."""
    last_log = ""
    for _ in range(attempts):
        port = free_port(host)
        environment = dict(os.environ)
        # Authentication stays off until a fixture turns it on over HTTP (see enable_authentication).
        environment.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                moto_server_command(host, port),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=environment,
            )
        if wait_until_serving(process, lambda port=port: _answers_http(host, port), SERVER_START_TIMEOUT_SECONDS):
            return process, port
        last_log = log_path.read_text(errors="replace")[-2000:]
        if "Address already in use" not in last_log:
            break  # not the port race between free_port() and the server binding it: do not retry
    raise RuntimeError(
        f"moto_server did not answer on {host} within {SERVER_START_TIMEOUT_SECONDS:.0f}s; log tail:\n{last_log}"
    )


def enable_authentication(host: str, port: int) -> None:
    """From now on the moto server checks every request's signature and IAM permissions.

    moto counts unauthenticated actions against INITIAL_NO_AUTH_ACTION_COUNT (default: infinite);
    its /moto-api/reset-auth endpoint sets that threshold and resets the count, so "0" means
    "authenticate everything from here on".
    """
    connection = http.client.HTTPConnection(host, port, timeout=10.0)
    try:
        # An explicit non-form content type, or the server parses the body as a form and sees nothing.
        connection.request("POST", "/moto-api/reset-auth", body=b"0", headers={"Content-Type": "text/plain"})
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"could not enable moto authentication: HTTP {response.status} {body[:200]!r}")


def create_iam_access_key(url: str, user_name: str, policy: dict | None) -> tuple[str, str]:
    """An IAM user with an access key, created through the server's own IAM API (test setup only)."""
    import boto3  # installed with moto; only setup goes through it, the code under test uses minio

    iam = boto3.client(
        "iam",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=OPEN_ACCESS_KEY,
        aws_secret_access_key=OPEN_SECRET_KEY,
    )
    iam.create_user(UserName=user_name)
    if policy is not None:
        iam.put_user_policy(UserName=user_name, PolicyName=f"{user_name}-policy", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user_name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """A moto S3 server on loopback for the whole session; any credentials are accepted."""
    log_path = tmp_path_factory.mktemp("moto_server") / "moto_server.log"
    process, port = start_moto_server(log_path)
    try:
        yield S3Endpoint(LOOPBACK, port, OPEN_ACCESS_KEY, OPEN_SECRET_KEY, log_path)
    finally:
        stop_process(process)


@pytest.fixture(scope="session")
def s3_endpoint_with_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """A second moto server that enforces signatures and IAM policies.

    `access_key`/`secret_key` belong to an IAM user allowed s3:*; the `unprivileged_*` pair to a
    user with no policy at all (authenticates, then gets AccessDenied). Kept apart from
    `s3_endpoint` because authentication is a server-wide switch.
    """
    log_path = tmp_path_factory.mktemp("moto_server_with_auth") / "moto_server.log"
    process, port = start_moto_server(log_path)
    try:
        url = f"http://{LOOPBACK}:{port}"
        access_key, secret_key = create_iam_access_key(url, "artifact-writer", ALLOW_ALL_S3)
        unprivileged_access_key, unprivileged_secret_key = create_iam_access_key(url, "no-permissions", None)
        enable_authentication(LOOPBACK, port)
        yield S3Endpoint(
            LOOPBACK,
            port,
            access_key,
            secret_key,
            log_path,
            unprivileged_access_key=unprivileged_access_key,
            unprivileged_secret_key=unprivileged_secret_key,
        )
    finally:
        stop_process(process)


@pytest.fixture
def s3_fault_proxy(s3_endpoint: S3Endpoint) -> Iterator[FaultProxy]:
    """A FaultProxy in front of the session's moto server, listening, closed after the test."""
    with FaultProxy(s3_endpoint.host, s3_endpoint.port) as proxy:
        yield proxy


@pytest.fixture
def s3_artifact_store(s3_endpoint: S3Endpoint) -> S3ArtifactStore:
    """An S3ArtifactStore on its own fresh bucket of the session's moto server."""
    return s3_endpoint.store(unique_bucket_name("artifacts"))


class FaultProxy:
    """A TCP proxy on loopback whose endpoint can go down and come back, like a restarting server.

    While stopped nothing listens on the port (new connections are refused) and every
    established connection has been dropped; the server behind it keeps its state. Set
    `upstream_bytes_per_second` to slow uploads down, so that a test can cut one mid-transfer.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        host: str = LOOPBACK,
        port: int = 0,
        upstream_bytes_per_second: float | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = port
        self.upstream_bytes_per_second = upstream_bytes_per_second
        self.connections_accepted = 0
        self.bytes_to_target = 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._stop_accepting = threading.Event()
        self._connections: dict[int, _Relay] = {}

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def listening(self) -> bool:
        return self._listener is not None

    def start_listening(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]  # the same port again on every restart
        self._listener = listener
        self._stop_accepting.clear()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, args=(listener,), name="fault-proxy-accept", daemon=True
        )
        self._accept_thread.start()

    def stop_listening(self) -> None:
        """Refuse new connections and drop established ones; returns once both are true."""
        if self._listener is not None:
            self._stop_accepting.set()
            assert self._accept_thread is not None
            self._accept_thread.join(timeout=5)
            self._listener.close()
            self._listener = None
        self.drop_connections()

    def drop_connections(self) -> None:
        with self._lock:
            relays = list(self._connections.values())
        for relay in relays:
            relay.abort()
        for relay in relays:
            relay.thread.join(timeout=5)

    def close(self) -> None:
        self.stop_listening()

    def __enter__(self) -> FaultProxy:
        self.start_listening()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _accept_loop(self, listener: socket.socket) -> None:
        # Poll instead of blocking in accept(): closing a socket does not reliably wake a
        # thread blocked on it.
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            while not self._stop_accepting.is_set():
                if not selector.select(timeout=0.05):
                    continue
                try:
                    client, _ = listener.accept()
                except OSError:
                    continue
                if self._stop_accepting.is_set():
                    _abort_socket(client)
                    break
                self._open_relay(client)

    def _open_relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _abort_socket(client)
            return
        with self._lock:
            self.connections_accepted += 1
        relay = _Relay(self, client, upstream)
        with self._lock:
            self._connections[id(relay)] = relay
        relay.thread.start()

    def _count_upstream(self, size: int) -> None:
        with self._lock:
            self.bytes_to_target += size

    def _forget(self, relay: _Relay) -> None:
        with self._lock:
            self._connections.pop(id(relay), None)


class _Relay:
    """Both directions of one proxied connection, pumped by one thread."""

    CHUNK = 64 * 1024

    def __init__(self, proxy: FaultProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.aborted = threading.Event()
        for sock in (client, upstream):
            sock.settimeout(10)
        self.thread = threading.Thread(target=self._pump, name="fault-proxy-relay", daemon=True)

    def abort(self) -> None:
        self.aborted.set()
        # shutdown() wakes this relay's thread if it is blocked sending; the thread closes.
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _pump(self) -> None:
        rate = self.proxy.upstream_bytes_per_second
        # Small chunks when throttled, so that the transfer advances smoothly and stops promptly.
        upstream_chunk = max(1024, int(rate / 20)) if rate else self.CHUNK
        open_directions = 2
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self.client, selectors.EVENT_READ, self.upstream)
                selector.register(self.upstream, selectors.EVENT_READ, self.client)
                while open_directions and not self.aborted.is_set():
                    for selected, _ in selector.select(timeout=0.05):
                        source: socket.socket = selected.fileobj  # type: ignore[assignment]
                        destination: socket.socket = selected.data
                        towards_target = source is self.client
                        data = source.recv(upstream_chunk if towards_target else self.CHUNK)
                        if not data:
                            selector.unregister(source)
                            destination.shutdown(socket.SHUT_WR)
                            open_directions -= 1
                            continue
                        if towards_target and rate:
                            time.sleep(len(data) / rate)
                            if self.aborted.is_set():
                                return
                        destination.sendall(data)
                        if towards_target:
                            self.proxy._count_upstream(len(data))
        except OSError:
            pass
        finally:
            _abort_socket(self.client)
            self.upstream.close()
            self.proxy._forget(self)


def _abort_socket(sock: socket.socket) -> None:
    """Close with a TCP reset, as a crashing server would, rather than an orderly FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class FixedResponseHTTPServer:
    """An HTTP server on loopback that answers every request with the same status and body.

    Stands in for a sick endpoint: an S3 server returning 503 SlowDown, or a reverse proxy's
    502 page while the object store behind it restarts. Counts the requests it answered.
    """

    def __init__(self, status: int, body: bytes = b"", content_type: str = "application/xml") -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                outer.requests += 1
                self.send_response(outer.status)
                self.send_header("Content-Type", outer.content_type)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(outer.body)

            do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _answer

            def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
                pass

        self._server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def __enter__(self) -> FixedResponseHTTPServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
