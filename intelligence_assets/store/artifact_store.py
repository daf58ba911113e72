"""One artifact store interface, one key layout, several backends.

Keys are POSIX-style relative paths (`features/AAPL/<fingerprint>/data.parquet`). Every
backend writes atomically: a reader sees either the previous object or the complete new one,
never a partial write. How values become bytes is `artifacts.py`'s business, identical for
every backend; the JSON helpers here serve small records such as pointers and manifests.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from intelligence_assets.store.atomic_files import PARTIAL_SUFFIX, write_atomically, written_beside
from intelligence_assets.store.read_cache import ReadCache


class ArtifactStoreError(Exception):
    """Base of every error an artifact store raises on purpose, whatever the backend."""


class ArtifactNotFoundError(ArtifactStoreError, KeyError):
    """No object is stored under the key."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else "artifact not found"


class CorruptArtifactError(ArtifactStoreError, ValueError):
    """An object exists but cannot be decoded as what it claims to be."""


@dataclass(frozen=True)
class StoredObject:
    """One stored object as a listing sees it: enough to account for storage without reading it."""

    key: str
    bytes: int
    modified: datetime  # UTC, timezone-aware


def validate_key(key: str) -> str:
    path = PurePosixPath(key)
    if not key or path.is_absolute() or ".." in path.parts or key.endswith("/"):
        raise ValueError(f"invalid artifact key {key!r}: must be a relative path without '..'")
    return key


class ArtifactStore(ABC):
    """Bytes under keys, plus typed helpers shared by all backends."""

    # Verified local copies of immutable objects, for a backend whose every read is a round trip
    # (`S3ArtifactStore`); a local directory is the disk already.
    read_cache: ReadCache | None = None

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the store lives, for logs and metadata (no credentials)."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Raises ArtifactNotFoundError when absent."""

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        """Several objects by key, as `get_bytes` reads each; a backend may read them in parallel."""
        return {key: self.get_bytes(key) for key in keys}

    def put_many(self, objects: Mapping[str, bytes]) -> None:
        """Several objects, all written when this returns; a backend may write them in parallel."""
        for key, data in objects.items():
            self.put_bytes(key, data)

    @abstractmethod
    def create_if_absent(self, key: str, data: bytes) -> bool:
        """Write `key` only if no object is there, atomically: of several writers racing for
        one key exactly one gets True. The primitive behind claims (`artifacts.claimed`)."""

    def create_many_if_absent(self, objects: Mapping[str, bytes]) -> dict[str, bool]:
        """`create_if_absent` for each object: key -> whether this call wrote it. A backend may
        write them in parallel."""
        return {key: self.create_if_absent(key, data) for key, data in objects.items()}

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list_objects(self, prefix: str) -> list[StoredObject]:
        """Every object under `prefix` (a folder-like prefix; no trailing slash needed; "" is the
        whole store) with its size and modification time, sorted by key."""

    def list_keys(self, prefix: str) -> list[str]:
        """All keys under `prefix` (a folder-like prefix; no trailing slash needed), sorted."""
        return [stored.key for stored in self.list_objects(prefix)]

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def uri(self, key: str) -> str: ...

    def put_json(self, key: str, value: Any) -> None:
        self.put_bytes(key, json.dumps(value, indent=2, sort_keys=True, allow_nan=False).encode())

    def get_json(self, key: str) -> Any:
        data = self.get_bytes(key)
        try:
            return json.loads(data)
        except ValueError as error:
            raise CorruptArtifactError(f"artifact {self.uri(key)} is not valid JSON: {error}") from error


class LocalArtifactStore(ArtifactStore):
    """A directory with the same layout as the S3 bucket; write-then-rename makes puts atomic."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()

    @property
    def location(self) -> str:
        return self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def put_bytes(self, key: str, data: bytes) -> None:
        write_atomically(self._path(key), data)

    def create_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        temporary = written_beside(path, data)
        try:
            # A hard link never replaces an existing name: the filesystem picks one winner.
            os.link(temporary, path)
            return True
        except FileExistsError:
            return False
        finally:
            temporary.unlink(missing_ok=True)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ArtifactNotFoundError(f"no artifact at {self.uri(key)}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_objects(self, prefix: str) -> list[StoredObject]:
        folder = prefix.rstrip("/")
        base = self.root / validate_key(folder) if folder else self.root
        if not base.is_dir():
            return []
        listed = []
        for path in base.rglob("*"):
            # A write in progress (or one a crash left behind), not an object.
            if path.name.endswith(PARTIAL_SUFFIX):
                continue
            try:
                status = path.stat()
            except FileNotFoundError:  # deleted between the directory walk and the stat
                continue
            if not path.is_file():
                continue
            listed.append(
                StoredObject(
                    key=path.relative_to(self.root).as_posix(),
                    bytes=status.st_size,
                    modified=datetime.fromtimestamp(status.st_mtime, tz=UTC),
                )
            )
        return sorted(listed, key=lambda stored: stored.key)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def uri(self, key: str) -> str:
        return (self.root / key).as_uri()
