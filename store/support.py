"""The reads of support: the handoff queue, a conversation as staff see it, and what was said
while a person had it.

The API's reads return plain dicts (they go out as JSON as they are); every function runs on a
connection scoped to the tenant, in the caller's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row, tuple_row

from store.conversations import WITH_STAFF
from store.query import all_rows, value

Row = dict[str, Any]


@dataclass(frozen=True)
class Backlog:
    """Conversations in one staff state (HANDOFF, WAITING_USER) across tenants."""

    state: str
    count: int
    oldest_seconds: float
    """How long the longest-waiting one has been in the state."""


@dataclass(frozen=True)
class Said:
    """A message of the user (while waiting for staff) or of staff, during a handoff."""

    id: int
    direction: str
    body: str


def handoff_queue(conn: psycopg.Connection, tenant_id: UUID) -> list[Row]:
    """Conversations a person has, oldest handoff first, with waiting time and last message."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """select c.id, c.state, c.handoff_at, c.handoff_reason, c.handoff_route,
                      c.claimed_by, c.claimed_at, c.last_inbound_at,
                      extract(epoch from now() - c.handoff_at)::int as waiting_seconds,
                      u.id as user_id, u.profile_name as user_name, u.wa_id,
                      (select m.body from messages m where m.conversation_id = c.id
                         and m.direction = 'inbound' order by m.id desc limit 1) as last_message
               from conversations c join users u on u.id = c.user_id
               where c.tenant_id = %s and c.state = any(%s)
               order by c.handoff_at nulls last, c.id""",
            (tenant_id, list(WITH_STAFF)),
        ).fetchall()


def conversation_head(
    conn: psycopg.Connection, tenant_id: UUID, conversation_id: UUID
) -> Row | None:
    """The conversation's state, handoff and user, as the support view heads it."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """select c.id, c.state, c.thread_id, c.handoff_at, c.handoff_reason,
                      c.handoff_route, c.claimed_by, c.claimed_at, c.staff_active_at,
                      c.last_inbound_at, c.created_at, u.id as user_id,
                      u.profile_name as user_name, u.wa_id, u.locale as user_locale
               from conversations c join users u on u.id = c.user_id
               where c.id = %s and c.tenant_id = %s""",
            (conversation_id, tenant_id),
        ).fetchone()


def messages_for_staff(conn: psycopg.Connection, conversation_id: UUID) -> list[Row]:
    """Every message of the conversation, oldest first, without the provider's raw payload."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """select to_jsonb(m) - 'payload' - 'tenant_id' as message from messages m
               where conversation_id = %s order by id""",
            (conversation_id,),
        ).fetchall()
    return [row["message"] for row in rows]


def user_memories(
    conn: psycopg.Connection, tenant_id: UUID, user_id: UUID, limit: int = 50
) -> list[Row]:
    """The user's long-term memories (LangGraph's store), most recently changed first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """select key, value ->> 'text' as text, updated_at from store
               where prefix = %s order by updated_at desc limit %s""",
            (f"{tenant_id}.{user_id}.memories", limit),
        ).fetchall()


def handoff_run(conn: psycopg.Connection, conversation_id: UUID) -> Row | None:
    """The latest run of the conversation that paused on a handoff: its route and why."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """select route, route_reason, tool_calls, created_at from ai_results
               where conversation_id = %s and interrupted order by id desc limit 1""",
            (conversation_id,),
        ).fetchone()


def staff_backlog(conn: psycopg.Connection) -> list[Backlog]:
    """Count, across tenants, the conversations a person has, per state, with the oldest wait.

    Run it inside a transaction: it takes the platform scope (row-level security shows no
    tenant's rows otherwise) until the transaction ends. Only counts and ages come back.
    """
    conn.execute("select set_config('app.platform', 'on', true)")
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            """select state, count(*),
                      coalesce(max(extract(epoch from now() - state_changed_at)), 0)
               from conversations where state = any(%s) group by state""",
            (list(WITH_STAFF),),
        ).fetchall()
    return [Backlog(state, int(count), float(oldest)) for state, count, oldest in rows]


def with_staff(conn: psycopg.Connection, tenant_id: UUID) -> list[UUID]:
    """The ids of the tenant's conversations a person has."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            "select id from conversations where tenant_id = %s and state = any(%s)",
            (tenant_id, list(WITH_STAFF)),
        ).fetchall()
    return [row[0] for row in rows]


def said_since(conn: psycopg.Connection, conversation_id: UUID, since: datetime) -> list[Said]:
    """What the user (waiting for staff) and staff said since `since`, oldest first."""
    return all_rows(
        conn,
        Said,
        """select id, direction, body from messages
           where conversation_id = %s and created_at >= %s and body <> ''
             and ((direction = 'inbound' and status = 'handoff')
                  or (direction = 'outbound' and purpose = 'staff'))
           order by id""",
        (conversation_id, since),
    )


def recent_inbound_text(conn: psycopg.Connection, conversation_id: UUID, count: int = 5) -> str:
    """The user's last `count` messages, newest first, as one text (to tell their language)."""
    text = value(
        conn,
        """select string_agg(body, ' ') from (select body from messages
           where conversation_id = %s and direction = 'inbound' order by id desc limit %s) m""",
        (conversation_id, count),
    )
    return str(text or "")
