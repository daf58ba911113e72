"""Content hashes: of a table (the data version of `bars`, which changes exactly when the bars do)
and of a file's bytes (the checksum a manifest records and the read cache names entries by)."""

from __future__ import annotations

import hashlib
import json

import polars as pl


def table_fingerprint(table: pl.DataFrame) -> str:
    """SHA-256 over column names, dtypes and values (not over Parquet bytes, which vary with writer versions)."""
    digest = hashlib.sha256()
    for column in table.get_columns():
        digest.update(f"{column.name}:{column.dtype}:{column.len()}".encode())
        if column.dtype.is_numeric() or column.dtype.is_temporal() or column.dtype == pl.Boolean:
            digest.update(column.is_null().to_numpy().tobytes())
            digest.update(column.to_physical().fill_null(0).to_numpy().tobytes())
        else:
            digest.update(json.dumps(column.to_list(), default=str).encode())
    return digest.hexdigest()[:24]


def content_sha256(data: bytes) -> str:
    """The hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()
