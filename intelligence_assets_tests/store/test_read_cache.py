"""The read cache on its own: verified entries, atomic writes, a bound, and a directory it
cannot write. Through the S3 store: `test_s3_requests.py`."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from intelligence_assets.store.read_cache import ReadCache


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_under(directory: Path) -> list[Path]:
    return sorted(path for path in directory.rglob("*") if path.is_file())


def test_entries_come_back_only_as_written(tmp_path: Path) -> None:
    cache = ReadCache(tmp_path)
    data = b"parquet bytes" * 100
    assert cache.read_content(sha256(data)) is None
    cache.write_content(sha256(data), data)
    assert cache.read_content(sha256(data)) == data
    cache.write_named("s3://bucket at http://minio:9000\nfeatures/AAPL/f1/manifest.json", b'{"files": {}}')
    assert cache.read_named("s3://bucket at http://minio:9000\nfeatures/AAPL/f1/manifest.json") == b'{"files": {}}'
    assert cache.read_named("s3://other at http://minio:9000\nfeatures/AAPL/f1/manifest.json") is None
    # Nothing half-written is ever left in place of an entry.
    assert not [path for path in files_under(tmp_path) if path.name.endswith(".partial")]


def test_an_entry_that_does_not_match_its_checksum_is_removed(tmp_path: Path, caplog) -> None:
    cache = ReadCache(tmp_path)
    data = b"x" * 1000
    cache.write_content(sha256(data), data)
    cache.write_named("manifest", b'{"a": 1}')
    for entry in files_under(tmp_path):
        entry.write_bytes(entry.read_bytes()[:-1] + b"!")
    caplog.set_level(logging.WARNING, logger="intelligence_assets.artifacts")
    assert cache.read_content(sha256(data)) is None
    assert cache.read_named("manifest") is None
    assert files_under(tmp_path) == []
    assert caplog.text.count("does not match its checksum") == 2
    # A content entry is found by its checksum only: a name that is not one finds nothing.
    assert cache.read_content("../../etc/passwd") is None


def test_the_cache_stays_within_its_bound_dropping_the_least_recently_read(tmp_path: Path) -> None:
    cache = ReadCache(tmp_path, max_bytes=64_000)
    blobs = [bytes([index]) * 3_000 for index in range(60)]  # 180 kB through a 64 kB cache
    for index, blob in enumerate(blobs):
        cache.write_content(sha256(blob), blob)
        # The first entry is read all along: recently used, so kept.
        assert index == 0 or cache.read_content(sha256(blobs[0])) == blobs[0]
        total = sum(path.stat().st_size for path in files_under(tmp_path))
        assert total <= 64_000 + 64_000 / 16  # at most one measuring interval over
    assert cache.read_content(sha256(blobs[0])) == blobs[0]
    assert cache.read_content(sha256(blobs[1])) is None  # long since evicted
    assert cache.read_content(sha256(blobs[-1])) == blobs[-1]


def test_an_object_too_large_for_the_cache_is_not_kept(tmp_path: Path) -> None:
    cache = ReadCache(tmp_path, max_bytes=16_000)
    blob = b"y" * 2_000
    cache.write_content(sha256(blob), blob)
    assert cache.read_content(sha256(blob)) is None and files_under(tmp_path) == []


def test_a_cache_that_cannot_be_written_reads_through(tmp_path: Path, caplog) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the cache directory should be")
    cache = ReadCache(blocked / "cache")
    caplog.set_level(logging.WARNING, logger="intelligence_assets.artifacts")
    for index in range(3):
        data = bytes([index]) * 100
        cache.write_content(sha256(data), data)
        assert cache.read_content(sha256(data)) is None
    assert caplog.text.count("reading through to the store") == 1  # said once, not per object


def test_the_bound_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes must be positive"):
        ReadCache(tmp_path, max_bytes=0)
