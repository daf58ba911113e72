"""S3ArtifactStore against a real S3 server (moto, over HTTP on loopback) through the minio SDK."""

from __future__ import annotations

import io
import logging
import re
import statistics
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import polars as pl
import pytest
from minio.error import S3Error

from intelligence_assets.config.universe import ConfigurationError
from intelligence_assets.defs.assets.market_data import FEATURES
from intelligence_assets.defs.assets.models import model_key
from intelligence_assets.defs.assets.target_analysis import TARGET_RANKINGS
from intelligence_assets.defs.resources.deployment import Deployment
from intelligence_assets.store.artifact_store import (
    ArtifactNotFoundError,
    ArtifactStoreError,
    CorruptArtifactError,
)
from intelligence_assets.store.artifacts import RESULT_FILE, TABLE_FILE, Manifest, read_value, write_artifact
from intelligence_assets.store.keys import (
    MODELS,
    artifact_prefix,
    file_key,
    fingerprint_directory,
    manifest_key,
    pointer_key,
)
from intelligence_assets.store.s3 import (
    ArtifactStoreAccessError,
    ArtifactStoreUnavailableError,
    S3ArtifactStore,
)
from intelligence_assets_tests.support.services import (
    FaultProxy,
    FixedResponseHTTPServer,
    S3Endpoint,
    free_port,
    unique_bucket_name,
)

ARTIFACT_LOGGER = "intelligence_assets.artifacts"
FINGERPRINT = "f1"
AAPL_FEATURES = artifact_prefix(FEATURES, "AAPL")
AAPL_MODEL = artifact_prefix(model_key("lightgbm"), "AAPL", "y_up_1b")
AAPL_RANKING = artifact_prefix(TARGET_RANKINGS, "AAPL", "y_up_1b")
# One object each, keyed as the layout keys them; the raw-byte tests need no manifest behind them.
AAPL_TABLE = file_key(AAPL_FEATURES, FINGERPRINT, TABLE_FILE)
MSFT_TABLE = file_key(artifact_prefix(FEATURES, "MSFT"), FINGERPRINT, TABLE_FILE)
AAPL_MODEL_FILE = file_key(AAPL_MODEL, FINGERPRINT, "model/model.bin")


def sample_table() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "timestamp": pl.datetime_range(pl.datetime(2024, 1, 1), pl.datetime(2024, 1, 5), "1d", eager=True),
            "close": [100.0, 101.5, None, 99.25, 102.0],
            "symbol": ["AAPL"] * 5,
        }
    )


def write_model_directory(directory: Path) -> Path:
    (directory / "nested" / "deeper").mkdir(parents=True)
    (directory / "model.txt").write_text("tree\n" * 50)
    (directory / "nested" / "weights.bin").write_bytes(bytes(range(256)) * 40)
    (directory / "nested" / "deeper" / "empty.json").write_bytes(b"")
    return directory


def store_value(store, prefix: str, value, fingerprint: str = FINGERPRINT) -> None:
    write_artifact(store, prefix, value, Manifest(fingerprint=fingerprint, data_version=fingerprint, files={}))


def test_round_trips_bytes_tables_json_and_directories(s3_artifact_store: S3ArtifactStore, tmp_path: Path) -> None:
    store = s3_artifact_store
    payload = bytes(range(256)) * 1000
    store.put_bytes("raw/blob.bin", payload)
    assert store.get_bytes("raw/blob.bin") == payload
    store.put_bytes("raw/empty.bin", b"")
    assert store.get_bytes("raw/empty.bin") == b""

    table = sample_table()
    store_value(store, AAPL_FEATURES, table)
    assert read_value(store, AAPL_FEATURES).equals(table)

    value = {"score": 0.125, "passed": False, "nested": {"list": [1, 2, 3]}, "text": "é"}
    ranking = file_key(AAPL_RANKING, FINGERPRINT, RESULT_FILE)
    store.put_json(ranking, value)
    assert store.get_json(ranking) == value

    source = write_model_directory(tmp_path / "source")

    def stored_key(file: Path) -> str:
        return file_key(AAPL_MODEL, FINGERPRINT, file.relative_to(source).as_posix())

    for file in (p for p in source.rglob("*") if p.is_file()):
        store.put_bytes(stored_key(file), file.read_bytes())
    assert store.list_keys(fingerprint_directory(AAPL_MODEL, FINGERPRINT)) == [
        file_key(AAPL_MODEL, FINGERPRINT, "model.txt"),
        file_key(AAPL_MODEL, FINGERPRINT, "nested/deeper/empty.json"),
        file_key(AAPL_MODEL, FINGERPRINT, "nested/weights.bin"),
    ]
    for file in (p for p in source.rglob("*") if p.is_file()):
        assert store.get_bytes(stored_key(file)) == file.read_bytes()

    store.put_bytes(AAPL_TABLE, b"third")  # over the table stored above
    assert store.get_bytes(AAPL_TABLE) == b"third"


