"""The SQL of the finance tools: a user's money entries, their totals and their deletion.

Every function takes a connection scoped to the tenant, inside the caller's transaction, and
names the user explicitly: row-level security keeps tenants apart, the `user_id` filter keeps
one user's entries from another's. Entries are soft-deleted (`deleted_at`), so a repeated
delete can be answered as the first one was.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from uuid import UUID

import psycopg

from store.query import all_rows, columns, one


@dataclass(frozen=True)
class Entry:
    """One income or expense of a user."""

    id: int
    kind: str
    amount: Decimal
    currency: str
    category: str
    description: str
    occurred_on: date


@dataclass(frozen=True)
class LockedEntry(Entry):
    """An entry read for deletion, with who deleted it (a tool call key), if anyone did."""

    deleted_at: datetime | None
    deleted_by_tool_call_id: str | None


@dataclass(frozen=True)
class Totals:
    """Income and expenses in one currency over a period."""

    currency: str
    income: Decimal
    expenses: Decimal


@dataclass(frozen=True)
class CategoryTotal:
    """Expenses in one category and currency over a period."""

    category: str
    currency: str
    total: Decimal
    entries: int


_ENTRY = columns(Entry)
_LOCKED = columns(LockedEntry)
Id = UUID | str


def insert_entry(
    conn: psycopg.Connection,
    tenant_id: Id,
    user_id: Id,
    *,
    kind: str,
    amount: Decimal,
    currency: str,
    category: str,
    description: str,
    occurred_on: date,
    tool_call_id: str,
) -> Entry | None:
    """Store a new entry; None when this tool call already stored one."""
    return one(
        conn,
        Entry,
        f"""insert into finance_entries (tenant_id, user_id, kind, amount, currency, category,
                description, occurred_on, tool_call_id)
            values (%s, %s, %s, %s, %s, %s, %s, %s, %s)
            on conflict (tenant_id, tool_call_id) do nothing
            returning {_ENTRY}""",
        (tenant_id, user_id, kind, amount, currency, category, description, occurred_on,
         tool_call_id),
    )  # fmt: skip


def entry_by_call(
    conn: psycopg.Connection, tenant_id: Id, user_id: Id, tool_call_id: str
) -> Entry | None:
    """Return the entry the tool call `tool_call_id` stored for this user, if any."""
    return one(
        conn,
        Entry,
        f"""select {_ENTRY} from finance_entries
            where tenant_id = %s and user_id = %s and tool_call_id = %s""",
        (tenant_id, user_id, tool_call_id),
    )


def totals(
    conn: psycopg.Connection, tenant_id: Id, user_id: Id, first: date, last: date
) -> list[Totals]:
    """Sum the user's live entries from `first` to `last` (inclusive), per currency."""
    return all_rows(
        conn,
        Totals,
        """select currency,
                  coalesce(sum(amount) filter (where kind = 'income'), 0) as income,
                  coalesce(sum(amount) filter (where kind = 'expense'), 0) as expenses
           from finance_entries
           where tenant_id = %s and user_id = %s and deleted_at is null
             and occurred_on between %s and %s
           group by currency order by currency""",
        (tenant_id, user_id, first, last),
    )


def expenses_by_category(
    conn: psycopg.Connection, tenant_id: Id, user_id: Id, first: date, last: date
) -> list[CategoryTotal]:
    """Total the user's live expenses from `first` to `last` per stored category, largest first.

    Categories are as stored: older entries may hold a synonym the caller still has to merge.
    """
    return all_rows(
        conn,
        CategoryTotal,
        """select category, currency, sum(amount) as total, count(*) as entries
           from finance_entries
           where tenant_id = %s and user_id = %s and deleted_at is null
             and kind = 'expense' and occurred_on between %s and %s
           group by category, currency order by sum(amount) desc, category""",
        (tenant_id, user_id, first, last),
    )


def recent_entries(conn: psycopg.Connection, tenant_id: Id, user_id: Id, limit: int) -> list[Entry]:
    """Return the user's `limit` latest live entries, newest first."""
    return all_rows(
        conn,
        Entry,
        f"""select {_ENTRY} from finance_entries
            where tenant_id = %s and user_id = %s and deleted_at is null
            order by occurred_on desc, id desc limit %s""",
        (tenant_id, user_id, limit),
    )


def lock_entry(
    conn: psycopg.Connection, tenant_id: Id, user_id: Id, entry_id: int
) -> LockedEntry | None:
    """Read and lock one of the user's entries (deleted or not) for a deletion to decide on."""
    return one(
        conn,
        LockedEntry,
        f"""select {_LOCKED} from finance_entries
            where tenant_id = %s and user_id = %s and id = %s for update""",
        (tenant_id, user_id, entry_id),
    )


def delete_entry(conn: psycopg.Connection, entry_id: int, tool_call_id: str) -> None:
    """Soft-delete an entry (locked with `lock_entry`), remembering which tool call did."""
    conn.execute(
        """update finance_entries set deleted_at = now(), deleted_by_tool_call_id = %s
           where id = %s""",
        (tool_call_id, entry_id),
    )
