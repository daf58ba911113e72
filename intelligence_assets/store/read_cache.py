"""A local read cache of the artifact objects that never change: S3 reads at disk speed.

Only what sits under a fingerprint directory and is named by the manifest may be cached: the
fingerprint hashes the code, config and inputs that produced the artifact, so its files are
the same for every reader. A pointer (`current.json`), a failure record, a claim or a tracking
record is never cached: those change under a fixed key. The store's reader (`artifacts.py`)
decides what goes through the cache; this module keeps the bytes.

Layout under the cache directory:

    content/<sha256[:2]>/<sha256>     a file's bytes, named by their sha256: the checksum the
                                      manifest records, so an entry is found from the manifest
                                      alone and shared by every artifact holding the same bytes
    named/<digest[:2]>/<digest>       a manifest under a hash of its store and key, its bytes
                                      after a first line holding their sha256

Entries are written to a temporary file and renamed into place, and verified when read (a
content entry against its name, a named entry against its first line). An entry that fails is
removed and reported as absent, so a torn write, a full disk or a stray edit costs a download,
never a wrong value.

The cache holds about `max_bytes`: once this process has written a sixteenth of it since it last
measured, it measures the directory and removes the least recently used entries (a read
refreshes an entry's modification time) down to 80%. Several processes may share one directory
(the steps of a multiprocess executor): each write is one rename, and a reader whose entry
another process evicted reads from the store instead. A directory that cannot be written makes
the cache read through to the store, with one warning.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path

from intelligence_assets.store.atomic_files import PARTIAL_SUFFIX, write_atomically
from intelligence_assets.store.fingerprints import content_sha256

logger = logging.getLogger("intelligence_assets.artifacts")

# A step reads a few inputs of a few megabytes each; 1 GiB keeps the inputs of many steps and
# fits in a small emptyDir on Kubernetes.
DEFAULT_MAX_BYTES = 1024**3
# The fraction of `max_bytes` kept after an eviction: room to write before the next one.
KEEP_AFTER_EVICTION = 0.8
# Written bytes (as a fraction of `max_bytes`) between two measurements of the directory.
MEASURE_EVERY = 1 / 16
CONTENT_FOLDER = "content"
NAMED_FOLDER = "named"
# A temporary file this old belongs to a writer that died: no write of one entry takes this long.
ABANDONED_WRITE_SECONDS = 3600.0


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(character in "0123456789abcdef" for character in text)


class ReadCache:
    """Verified local copies of immutable objects, bounded to about `max_bytes`."""

    def __init__(self, directory: Path | str, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._written_since_measure = 0
        # None until measured: the first write measures, since other processes may have filled it.
        self._measured_bytes: int | None = None
        self._warned = False

    def __repr__(self) -> str:
        return f"ReadCache({str(self.directory)!r}, max_bytes={self.max_bytes})"

    # ----------------------------------------------------------------- content-addressed entries

    def read_content(self, sha256: str) -> bytes | None:
        """The bytes whose sha256 is `sha256`, or None when not cached (or no longer intact)."""
        if not _is_sha256(sha256):
            return None
        path = self._content_path(sha256)
        data = self._read(path)
        if data is None:
            return None
        if content_sha256(data) != sha256:
            self._discard(path, f"content entry {path.name} does not match its checksum")
            return None
        return data

    def write_content(self, sha256: str, data: bytes) -> None:
        """Keep `data`, whose sha256 the caller has verified to be `sha256`."""
        if _is_sha256(sha256):
            self._write(self._content_path(sha256), data)

    # ------------------------------------------------------------------------------ named entries

    def read_named(self, name: str) -> bytes | None:
        """The bytes kept under `name`, or None when not cached (or no longer intact)."""
        path = self._named_path(name)
        entry = self._read(path)
        if entry is None:
            return None
        checksum, separator, data = entry.partition(b"\n")
        if not separator or checksum.decode(errors="replace") != content_sha256(data):
            self._discard(path, f"entry for {name} does not match its checksum")
            return None
        return data

    def write_named(self, name: str, data: bytes) -> None:
        self._write(self._named_path(name), content_sha256(data).encode() + b"\n" + data)

    def discard_named(self, name: str) -> None:
        """Forget `name`: its object was rewritten (a rerun healing a corrupt artifact)."""
        self._discard(self._named_path(name))

    # -------------------------------------------------------------------------------- the files

    def _content_path(self, sha256: str) -> Path:
        return self.directory / CONTENT_FOLDER / sha256[:2] / sha256

    def _named_path(self, name: str) -> Path:
        digest = content_sha256(name.encode())
        return self.directory / NAMED_FOLDER / digest[:2] / digest

    def _read(self, path: Path) -> bytes | None:
        try:
            data = path.read_bytes()
            # The modification time is the eviction order: a read keeps the entry young.
            os.utime(path)
        except FileNotFoundError:  # never written, or evicted by another process meanwhile
            return None
        except OSError as error:
            self._warn(f"cannot read {path}: {error}")
            return None
        return data

    def _write(self, path: Path, data: bytes) -> None:
        # An entry that would take a large share of the cache would evict everything else.
        if len(data) > self.max_bytes * MEASURE_EVERY:
            return
        try:
            # Not durable: an entry torn by a crash fails verification and is downloaded again.
            write_atomically(path, data, durable=False)
        except OSError as error:
            self._warn(f"cannot write {path}: {error}")
            return
        with self._lock:
            self._written_since_measure += len(data)
            due = (
                self._measured_bytes is None
                or self._written_since_measure >= self.max_bytes * MEASURE_EVERY
                or self._measured_bytes + self._written_since_measure > self.max_bytes
            )
        if due:
            self._evict()

    def _discard(self, path: Path, reason: str | None = None) -> None:
        if reason:
            logger.warning("read cache %s: %s; reading from the store instead", self.directory, reason)
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            self._warn(f"cannot remove {path}: {error}")

    def _evict(self) -> None:
        """Measure the directory; past `max_bytes`, remove the least recently used entries."""
        entries: list[tuple[float, int, Path]] = []
        for folder in (CONTENT_FOLDER, NAMED_FOLDER):
            for root, _, names in os.walk(self.directory / folder):
                for name in names:
                    path = Path(root) / name
                    try:
                        status = path.stat()
                    except OSError:  # removed meanwhile
                        continue
                    if name.endswith(PARTIAL_SUFFIX):
                        # Another process's write in progress; one a crash left behind goes.
                        if time.time() - status.st_mtime > ABANDONED_WRITE_SECONDS:
                            with contextlib.suppress(OSError):
                                path.unlink(missing_ok=True)
                        continue
                    entries.append((status.st_mtime, status.st_size, path))
        total = sum(size for _, size, _ in entries)
        if total > self.max_bytes:
            entries.sort()
            target = self.max_bytes * KEEP_AFTER_EVICTION
            for _, size, path in entries:
                if total <= target:
                    break
                try:
                    path.unlink(missing_ok=True)
                except OSError:
                    continue
                total -= size
        with self._lock:
            self._measured_bytes = total
            self._written_since_measure = 0

    def _warn(self, message: str) -> None:
        # A cache is an optimisation: it never fails a read, and says so once, not per object.
        if not self._warned:
            self._warned = True
            logger.warning("read cache %s: %s; reading through to the store", self.directory, message)
