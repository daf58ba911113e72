"""Metadata helpers: what the UI shows for each materialization."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg
import polars as pl


def _cell(value: Any) -> str | int | float | bool | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _column_type(values: list[Any]) -> str:
    present = {type(value) for value in values if value is not None}
    if present and present <= {bool}:
        return "bool"
    if present and present <= {int}:
        return "int"
    if present and present <= {int, float}:
        return "float"
    return "string"


def table_metadata(rows: Iterable[Mapping[str, Any]], columns: list[str]) -> dg.MetadataValue:
    """Rows as a Dagster table (sortable and filterable in the UI), in `columns` order, with a
    column schema of the types found."""
    cells = [{column: _cell(row.get(column)) for column in columns} for row in rows]
    schema = dg.TableSchema(
        columns=[dg.TableColumn(column, _column_type([row[column] for row in cells])) for column in columns]
    )
    return dg.MetadataValue.table([dg.TableRecord(row) for row in cells], schema)


def column_schema(frame: pl.DataFrame) -> dg.TableSchema:
    """A stored table's columns and their polars types, for `dagster/column_schema`."""
    return dg.TableSchema(columns=[dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()])


def date_range(table: pl.DataFrame, column: str = "timestamp") -> dict[str, str]:
    if table.height == 0:
        return {"first": "–", "last": "–"}
    return {"first": str(table[column].min()), "last": str(table[column].max())}
