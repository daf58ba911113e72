"""The artifact store on an S3-compatible object store (MinIO in production).

Same keys and bytes as `LocalArtifactStore`: a key is the object name inside one bucket.
Every call goes through one retry (tenacity's): transient failures (endpoint down, connection
reset, timeouts, 5xx) are retried with exponential backoff and jitter until a time budget
is spent, so that a MinIO restart in the middle of a run costs a pause, not a failed run.
Credential and permission errors are never retried: waiting cannot fix them.

Requests are what an S3 round trip costs, so each operation sends as few as it can: a read is
one GET (never a HEAD first), a write one PUT (the bucket is created only when a PUT finds it
missing), the objects of one artifact move in parallel (`get_many`, `put_many`), and immutable
objects can be served from a local `ReadCache` (`store/read_cache.py`, used by `artifacts.py`).
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from typing import TypeVar

import certifi
import tenacity
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import MAX_PART_SIZE, MIN_PART_SIZE, check_bucket_name

from intelligence_assets.store.artifact_store import (
    ArtifactNotFoundError,
    ArtifactStore,
    ArtifactStoreError,
    StoredObject,
    validate_key,
)
from intelligence_assets.store.read_cache import ReadCache

logger = logging.getLogger("intelligence_assets.artifacts")

T = TypeVar("T")
Item = TypeVar("Item")

# A MinIO restart (a pod rescheduled, a node drained) takes tens of seconds; a minute of retries
# rides it out, where a failed step would cost the whole training run.
DEFAULT_RETRY_SECONDS = 60.0
CONNECT_TIMEOUT_SECONDS = 3.0
# Per socket read, not per request: a multi-hundred-megabyte upload may take longer in total.
READ_TIMEOUT_SECONDS = 30.0
# One hung request may spend at most this share of the retry budget, so an endpoint that hangs
# and comes back within the budget costs retries, not the run.
TIMEOUT_SHARE_OF_BUDGET = 0.25
FIRST_RETRY_DELAY_SECONDS = 0.5
MAX_RETRY_DELAY_SECONDS = 5.0
# Objects of one artifact in flight at once. Below the connection pool's size, so that parallel
# transfers never wait for (or discard) a pooled connection.
DEFAULT_TRANSFER_WORKERS = 8
CONNECTION_POOL_SIZE = 10


def request_timeouts(retry_seconds: float) -> urllib3.Timeout:
    """Connect and read timeouts of one request: a fraction of the retry budget (at least a
    second), never more than the defaults."""
    cap = max(1.0, retry_seconds * TIMEOUT_SHARE_OF_BUDGET)
    return urllib3.Timeout(connect=min(CONNECT_TIMEOUT_SECONDS, cap), read=min(READ_TIMEOUT_SECONDS, cap))


# Codes that say "these credentials may not do this": waiting does not change the answer.
ACCESS_ERROR_CODES = frozenset(
    {
        "AccessDenied",
        "AccountProblem",
        "AllAccessDisabled",
        "AuthorizationHeaderMalformed",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "InvalidSecurity",
        "InvalidToken",
        "MissingSecurityHeader",
        "RequestTimeTooSkewed",
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
    }
)
# Codes a healthy server sends while it is overloaded, starting up or briefly unhealthy.
TRANSIENT_ERROR_CODES = frozenset(
    {
        "InternalError",
        "OperationTimedOut",
        "RequestTimeout",
        "ServiceUnavailable",
        "SlowDown",
        "XMinioServerNotInitialized",
    }
)
TRANSIENT_HTTP_STATUSES = frozenset({408, 429})


def _transient_status(status: int) -> bool:
    return status >= 500 or status in TRANSIENT_HTTP_STATUSES


def _non_s3_status(error: InvalidResponseError) -> int:
    # minio keeps the status of a non-S3 answer in a private attribute only; its pickling
    # arguments are those of its public constructor: (status, content type, body).
    _, (status, _content_type, _body) = error.__reduce__()
    return int(status or 0)


class _FailedAttempt(Exception):
    """One attempt's failure as the retry sees it: what went wrong, and whether waiting may fix it."""

    def __init__(self, cause: str, retryable: bool) -> None:
        super().__init__(cause)
        self.cause = cause
        self.retryable = retryable