def test_missing_and_corrupt_artifacts_fail_clearly(
    s3_endpoint: S3Endpoint, s3_artifact_store: S3ArtifactStore
) -> None:
    store = s3_artifact_store
    missing_table = file_key(artifact_prefix(FEATURES, "NOPE"), FINGERPRINT, TABLE_FILE)
    with pytest.raises(ArtifactNotFoundError, match=re.escape(f"s3://{store.bucket}/{missing_table}")):
        store.get_bytes(missing_table)
    missing_model = artifact_prefix(model_key("lightgbm"), "NOPE", "y_up_1b")
    with pytest.raises(ArtifactNotFoundError, match=re.escape(f"s3://{store.bucket}/{missing_model}")):
        read_value(store, missing_model)

    bad = artifact_prefix(FEATURES, "BAD")
    store_value(store, bad, sample_table())
    # Corrupted behind the store's back, with a plain client, as a truncated upload by another tool would be.
    bad_table = file_key(bad, FINGERPRINT, TABLE_FILE)
    s3_endpoint.client().put_object(store.bucket, bad_table, io.BytesIO(b"not parquet at all"), 18)
    with pytest.raises(CorruptArtifactError, match=re.escape(f"s3://{store.bucket}/{bad_table} is corrupt")):
        read_value(store, bad)
    bad_ranking = file_key(artifact_prefix(TARGET_RANKINGS, "BAD", "y_up_1b"), FINGERPRINT, RESULT_FILE)
    store.put_bytes(bad_ranking, b"{not json")
    with pytest.raises(CorruptArtifactError, match=re.escape(f"s3://{store.bucket}/{bad_ranking}")):
        store.get_json(bad_ranking)
    assert issubclass(ArtifactNotFoundError, ArtifactStoreError) and issubclass(ArtifactNotFoundError, KeyError)
    assert issubclass(CorruptArtifactError, ArtifactStoreError) and issubclass(CorruptArtifactError, ValueError)


def test_location_uri_and_repr_never_show_credentials() -> None:
    store = S3ArtifactStore("minio.internal:9000", "artifacts", "ACCESS-KEY-ID-123", "SECRET-VALUE-456")
    assert store.uri(AAPL_TABLE) == f"s3://artifacts/{AAPL_TABLE}"
    assert store.location == "s3://artifacts at http://minio.internal:9000"
    secure = S3ArtifactStore("minio.internal:9000", "artifacts", "ACCESS-KEY-ID-123", "SECRET-VALUE-456", secure=True)
    assert secure.location == "s3://artifacts at https://minio.internal:9000"
    for text in [store.location, repr(store), str(store), secure.location, repr(secure)]:
        assert "ACCESS-KEY-ID-123" not in text and "SECRET-VALUE-456" not in text
    with pytest.raises(ValueError):
        S3ArtifactStore("minio.internal:9000", "Not_A_Valid_Bucket", "a", "b")


