"""Reads and writes of tenants, users, conversations and messages.

Every function takes an open `psycopg.Connection`; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any, NotRequired, TypedDict, TypeVar, Unpack
from uuid import UUID

import psycopg
from psycopg.rows import class_row, tuple_row
from psycopg.types.json import Jsonb

from store.records import Conversation, Message, Tenant, User

T = TypeVar("T")


def _columns(record: type[Any]) -> str:
    return ", ".join(f.name for f in fields(record))


_TENANT, _USER, _CONV, _MSG = (_columns(r) for r in (Tenant, User, Conversation, Message))


def _one(
    conn: psycopg.Connection, record: type[T], sql: str, params: Sequence[Any] | dict[str, Any]
) -> T | None:
    with conn.cursor(row_factory=class_row(record)) as cur:
        cur.execute(sql, params)  # type: ignore[arg-type]
        return cur.fetchone()


def _value(conn: psycopg.Connection, sql: str, params: Sequence[Any]) -> Any:
    """Return the first column of the first row, or None (whatever the connection's rows are)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(sql, params)  # type: ignore[arg-type]
        row = cur.fetchone()
        return row[0] if row else None


def _all(conn: psycopg.Connection, record: type[T], sql: str, params: Sequence[Any]) -> list[T]:
    with conn.cursor(row_factory=class_row(record)) as cur:
        cur.execute(sql, params)  # type: ignore[arg-type]
        return cur.fetchall()


# -- tenants ---------------------------------------------------------------------------------


def upsert_tenant(
    conn: psycopg.Connection,
    *,
    slug: str,
    name: str,
    whatsapp_sender: str,
    twilio_account_sid: str,
    twilio_auth_token: str,
    default_locale: str = "pt-BR",
    timezone: str = "America/Sao_Paulo",
    persona: str = "",
    typing_indicator: bool = True,
    closed_window_template_sid: str | None = None,
    closed_window_template_variables: dict[str, str] | None = None,
) -> Tenant:
    """Create the tenant `slug`, or update it in place."""
    tenant = _one(
        conn,
        Tenant,
        f"""insert into tenants (slug, name, whatsapp_sender, twilio_account_sid,
                twilio_auth_token, default_locale, timezone, persona, typing_indicator,
                closed_window_template_sid, closed_window_template_variables)
            values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            on conflict (slug) do update set name = excluded.name,
                whatsapp_sender = excluded.whatsapp_sender,
                twilio_account_sid = excluded.twilio_account_sid,
                twilio_auth_token = excluded.twilio_auth_token,
                default_locale = excluded.default_locale, timezone = excluded.timezone,
                persona = excluded.persona, typing_indicator = excluded.typing_indicator,
                closed_window_template_sid = excluded.closed_window_template_sid,
                closed_window_template_variables = excluded.closed_window_template_variables,
                updated_at = now()
            returning {_TENANT}""",
        (slug, name, whatsapp_sender, twilio_account_sid, twilio_auth_token,
         default_locale, timezone, persona, typing_indicator, closed_window_template_sid,
         Jsonb(closed_window_template_variables or {})),
    )  # fmt: skip
    assert tenant is not None
    return tenant


def tenant_by_sender(conn: psycopg.Connection, sender: str) -> Tenant | None:
    """Return the tenant whose WhatsApp sender is `sender` (Twilio's `To`)."""
    return _one(conn, Tenant, f"select {_TENANT} from tenant_by_sender(%s)", (sender,))


def tenant_by_id(conn: psycopg.Connection, tenant_id: UUID) -> Tenant | None:
    """Return one tenant by id."""
    return _one(conn, Tenant, f"select {_TENANT} from tenants where id = %s", (tenant_id,))


# -- users and conversations -----------------------------------------------------------------


def upsert_user(
    conn: psycopg.Connection, tenant_id: UUID, *, wa_id: str, address: str, profile_name: str | None
) -> User:
    """Find the tenant's user with this WhatsApp id, creating it on first contact."""
    user = _one(
        conn,
        User,
        f"""insert into users (tenant_id, wa_id, address, profile_name) values (%s, %s, %s, %s)
            on conflict (tenant_id, wa_id) do update
               set profile_name = coalesce(excluded.profile_name, users.profile_name),
                   address = excluded.address,
                   updated_at = case when users.profile_name is distinct from
                       coalesce(excluded.profile_name, users.profile_name)
                       or users.address <> excluded.address then now() else users.updated_at end
            returning {_USER}""",
        (tenant_id, wa_id, address, profile_name),
    )
    assert user is not None
    return user


def user_by_id(conn: psycopg.Connection, user_id: UUID) -> User | None:
    """Return one user by id."""
    return _one(conn, User, f"select {_USER} from users where id = %s", (user_id,))


def conversation_by_id(conn: psycopg.Connection, conversation_id: UUID) -> Conversation | None:
    """Return one conversation by id."""
    return _one(
        conn, Conversation, f"select {_CONV} from conversations where id = %s", (conversation_id,)
    )


# -- messages --------------------------------------------------------------------------------


_STORE_INBOUND = f"""select {_MSG} from store_inbound_message(%s, %s, %s, %s, %s, %s, %s, %s, %s,
                                                               %s, %s, %s)"""


class InboundFields(TypedDict):
    """What `store_inbound` stores of an inbound message (the webhook's parsed form)."""

    tenant_id: UUID
    wa_id: str
    profile_name: str | None
    provider_sid: str
    kind: str
    body: str
    from_address: str
    to_address: str
    media: list[dict[str, Any]]
    payload: dict[str, Any]
    correlation_id: str
    enroll: NotRequired[bool]
    """A user seen for the first time is enabled when true (the tenant's auto-enrolment)."""


def _store_inbound_params(m: InboundFields) -> tuple[Any, ...]:
    return (m["tenant_id"], m["provider_sid"], m["wa_id"], m["from_address"], m["profile_name"],
            m.get("enroll", True), m["kind"], m["body"], m["to_address"], Jsonb(m["media"]),
            Jsonb(m["payload"]), m["correlation_id"])  # fmt: skip


def store_inbound(conn: psycopg.Connection, **message: Unpack[InboundFields]) -> Message | None:
    """Store an inbound message with its user and open conversation, in one statement.

    The statement (`store_inbound_message`) scopes itself to `tenant_id` first, so it needs no
    transaction around it. Returns None, and changes nothing, when this `MessageSid` is already
    stored. The relay enqueues its job (`enqueued_at` stays null until then).
    """
    return _one(conn, Message, _STORE_INBOUND, _store_inbound_params(message))


async def store_inbound_async(
    conn: psycopg.AsyncConnection, **message: Unpack[InboundFields]
) -> Message | None:
    """`store_inbound` on an async connection (the webhook's, on the event loop)."""
    async with conn.cursor(row_factory=class_row(Message)) as cur:
        await cur.execute(_STORE_INBOUND, _store_inbound_params(message))
        return await cur.fetchone()


def insert_outbound(
    conn: psycopg.Connection,
    *,
    tenant_id: UUID,
    conversation_id: UUID,
    idempotency_key: str,
    body: str,
    from_address: str,
    to_address: str,
    correlation_id: str,
    purpose: str = "reply",
    sent_by: str | None = None,
    template_variables: Mapping[str, str] | None = None,
) -> Message:
    """Queue a message in the outbox; a second call with the same key returns the first row.

    `template_variables` are the named values its template takes if the 24-hour window is
    closed when it is sent (`server.jobs.templating`)."""
    inserted = _one(
        conn,
        Message,
        f"""insert into messages (tenant_id, conversation_id, direction, idempotency_key,
                body, from_address, to_address, status, correlation_id, purpose, sent_by,
                template_variables)
            values (%s, %s, 'outbound', %s, %s, %s, %s, 'pending', %s, %s, %s, %s)
            on conflict (tenant_id, idempotency_key) do nothing
            returning {_MSG}""",
        (tenant_id, conversation_id, idempotency_key, body, from_address, to_address,
         correlation_id, purpose, sent_by, Jsonb(dict(template_variables or {}))),
    )  # fmt: skip
    if inserted is not None:
        return inserted
    existing = _one(
        conn,
        Message,
        f"select {_MSG} from messages where tenant_id = %s and idempotency_key = %s",
        (tenant_id, idempotency_key),
    )
    assert existing is not None
    return existing


def insert_outbound_parts(
    conn: psycopg.Connection,
    *,
    tenant: Tenant,
    conversation_id: UUID,
    to_address: str,
    parts: Sequence[str],
    key: str,
    correlation_id: str,
    purpose: str,
    template_variables: Mapping[str, str] | None = None,
) -> list[Message]:
    """Queue the parts of one answer in order, each once (`key:index`), from the tenant's sender.

    Each part carries `template_variables` (a template's `text` defaults to the part's body)."""
    queued = []
    for index, body in enumerate(parts):
        queued.append(insert_outbound(
            conn, tenant_id=tenant.id, conversation_id=conversation_id,
            idempotency_key=f"{key}:{index}", body=body, from_address=tenant.whatsapp_sender,
            to_address=to_address, correlation_id=correlation_id, purpose=purpose,
            template_variables=template_variables,
        ))  # fmt: skip
    return queued


def message_by_id(conn: psycopg.Connection, message_id: int) -> Message | None:
    """Return one message."""
    return _one(conn, Message, f"select {_MSG} from messages where id = %s", (message_id,))


def unanswered_inbound(conn: psycopg.Connection, conversation_id: UUID) -> list[Message]:
    """Return the conversation's inbound messages not yet answered, in arrival order.

    A voice note still waiting for its transcript holds back itself and everything after it:
    the `transcribe_audio` job queues the turn that answers them, in order, once it is done.
    """
    return _all(
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
    updated = _value(
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


def mark_sent(
    conn: psycopg.Connection,
    message_id: int,
    provider_sid: str,
    status: str,
    template_sid: str | None = None,
) -> None:
    """Record that Twilio accepted an outbound message (a callback may already be ahead)."""
    conn.execute(
        """update messages set provider_sid = %s, template_sid = %s, error = null,
               error_code = null, processed_at = now(),
               status = case when message_status_rank(status) < message_status_rank(%s)
                             then %s else status end,
               status_updated_at = now()
           where id = %s""",
        (provider_sid, template_sid, status, status, message_id),
    )


def mark_failed(
    conn: psycopg.Connection,
    message_id: int,
    error: str,
    *,
    error_code: int | None = None,
    status: str = "failed",
) -> None:
    """Close a message that could not be handled, with a reason a person can read."""
    conn.execute(
        """update messages set status = %s, error = %s, error_code = %s, processed_at = now(),
               status_updated_at = now()
           where id = %s""",
        (status, error, error_code, message_id),
    )


def begin_send(conn: psycopg.Connection, message_id: int) -> None:
    """Mark a send as under way, durably, before Twilio is called (a crash leaves it so).

    'dispatching' is ours alone (Twilio reports a 'sending' of its own) and ranks below every
    Twilio status, so whatever Twilio answers moves the message past it."""
    conn.execute(
        """update messages set status = 'dispatching', attempts = attempts + 1,
               status_updated_at = now()
           where id = %s and status in ('pending', 'dispatching')""",
        (message_id,),
    )


def record_attempt(conn: psycopg.Connection, message_id: int, error: str, code: int | None) -> None:
    """Note a failed send that will be retried: back to pending, with the reason."""
    conn.execute(
        "update messages set status = 'pending', error = %s, error_code = %s where id = %s",
        (error, code, message_id),
    )


def apply_status(
    conn: psycopg.Connection,
    tenant_id: UUID,
    provider_sid: str,
    status: str,
    error_code: int | None,
) -> bool:
    """Record a delivery status from Twilio; it applies only if it moves the message forward."""
    updated = _value(
        conn,
        """update messages set status = %s, error_code = coalesce(%s, error_code),
               status_updated_at = now()
           where tenant_id = %s and provider_sid = %s and direction = 'outbound'
             and message_status_rank(status) < message_status_rank(%s)
           returning id""",
        (status, error_code, tenant_id, provider_sid, status),
    )
    message_id = updated or _value(
        conn,
        "select id from messages where tenant_id = %s and provider_sid = %s",
        (tenant_id, provider_sid),
    )
    conn.execute(
        """insert into message_status_events
               (tenant_id, message_id, provider_sid, status, error_code, applied)
           values (%s, %s, %s, %s, %s, %s)""",
        (tenant_id, message_id, provider_sid, status, error_code, updated is not None),
    )
    return updated is not None


def first_pending_outbound(conn: psycopg.Connection, conversation_id: UUID) -> Message | None:
    """Return the conversation's oldest outbound message still waiting to be sent."""
    return _one(
        conn,
        Message,
        f"""select {_MSG} from messages
            where conversation_id = %s and direction = 'outbound'
              and status in ('pending', 'dispatching')
            order by id limit 1""",
        (conversation_id,),
    )


def set_opted_out(conn: psycopg.Connection, user_id: UUID, opted_out: bool) -> None:
    """Record the user's opt-out (STOP) or opt-in (START) choice."""
    conn.execute(
        """update users set opted_out_at = case when %s then coalesce(opted_out_at, now()) end,
               updated_at = now()
           where id = %s""",
        (opted_out, user_id),
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
    return _all(
        conn,
        Message,
        f"select {_MSG} from claim_due_messages(%s, %s, %s)",
        (outbox_min_age_seconds, stale_after_seconds, limit),
    )


def mark_relayed(conn: psycopg.Connection, message_ids: Sequence[int]) -> None:
    """Record, across tenants, that the relay queued jobs for these messages."""
    conn.execute("select mark_messages_enqueued(%s)", (list(message_ids),))


def record_ai_result(
    conn: psycopg.Connection,
    *,
    conversation: Conversation,
    correlation_id: str,
    inbound_ids: Sequence[int],
    reply: str | None,
    model: str | None,
    error: str | None,
    duration_ms: int,
    route: str | None = None,
    route_reason: str | None = None,
    tool_calls: Sequence[dict[str, Any]] = (),
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    interrupted: bool = False,
) -> None:
    """Keep what one graph run produced (or why it failed), for people to audit."""
    conn.execute(
        """insert into ai_results (tenant_id, conversation_id, thread_id, correlation_id,
               inbound_message_ids, reply, model, error, duration_ms, route, route_reason,
               tool_calls, prompt_tokens, completion_tokens, interrupted)
           values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (conversation.tenant_id, conversation.id, conversation.thread_id, correlation_id,
         list(inbound_ids), reply, model, error, duration_ms, route, route_reason,
         Jsonb(list(tool_calls)), prompt_tokens, completion_tokens, interrupted),
    )  # fmt: skip


def recent_history(
    conn: psycopg.Connection, conversation_id: UUID, before_id: int, limit: int
) -> list[Message]:
    """The last `limit` answered or sent messages before `before_id`, oldest first."""
    rows = _all(
        conn,
        Message,
        f"""select {_MSG} from messages
            where conversation_id = %s and id < %s
              and (body <> '' or transcription_status = 'done')
              and ((direction = 'inbound' and processed_at is not null)
                   or (direction = 'outbound' and purpose = 'reply'))
            order by id desc limit %s""",
        (conversation_id, before_id, limit),
    )
    return rows[::-1]
