"""Inbound messages: stored by the webhook, claimed by the relay, answered by a turn.

Every function takes an open `psycopg.Connection`; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NotRequired, TypedDict, Unpack
from uuid import UUID

import psycopg
from psycopg.rows import class_row, tuple_row
from psycopg.types.json import Jsonb

from store.query import all_rows, columns, one, value
from store.records import Message

_MSG = columns(Message)


# store_inbound_message's body: store/migrations/0019_choices.sql
_STORE_INBOUND = f"""select {_MSG} from store_inbound_message(%s, %s, %s, %s, %s, %s, %s, %s, %s,
                                                               %s, %s, %s, %s)"""


class InboundFields(TypedDict):
    """What `store_inbound` stores of an inbound message (as the channel parsed it)."""

    tenant_id: UUID
    wa_id: str
    profile_name: str | None
    provider_message_id: str
    kind: str
    body: str
    from_address: str
    to_address: str
    media: list[dict[str, Any]]
    payload: dict[str, Any]
    correlation_id: str
    choice: NotRequired[str | None]
    """The id of the option a pressed button or list row names (`InboundMessage.choice`)."""
    enroll: NotRequired[bool]
    """A user seen for the first time is enabled when true (the tenant's auto-enrolment)."""


def _store_inbound_params(m: InboundFields) -> tuple[Any, ...]:
    return (m["tenant_id"], m["provider_message_id"], m["wa_id"], m["from_address"],
            m["profile_name"], m.get("enroll", True), m["kind"], m["body"], m["to_address"],
            Jsonb(m["media"]), Jsonb(m["payload"]), m["correlation_id"],
            m.get("choice"))  # fmt: skip


def store_inbound(conn: psycopg.Connection, **message: Unpack[InboundFields]) -> Message | None:
    """Store an inbound message with its user and open conversation, in one statement.

    The statement (`store_inbound_message`) scopes itself to `tenant_id` first, so it needs no
    transaction around it. Returns None, and changes nothing, when this `provider_message_id` is
    already stored. The relay enqueues its job (`enqueued_at` stays null until then).
    """
    return one(conn, Message, _STORE_INBOUND, _store_inbound_params(message))


async def store_inbound_async(
    conn: psycopg.AsyncConnection, **message: Unpack[InboundFields]
) -> Message | None:
    """`store_inbound` on an async connection (the webhook's, on the event loop)."""
    async with conn.cursor(row_factory=class_row(Message)) as cur:
        await cur.execute(_STORE_INBOUND, _store_inbound_params(message))
        return await cur.fetchone()


# One call of store_inbound_message per row, in the rows' order (a nested loop over the arrays:
# each call sees the rows the earlier calls stored, so a MessageSid twice in one batch is stored
# once). The function scopes each call to its own tenant before it touches a table.
_STORE_INBOUND_BATCH = f"""
    select {", ".join(f"m.{name}" for name in _MSG.split(", "))}
    from unnest(%s::uuid[], %s::text[], %s::text[], %s::text[], %s::text[], %s::boolean[],
                %s::text[], %s::text[], %s::text[], %s::jsonb[], %s::jsonb[], %s::text[],
                %s::text[])
         with ordinality as r(tenant, provider_message_id, wa_id, from_address, profile_name,
                              enroll, kind, body, to_address, media, payload, correlation_id,
                              choice, n)
    left join lateral store_inbound_message(
        r.tenant, r.provider_message_id, r.wa_id, r.from_address, r.profile_name, r.enroll,
        r.kind, r.body, r.to_address, r.media, r.payload, r.correlation_id, r.choice) as m
        on true
    order by r.n"""


async def store_inbound_batch_async(
    conn: psycopg.AsyncConnection, messages: Sequence[InboundFields]
) -> list[Message | None]:
    """Store several inbound messages (of any tenants) in one statement, in the given order.

    What `store_inbound` does for each, in one round trip: the webhook's group commit
    (`server.ack_batching`) runs it inside its batch's transaction. Returns, position for
    position, the stored message or None for a replay. One bad row fails the whole statement.
    """
    if not messages:
        return []
    params = [list(column) for column in zip(*map(_store_inbound_params, messages), strict=True)]
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(_STORE_INBOUND_BATCH, params)
        return [Message(*row) if row[0] is not None else None for row in await cur.fetchall()]


def message_by_id(conn: psycopg.Connection, message_id: int) -> Message | None:
    """Return one message."""
    return one(conn, Message, f"select {_MSG} from messages where id = %s", (message_id,))


def unanswered_inbound(conn: psycopg.Connection, conversation_id: UUID) -> list[Message]:
    """Return the conversation's inbound messages not yet answered, in arrival order.

    A voice note still waiting for its transcript holds back itself and everything after it:
    the `transcribe_audio` job queues the turn that answers them, in order, once it is done.
    """
    return all_rows(
        conn,
        Message,
        f"""select {_MSG} from messages m
            where conversation_id = %s and direction = 'inbound' and processed_at is null
              and status in ('received', 'pending')
              and not exists (
                select 1 from messages v
                where v.conversation_id = m.conversation_id and v.id <= m.id
                  and v.transcription_status = 'pending' and v.processed_at is null
                  and v.direction = 'inbound' and v.status in ('received', 'pending'))
            order by id""",
        (conversation_id,),
    )


def record_transcript(
    conn: psycopg.Connection,
    message_id: int,
    *,
    status: str,
    transcript: str | None = None,
    language: str | None = None,
    confidence: float | None = None,
    unsure: bool | None = None,
    error: str | None = None,
    audio_seconds: float | None = None,
) -> bool:
    """Settle a pending voice note (done, failed or skipped); False if it was settled already."""
    updated = value(
        conn,
        """update messages set transcription_status = %s, transcript = %s,
               transcript_language = %s, transcript_confidence = %s, transcript_unsure = %s,
               transcription_error = %s, audio_seconds = %s
           where id = %s and transcription_status = 'pending'
           returning id""",
        (status, transcript, language, confidence, unsure, error, audio_seconds, message_id),
    )
    return updated is not None


def note_transcription_attempt(conn: psycopg.Connection, message_id: int, error: str) -> None:
    """Keep why a transcription attempt failed while the job will still retry it."""
    conn.execute(
        "update messages set transcription_error = %s where id = %s "
        "and transcription_status = 'pending'",
        (error, message_id),
    )


def requeue_inbound(conn: psycopg.Connection, message_id: int) -> None:
    """Make an unanswered inbound message due again, so the relay queues its job now."""
    conn.execute(
        "update messages set enqueued_at = null where id = %s and processed_at is null",
        (message_id,),
    )


def mark_enqueued(conn: psycopg.Connection, message_ids: Sequence[int]) -> None:
    """Record when jobs were (last) queued for these messages."""
    conn.execute("update messages set enqueued_at = now() where id = any(%s)", (list(message_ids),))


def mark_processed(
    conn: psycopg.Connection, message_ids: Sequence[int], status: str, error: str | None = None
) -> None:
    """Close the given inbound messages with a final status (answered, failed...)."""
    conn.execute(
        "update messages set status = %s, error = %s, processed_at = now() where id = any(%s)",
        (status, error, list(message_ids)),
    )


def claim_due(
    conn: psycopg.Connection,
    *,
    outbox_min_age_seconds: float,
    stale_after_seconds: float,
    limit: int,
) -> list[Message]:
    """Lock, across tenants, the messages that are due a job, oldest first.

    Due: an inbound message never enqueued; an outbound message at the head of its
    conversation's outbox that no job took within `outbox_min_age_seconds` (workers enqueue
    those themselves); and any unfinished message whose job is `stale_after_seconds` old
    (Redis wiped, a worker killed mid-run). Runs through the `claim_due_messages` function,
    the relay's one way past row-level security.
    """
    return all_rows(
        conn,
        Message,
        f"select {_MSG} from claim_due_messages(%s, %s, %s)",
        (outbox_min_age_seconds, stale_after_seconds, limit),
    )


def mark_relayed(conn: psycopg.Connection, message_ids: Sequence[int]) -> None:
    """Record, across tenants, that the relay queued jobs for these messages."""
    # body: store/migrations/0003_identity.sql
    conn.execute("select mark_messages_enqueued(%s)", (list(message_ids),))