def test_the_deployment_builds_the_store_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # INTELLIGENCE_S3_* have one reader, the deployment settings; the store only takes arguments.
    variables = {
        "INTELLIGENCE_S3_ENDPOINT": "minio.internal:9000",
        "INTELLIGENCE_S3_ACCESS_KEY": "access",
        "INTELLIGENCE_S3_SECRET_KEY": "secret",
    }
    for name in ["INTELLIGENCE_S3_BUCKET", "INTELLIGENCE_S3_SECURE", "INTELLIGENCE_S3_REGION"]:
        monkeypatch.delenv(name, raising=False)
    deployment = Deployment(name="minio")
    for missing in variables:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv(missing)
        with pytest.raises(ConfigurationError, match=missing):
            deployment.artifact_store()

    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    store = deployment.artifact_store()  # no server there: constructing must not connect
    assert isinstance(store, S3ArtifactStore)
    assert (store.endpoint, store.bucket, store.secure, store.region) == (
        "minio.internal:9000",
        "intelligence-assets",
        False,
        None,
    )
    assert store.location == "s3://intelligence-assets at http://minio.internal:9000"

    monkeypatch.setenv("INTELLIGENCE_S3_BUCKET", "other-bucket")
    monkeypatch.setenv("INTELLIGENCE_S3_SECURE", "TRUE")
    monkeypatch.setenv("INTELLIGENCE_S3_REGION", "eu-central-1")
    store = deployment.artifact_store()
    assert (store.bucket, store.secure, store.region) == ("other-bucket", True, "eu-central-1")
    assert store.location == "s3://other-bucket at https://minio.internal:9000"


def run_in_thread(function) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def target() -> None:
        started = time.monotonic()
        try:
            outcome["result"] = function()
        except BaseException as error:  # reported to the test thread
            outcome["error"] = error
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def test_put_survives_the_endpoint_being_down_for_20_seconds(
    s3_endpoint: S3Endpoint, s3_fault_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=ARTIFACT_LOGGER)
    store = s3_endpoint.store(retry_seconds=40, endpoint=s3_fault_proxy.endpoint)
    store.put_bytes(AAPL_TABLE, b"before the outage")  # leaves a pooled connection
    payload = bytes(range(256)) * 4096  # 1 MiB

    s3_fault_proxy.stop_listening()
    thread, outcome = run_in_thread(lambda: store.put_bytes(AAPL_MODEL_FILE, payload))
    thread.join(timeout=20)
    assert thread.is_alive(), f"the put ended while the endpoint was down: {outcome}"
    s3_fault_proxy.start_listening()
    thread.join(timeout=15)

    assert not thread.is_alive()
    assert "error" not in outcome, outcome.get("error")
    assert outcome["seconds"] >= 20
    direct = s3_endpoint.store(store.bucket)
    assert direct.get_bytes(AAPL_MODEL_FILE) == payload
    assert direct.get_bytes(AAPL_TABLE) == b"before the outage"
    retries = [r.getMessage() for r in caplog.records if r.name == ARTIFACT_LOGGER and r.levelno == logging.WARNING]
    assert any(
        f"S3 endpoint {s3_fault_proxy.endpoint} unreachable (ConnectionRefusedError" in message
        and "retrying in" in message
        for message in retries
    ), retries
    assert any("(attempt 3)" in message for message in retries), retries
    assert any("reachable again" in message for message in retries), retries


def test_short_retry_budget_raises_unavailable_and_leaves_no_object(
    s3_endpoint: S3Endpoint, s3_fault_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=ARTIFACT_LOGGER)
    store = s3_endpoint.store(retry_seconds=3, endpoint=s3_fault_proxy.endpoint)
    store.put_bytes(AAPL_TABLE, b"exists")
    s3_fault_proxy.stop_listening()

    started = time.monotonic()
    with pytest.raises(ArtifactStoreUnavailableError) as raised:
        store.put_bytes(MSFT_TABLE, b"never stored")
    elapsed = time.monotonic() - started
    message = str(raised.value)
    assert 3 <= elapsed < 8
    for expected in [s3_fault_proxy.endpoint, store.bucket, MSFT_TABLE, "put", "3.0s"]:
        assert expected in message, (expected, message)
    assert raised.value.attempts is not None and raised.value.attempts >= 3
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == raised.value.attempts - 1
    assert all(f"put of s3://{store.bucket}/{MSFT_TABLE}" in message for message in retries), retries

    with pytest.raises(ArtifactStoreUnavailableError, match="get of s3://"):
        store.get_bytes(AAPL_TABLE)

    s3_fault_proxy.start_listening()
    assert not store.exists(MSFT_TABLE)
    assert store.list_keys(artifact_prefix(FEATURES)) == [AAPL_TABLE]
    assert [o.object_name for o in s3_endpoint.client().list_objects(store.bucket, recursive=True)] == [AAPL_TABLE]


