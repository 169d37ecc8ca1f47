"""The SQL of reminders: scheduling, listing and cancelling them, and their delivery.

A reminder row is the truth about a reminder; its delivery job (RQ) only acts on it. The tools
schedule and cancel (`tools.reminders`), the job locks the row to deliver it once
(`server.jobs.reminders`), and the relay's sweep claims the reminders whose job went missing.
Every function runs in the caller's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import psycopg

from store.query import all_rows, one

Id = UUID | str


@dataclass(frozen=True)
class Scheduled:
    """A reminder as its scheduling answers it: its number, time and job correlation id."""

    id: int
    due_at: datetime
    correlation_id: str


@dataclass(frozen=True)
class Listed:
    """A reminder still to be sent, as the user sees it listed."""

    id: int
    text: str
    due_at: datetime


@dataclass(frozen=True)
class Reminder:
    """A reminder locked for a decision (cancel or deliver); `due` is the database's clock."""

    id: int
    user_id: UUID
    text: str
    status: str
    error: str | None
    due_at: datetime
    due: bool
    cancelled_by_tool_call_id: str | None


@dataclass(frozen=True)
class Claimed:
    """An overdue reminder the sweep claimed, to queue its delivery job again."""

    id: int
    tenant_id: UUID
    correlation_id: str


_LOCKED = """select id, user_id, text, status, error, due_at, due_at <= now() as due,
                    cancelled_by_tool_call_id
             from reminders"""


def insert_reminder(
    conn: psycopg.Connection,
    tenant_id: Id,
    user_id: Id,
    *,
    text: str,
    due_at: datetime,
    correlation_id: str,
    tool_call_id: str,
) -> Scheduled | None:
    """Store a scheduled reminder; None when this tool call already stored one."""
    return one(
        conn,
        Scheduled,
        """insert into reminders (tenant_id, user_id, text, due_at, correlation_id, tool_call_id)
           values (%s, %s, %s, %s, %s, %s)
           on conflict (tenant_id, tool_call_id) do nothing
           returning id, due_at, correlation_id""",
        (tenant_id, user_id, text, due_at, correlation_id, tool_call_id),
    )


def reminder_by_call(
    conn: psycopg.Connection, tenant_id: Id, user_id: Id, tool_call_id: str
) -> Scheduled | None:
    """Return the reminder the tool call `tool_call_id` stored for this user, if any."""
    return one(
        conn,
        Scheduled,
        """select id, due_at, correlation_id from reminders
           where tenant_id = %s and user_id = %s and tool_call_id = %s""",
        (tenant_id, user_id, tool_call_id),
    )


def mark_enqueued(conn: psycopg.Connection, reminder_id: int) -> None:
    """Record that the reminder's delivery job is queued, so the sweep leaves it alone."""
    conn.execute("update reminders set enqueued_at = now() where id = %s", (reminder_id,))


def scheduled_for_user(
    conn: psycopg.Connection, tenant_id: Id, user_id: Id, limit: int = 50
) -> list[Listed]:
    """Return the user's reminders still to be sent, soonest first."""
    return all_rows(
        conn,
        Listed,
        """select id, text, due_at from reminders
           where tenant_id = %s and user_id = %s and status = 'scheduled'
           order by due_at, id limit %s""",
        (tenant_id, user_id, limit),
    )


def lock_users_reminder(
    conn: psycopg.Connection, tenant_id: Id, user_id: Id, reminder_id: int
) -> Reminder | None:
    """Read and lock one of the user's reminders, whatever its status."""
    return one(
        conn,
        Reminder,
        f"{_LOCKED} where tenant_id = %s and user_id = %s and id = %s for update",
        (tenant_id, user_id, reminder_id),
    )


def cancel(conn: psycopg.Connection, reminder_id: int, tool_call_id: str) -> None:
    """Cancel a reminder (locked, still scheduled), remembering which tool call did."""
    conn.execute(
        """update reminders set status = 'cancelled', cancelled_by_tool_call_id = %s,
               finished_at = now()
           where id = %s""",
        (tool_call_id, reminder_id),
    )


def lock_reminder(conn: psycopg.Connection, reminder_id: int) -> Reminder | None:
    """Read and lock a reminder for its delivery, so a cancel and a delivery never both win."""
    return one(conn, Reminder, f"{_LOCKED} where id = %s for update", (reminder_id,))


def mark_failed(conn: psycopg.Connection, reminder_id: int, error: str) -> None:
    """Record that the reminder could not be delivered, and why."""
    conn.execute(
        """update reminders set status = 'failed', error = %s, finished_at = now()
           where id = %s""",
        (error, reminder_id),
    )


def mark_delivered(
    conn: psycopg.Connection, reminder_id: int, message_id: int, conversation_id: UUID
) -> None:
    """Record that the reminder's message is in the outbox of `conversation_id`."""
    conn.execute(
        """update reminders set status = 'delivered', delivered_message_id = %s,
               conversation_id = %s, error = null, finished_at = now()
           where id = %s""",
        (message_id, conversation_id, reminder_id),
    )


def claim_overdue(
    conn: psycopg.Connection, grace: float, stale_after: float, limit: int
) -> list[Claimed]:
    """Claim, across tenants, up to `limit` scheduled reminders overdue by `grace` s whose job
    was lost (queued before their time, or by a sweep `stale_after` s ago); the claim stamps
    them as queued, in the caller's transaction."""
    # body: store/migrations/0004_brain.sql
    return all_rows(
        conn,
        Claimed,
        "select id, tenant_id, correlation_id from claim_due_reminders(%s, %s, %s)",
        (grace, stale_after, limit),
    )
