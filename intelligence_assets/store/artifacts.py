"""Artifacts in the store: content-addressed by fingerprint, committed by a manifest.

Layout under an asset partition's prefix (`<asset>/<symbol>/<target>`; every key is built in `keys.py`):

    <fingerprint>/data.parquet | result.json | summary.json + model/...   the value's files
    <fingerprint>/manifest.json     sha256 and size of every file, metadata, check outcomes
    current.json                    {fingerprint, data_version}: what downstream assets read

A small artifact that is not a table (a result, a model of at most `INLINE_ARTIFACT_BYTES`)
keeps its files inside its manifest instead (`Manifest.inline`): one object, so storing it
costs two requests (manifest, pointer) instead of one per file more, and reading it one. A
table is always its own `data.parquet`, which any Parquet reader opens in the store.

The manifest is written after the files and the pointer after the manifest, so a reader never
follows a pointer to a half-written artifact; a retry with the same fingerprint rewrites the
same keys (idempotent). Every load verifies the checksums: a corrupt object is an error,
never silently used.

Loads (`ArtifactHandle.load`) go through the store's read cache when it has one (S3): the
manifest and files under a fingerprint do not change, so a second read of a fingerprint costs
no request. Files are cached under the checksum the manifest records and verified against it
on every read. The one way a fingerprint's objects change is a rerun healing a corrupt
artifact, which rewrites them: a cached manifest that no longer matches the store's files is
read again from the store. The pointer is read from the store every time. Whatever decides
from the store's state (`find_intact_manifest`: reuse or recompute; audits) reads the store
itself, and refreshes the cache with what it verified.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from intelligence_assets.ml.trained_model import SUMMARY_FILE, TrainedModel
from intelligence_assets.store.artifact_store import (
    ArtifactNotFoundError,
    ArtifactStore,
    ArtifactStoreError,
    CorruptArtifactError,
)

# The layout's file names stay importable from here for modules that read them beside artifacts.
from intelligence_assets.store.fingerprints import content_sha256
from intelligence_assets.store.keys import (  # noqa: F401
    CLAIM_FILE,
    FAILURE_FILE,
    MANIFEST_FILE,
    POINTER_FILE,
    claim_key,
    failure_key,
    file_key,
    fingerprint_directory,
    manifest_key,
    pointer_key,
)


class BlockedArtifactError(ArtifactStoreError):
    """The current artifact failed a blocking check: nothing may be built on it."""


TABLE_FILE = "data.parquet"
RESULT_FILE = "result.json"
# Below this, a request costs more than moving the bytes (base64 included) and the model is
# better one object; larger ones (a few of the bundled universe's xgboost models) go up as
# separate objects, in parallel.
INLINE_ARTIFACT_BYTES = 256 * 1024


def encode_value(value: Any) -> dict[str, bytes]:
    """The files (relative path -> bytes) that represent a value."""
    if isinstance(value, pl.DataFrame):
        buffer = io.BytesIO()
        value.write_parquet(buffer, compression="zstd", statistics=False)
        return {TABLE_FILE: buffer.getvalue()}
    if isinstance(value, TrainedModel):
        with tempfile.TemporaryDirectory() as scratch:
            value.save(Path(scratch))
            return {
                p.relative_to(scratch).as_posix(): p.read_bytes()
                for p in sorted(Path(scratch).rglob("*"))
                if p.is_file()
            }
    if isinstance(value, dict):
        return {RESULT_FILE: json.dumps(value, indent=2, sort_keys=True, allow_nan=False).encode()}
    raise TypeError(f"cannot store {type(value).__name__}: expected polars.DataFrame, dict or TrainedModel")


def content_digest(files: dict[str, bytes]) -> str:
    """sha256 over an artifact's files, names included: the data version of an always-computed
    asset, whose result is its only input."""
    return hashlib.sha256(b"".join(name.encode() + data for name, data in sorted(files.items()))).hexdigest()


def decode_value(files: dict[str, bytes], where: str) -> Any:
    try:
        if TABLE_FILE in files:
            return pl.read_parquet(io.BytesIO(files[TABLE_FILE]))
        if SUMMARY_FILE in files:
            with tempfile.TemporaryDirectory() as scratch:
                for name, data in files.items():
                    target = Path(scratch) / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
                return TrainedModel.load(Path(scratch))
        if RESULT_FILE in files:
            return json.loads(files[RESULT_FILE])
    except Exception as error:  # a decoder's own error type says little; name the artifact
        raise CorruptArtifactError(f"artifact {where} cannot be decoded: {error}") from error
    raise CorruptArtifactError(f"artifact {where} holds none of {TABLE_FILE}, {SUMMARY_FILE}, {RESULT_FILE}")


@dataclass
class Manifest:
    fingerprint: str
    data_version: str
    files: dict[str, dict[str, Any]]  # relative path -> {sha256, bytes}
    metadata: dict[str, Any] = field(default_factory=dict)  # plain, replayable materialization metadata
    checks: list[dict[str, Any]] = field(default_factory=list)  # check outcomes, replayed on cache hits
    provenance: dict[str, Any] = field(default_factory=dict)  # code version, config, inputs, run id, time
    inline: dict[str, str] = field(default_factory=dict)  # relative path -> base64, for a small artifact's files

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, indent=2, sort_keys=True, default=str).encode()


def commit_artifact(store: ArtifactStore, prefix: str, value: Any, manifest: Manifest) -> Manifest:
    """Files (in parallel where the backend can), then manifest, or for a small artifact the
    manifest holding its files: the artifact exists under its fingerprint, not yet published.

    When another run has already committed the same fingerprint intact, that one is kept rather
    than rewriting files its readers may be verifying; either way the committed manifest returns.
    The files are written only where absent (S3's conditional PUT), so a new fingerprint, the
    usual case, costs no request to find out that nothing is there; only a fingerprint with files
    already is looked at, and rewritten when they are not an intact artifact (a crash between
    files and manifest, a corrupt file).
    """
    files = encode_value(value)
    manifest.files = {name: {"sha256": content_sha256(data), "bytes": len(data)} for name, data in files.items()}
    if TABLE_FILE not in files and sum(len(data) for data in files.values()) <= INLINE_ARTIFACT_BYTES:
        manifest.inline = {name: base64.b64encode(data).decode("ascii") for name, data in files.items()}
        return _commit_manifest(store, prefix, manifest, holds_files=True)
    objects = {file_key(prefix, manifest.fingerprint, name): data for name, data in files.items()}
    created = store.create_many_if_absent(objects)
    if not all(created.values()):
        committed, _ = find_intact_manifest(store, prefix, manifest.fingerprint)
        if committed is not None:
            return committed
        store.put_many({key: data for key, data in objects.items() if not created[key]})
    return _commit_manifest(store, prefix, manifest, holds_files=False)


def _commit_manifest(store: ArtifactStore, prefix: str, manifest: Manifest, holds_files: bool) -> Manifest:
    """Write the manifest. One that holds its files is written only where absent, as files are:
    an intact artifact another run committed under the fingerprint is kept, and returned."""
    key = manifest_key(prefix, manifest.fingerprint)
    data = manifest.to_json()
    written = holds_files and store.create_if_absent(key, data)
    if holds_files and not written:
        committed, _ = find_intact_manifest(store, prefix, manifest.fingerprint)
        if committed is not None:
            return committed
    if not written:
        store.put_bytes(key, data)
    # What the store now holds under the key, so this machine's next load does not ask for it.
    _remember(store, key, data)
    return manifest


def write_artifact(store: ArtifactStore, prefix: str, value: Any, manifest: Manifest) -> None:
    """Commit and publish: files, then manifest, then pointer."""
    point_to(store, prefix, commit_artifact(store, prefix, value, manifest))


def blocking_failures(manifest: Manifest) -> list[str]:
    return sorted(check["check_name"] for check in manifest.checks if check.get("blocking") and not check["passed"])


def point_to(store: ArtifactStore, prefix: str, manifest: Manifest) -> None:
    pointer = {
        "fingerprint": manifest.fingerprint,
        "data_version": manifest.data_version,
        # Dagster stores an output before a failing blocking check stops the step; the flag keeps
        # any later run from building on it.
        "blocked_by": blocking_failures(manifest),
        "updated": datetime.now(UTC).isoformat(),
    }
    store.put_json(pointer_key(prefix), pointer)


def _parse_manifest(store: ArtifactStore, key: str, data: bytes) -> Manifest:
    try:
        raw = json.loads(data)
    except ValueError as error:
        raise CorruptArtifactError(f"artifact {store.uri(key)} is not valid JSON: {error}") from error
    try:
        return Manifest(**raw)
    except TypeError as error:
        raise CorruptArtifactError(f"manifest {store.uri(key)} is malformed: {error}") from error


def _cache_name(store: ArtifactStore, key: str) -> str:
    """A manifest's name in a read cache: its key in its store (one cache may serve several)."""
    return f"{store.location}\n{key}"


def _remember(store: ArtifactStore, key: str, data: bytes) -> None:
    if store.read_cache is not None:
        store.read_cache.write_named(_cache_name(store, key), data)


def read_manifest(store: ArtifactStore, prefix: str, fingerprint: str) -> Manifest:
    """The manifest as the store holds it now."""
    return _stored_manifest(store, prefix, fingerprint)[0]


def _stored_manifest(store: ArtifactStore, prefix: str, fingerprint: str) -> tuple[Manifest, bytes]:
    key = manifest_key(prefix, fingerprint)
    data = store.get_bytes(key)
    return _parse_manifest(store, key, data), data


def _cached_manifest(store: ArtifactStore, prefix: str, fingerprint: str, cached: bool = True) -> tuple[Manifest, bool]:
    """The manifest from the store's read cache (unless not `cached`), else from the store, then
    cached; and whether it came from the cache."""
    cache = store.read_cache
    key = manifest_key(prefix, fingerprint)
    data = cache.read_named(_cache_name(store, key)) if cache is not None and cached else None
    if data is not None:
        try:
            return _parse_manifest(store, key, data), True
        except CorruptArtifactError:  # cached as the store had it: the store may hold a fixed one
            pass
    manifest, data = _stored_manifest(store, prefix, fingerprint)
    _remember(store, key, data)
    return manifest, False


def _verified(store: ArtifactStore, key: str, data: bytes, expected: dict[str, Any], within: str = "") -> bytes:
    if len(data) != expected["bytes"] or content_sha256(data) != expected["sha256"]:
        raise CorruptArtifactError(
            f"artifact {store.uri(key)}{within} is corrupt: "
            f"{len(data)} bytes with sha256 {content_sha256(data)[:12]}…, "
            f"manifest says {expected['bytes']} bytes with sha256 {expected['sha256'][:12]}…; "
            "rematerialize it to recompute"
        )
    return data


def _read_files(
    store: ArtifactStore, prefix: str, manifest: Manifest, names: list[str], from_cache: bool
) -> dict[str, bytes]:
    """The named files, each verified against the manifest; those not taken from the read cache
    (`from_cache`) are read from the store together, and cached once verified."""
    cache = store.read_cache
    files: dict[str, bytes] = {}
    for name in names:
        expected = manifest.files[name]
        if name in manifest.inline:
            files[name] = _inline_file(store, prefix, manifest, name)
            continue
        # A cached entry is verified against its name, which is the manifest's checksum.
        data = cache.read_content(expected["sha256"]) if cache is not None and from_cache else None
        if data is not None and len(data) == expected["bytes"]:
            files[name] = data
    keys = {name: file_key(prefix, manifest.fingerprint, name) for name in names if name not in files}
    fetched = store.get_many(list(keys.values()))
    for name, key in keys.items():
        files[name] = _verified(store, key, fetched[key], manifest.files[name])
        if cache is not None:
            cache.write_content(manifest.files[name]["sha256"], files[name])
    return {name: files[name] for name in names}


def _inline_file(store: ArtifactStore, prefix: str, manifest: Manifest, name: str) -> bytes:
    """A file the manifest holds, verified against the manifest's own checksum of it."""
    key = manifest_key(prefix, manifest.fingerprint)
    within = f" ({name} inside it)"
    try:
        data = base64.b64decode(manifest.inline[name], validate=True)
    except (binascii.Error, TypeError, ValueError) as error:
        raise CorruptArtifactError(f"artifact {store.uri(key)}{within} is corrupt: not base64 ({error})") from error
    return _verified(store, key, data, manifest.files[name], within)


def read_verified_files(store: ArtifactStore, prefix: str, manifest: Manifest) -> dict[str, bytes]:
    """Every file of the artifact from the store itself (never a cached copy), verified."""
    return _read_files(store, prefix, manifest, list(manifest.files), from_cache=False)


def read_artifact_files(
    store: ArtifactStore, prefix: str, fingerprint: str, names: list[str] | None = None
) -> dict[str, bytes]:
    """The files of a committed artifact (all, or `names`), verified, through the store's read
    cache: a fingerprint already read costs no request."""
    manifest, cached = _cached_manifest(store, prefix, fingerprint)
    try:
        return _read_files(store, prefix, manifest, _known(store, prefix, manifest, names), from_cache=True)
    except (CorruptArtifactError, ArtifactNotFoundError):
        if not cached:
            raise
    # A rerun that found this fingerprint corrupt rewrote its objects after we cached the
    # manifest: the store's manifest decides.
    manifest, _ = _cached_manifest(store, prefix, fingerprint, cached=False)
    return _read_files(store, prefix, manifest, _known(store, prefix, manifest, names), from_cache=True)


def _known(store: ArtifactStore, prefix: str, manifest: Manifest, names: list[str] | None) -> list[str]:
    if names is None:
        return list(manifest.files)
    for name in names:
        if name not in manifest.files:
            raise CorruptArtifactError(
                f"artifact {store.uri(fingerprint_directory(prefix, manifest.fingerprint))} has no {name}"
            )
    return names


def find_intact_manifest(store: ArtifactStore, prefix: str, fingerprint: str) -> tuple[Manifest | None, str]:
    """The manifest of a stored artifact whose files all verify, or None and why not. Reads the
    store, not the read cache: the answer decides whether the stored artifact is reused."""
    try:
        manifest, data = _stored_manifest(store, prefix, fingerprint)
        read_verified_files(store, prefix, manifest)
    except ArtifactNotFoundError:
        return None, "not stored"
    except CorruptArtifactError as error:
        return None, str(error)
    # Verified as the store holds it: the freshest copy a later load on this machine can have.
    _remember(store, manifest_key(prefix, fingerprint), data)
    return manifest, "intact"


@dataclass(frozen=True)
class ArtifactHandle:
    """An upstream artifact, not yet loaded: its data version is known without reading its data,
    so a cache hit downstream costs one small read per input."""

    store: ArtifactStore
    prefix: str
    fingerprint: str
    data_version: str

    @classmethod
    def current(cls, store: ArtifactStore, prefix: str) -> ArtifactHandle:
        """The artifact downstream assets should read; refuses one that failed a blocking check."""
        try:
            pointer = store.get_json(pointer_key(prefix))
        except ArtifactNotFoundError:
            raise ArtifactNotFoundError(f"nothing stored at {store.uri(prefix)}; materialize it first") from None
        if not isinstance(pointer, dict) or not {"fingerprint", "data_version"} <= pointer.keys():
            raise CorruptArtifactError(f"pointer {store.uri(pointer_key(prefix))} is malformed; rematerialize {prefix}")
        if pointer.get("blocked_by"):
            raise BlockedArtifactError(
                f"{prefix} failed blocking checks {pointer['blocked_by']} (fingerprint {pointer['fingerprint']}); "
                f"fix its input and rematerialize it before anything downstream"
            )
        return cls(store, prefix, pointer["fingerprint"], pointer["data_version"])

    def load(self) -> Any:
        files = read_artifact_files(self.store, self.prefix, self.fingerprint)
        return decode_value(files, self.store.uri(fingerprint_directory(self.prefix, self.fingerprint)))

    def load_json(self, name: str) -> Any:
        """One JSON file of the artifact (a model's summary.json), verified against the manifest,
        without reading or decoding the rest: a reader of scores never loads the model itself."""
        files = read_artifact_files(self.store, self.prefix, self.fingerprint, [name])
        return json.loads(files[name])


def latest_failure(store: ArtifactStore, prefix: str) -> dict[str, Any] | None:
    """Why the partition at `prefix` failed, when its latest attempt failed after its pointer
    last moved (`error`, `run_id`, `at`); None when it never failed or has succeeded since."""
    try:
        failure = store.get_json(failure_key(prefix))
    except ArtifactStoreError:
        return None
    try:
        updated = store.get_json(pointer_key(prefix)).get("updated", "")
    except ArtifactStoreError:
        updated = ""
    return failure if isinstance(failure, dict) and str(failure.get("at", "")) > str(updated) else None


def read_value(store: ArtifactStore, prefix: str) -> Any:
    """The current value stored for an asset partition (for tools and tests outside Dagster)."""
    return ArtifactHandle.current(store, prefix).load()


@dataclass
class StoredArtifact:
    """What an asset hands its IO manager: an artifact already committed under its fingerprint
    (computed in this step, or a cache hit). The IO manager publishes it by moving the pointer."""

    manifest: Manifest
    is_cache_hit: bool = False


@dataclass
class StoredArtifacts:
    """A ranged run's output (a BackfillPolicy run over many partitions): one committed artifact
    per partition key, each published by the IO manager under its own partition's pointer."""

    by_partition: dict[str, StoredArtifact]


# An input as an asset with a BackfillPolicy receives it: one handle in a single-partition run,
# every upstream partition of the range, keyed by partition, in a ranged run.
HandleOrRange = ArtifactHandle | dict[str, ArtifactHandle]


# One writer per fingerprint. Two runs of one partition at once (two `make demo`, a UI launch
# beside the automation, a retry beside a live first attempt) would otherwise interleave one
# writer's files with the other's manifest and track the same model twice in MLflow.
CLAIM_LEASE_SECONDS = 120.0
CLAIM_POLL_SECONDS = 1.0


class _Lease:
    """A held claim, renewed in the background until released, so only a dead holder's claim
    expires."""

    def __init__(self, store: ArtifactStore, key: str, owner: str, lease_seconds: float) -> None:
        self.store, self.key, self.owner, self.lease_seconds = store, key, owner, lease_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"claim {key}", daemon=True)

    def payload(self) -> bytes:
        expires = datetime.now(UTC).timestamp() + self.lease_seconds
        return json.dumps({"owner": self.owner, "expires": expires}).encode()

    def start(self) -> None:
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_seconds / 4):
            try:
                if _claim_of(self.store, self.key).get("owner") == self.owner:
                    self.store.put_bytes(self.key, self.payload())
            except ArtifactStoreError:  # the store is down: the next renewal tries again
                continue

    def release(self) -> None:
        self._stop.set()
        try:
            if _claim_of(self.store, self.key).get("owner") == self.owner:
                self.store.delete(self.key)
        except ArtifactStoreError:  # left to expire
            pass


