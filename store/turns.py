"""What a turn needs to know about the messages around it: the newer ones that overtook it,
how long the user has waited, and the record that a reply was folded into the next turn."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import psycopg
from psycopg.rows import tuple_row

from store.inbox import unanswered_inbound
from store.records import Message

SUPERSEDED = "superseded"
"""The final status of inbound messages whose turn was folded into the next one: the next
turn's reply answers them (the thread keeps them, and what their turn's tools did)."""


def newer_inbound(conn: psycopg.Connection, conversation_id: UUID, after_id: int) -> list[Message]:
    """Return the conversation's unanswered inbound messages newer than `after_id`, in order
    (as `inbox.unanswered_inbound` sees them: none behind a voice note still heard)."""
    return [m for m in unanswered_inbound(conn, conversation_id) if m.id > after_id]


def seconds_waited(conn: psycopg.Connection, conversation_id: UUID, first_id: int) -> float:
    """How long the user has waited for the answer that the turn starting at `first_id` owes:
    since that message arrived, or earlier when turns before it were folded into it."""
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(
            """select extract(epoch from clock_timestamp() - min(m.created_at))
               from messages m
               where m.conversation_id = %(c)s and m.direction = 'inbound' and m.id <= %(first)s
                 and (m.id = %(first)s or (m.status = %(folded)s and m.id > coalesce(
                   (select max(a.id) from messages a
                    where a.conversation_id = %(c)s and a.direction = 'inbound'
                      and a.id < %(first)s and a.processed_at is not null
                      and a.status <> %(folded)s), 0)))""",
            {"c": conversation_id, "first": first_id, "folded": SUPERSEDED},
        )
        row = cur.fetchone()
    assert row is not None and row[0] is not None, f"no inbound message {first_id}"
    return float(row[0])


def inbound_silence(conn: psycopg.Connection, conversation_id: UUID) -> tuple[float, float] | None:
    """Seconds since the newest and since the oldest unprocessed inbound message of the
    conversation (the debounce's clock), or None when no message waits."""
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(
            """select extract(epoch from now() - max(created_at)),
                      extract(epoch from now() - min(created_at))
               from messages where conversation_id = %s and direction = 'inbound'
                 and processed_at is null""",
            (conversation_id,),
        )
        row = cur.fetchone()
    if row is None or row[0] is None:
        return None
    return float(row[0]), float(row[1])


def mark_superseded(conn: psycopg.Connection, message_ids: Sequence[int], newer: int) -> None:
    """Close a turn's messages as folded into the turn that answers message `newer` onwards."""
    conn.execute(
        "update messages set status = %s, error = %s, processed_at = now() where id = any(%s)",
        (
            SUPERSEDED,
            f"Folded into the next turn: message {newer} arrived before this turn's reply was "
            "sent, so one reply answers both.",
            list(message_ids),
        ),
    )


def mark_result_superseded(
    conn: psycopg.Connection, correlation_id: str, ids: Sequence[int]
) -> None:
    """Flag the turn's `ai_results` row: its reply was written but not sent (migration 0014)."""
    conn.execute(
        """update ai_results set superseded = true
           where correlation_id = %s and inbound_message_ids = %s::bigint[] and error is null""",
        (correlation_id, list(ids)),
    )
