"""The SQL of date notices: which saved dates may be due one, and the once-per-occurrence record.

A date notice is the message a user gets shortly before one of their saved dates
(`server.jobs.date_notices`). `date_notices` holds one row per important date and occurrence, unique
on the pair; the row and the notice's outbox message are written in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import class_row

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class DueDate:
    """A saved date that may be due a notice, with its person and the user it belongs to."""

    id: int
    kind: str
    month: int
    day: int
    year: int | None
    yearly: bool
    label: str
    person: str
    relation: str
    user_id: UUID
    user_timezone: str | None
    user_locale: str | None


def tenant_ids(conn: Conn) -> list[UUID]:
    """Return every tenant's id (the connection must have the platform scope)."""
    return [row["id"] for row in conn.execute("select id from tenants order by created_at, id")]


def dates_falling_on(conn: Conn, days: Sequence[date]) -> list[DueDate]:
    """Return the saved dates of reachable users that may fall on one of `days`, not noticed yet.

    Matched by month and day (the 29th of February also on the 28th, for years without one);
    the caller decides, in each user's time zone, which occurrence is due. Users who opted out
    or are disabled are left out. The connection must be scoped to one tenant.
    """
    month_days = {(d.month, d.day) for d in days}
    month_days |= {(2, 29) for d in days if (d.month, d.day) == (2, 28)}
    months, mdays = [m for m, _ in month_days], [d for _, d in month_days]
    with conn.cursor(row_factory=class_row(DueDate)) as cur:
        cur.execute(
            """select d.id, d.kind, d.month, d.day, d.year, d.yearly, d.label,
                      p.name as person, p.relation, u.id as user_id,
                      u.timezone as user_timezone, u.locale as user_locale
               from important_dates d
               join unnest(%s::smallint[], %s::smallint[]) as md(month, day)
                 on md.month = d.month and md.day = d.day
               join people p on p.tenant_id = d.tenant_id and p.id = d.person_id
               join users u on u.tenant_id = p.tenant_id and u.id = p.user_id
               where u.enabled and u.opted_out_at is null
                 and not exists (select 1 from date_notices n
                                 where n.important_date_id = d.id and n.occurs_on = any(%s))
               order by u.id, d.id""",
            (months, mdays, list(days)),
        )
        return cur.fetchall()


def claim_notice(conn: Conn, tenant_id: UUID, date_id: int, occurs_on: date) -> int | None:
    """Record that date `date_id`'s occurrence on `occurs_on` is being noticed; return the row's
    id, or None when it was already (a racing transaction waits for the first to finish)."""
    row = conn.execute(
        """insert into date_notices (tenant_id, important_date_id, occurs_on)
           select %s, d.id, %s from important_dates d where d.id = %s
           on conflict (important_date_id, occurs_on) do nothing
           returning id""",
        (tenant_id, occurs_on, date_id),
    ).fetchone()
    return None if row is None else int(row["id"])


def attach_message(conn: Conn, notice_id: int, message_id: int) -> None:
    """Link a notice to the outbox message that carries it."""
    conn.execute("update date_notices set message_id = %s where id = %s", (message_id, notice_id))
