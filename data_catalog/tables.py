"""Generic table helpers: dict rows in and out, keyed replacement, whole-table replacement.

These serve the result tables later stages fill (`models`, `metrics`, `predictions`, `splits`, and
free-form ones such as an `ablation` table). The core tables (patients, scans, artifacts, lineage,
schema_version) are written only through the typed API.
"""

import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

import duckdb

from data_catalog.codec import from_json, to_json, utc_now
from data_catalog.migrations import CORE_TABLES

Row = Mapping[str, Any]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def quote_identifier(name: str) -> str:
    """Double-quote a plain SQL identifier, refusing anything but `[A-Za-z_][A-Za-z0-9_]*`."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return f'"{name}"'


def _check_writable(name: str) -> str:
    quoted = quote_identifier(name)
    if name.lower() in CORE_TABLES:
        raise ValueError(f"table {name!r} is written through the typed Catalog API only")
    return quoted


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    """Column name -> DuckDB type of `table` in declaration order; empty if it does not exist."""
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
        [table],
    ).fetchall()
    return {str(name): str(kind) for name, kind in rows}


def fetch_dicts(result: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """The rows of an executed statement as dicts; JSON columns are parsed."""
    if result.description is None:
        return []
    names = [str(column[0]) for column in result.description]
    is_json = [str(column[1]) == "JSON" for column in result.description]
    out = []
    for row in result.fetchall():
        out.append(
            {
                name: from_json(value) if parse else value
                for name, value, parse in zip(names, row, is_json, strict=True)
            }
        )
    return out


def _value(value: Any) -> Any:
    return to_json(value) if isinstance(value, Mapping | list | tuple) else value


def insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[Row]) -> int:
    """Insert dict rows, batched: one prepared INSERT per set of columns the rows give (DuckDB's
    executemany); missing columns take their default (`created` takes now)."""
    quoted = quote_identifier(table)
    columns = table_columns(con, table)
    if not columns:
        raise ValueError(f"no table {table!r} in the catalog")
    now = utc_now()
    batches: dict[tuple[str, ...], list[list[Any]]] = {}
    for row in rows:
        unknown = sorted(set(row) - set(columns))
        if unknown:
            raise ValueError(f"table {table!r} has no columns {unknown}")
        values = dict(row)
        if "created" in columns and values.get("created") is None:
            values["created"] = now
        batches.setdefault(tuple(values), []).append([_value(v) for v in values.values()])
    for names, batch in batches.items():
        listed = ", ".join(quote_identifier(name) for name in names)
        marks = ", ".join("?" for _ in names)
        con.executemany(f"INSERT INTO {quoted} ({listed}) VALUES ({marks})", batch)
    return len(rows)


def replace_rows(
    con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[Row], where: Mapping[str, Any]
) -> int:
    """Delete the rows of `table` matching `where` (NULL matches NULL), then insert `rows`.

    Every row must agree with `where` (a missing key is filled from it), so writing the same rows
    again replaces exactly what the previous write left: the write is idempotent.
    """
    quoted = _check_writable(table)
    filled = []
    for row in rows:
        values = dict(row)
        for key, expected in where.items():
            if values.setdefault(key, expected) != expected:
                raise ValueError(f"row {row!r} does not match replacement key {key}={expected!r}")
        filled.append(values)
    if not table_columns(con, table):
        raise ValueError(f"no table {table!r} in the catalog")
    clause = " AND ".join(f"{quote_identifier(key)} IS NOT DISTINCT FROM ?" for key in where) or "TRUE"
    con.execute(f"DELETE FROM {quoted} WHERE {clause}", list(where.values()))
    return insert_rows(con, table, filled)


def _sql_type(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "BIGINT"
    if isinstance(value, float):
        return "DOUBLE"
    if isinstance(value, str):
        return "TEXT"
    if isinstance(value, datetime):
        return "TIMESTAMP"
    if isinstance(value, date):
        return "DATE"
    if isinstance(value, Mapping | list | tuple):
        return "JSON"
    raise TypeError(f"cannot infer a column type for {type(value).__name__}: {value!r}")


def infer_types(rows: Sequence[Row]) -> dict[str, str]:
    """Column types from the rows' values (int and float mix to DOUBLE; all-None is TEXT)."""
    seen: dict[str, set[str]] = {}
    for row in rows:
        for name, value in row.items():
            kinds = seen.setdefault(name, set())
            if value is not None:
                kinds.add(_sql_type(value))
    types = {}
    for name, kinds in seen.items():
        if kinds == {"BIGINT", "DOUBLE"}:
            kinds = {"DOUBLE"}
        if len(kinds) > 1:
            raise TypeError(f"column {name!r} mixes types {sorted(kinds)}; pass types= explicitly")
        types[name] = kinds.pop() if kinds else "TEXT"
    return types


def write_table(
    con: duckdb.DuckDBPyConnection,
    name: str,
    rows: Sequence[Row],
    types: Mapping[str, str] | None = None,
) -> int:
    """Create or replace table `name` holding exactly `rows`.

    Args:
        con: A connection inside a transaction.
        name: A plain identifier, not one of the core tables.
        rows: Dict rows; keys missing from a row are NULL.
        types: Column -> DuckDB type, overriding inference; needed when `rows` is empty.
    """
    quoted = _check_writable(name)
    inferred = infer_types(rows)
    columns = {**inferred, **(types or {})}
    if not columns:
        raise ValueError(f"table {name!r}: no rows and no types, so no columns")
    for kind in columns.values():
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_ ()\[\],]*", kind):
            raise ValueError(f"not a column type: {kind!r}")
    spec = ", ".join(f"{quote_identifier(col)} {kind}" for col, kind in columns.items())
    con.execute(f"CREATE OR REPLACE TABLE {quoted} ({spec})")
    return insert_rows(con, name, rows)
