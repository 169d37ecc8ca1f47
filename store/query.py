"""Small helpers the store's modules share to run a query and shape its rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any, TypeVar

import psycopg
from psycopg.rows import class_row, tuple_row

T = TypeVar("T")


def columns(record: type[Any]) -> str:
    """The record's fields as a select list, in the dataclass's order."""
    return ", ".join(f.name for f in fields(record))


def one(
    conn: psycopg.Connection, record: type[T], sql: str, params: Sequence[Any] | dict[str, Any]
) -> T | None:
    """The first row as a `record`, or None."""
    with conn.cursor(row_factory=class_row(record)) as cur:
        cur.execute(sql, params)  # type: ignore[arg-type]
        return cur.fetchone()


def value(conn: psycopg.Connection, sql: str, params: Sequence[Any]) -> Any:
    """Return the first column of the first row, or None (whatever the connection's rows are)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(sql, params)  # type: ignore[arg-type]
        row = cur.fetchone()
        return row[0] if row else None


def all_rows(conn: psycopg.Connection, record: type[T], sql: str, params: Sequence[Any]) -> list[T]:
    """Every row as a `record`."""
    with conn.cursor(row_factory=class_row(record)) as cur:
        cur.execute(sql, params)  # type: ignore[arg-type]
        return cur.fetchall()
