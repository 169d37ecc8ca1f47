"""The `deliver_reminder` job, its scheduling, and the sweep that heals lost reminder jobs.

`schedule_reminder` (tools/relationships.py) stores the reminder and schedules this job for its
time with RQ's scheduler (`Queue.enqueue_at`; every worker runs with the scheduler enabled).
The job runs on the send queue: it is a few milliseconds of database work, and that queue is
the first a worker serves, so a reminder is not held up behind long graph runs.

At its time the job puts the reminder's message in the outbox of the user's latest
conversation and queues its send; the send job applies the opt-out, the 24-hour window and the
tenant's template, as for any reply. Redis can lose a scheduled job (wiped, or never reached):
the relay's sweep (`sweep_reminders`) queues the job again for any reminder still scheduled a
little after its time. Every step is keyed to the reminder, so a second job sends nothing more.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg
import structlog
from psycopg_pool import ConnectionPool
from redis import Redis

from graphs.language import language_of_locale
from server.jobs.common import connect, redis_for
from server.jobs.date_notice_text import format_moment, user_zone
from server.jobs.queue import enqueue_reminders, reminder_job_data, schedule_reminder
from server.jobs.send import queue_next_send
from server.logs import bind_correlation_id
from server.settings import Settings, get_settings
from store import conversations, outbox, reminders, tenants
from store.reminders import Reminder

log = structlog.get_logger(__name__)

Conn = psycopg.Connection[Any]
SWEEP_GRACE_SECONDS = 15.0
"""How late a scheduled reminder may be before the sweep takes its job for lost. RQ's scheduler
moves due jobs every second; when the worker holding its lock dies, another takes over only
after a minute or two, and the sweep covers that gap (a duplicate job is harmless)."""
SWEEP_BATCH = 200

_BODY = {"pt": "⏰ Lembrete: {text}", "en": "⏰ Reminder: {text}"}
_NO_CONVERSATION = "The user has no conversation to send the reminder to."


def deliver_reminder(tenant_id: str, reminder_id: int, correlation_id: str) -> str:
    """Put reminder `reminder_id` in its user's outbox if it is still scheduled and due.

    The reminder's row is locked for the decision, so a cancel and a delivery never both win,
    and two delivery jobs never both deliver.
    """
    settings = get_settings()
    bind_correlation_id(correlation_id, reminder_id=reminder_id, job="deliver_reminder")
    with connect(settings, tenant_id) as conn:
        with conn.transaction():
            reminder = reminders.lock_reminder(conn, reminder_id)
            if reminder is None:
                log.warning("no such reminder; nothing to do")
                return "missing"
            if reminder.status != "scheduled":
                log.info("not scheduled any more; nothing to do", status=reminder.status)
                return reminder.status
            if not reminder.due:
                # Early (the scheduler's clock is ahead of the database's): try again at its time.
                schedule_reminder(redis_for(settings), tenant_id, reminder_id, correlation_id,
                                  reminder.due_at)  # fmt: skip
                log.info("not due yet; scheduled again", due_at=reminder.due_at.isoformat())
                return "early"
            conversation = _deliver(conn, UUID(tenant_id), reminder, correlation_id)
        if conversation is None:
            return "failed"
        queue_next_send(conn, settings, conversation)
        return "delivered"


def _deliver(conn: Conn, tenant_id: UUID, reminder: Reminder, correlation_id: str) -> UUID | None:
    """Write the reminder's message to the outbox; return its conversation (None: failed)."""
    tenant = tenants.tenant_by_id(conn, tenant_id)
    user = tenants.user_by_id(conn, reminder.user_id)
    assert tenant is not None and user is not None
    conversation = conversations.latest_for_user(conn, user.id)
    if conversation is None:
        reminders.mark_failed(conn, reminder.id, _NO_CONVERSATION)
        log.warning("reminder not delivered: the user has no conversation")
        return None
    language = language_of_locale(user.locale or tenant.default_locale)
    # The reminder's time as its template's `when` shows it, in the user's time zone.
    local = reminder.due_at.astimezone(user_zone(user.timezone, tenant.timezone))
    message = outbox.insert_outbound(
        conn, tenant_id=tenant.id, conversation_id=conversation.id,
        idempotency_key=f"reminder:{reminder.id}",
        body=_BODY[language].format(text=reminder.text),
        from_address=tenant.whatsapp_sender, to_address=user.address,
        correlation_id=correlation_id, purpose="reminder",
        template_variables={"text": reminder.text, "when": format_moment(local, language)},
    )  # fmt: skip
    reminders.mark_delivered(conn, reminder.id, message.id, conversation.id)
    log.info("reminder in the outbox", message_id=message.id)
    return conversation.id


def sweep_reminders(
    pool: ConnectionPool, redis: Redis, settings: Settings, limit: int = SWEEP_BATCH
) -> int:
    """Queue delivery for scheduled reminders overdue by `SWEEP_GRACE_SECONDS`; return how many.

    A reminder the sweep queued is not queued again for `STALE_JOB_SECONDS`, so a backlog does
    not turn into a storm of jobs.
    """
    with pool.connection() as conn, conn.transaction():
        claimed = reminders.claim_overdue(
            conn, SWEEP_GRACE_SECONDS, settings.stale_job_seconds, limit
        )
        if not claimed:
            return 0
        jobs = [reminder_job_data(str(r.tenant_id), r.id, r.correlation_id) for r in claimed]
        # If Redis refuses, the exception rolls the claim back and the reminders stay due.
        enqueue_reminders(redis, jobs)
    log.warning("queued reminders whose delivery job was lost", count=len(claimed))
    return len(claimed)