def test_upload_cut_mid_transfer_never_exposes_a_partial_object(s3_endpoint: S3Endpoint) -> None:
    old = b"old model " * 1000
    new = bytes(range(256)) * 16384  # 4 MiB, about 2 s through the throttled proxy
    with FaultProxy(s3_endpoint.host, s3_endpoint.port, upstream_bytes_per_second=2 * 1024 * 1024) as proxy:
        store = s3_endpoint.store(retry_seconds=2, endpoint=proxy.endpoint)
        store.put_bytes(AAPL_MODEL_FILE, old)
        already_sent = proxy.bytes_to_target
        thread, outcome = run_in_thread(lambda: store.put_bytes(AAPL_MODEL_FILE, new))
        deadline = time.monotonic() + 10
        while proxy.bytes_to_target - already_sent < 1024 * 1024 and time.monotonic() < deadline:
            time.sleep(0.02)
        proxy.stop_listening()
        sent_before_cut = proxy.bytes_to_target - already_sent
        thread.join(timeout=15)
        assert 1024 * 1024 <= sent_before_cut < len(new)
        assert isinstance(outcome.get("error"), ArtifactStoreUnavailableError), outcome

        proxy.start_listening()
        assert store.get_bytes(AAPL_MODEL_FILE) == old  # the old object, whole
        assert store.list_keys(MODELS) == [AAPL_MODEL_FILE]


