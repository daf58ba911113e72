"""Metadata helpers: what the UI shows for each materialization."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import dagster as dg
import polars as pl


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: Iterable[dict[str, Any]], columns: list[str]) -> dg.MetadataValue:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return dg.MetadataValue.md("\n".join(lines))


def date_range(table: pl.DataFrame, column: str = "timestamp") -> dict[str, str]:
    if table.height == 0:
        return {"first": "–", "last": "–"}
    return {"first": str(table[column].min()), "last": str(table[column].max())}
