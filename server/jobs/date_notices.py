"""Date notices: tell users, shortly before, that a date they saved is coming.

When the relationships specialist saves a birthday or anniversary it promises to let the user
know when the date is near. This job keeps that promise: for every user whose plan has the
`relationships` feature, each saved date that falls `DATE_NOTICE_DAYS_BEFORE` days from the
user's local today gets one message ("🎂 Amanhã é o aniversário da sua mãe (12/12).") from
`DATE_NOTICE_HOUR` on, in the user's time zone (else the tenant's) and language. The 29th of
February falls on the 28th in other years, as `upcoming_dates` counts it.

The notice goes to the outbox of the user's latest conversation with purpose `date_notice` and
the named variables `person`, `label`, `date` and `when`, so outside WhatsApp's 24-hour window
the send job uses the tenant's approved `date_notice` template; the send job also applies the
opt-out, and this job does not even queue notices for users who opted out. Each occurrence is
noticed once (`date_notices`, unique per date and day), however many sweeps or workers run.

The API's relay queues `sweep_date_notices` every `DATE_NOTICE_INTERVAL_SECONDS` (one API
process wins each round, through a Redis key); `conversa sweep` runs it once by hand.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import structlog
from redis import Redis

from graphs.features import RELATIONSHIPS
from graphs.language import language_of_locale
from server.jobs.common import connect, connect_platform
from server.jobs.date_notice_text import notice_text, user_zone
from server.jobs.queue import enqueue_once_per_interval
from server.jobs.send import queue_next_send
from server.logs import bind_correlation_id
from server.settings import Settings, get_settings
from store import conversations, outbox, tenants
from store import date_notices as store
from store.identity import entitlement
from store.records import Tenant

log = structlog.get_logger(__name__)

Conn = psycopg.Connection[Any]
SWEEP_JOB = "server.jobs.date_notices.sweep_date_notices"
_SCHEDULE_KEY = "conversa:date-notices:scheduled"


def _moment(now: datetime | str | None) -> datetime:
    """Return `now` as an aware datetime (the current time when None); raise ValueError for
    anything else."""
    if now is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(now) if isinstance(now, str) else now
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ValueError(
            f"`now` must be a date and time with its offset, e.g. 2026-12-11T09:00:00-03:00 "
            f"(got {now!r}): pass an aware datetime or such an ISO string."
        )
    return moment


def occurrence_due(due: store.DueDate, local_now: datetime, settings: Settings) -> date | None:
    """Return the day `due` falls on if its notice is due at `local_now` (the user's local
    time), else None."""
    from tools.dates import next_occurrence  # the relay imports this module; keep it light

    if local_now.hour < settings.date_notice_hour:
        return None
    target = local_now.date() + timedelta(days=settings.date_notice_days_before)
    if due.yearly:
        falls = next_occurrence(due.month, due.day, target)
    elif due.year is not None:
        try:
            falls = date(due.year, due.month, due.day)
        except ValueError:  # a one-off 29th of February in a year without one
            return None
    else:
        return None
    return falls if falls == target else None


def send_date_notices(tenant_id: str, now: datetime | str | None = None) -> int:
    """Queue the date notices due at `now` (default: the current time) for one tenant's users;
    return how many were queued."""

    settings = get_settings()
    moment = _moment(now)
    correlation_id = uuid.uuid4().hex
    bind_correlation_id(correlation_id, tenant_id=tenant_id, job="send_date_notices")
    with connect(settings, tenant_id) as conn:
        tenant = tenants.tenant_by_id(conn, UUID(tenant_id))
        if tenant is None:
            log.warning("no such tenant; nothing to do")
            return 0
        utc_today = moment.astimezone(UTC).date()
        ahead = settings.date_notice_days_before
        # Every time zone's today is within a day of UTC's.
        days = [utc_today + timedelta(days=ahead + shift) for shift in (-1, 0, 1)]
        entitled: dict[UUID, bool] = {}
        queued = 0
        for due in store.dates_falling_on(conn, days):
            local_now = moment.astimezone(user_zone(due.user_timezone, tenant.timezone))
            occurs_on = occurrence_due(due, local_now, settings)
            if occurs_on is None:
                continue
            if due.user_id not in entitled:
                features = entitlement(conn, tenant.id, due.user_id).features
                entitled[due.user_id] = RELATIONSHIPS.name in features
            if not entitled[due.user_id]:
                continue
            conversation_id = _queue_notice(conn, tenant, due, occurs_on, ahead, correlation_id)
            if conversation_id is not None:
                queue_next_send(conn, settings, conversation_id)
                queued += 1
    if queued:
        log.info("date notices queued", count=queued)
    return queued


def _queue_notice(
    conn: Conn,
    tenant: Tenant,
    due: store.DueDate,
    occurs_on: date,
    days_ahead: int,
    correlation_id: str,
) -> UUID | None:
    """Record the notice and put its message in the outbox, in one transaction; return the
    conversation it went to (None: noticed already, or the user has no conversation)."""
    conversation = conversations.latest_for_user(conn, due.user_id)
    if conversation is None:
        log.info("date notice skipped: the user has no conversation", date_id=due.id)
        return None
    user = tenants.user_by_id(conn, due.user_id)
    assert user is not None
    language = language_of_locale(due.user_locale or tenant.default_locale)
    text = notice_text(
        kind=due.kind, label=due.label, person=due.person, relation=due.relation,
        occurs_on=occurs_on, days_ahead=days_ahead,
        language=language,
    )  # fmt: skip
    with conn.transaction():
        notice_id = store.claim_notice(conn, tenant.id, due.id, occurs_on)
        if notice_id is None:
            return None
        message = outbox.insert_outbound(
            conn, tenant_id=tenant.id, conversation_id=conversation.id,
            idempotency_key=f"date_notice:{due.id}:{occurs_on.isoformat()}", body=text.body,
            from_address=tenant.whatsapp_sender, to_address=user.address,
            correlation_id=correlation_id, purpose="date_notice",
            template_variables=text.variables,
        )  # fmt: skip
        store.attach_message(conn, notice_id, message.id)
    log.info("date notice in the outbox", date_id=due.id, occurs_on=occurs_on.isoformat(),
             message_id=message.id)  # fmt: skip
    return conversation.id


def sweep_date_notices(now: datetime | str | None = None) -> int:
    """Queue the date notices due at `now` (default: the current time) in every tenant; return
    how many were queued. A tenant that fails is logged and the others still get theirs."""
    moment = _moment(now)  # a bad `now` is the caller's mistake, not one tenant's failure
    settings = get_settings()
    # Listing tenants is the only cross-tenant read; each tenant's work is scoped to it.
    with connect_platform(settings) as conn:
        due_tenants = store.tenant_ids(conn)
    queued = 0
    for tenant_id in due_tenants:
        try:
            queued += send_date_notices(str(tenant_id), moment)
        except Exception:
            log.exception("date notices failed for a tenant; the next sweep tries again",
                          tenant_id=str(tenant_id))  # fmt: skip
    return queued


def schedule_date_notices(redis: Redis, settings: Settings) -> bool:
    """Queue the sweep if no API process has done so this interval; return whether queued."""
    return enqueue_once_per_interval(
        redis,
        settings,
        key=_SCHEDULE_KEY,
        interval=settings.date_notice_interval_seconds,
        func=SWEEP_JOB,
        description="sweep date notices",
    )