@pytest.mark.parametrize(
    ("status", "body", "content_type", "expected_cause"),
    [
        (
            503,
            b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
            "application/xml",
            "HTTP 503 SlowDown",
        ),
        (502, b"<html>Bad Gateway</html>", "text/html", "HTTP 502"),
    ],
)
def test_server_errors_are_retried_until_the_budget_is_spent(
    status, body, content_type, expected_cause, caplog
) -> None:
    caplog.set_level(logging.WARNING, logger=ARTIFACT_LOGGER)
    with FixedResponseHTTPServer(status, body, content_type) as server:
        store = S3ArtifactStore(server.endpoint, "artifacts", "access", "secret", region="us-east-1", retry_seconds=1.5)
        with pytest.raises(ArtifactStoreUnavailableError, match=expected_cause):
            store.get_bytes(AAPL_TABLE)
    assert server.requests >= 3
    assert any(expected_cause in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_a_non_s3_client_error_fails_at_once_naming_its_status() -> None:
    with FixedResponseHTTPServer(404, b"<html>Not Found</html>", "text/html") as server:
        store = S3ArtifactStore(server.endpoint, "artifacts", "access", "secret", region="us-east-1", retry_seconds=30)
        started = time.monotonic()
        with pytest.raises(ArtifactStoreError, match="Response code: 404") as raised:
            store.get_bytes(AAPL_TABLE)
    assert not isinstance(raised.value, ArtifactStoreUnavailableError)
    assert time.monotonic() - started < 5 and server.requests == 1


def test_unreachable_endpoint_with_no_budget_fails_at_once() -> None:
    store = S3ArtifactStore(f"127.0.0.1:{free_port()}", "artifacts", "access", "secret", retry_seconds=0)
    started = time.monotonic()
    with pytest.raises(ArtifactStoreUnavailableError, match="ConnectionRefusedError"):
        store.list_keys(artifact_prefix(FEATURES))
    assert time.monotonic() - started < 2


def test_valid_credentials_work_on_the_authenticating_server(s3_endpoint_with_auth: S3Endpoint) -> None:
    store = s3_endpoint_with_auth.store(retry_seconds=5)
    store_value(store, AAPL_FEATURES, sample_table())
    assert read_value(store, AAPL_FEATURES).equals(sample_table())
    assert store.list_keys(artifact_prefix(FEATURES)) == [
        pointer_key(AAPL_FEATURES),
        AAPL_TABLE,
        manifest_key(AAPL_FEATURES, FINGERPRINT),
    ]
    with pytest.raises(S3Error) as policy:
        s3_endpoint_with_auth.client().get_bucket_policy(store.bucket)
    assert policy.value.code == "NoSuchBucketPolicy"
    # Without credentials the object cannot be read: the bucket is private.
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(f"{s3_endpoint_with_auth.url}/{store.bucket}/{AAPL_TABLE}", timeout=5)
    assert anonymous.value.code == 403


@pytest.mark.parametrize("case", ["wrong_secret", "unknown_access_key", "no_permission"])
def test_rejected_credentials_raise_access_error_without_retrying_or_leaking(
    case: str, s3_endpoint_with_auth: S3Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = s3_endpoint_with_auth
    access_key, secret_key, expected_code = {
        "wrong_secret": (endpoint.access_key, "wrong-secret-Zq8vB3xYk2", "SignatureDoesNotMatch"),
        "unknown_access_key": ("AKIANOTAREALKEY00042", "unknown-secret-Pw7rT5mNa1", "InvalidAccessKeyId"),
        "no_permission": (endpoint.unprivileged_access_key, endpoint.unprivileged_secret_key, "AccessDenied"),
    }[case]
    existing = endpoint.store(unique_bucket_name("guarded"))
    existing.put_bytes(AAPL_TABLE, b"written with valid credentials")
    caplog.set_level(logging.DEBUG)  # every logger, urllib3's request lines included
    # urllib3's own level too: other libraries set it (the kubernetes client sets WARNING).
    caplog.set_level(logging.DEBUG, logger="urllib3")

    store = S3ArtifactStore(endpoint.endpoint, existing.bucket, access_key, secret_key, retry_seconds=30)
    missing_bucket = unique_bucket_name("denied")
    store_on_missing_bucket = S3ArtifactStore(
        endpoint.endpoint, missing_bucket, access_key, secret_key, retry_seconds=30
    )
    attempts = [
        (store, "put", lambda: store.put_bytes(MSFT_TABLE, b"x"), expected_code),
        (store, "get", lambda: store.get_bytes(AAPL_TABLE), expected_code),
        (store, "list", lambda: store.list_keys(artifact_prefix(FEATURES)), expected_code),
        (store, "exists", lambda: store.exists(AAPL_TABLE), None),  # HEAD: no error body
        (store_on_missing_bucket, "put", lambda: store_on_missing_bucket.put_bytes("a/b", b"x"), None),
    ]
    for target, operation, call, code in attempts:
        started = time.monotonic()
        with pytest.raises(ArtifactStoreAccessError) as raised:
            call()
        assert time.monotonic() - started < 5  # not retried for the 30 s budget
        error = raised.value
        assert error.code == code if code else error.code in {expected_code, "AccessDenied"}
        assert error.operation == operation
        message = str(error)
        assert target.endpoint in message and target.bucket in message and error.code in message
        assert error.__cause__ is None and error.__suppress_context__
        for secret in {secret_key, access_key}:
            assert secret not in message
            assert secret not in repr(error)
    assert not any("retrying in" in r.getMessage() for r in caplog.records)
    assert any(r.name.startswith("urllib3") for r in caplog.records), "the log check below must see request lines"
    for secret in {secret_key, access_key}:
        assert secret not in caplog.text
    assert existing.list_keys(artifact_prefix(FEATURES)) == [AAPL_TABLE]
    assert not endpoint.client().bucket_exists(missing_bucket)


def test_latency_of_one_megabyte_on_loopback(s3_artifact_store: S3ArtifactStore) -> None:
    payload = bytes(range(256)) * 4096
    put_seconds, get_seconds = [], []
    for index in range(20):
        key = f"latency/{index}.bin"
        started = time.perf_counter()
        s3_artifact_store.put_bytes(key, payload)
        put_seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        assert s3_artifact_store.get_bytes(key) == payload
        get_seconds.append(time.perf_counter() - started)
    print(
        f"\n1 MiB against moto on loopback, median of 20: put {statistics.median(put_seconds) * 1000:.1f} ms, "
        f"get {statistics.median(get_seconds) * 1000:.1f} ms"
    )