def _claim_of(store: ArtifactStore, key: str) -> dict[str, Any]:
    try:
        claim = json.loads(store.get_bytes(key))
    except ArtifactNotFoundError:
        return {}
    except ValueError:  # half-readable: treat as expired
        return {"owner": "?", "expires": 0}
    return claim if isinstance(claim, dict) else {"owner": "?", "expires": 0}


def _holder_is_dead(owner: str) -> bool:
    """A holder on this host whose process is gone (killed mid-write) need not be waited out."""
    parts = owner.split(":")
    if len(parts) < 4 or parts[-3] != socket.gethostname():
        return False
    try:
        os.kill(int(parts[-2]), 0)
    except ProcessLookupError:
        return True
    except (ValueError, PermissionError):
        return False
    return False


@contextmanager
def claimed(
    store: ArtifactStore,
    prefix: str,
    fingerprint: str,
    owner: str,
    on_wait: Callable[[str], None] = lambda _: None,
    lease_seconds: float = CLAIM_LEASE_SECONDS,
) -> Iterator[None]:
    """Hold the right to write `prefix/fingerprint` (files, manifest, tracking) alone. Waits while
    another live writer holds it; takes over a claim whose holder stopped renewing it. The
    caller looks at the store again once inside: the other writer's result may be there."""
    key = claim_key(prefix, fingerprint)
    owner = f"{owner}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    lease = _Lease(store, key, owner, lease_seconds)
    waited = False
    while True:
        # A create whose answer was lost and retried says "exists", though the claim is ours.
        if store.create_if_absent(key, lease.payload()) or _claim_of(store, key).get("owner") == owner:
            break
        holder = _claim_of(store, key)
        if holder and (
            float(holder.get("expires", 0)) < datetime.now(UTC).timestamp()
            or _holder_is_dead(str(holder.get("owner", "")))
        ):
            on_wait(f"claim on {store.uri(key)} by {holder.get('owner')} expired or its process died; taking over")
            store.delete(key)
            continue
        if not waited:
            on_wait(
                f"{store.uri(fingerprint_directory(prefix, fingerprint))} is being written by "
                f"{holder.get('owner', 'another run')}; waiting for its result"
            )
            waited = True
        time.sleep(CLAIM_POLL_SECONDS)
    lease.start()
    try:
        yield
    finally:
        lease.release()
