"""What the S3 store sends, counted from the moto server's own access log, and its read cache.

Every count here is of requests the server answered (`S3RequestLog`), not of calls the code
meant to make. Requests are what an object store costs: a read of an artifact is one GET per
object and never a HEAD, a second read of a fingerprint is served from the local read cache
with no request but the pointer's, and writing a new artifact is one PUT per object (a small
model or result is one object: its manifest holds its files).
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from intelligence_assets.config.deployment import ARTIFACT_CACHE_VARIABLE
from intelligence_assets.defs.assets.market_data import FEATURES
from intelligence_assets.defs.assets.models import model_key
from intelligence_assets.defs.assets.target_analysis import TARGET_RANKINGS
from intelligence_assets.defs.resources.deployment import Deployment
from intelligence_assets.ml.families import load_family
from intelligence_assets.ml.trained_model import SUMMARY_FILE, TrainedModel
from intelligence_assets.store.artifact_store import ArtifactNotFoundError, CorruptArtifactError
from intelligence_assets.store.artifacts import (
    TABLE_FILE,
    ArtifactHandle,
    Manifest,
    commit_artifact,
    find_intact_manifest,
    read_manifest,
    read_value,
    write_artifact,
)
from intelligence_assets.store.keys import artifact_prefix, file_key
from intelligence_assets.store.read_cache import DEFAULT_MAX_BYTES, ReadCache
from intelligence_assets.store.s3 import ArtifactStoreUnavailableError, S3ArtifactStore
from intelligence_assets_tests.support.services import FaultProxy, S3Endpoint, S3RequestLog, unique_bucket_name

AAPL_FEATURES = artifact_prefix(FEATURES, "AAPL")
AAPL_RANKING = artifact_prefix(TARGET_RANKINGS, "AAPL", "y_up_1b")
AAPL_MODEL = artifact_prefix(model_key("lightgbm"), "AAPL", "y_up_1b")


def table(value: float = 1.0, rows: int = 500) -> pl.DataFrame:
    return pl.DataFrame({"close": np.linspace(value, value + 1, rows), "volume": np.arange(rows)})


def manifest(fingerprint: str) -> Manifest:
    return Manifest(fingerprint=fingerprint, data_version=fingerprint, files={})


def trained_model() -> TrainedModel:
    """A real model: summary.json, model/model.txt and model/meta.json, small enough to be stored
    inside its manifest."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    y = (x[:, 0] + rng.normal(size=300) > 0).astype(float)
    model = load_family("lightgbm")("classification", {"num_boost_round": 10}, seed=1)
    return TrainedModel("lightgbm", {"features": ["a", "b", "c"]}, model.fit(x[:200], y[:200], x[200:], y[200:]))


class Counted:
    """An S3 store on its own bucket, with the requests it sends counted by kind."""

    def __init__(self, endpoint: S3Endpoint, cache_directory: Path | None = None, via: str | None = None) -> None:
        self.endpoint = endpoint
        self.address = via or endpoint.endpoint  # a FaultProxy in front of the server, say
        self.bucket = unique_bucket_name("requests")
        self.cache = ReadCache(cache_directory) if cache_directory else None
        self.store = self.new_store()
        self.log = S3RequestLog(endpoint.log_path, self.bucket)
        # The bucket exists before anything is counted: its creation is a first write's affair.
        self.store.put_bytes("setup/ready", b"")

    def new_store(self) -> S3ArtifactStore:
        """Another store on the same bucket and cache, as another process (another step) has."""
        return S3ArtifactStore(
            self.address,
            self.bucket,
            self.endpoint.access_key,
            self.endpoint.secret_key,
            # Named, as the chart names MinIO's: minio asks a bucket's region once per client otherwise.
            region="us-east-1",
            retry_seconds=5,
            read_cache=self.cache,
        )

    def requests(self, action) -> Counter[str]:
        mark = self.log.mark()
        action()
        return self.log.counts_since(mark)


@pytest.fixture
def counted(s3_endpoint: S3Endpoint) -> Counted:
    return Counted(s3_endpoint)


@pytest.fixture
def cached(s3_endpoint: S3Endpoint, tmp_path: Path) -> Counted:
    return Counted(s3_endpoint, tmp_path / "read-cache")


# ------------------------------------------------------------------------------- requests per operation


