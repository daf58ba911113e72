"""Content hashes: data versions that change exactly when the content changes."""
from __future__ import annotations

import hashlib
import json
from typing import Any

import polars as pl


def table_fingerprint(table: pl.DataFrame) -> str:
    """SHA-256 over column names, dtypes and values (not over Parquet bytes, which vary with writer versions)."""
    digest = hashlib.sha256()
    for name, column in table.to_dict().items():
        digest.update(f"{name}:{column.dtype}".encode())
        digest.update(column.to_arrow().to_string().encode() if column.dtype == pl.String else column.to_physical().to_numpy().tobytes())
    return digest.hexdigest()[:24]


def value_fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:24]
