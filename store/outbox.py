"""The outbox: outbound messages queued by a turn or a job, sent by the send job, in order.

Every function takes an open `psycopg.Connection`; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from store.locks import lock_for_transaction, provider_message_lock
from store.query import columns, one, value
from store.records import Message, Tenant

_MSG = columns(Message)


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
    choices: Mapping[str, Any] | None = None,
) -> Message:
    """Queue a message in the outbox; a second call with the same key returns the first row.

    `template_variables` are the named values its template takes if the 24-hour window is
    closed when it is sent (`server.jobs.templating`); `choices` the buttons or list it offers
    (`channels.choices.Choices.to_json`), with `body` the same reply as numbered text."""
    inserted = one(
        conn,
        Message,
        f"""insert into messages (tenant_id, conversation_id, direction, idempotency_key,
                body, from_address, to_address, status, correlation_id, purpose, sent_by,
                template_variables, choices)
            values (%s, %s, 'outbound', %s, %s, %s, %s, 'pending', %s, %s, %s, %s, %s)
            on conflict (tenant_id, idempotency_key) do nothing
            returning {_MSG}""",
        (tenant_id, conversation_id, idempotency_key, body, from_address, to_address,
         correlation_id, purpose, sent_by, Jsonb(dict(template_variables or {})),
         Jsonb(dict(choices)) if choices is not None else None),
    )  # fmt: skip
    if inserted is not None:
        return inserted
    existing = one(
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
    choices: Mapping[str, Any] | None = None,
) -> list[Message]:
    """Queue the parts of one answer in order, each once (`key:index`), from the tenant's sender.

    Each part carries `template_variables` (a template's `text` defaults to the part's body);
    the last one carries the answer's `choices`, if it offers any."""
    queued = []
    for index, body in enumerate(parts):
        queued.append(insert_outbound(
            conn, tenant_id=tenant.id, conversation_id=conversation_id,
            idempotency_key=f"{key}:{index}", body=body, from_address=tenant.whatsapp_sender,
            to_address=to_address, correlation_id=correlation_id, purpose=purpose,
            template_variables=template_variables,
            choices=choices if index == len(parts) - 1 else None,
        ))  # fmt: skip
    return queued


def mark_sent(
    conn: psycopg.Connection,
    message_id: int,
    provider_message_id: str,
    status: str,
    template_sid: str | None = None,
) -> None:
    """Record that the provider accepted an outbound message, in the caller's transaction.

    A status callback for it may already be ahead: it arrived before this id was recorded,
    found no message, and was kept unapplied in `message_status_events`. The furthest such
    status is applied here. Both sides hold the id's lock for their transaction, so whichever
    commits second sees the other's row, and no status is lost between them.
    """
    lock_for_transaction(conn, provider_message_lock(provider_message_id))
    # message_status_rank's body: store/migrations/0002_channel.sql
    conn.execute(
        """update messages set provider_message_id = %s, template_sid = %s, error = null,
               error_code = null, processed_at = now(),
               status = case when message_status_rank(status) < message_status_rank(%s)
                             then %s else status end,
               status_updated_at = now()
           where id = %s""",
        (provider_message_id, template_sid, status, status, message_id),
    )
    conn.execute(
        """with ahead as (
               update message_status_events set message_id = %(id)s
               where provider_message_id = %(sid)s and message_id is null
                 and tenant_id = (select tenant_id from messages where id = %(id)s)
               returning status, error_code
           ), furthest as (
               select status, error_code from ahead
               order by message_status_rank(status) desc limit 1
           )
           update messages m set status = f.status,
               error_code = coalesce(f.error_code, m.error_code), status_updated_at = now()
           from furthest f
           where m.id = %(id)s and message_status_rank(m.status) < message_status_rank(f.status)""",
        {"id": message_id, "sid": provider_message_id},
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
    """Mark a send as under way, durably, before the provider is called (a crash leaves it so).

    'dispatching' is ours alone (Twilio reports a 'sending' of its own) and ranks below every
    provider status, so whatever the provider answers moves the message past it."""
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


def adopt_send(
    conn: psycopg.Connection, tenant_id: UUID, message_id: int, provider_message_id: str
) -> bool:
    """Record the provider's id on an outbound message it reports as ours (by the outbox id we
    sent with it) that no worker recorded as sent: a worker killed between the provider's
    acceptance and `mark_sent`. Only a message still pending or dispatching, with no provider
    id, is adopted; return whether it was. Takes the id's lock before the row's, in the order
    `mark_sent` takes them."""
    lock_for_transaction(conn, provider_message_lock(provider_message_id))
    adopted = value(
        conn,
        """update messages set provider_message_id = %s, processed_at = now(), error = null,
               error_code = null, status_updated_at = now()
           where id = %s and tenant_id = %s and direction = 'outbound'
             and provider_message_id is null and status in ('pending', 'dispatching')
           returning id""",
        (provider_message_id, message_id, tenant_id),
    )
    return adopted is not None


def apply_status(
    conn: psycopg.Connection,
    tenant_id: UUID,
    provider_message_id: str,
    status: str,
    error_code: int | None,
) -> bool:
    """Record a delivery status the provider reported, in the caller's transaction; it applies
    only if it moves the message forward. One for an id no send has recorded yet is kept
    unapplied, and `mark_sent` applies it (see there)."""
    lock_for_transaction(conn, provider_message_lock(provider_message_id))
    # message_status_rank's body: store/migrations/0002_channel.sql
    updated = value(
        conn,
        """update messages set status = %s, error_code = coalesce(%s, error_code),
               status_updated_at = now()
           where tenant_id = %s and provider_message_id = %s and direction = 'outbound'
             and message_status_rank(status) < message_status_rank(%s)
           returning id""",
        (status, error_code, tenant_id, provider_message_id, status),
    )
    message_id = updated or value(
        conn,
        "select id from messages where tenant_id = %s and provider_message_id = %s",
        (tenant_id, provider_message_id),
    )
    conn.execute(
        """insert into message_status_events
               (tenant_id, message_id, provider_message_id, status, error_code, applied)
           values (%s, %s, %s, %s, %s, %s)""",
        (tenant_id, message_id, provider_message_id, status, error_code, updated is not None),
    )
    return updated is not None


def first_pending_outbound(conn: psycopg.Connection, conversation_id: UUID) -> Message | None:
    """Return the conversation's oldest outbound message still waiting to be sent."""
    return one(
        conn,
        Message,
        f"""select {_MSG} from messages
            where conversation_id = %s and direction = 'outbound'
              and status in ('pending', 'dispatching')
            order by id limit 1""",
        (conversation_id,),
    )