def test_writing_a_new_artifact_is_one_put_per_object_and_nothing_else(counted: Counted) -> None:
    model = trained_model()
    sent = counted.requests(lambda: write_artifact(counted.store, AAPL_MODEL, model, manifest("f1")))
    # A small model's three files ride in its manifest: the manifest, the pointer; no GET or HEAD
    # to learn that nothing was there.
    assert sent == Counter({"PUT": 2}), sent
    assert read_value(counted.store, AAPL_MODEL).feature_names == ["a", "b", "c"]
    # A table is its own object: the file, the manifest, the pointer.
    sent = counted.requests(lambda: write_artifact(counted.store, AAPL_FEATURES, table(), manifest("f1")))
    assert sent == Counter({"PUT": 3}), sent


def test_a_read_is_one_get_per_object_and_never_a_head(counted: Counted) -> None:
    write_artifact(counted.store, AAPL_MODEL, trained_model(), manifest("f1"))
    sent = counted.requests(lambda: read_value(counted.store, AAPL_MODEL))
    assert sent == Counter({"GET": 2}), sent  # pointer, manifest with the three files
    write_artifact(counted.store, AAPL_FEATURES, table(), manifest("f1"))
    sent = counted.requests(lambda: read_value(counted.store, AAPL_FEATURES))
    assert sent == Counter({"GET": 3}), sent  # pointer, manifest, table


def test_committing_a_fingerprint_again_keeps_the_intact_artifact(counted: Counted) -> None:
    store = counted.store
    first = commit_artifact(store, AAPL_FEATURES, table(1.0), manifest("f1"))
    data = store.get_bytes(file_key(AAPL_FEATURES, "f1", TABLE_FILE))
    # A retry (or a second run) of the same fingerprint with other bytes: the committed one stays.
    again = commit_artifact(store, AAPL_FEATURES, table(2.0), manifest("f1"))
    assert again.files == first.files
    assert store.get_bytes(file_key(AAPL_FEATURES, "f1", TABLE_FILE)) == data


def test_committing_over_a_corrupt_or_half_written_fingerprint_rewrites_it(counted: Counted) -> None:
    store = counted.store
    commit_artifact(store, AAPL_FEATURES, table(1.0), manifest("f1"))
    key = file_key(AAPL_FEATURES, "f1", TABLE_FILE)
    counted.endpoint.client().put_object(store.bucket, key, io.BytesIO(b"garbage"), 7)
    assert find_intact_manifest(store, AAPL_FEATURES, "f1")[0] is None
    commit_artifact(store, AAPL_FEATURES, table(2.0), manifest("f1"))
    assert ArtifactHandle(store, AAPL_FEATURES, "f1", "f1").load().equals(table(2.0))

    # Files without a manifest: a writer that died between the two.
    store.put_bytes(file_key(AAPL_FEATURES, "f2", TABLE_FILE), b"left behind")
    commit_artifact(store, AAPL_FEATURES, table(3.0), manifest("f2"))
    assert ArtifactHandle(store, AAPL_FEATURES, "f2", "f2").load().equals(table(3.0))


def test_several_objects_move_together(counted: Counted) -> None:
    objects = {f"many/{index}.bin": bytes([index]) * (1000 + index) for index in range(12)}
    assert counted.requests(lambda: counted.store.put_many(objects)) == Counter({"PUT": 12})
    keys = list(reversed(objects))
    assert counted.store.get_many(keys) == {key: objects[key] for key in keys}
    with pytest.raises(ArtifactNotFoundError, match="many/missing"):
        counted.store.get_many([*keys, "many/missing"])


# ------------------------------------------------------------------------------------------ read cache


def test_a_second_read_of_a_fingerprint_sends_only_the_pointer_request(cached: Counted) -> None:
    write_artifact(cached.store, AAPL_MODEL, trained_model(), manifest("f1"))
    write_artifact(cached.store, AAPL_FEATURES, table(), manifest("f1"))
    for prefix in (AAPL_MODEL, AAPL_FEATURES):
        read_value(cached.store, prefix)
        # The pointer may move at any time: read each time. The rest lies under a fingerprint.
        assert cached.requests(lambda prefix=prefix: read_value(cached.store, prefix)) == Counter({"GET": 1})
    # Another process of the machine (another step) shares the cache directory.
    other = cached.new_store()
    assert cached.requests(lambda: read_value(other, AAPL_FEATURES)) == Counter({"GET": 1})
    handle = ArtifactHandle.current(other, AAPL_MODEL)
    assert cached.requests(lambda: handle.load_json(SUMMARY_FILE))["GET"] == 0
    assert read_value(other, AAPL_FEATURES).equals(table())