class S3OperationError(ArtifactStoreError):
    """An S3 operation failed; says where (never with credentials)."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: str | None = None,
        bucket: str | None = None,
        key: str | None = None,
        operation: str | None = None,
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.bucket = bucket
        self.key = key
        self.operation = operation


class ArtifactStoreUnavailableError(S3OperationError):
    """The object store could not be reached (or kept failing) for the whole retry budget."""

    def __init__(
        self, message: str, *, elapsed_seconds: float | None = None, attempts: int | None = None, **where: str | None
    ) -> None:
        super().__init__(message, **where)
        self.elapsed_seconds = elapsed_seconds
        self.attempts = attempts


class ArtifactStoreAccessError(S3OperationError):
    """The object store refused the credentials or the permission; never retried."""

    def __init__(self, message: str, *, code: str | None = None, **where: str | None) -> None:
        super().__init__(message, **where)
        self.code = code


def _innermost_os_error(error: BaseException) -> BaseException | None:
    """The socket-level error under urllib3's wrappers (MaxRetryError -> NewConnectionError -> ...)."""
    seen: set[int] = set()
    current: BaseException | None = error
    found: BaseException | None = None
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and not isinstance(current, urllib3.exceptions.HTTPError):
            found = current
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            current = reason
            continue
        # ProtocolError('Connection aborted.', RemoteDisconnected(...)) keeps its cause in args.
        nested = next((arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException)), None)
        current = nested or current.__cause__ or current.__context__
    return found


def _describe_transport_error(error: BaseException) -> str:
    inner = _innermost_os_error(error)
    if inner is not None:
        detail = getattr(inner, "strerror", None) or str(inner)
        return f"{type(inner).__name__}: {detail}" if detail else type(inner).__name__
    return f"{type(error).__name__}: {error}"


