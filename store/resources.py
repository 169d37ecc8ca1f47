"""Generic reads and writes of one table by id, for the management API's resources.

A `Table` names the table, the columns reads return (never a secret) and the column that holds
the owning tenant (`tenant_id`, or `id` for the tenants table itself). Every statement is
composed with `psycopg.sql`, so table and column names are always quoted identifiers; values
are always parameters. Rows come back as dicts, as the API returns them. The caller owns the
transaction and its scope (row-level security applies).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

Row = dict[str, Any]


@dataclass(frozen=True)
class Table:
    """A table the API reads and writes by id."""

    name: str
    columns: tuple[str, ...]
    """What reads and writes return."""

    @property
    def owner(self) -> str:
        """The column that holds the row's tenant."""
        return "id" if self.name == "tenants" else "tenant_id"


def _names(names: Iterable[str]) -> sql.Composed:
    return sql.SQL(", ").join(map(sql.Identifier, names))


def _to_db(value: Any) -> Any:
    """Adapt a value for its column: objects go to jsonb (lists of text adapt to text[])."""
    return Jsonb(value) if isinstance(value, dict) else value


def _fetch(conn: psycopg.Connection, query: sql.Composed, params: Iterable[Any]) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, list(params)).fetchall()


def list_rows(
    conn: psycopg.Connection,
    table: Table,
    *,
    tenant_id: UUID | None,
    filters: Mapping[str, str] | None = None,
    after: Any = None,
    limit: int,
) -> list[Row]:
    """Return up to `limit` rows in id order, after the id `after` when given.

    `tenant_id` None lists every tenant's rows (a platform-scoped caller); `filters` maps a
    column to the text its value must equal.
    """
    clauses: list[sql.Composable] = []
    params: list[Any] = []
    if tenant_id is not None:
        clauses.append(sql.SQL("{} = %s").format(sql.Identifier(table.owner)))
        params.append(tenant_id)
    for column, text in (filters or {}).items():
        clauses.append(sql.SQL("{}::text = %s").format(sql.Identifier(column)))
        params.append(text)
    if after is not None:
        clauses.append(sql.SQL("id > %s"))
        params.append(after)
    where = sql.SQL(" where {}").format(sql.SQL(" and ").join(clauses)) if clauses else sql.SQL("")
    query = sql.SQL("select {} from {}{} order by id limit %s").format(
        _names(table.columns), sql.Identifier(table.name), where
    )
    return _fetch(conn, query, [*params, limit])


def get_row(conn: psycopg.Connection, table: Table, tenant_id: UUID, item_id: Any) -> Row | None:
    """Return the tenant's row `item_id`, or None."""
    query = sql.SQL("select {} from {} where id = %s and {} = %s").format(
        _names(table.columns), sql.Identifier(table.name), sql.Identifier(table.owner)
    )
    rows = _fetch(conn, query, (item_id, tenant_id))
    return rows[0] if rows else None


def insert_row(conn: psycopg.Connection, table: Table, values: Mapping[str, Any]) -> Row:
    """Insert a row of column values; return it as reads do."""
    query = sql.SQL("insert into {} ({}) values ({}) returning {}").format(
        sql.Identifier(table.name),
        _names(values),
        sql.SQL(", ").join(sql.Placeholder() * len(values)),
        _names(table.columns),
    )
    return _fetch(conn, query, map(_to_db, values.values()))[0]


def update_row(
    conn: psycopg.Connection, table: Table, tenant_id: UUID, item_id: Any, values: Mapping[str, Any]
) -> Row | None:
    """Change the tenant's row `item_id` (and its `updated_at`); None when there is no such row."""
    assignments = [sql.SQL("{} = %s").format(sql.Identifier(c)) for c in values]
    assignments.append(sql.SQL("updated_at = now()"))
    query = sql.SQL("update {} set {} where id = %s and {} = %s returning {}").format(
        sql.Identifier(table.name),
        sql.SQL(", ").join(assignments),
        sql.Identifier(table.owner),
        _names(table.columns),
    )
    rows = _fetch(conn, query, [*map(_to_db, values.values()), item_id, tenant_id])
    return rows[0] if rows else None


def delete_row(conn: psycopg.Connection, table: Table, tenant_id: UUID, item_id: Any) -> bool:
    """Delete the tenant's row `item_id`; False when there is no such row."""
    query = sql.SQL("delete from {} where id = %s and {} = %s returning id").format(
        sql.Identifier(table.name), sql.Identifier(table.owner)
    )
    return bool(_fetch(conn, query, (item_id, tenant_id)))