def test_a_moved_pointer_is_seen_at_once(cached: Counted) -> None:
    write_artifact(cached.store, AAPL_RANKING, {"score": 1}, manifest("f1"))
    assert read_value(cached.store, AAPL_RANKING) == {"score": 1}
    # Moved by another writer, through a store without the cache.
    write_artifact(cached.endpoint.store(cached.bucket), AAPL_RANKING, {"score": 2}, manifest("f2"))
    assert read_value(cached.store, AAPL_RANKING) == {"score": 2}
    # And back to the first fingerprint: the cached copy of f1 serves it, the pointer said so.
    write_artifact(cached.endpoint.store(cached.bucket), AAPL_RANKING, {"score": 1}, manifest("f1"))
    assert cached.requests(lambda: read_value(cached.store, AAPL_RANKING)) == Counter({"GET": 1})
    assert read_value(cached.store, AAPL_RANKING) == {"score": 1}


def _entries(cache: ReadCache, folder: str) -> list[Path]:
    return sorted(path for path in (cache.directory / folder).rglob("*") if path.is_file())


@pytest.mark.parametrize("damage", ["flipped", "truncated", "emptied"])
def test_a_corrupt_cache_entry_is_detected_and_read_from_the_store_again(
    cached: Counted, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert cached.cache is not None
    write_artifact(cached.store, AAPL_FEATURES, table(), manifest("f1"))
    read_value(cached.store, AAPL_FEATURES)
    (content,) = _entries(cached.cache, "content")
    (named,) = _entries(cached.cache, "named")
    for entry in (content, named):
        data = entry.read_bytes()
        entry.write_bytes(
            {"flipped": data[:-1] + bytes([data[-1] ^ 1]), "truncated": data[: len(data) // 2], "emptied": b""}[damage]
        )
    caplog.set_level(logging.WARNING, logger="intelligence_assets.artifacts")
    sent = cached.requests(lambda: read_value(cached.store, AAPL_FEATURES))
    assert sent == Counter({"GET": 3}), sent  # pointer, then manifest and table again
    assert read_value(cached.store, AAPL_FEATURES).equals(table())
    assert "does not match its checksum" in caplog.text
    # Repaired: the next read is served from the cache again.
    assert cached.requests(lambda: read_value(cached.store, AAPL_FEATURES)) == Counter({"GET": 1})


def test_a_corrupt_object_in_the_store_is_never_cached_nor_served(cached: Counted) -> None:
    store = cached.store
    write_artifact(store, AAPL_FEATURES, table(), manifest("f1"))
    key = file_key(AAPL_FEATURES, "f1", TABLE_FILE)
    cached.endpoint.client().put_object(store.bucket, key, io.BytesIO(b"not parquet at all"), 18)
    for _ in range(2):
        with pytest.raises(CorruptArtifactError, match=f"s3://{store.bucket}/{key} is corrupt"):
            read_value(store, AAPL_FEATURES)
    assert cached.cache is not None and not _entries(cached.cache, "content")


def test_whether_to_reuse_a_fingerprint_is_decided_by_the_store_not_the_cache(cached: Counted) -> None:
    """A rerun heals a corrupt artifact only if it sees the corruption: a good cached copy must
    not hide it. Audits read the store too."""
    store = cached.store
    write_artifact(store, AAPL_FEATURES, table(), manifest("f1"))
    read_value(store, AAPL_FEATURES)  # cached intact
    key = file_key(AAPL_FEATURES, "f1", TABLE_FILE)
    cached.endpoint.client().put_object(store.bucket, key, io.BytesIO(b"garbage"), 7)
    committed, state = find_intact_manifest(store, AAPL_FEATURES, "f1")
    assert committed is None and "is corrupt" in state
    # The rerun recomputes under the same fingerprint; with other bytes, as a nondeterministic
    # trainer would write them.
    commit_artifact(store, AAPL_FEATURES, table(5.0), manifest("f1"))
    assert find_intact_manifest(store, AAPL_FEATURES, "f1")[0] is not None


def test_a_cached_manifest_older_than_a_healed_artifact_gives_way_to_the_store(
    s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    """Machine A cached a fingerprint's manifest; machine B found the artifact corrupt and
    rewrote it with other bytes. A's next read must not call B's good files corrupt."""
    machine_a = Counted(s3_endpoint, tmp_path / "a")
    machine_b = machine_a.new_store()
    machine_b.read_cache = ReadCache(tmp_path / "b")
    write_artifact(machine_a.store, AAPL_FEATURES, table(1.0), manifest("f1"))
    read_value(machine_a.store, AAPL_FEATURES)
    assert machine_a.cache is not None
    for entry in _entries(machine_a.cache, "content"):  # evicted since
        entry.unlink()
    key = file_key(AAPL_FEATURES, "f1", TABLE_FILE)
    s3_endpoint.client().put_object(machine_b.bucket, key, io.BytesIO(b"garbage"), 7)
    commit_artifact(machine_b, AAPL_FEATURES, table(2.0), manifest("f1"))
    assert read_value(machine_a.store, AAPL_FEATURES).equals(table(2.0))
    assert (
        read_manifest(machine_a.store, AAPL_FEATURES, "f1").files == read_manifest(machine_b, AAPL_FEATURES, "f1").files
    )


def test_an_outage_is_reported_even_with_everything_cached(
    s3_endpoint: S3Endpoint, s3_fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    warm = Counted(s3_endpoint, tmp_path / "cache", via=s3_fault_proxy.endpoint)
    write_artifact(warm.store, AAPL_FEATURES, table(), manifest("f1"))
    handle = ArtifactHandle.current(warm.store, AAPL_FEATURES)
    handle.load()
    s3_fault_proxy.stop_listening()
    # The pointer is never cached, so a store that cannot be reached fails the read, clearly.
    with pytest.raises(ArtifactStoreUnavailableError, match="unavailable: get of"):
        read_value(warm.store, AAPL_FEATURES)
    # A handle whose pointer was read before loads from the cache alone.
    assert handle.load().equals(table())


def test_manifests_are_cached_per_store(s3_endpoint: S3Endpoint, tmp_path: Path) -> None:
    """One cache directory serving two buckets, each holding the same key: two objects."""
    directory = tmp_path / "shared"
    first, second = Counted(s3_endpoint, directory), Counted(s3_endpoint, directory)
    write_artifact(first.store, AAPL_RANKING, {"bucket": 1}, manifest("f1"))
    write_artifact(second.store, AAPL_RANKING, {"bucket": 2}, manifest("f1"))
    for _ in range(2):
        for counted, expected in ((first, {"bucket": 1}), (second, {"bucket": 2})):
            assert read_value(counted.store, AAPL_RANKING) == expected
    # Both cached side by side: neither evicts nor shadows the other.
    for counted in (first, second):
        assert counted.requests(lambda counted=counted: read_value(counted.store, AAPL_RANKING)) == Counter({"GET": 1})


# -------------------------------------------------------------------------------------- configuration


def test_the_deployment_gives_the_s3_store_a_read_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in {
        "INTELLIGENCE_DEPLOYMENT": "minio",
        "INTELLIGENCE_S3_ENDPOINT": "minio.internal:9000",
        "INTELLIGENCE_S3_ACCESS_KEY": "access",
        "INTELLIGENCE_S3_SECRET_KEY": "secret",
        "DAGSTER_HOME": str(tmp_path / "home"),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(ARTIFACT_CACHE_VARIABLE, raising=False)

    def store_cache() -> ReadCache | None:
        store = Deployment.from_environment().artifact_store()  # constructing connects to nothing
        assert isinstance(store, S3ArtifactStore)
        return store.read_cache

    # By default under DAGSTER_HOME: the deployment's own scratch, shared by one machine's steps.
    assert (cache := store_cache()) is not None and cache.directory == tmp_path / "home" / "artifact-cache"
    assert cache.max_bytes == DEFAULT_MAX_BYTES
    monkeypatch.setenv(ARTIFACT_CACHE_VARIABLE, str(tmp_path / "scratch"))
    assert (cache := store_cache()) is not None and cache.directory == tmp_path / "scratch"
    monkeypatch.setenv(ARTIFACT_CACHE_VARIABLE, "off")
    assert store_cache() is None
    # Two stores from one deployment never share a cache object; each owns its own.
    monkeypatch.delenv(ARTIFACT_CACHE_VARIABLE)
    deployment = Deployment.from_environment()
    assert deployment.artifact_store().read_cache is not deployment.artifact_store().read_cache
    # The local deployment's store is a directory already: no cache in front of it.
    monkeypatch.setenv("INTELLIGENCE_DEPLOYMENT", "local")
    assert Deployment.from_environment().artifact_store().read_cache is None