class S3ArtifactStore(ArtifactStore):
    """Artifacts as objects in one private bucket, created on the first write when missing.

    Constructing the store does no network I/O. Reads never create the bucket: against a
    missing bucket they behave as against an empty one.

    `read_cache`: local verified copies of immutable artifact objects, owned by this store
    (`artifacts.py` decides what goes through it); None reads everything from the bucket.
    `transfer_workers`: objects moved at once by `get_many` / `put_many` (1: one at a time).
    """

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        secure: bool = False,
        region: str | None = None,
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
        read_cache: ReadCache | None = None,
        transfer_workers: int = DEFAULT_TRANSFER_WORKERS,
    ) -> None:
        check_bucket_name(bucket, strict=True)  # S3's own rules, so a typo fails here, not at first write
        if retry_seconds < 0:
            raise ValueError(f"retry_seconds must be >= 0, got {retry_seconds}")
        if not 1 <= transfer_workers < CONNECTION_POOL_SIZE:
            raise ValueError(
                f"transfer_workers must be between 1 and {CONNECTION_POOL_SIZE - 1}, got {transfer_workers}"
            )
        self.endpoint = endpoint
        self.bucket = bucket
        self.secure = secure
        self.region = region
        self.retry_seconds = float(retry_seconds)
        self.read_cache = read_cache
        self.transfer_workers = transfer_workers
        # Kept only to scrub them from any text we emit; never formatted into a message.
        self._secrets = tuple(secret for secret in (access_key, secret_key) if secret)
        self._client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=self._http_client(secure, self.retry_seconds),
        )

    @staticmethod
    def _http_client(secure: bool, retry_seconds: float) -> urllib3.PoolManager:
        # No urllib3-level retries: they would hide failures from our loop and multiply its budget.
        return urllib3.PoolManager(
            timeout=request_timeouts(retry_seconds),
            # A redirect or error status comes back to minio as a response, to be read as an S3 error.
            retries=urllib3.Retry(total=0, raise_on_redirect=False, raise_on_status=False),
            maxsize=CONNECTION_POOL_SIZE,
            cert_reqs="CERT_REQUIRED" if secure else "CERT_NONE",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        )

    @property
    def endpoint_url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"

    @property
    def location(self) -> str:
        return f"s3://{self.bucket} at {self.endpoint_url}"

    def __repr__(self) -> str:
        return f"S3ArtifactStore(endpoint={self.endpoint!r}, bucket={self.bucket!r}, secure={self.secure!r})"

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def put_bytes(self, key: str, data: bytes) -> None:
        validate_key(key)
        data = bytes(data)
        self._call("put", key, lambda: self._in_bucket(lambda: self._put_object(key, data)))

    def put_many(self, objects: Mapping[str, bytes]) -> None:
        """Every object written when this returns; in parallel, so an artifact of several files
        costs about one round trip. The first failure is raised once all have finished."""
        self._in_parallel(lambda item: self.put_bytes(*item), list(objects.items()))

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        return dict(zip(keys, self._in_parallel(self.get_bytes, list(keys)), strict=True))

    def create_many_if_absent(self, objects: Mapping[str, bytes]) -> dict[str, bool]:
        created = self._in_parallel(lambda item: self.create_if_absent(*item), list(objects.items()))
        return dict(zip(objects, created, strict=True))

    def _in_parallel(self, action: Callable[[Item], T], items: list[Item]) -> list[T]:
        if len(items) < 2 or self.transfer_workers == 1:
            return [action(item) for item in items]
        # A pool per call, not per store: a store built before Dagster forks a step process
        # would hand the child a pool whose threads do not exist there.
        with ThreadPoolExecutor(min(self.transfer_workers, len(items)), thread_name_prefix="s3-transfer") as pool:
            return list(pool.map(action, items))

    def _in_bucket(self, write: Callable[[], T]) -> T:
        """`write`, creating the bucket first when the write finds it missing: one request per
        write instead of a bucket check before each process's first one."""
        try:
            return write()
        except S3Error as error:
            if error.code != "NoSuchBucket":
                raise
        try:
            # No bucket policy is ever set: the bucket stays private to its credentials.
            self._client.make_bucket(self.bucket, location=self.region)
            logger.info("created bucket %s at %s", self.bucket, self.endpoint_url)
        except S3Error as error:
            if error.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise
        return write()

    def _put_object(self, key: str, data: bytes) -> None:
        # One PUT request (no multipart) up to S3's single-part limit; either way the object
        # only becomes visible once complete. A fresh stream per attempt: retries resend all.
        part_size = max(MIN_PART_SIZE, len(data)) if len(data) <= MAX_PART_SIZE else 0
        self._client.put_object(self.bucket, key, io.BytesIO(data), length=len(data), part_size=part_size)

    def create_if_absent(self, key: str, data: bytes) -> bool:
        validate_key(key)

        def put() -> bool:
            try:
                # S3's conditional write (If-None-Match: *), which MinIO and S3 honour. minio-py's
                # public put_object turns unknown headers into user metadata, so the raw request.
                self._client._put_object(
                    self.bucket, key, data, headers={"If-None-Match": "*", "Content-Type": "application/octet-stream"}
                )
            except S3Error as error:
                if error.code in {"PreconditionFailed", "ConditionalRequestConflict"}:
                    return False
                raise
            return True

        try:
            return self._call("create", key, lambda: self._in_bucket(put))
        except S3Error as error:
            raise self._unexpected(error, "create", key) from error

    def get_bytes(self, key: str) -> bytes:
        validate_key(key)

        def get() -> bytes:
            response = self._client.get_object(self.bucket, key)
            try:
                data = response.read()
            except BaseException:
                response.close()  # a half-read connection cannot serve another request
                raise
            finally:
                # Read to the end, the connection goes back to the pool for the next request:
                # closing it here would cost a new TCP (and TLS) handshake per object.
                response.release_conn()
            return data

        try:
            return self._call("get", key, get)
        except S3Error as error:
            if error.code in {"NoSuchKey", "NoSuchBucket"}:
                raise ArtifactNotFoundError(f"no artifact at {self.uri(key)}") from None
            raise self._unexpected(error, "get", key) from error

    def exists(self, key: str) -> bool:
        validate_key(key)
        try:
            self._call("exists", key, lambda: self._client.stat_object(self.bucket, key))
        except S3Error as error:
            if error.code in {"NoSuchKey", "NoSuchBucket"}:
                return False
            raise self._unexpected(error, "exists", key) from error
        return True

    def list_objects(self, prefix: str) -> list[StoredObject]:
        folder = prefix.rstrip("/")
        if folder:
            validate_key(folder)

        def list_all() -> list[StoredObject]:
            # A folder-like prefix, as in the local layout: "features/AA" must not list "features/AAPL/...".
            objects = self._client.list_objects(self.bucket, prefix=f"{folder}/" if folder else None, recursive=True)
            listed = [
                StoredObject(
                    key=item.object_name,
                    bytes=int(item.size or 0),
                    modified=item.last_modified.astimezone(UTC),
                )
                for item in objects
                if item.object_name and not item.object_name.endswith("/")
            ]
            return sorted(listed, key=lambda stored: stored.key)

        try:
            return self._call("list", folder, list_all)
        except S3Error as error:
            if error.code == "NoSuchBucket":
                return []
            raise self._unexpected(error, "list", folder) from error

    def delete(self, key: str) -> None:
        validate_key(key)
        try:
            self._call("delete", key, lambda: self._client.remove_object(self.bucket, key))
        except S3Error as error:
            if error.code not in {"NoSuchKey", "NoSuchBucket"}:
                raise self._unexpected(error, "delete", key) from error

    def _call(self, operation: str, key: str, action: Callable[[], T]) -> T:
        """Run `action`, retrying transient failures for up to `retry_seconds`.

        S3 errors that are neither transient nor about access propagate unchanged for the
        caller to interpret (NoSuchKey means "absent" to `get` but "no" to `exists`).
        """
        started = time.monotonic()
        budget = self.retry_seconds
        backoff = tenacity.wait_random_exponential(multiplier=FIRST_RETRY_DELAY_SECONDS, max=MAX_RETRY_DELAY_SECONDS)
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda error: isinstance(error, _FailedAttempt) and error.retryable),
            stop=tenacity.stop_after_delay(budget),
            # The last wait ends at the budget, so the final attempt starts within it.
            wait=lambda state: min(backoff(state), max(0.0, budget - (state.seconds_since_start or 0.0))),
            before_sleep=lambda state: self._log_retry(operation, key, state),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    result = self._attempt(operation, key, action)
        except _FailedAttempt as failure:
            raise self._unavailable(
                operation, key, started, retrying.statistics["attempt_number"], failure.cause
            ) from None
        tries = attempt.retry_state.attempt_number
        if tries > 1:
            logger.warning(
                "S3 endpoint %s reachable again: %s of %s succeeded after %.1fs (attempt %d)",
                self.endpoint,
                operation,
                self.uri(key),
                attempt.retry_state.seconds_since_start or 0.0,
                tries,
            )
        return result

    def _attempt(self, operation: str, key: str, action: Callable[[], T]) -> T:
        try:
            return action()
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as error:
            failure = self._failure(error, operation, key)
            if failure is None:
                raise
            raise _FailedAttempt(*failure) from None

    def _log_retry(self, operation: str, key: str, state: tenacity.RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome else None
        logger.warning(
            "S3 endpoint %s unreachable (%s): %s of %s, retrying in %.1fs (attempt %d)",
            self.endpoint,
            self._scrub(failure.cause if isinstance(failure, _FailedAttempt) else str(failure)),
            operation,
            self.uri(key),
            state.upcoming_sleep,
            state.attempt_number + 1,
        )

    def _failure(self, error: Exception, operation: str, key: str) -> tuple[str, bool] | None:
        """(what went wrong, whether waiting may fix it) for a failed attempt; None for an S3
        error the caller interprets. Raises where the caller must see another error."""
        if isinstance(error, S3Error):
            self._raise_if_access_error(error, operation, key)
            status = error.response.status if error.response is not None else 0
            if error.code in TRANSIENT_ERROR_CODES or _transient_status(status):
                return f"HTTP {status} {error.code}", True
            return None
        if isinstance(error, ServerError):
            status, cause = error.status_code, f"HTTP {error.status_code}"
        elif isinstance(error, InvalidResponseError):
            # A non-S3 answer, e.g. a proxy's 502 page while MinIO restarts behind it.
            status = _non_s3_status(error)
            cause = f"HTTP {status} from a non-S3 responder"
        elif isinstance(error, MinioException):
            return None
        else:
            tls = error.reason if isinstance(error, urllib3.exceptions.MaxRetryError) else error
            if isinstance(tls, urllib3.exceptions.SSLError):
                return f"TLS failure, not retried: {tls}", False
            # Refused or reset connections, timeouts.
            return _describe_transport_error(error), True
        if not _transient_status(status):
            raise self._unexpected(error, operation, key) from error
        return cause, True

    def _raise_if_access_error(self, error: S3Error, operation: str, key: str) -> None:
        if error.code not in ACCESS_ERROR_CODES:
            return
        server_message = self._scrub(error.message or "")
        message = (
            f"S3 endpoint {self.endpoint_url} refused {operation} of {self.uri(key)} "
            f"(bucket {self.bucket!r}): {error.code}: {server_message} "
            f"-- check the access key, the secret key and the key's permissions on the bucket"
        )
        # `from None`: the S3Error below would drag the signed request's details into tracebacks.
        raise ArtifactStoreAccessError(
            message, endpoint=self.endpoint, bucket=self.bucket, key=key, operation=operation, code=error.code
        ) from None

    def _unavailable(
        self, operation: str, key: str, started: float, attempts: int, cause: str
    ) -> ArtifactStoreUnavailableError:
        elapsed = time.monotonic() - started
        message = (
            f"S3 endpoint {self.endpoint_url} unavailable: {operation} of {self.uri(key)} "
            f"(bucket {self.bucket!r}, key {key!r}) failed after {attempts} attempt(s) over {elapsed:.1f}s "
            f"(retry budget {self.retry_seconds:g}s); last error: {self._scrub(cause)}"
        )
        return ArtifactStoreUnavailableError(
            message,
            endpoint=self.endpoint,
            bucket=self.bucket,
            key=key,
            operation=operation,
            elapsed_seconds=elapsed,
            attempts=attempts,
        )

    def _unexpected(self, error: Exception, operation: str, key: str) -> ArtifactStoreError:
        detail = f"{error.code}: {error.message}" if isinstance(error, S3Error) else str(error)[:500]
        return ArtifactStoreError(
            f"S3 {operation} of {self.uri(key)} at {self.endpoint_url} failed: {self._scrub(detail)}"
        )

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text
