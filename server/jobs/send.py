"""The `send_whatsapp_message` job: send one outbox row through Twilio, once, in order.

A conversation's outbound messages leave one at a time in outbox order: a job sends only the
oldest pending row and then queues the next. Before calling Twilio it checks the user's opt-out,
the 24-hour window and the sender's rate; afterwards Twilio's error code decides: retry with
backoff, fall back to the approved template for the message's purpose (`server.jobs.templating`),
or fail with the reason kept on the row.
"""

from __future__ import annotations

import json
import random
from datetime import timedelta
from typing import Any
from uuid import UUID

import psycopg
import requests
import structlog
from rq import Queue
from twilio.base.exceptions import TwilioException, TwilioRestException

from channels.policy import (
    OUTSIDE_WINDOW,
    UNSUBSCRIBED,
    SendOutcome,
    classify_twilio_error,
    window_open,
)
from channels.ratelimit import SenderRateLimiter
from channels.templates import template_purpose
from server import metrics
from server.jobs.common import connect, redis_for, twilio_for
from server.jobs.queue import enqueue_send, send_job_data
from server.jobs.templating import TemplateSend, TemplateUnavailable, closed_window_send
from server.logs import bind_correlation_id
from server.settings import QUEUE_SEND, Settings, get_settings
from store import conversations, inbox, outbox, tenants
from store.locks import send_lock, try_lock, unlock
from store.records import Message, Tenant, User

log = structlog.get_logger(__name__)

Conn = psycopg.Connection[Any]
_COMPLIANCE = frozenset({"opt_out", "opt_in"})
"""Purposes that go out even to a user who opted out (the confirmation of that choice)."""


class _Retry(Exception):
    def __init__(self, error: str, code: int | None) -> None:
        super().__init__(error)
        self.error, self.code = error, code


def send_whatsapp_message(
    tenant_id: str, message_id: int, correlation_id: str, attempt: int = 0
) -> str:
    """Send outbound message `message_id`, unless it was sent, suppressed or failed already.

    The message is marked `dispatching` (committed) before Twilio is called, and an advisory lock
    keyed by the message is held until the job ends. A job that finds the lock taken leaves (the
    other job is sending); one that finds `dispatching` without the lock knows a worker died
    mid-send, and asks Twilio whether that send got through before sending again.
    """
    settings = get_settings()
    bind_correlation_id(
        correlation_id, message_id=message_id, job="send_whatsapp_message", attempt=attempt
    )
    lock = send_lock(message_id)
    with connect(settings, tenant_id) as conn:
        if not try_lock(conn, lock):
            log.info("another job is sending this message")
            return "in flight"
        try:
            message = inbox.message_by_id(conn, message_id)
            if message is None or message.direction != "outbound":
                log.warning("no such outbound message; nothing to do")
                return "missing"
            if message.status not in ("pending", "dispatching"):
                log.info("already handled", status=message.status)
                return message.status
            first = outbox.first_pending_outbound(conn, message.conversation_id)
            if first is not None and first.id != message.id:
                log.info("an earlier message goes first; it will queue this one", first=first.id)
                return "waiting"
            try:
                outcome = _send(conn, settings, message)
            except _Retry as retry:
                return _retry_or_fail(conn, settings, message, attempt, retry)
            queue_next_send(conn, settings, message.conversation_id, after=message.id)
            return outcome
        finally:
            unlock(conn, lock)


def _already_sent(settings: Settings, tenant: Tenant, message: Message) -> Any | None:
    """Find, at Twilio, a send of this message that a dead worker made but never recorded.

    Matched by recipient, sender, time and body; an interrupted template send (closed window)
    carries the template's text instead of ours, so it is not recognised and goes out again.
    """
    client = twilio_for(settings, tenant)
    since = message.created_at - timedelta(minutes=1)
    sent = client.messages.list(
        to=message.to_address, from_=message.from_address, date_sent_after=since, limit=50
    )
    return next((s for s in sent if s.body == message.body), None)


def _send(conn: Conn, settings: Settings, message: Message) -> str:
    conversation = conversations.conversation_by_id(conn, message.conversation_id)
    tenant = tenants.tenant_by_id(conn, message.tenant_id)
    user = tenants.user_by_id(conn, conversation.user_id) if conversation else None
    assert conversation is not None and tenant is not None and user is not None
    if user.opted_out_at is not None and message.purpose not in _COMPLIANCE:
        outbox.mark_failed(conn, message.id, "Not sent: the user opted out (STOP).",
                         status="suppressed")  # fmt: skip
        metrics.observe_send("suppressed")
        log.info("suppressed: the user opted out")
        return "suppressed"
    template: TemplateSend | None = None
    if not window_open(conversation.last_inbound_at):
        try:
            template = closed_window_send(conn, tenant, user, message)
        except TemplateUnavailable as exc:
            return _no_template(conn, message, exc)
    if message.status == "dispatching":
        try:
            earlier = _already_sent(settings, tenant, message)
        except (TwilioException, requests.RequestException) as exc:
            raise _Retry(f"could not check an interrupted send: {_describe(exc)}", None) from exc
        if earlier is not None:
            outbox.mark_sent(conn, message.id, str(earlier.sid), str(earlier.status or "queued"))
            metrics.observe_send("sent")
            log.warning("an interrupted send had got through; recorded it, not sending again",
                        provider_sid=earlier.sid)  # fmt: skip
            return "sent"
    outbox.begin_send(conn, message.id)
    return _create(conn, settings, message, tenant, user, use_template=template)


def _no_template(conn: Conn, message: Message, exc: TemplateUnavailable) -> str:
    """Fail a message that needs a template it cannot have, with the reason (code 63016)."""
    outbox.mark_failed(conn, message.id, exc.reason, error_code=OUTSIDE_WINDOW)
    metrics.observe_send("failed", OUTSIDE_WINDOW)
    purpose = template_purpose(message.purpose)
    metrics.observe_template_send(purpose, exc.outcome)
    log.warning("not sent: the 24-hour window is closed and no template fits",
                purpose=purpose, outcome=exc.outcome, reason=exc.reason)  # fmt: skip
    return "failed"


def _create(
    conn: Conn,
    settings: Settings,
    message: Message,
    tenant: Tenant,
    user: User,
    *,
    use_template: TemplateSend | None,
) -> str:
    SenderRateLimiter(redis_for(settings), settings.send_rate_per_second).acquire(
        tenant.whatsapp_sender
    )
    options: dict[str, Any] = {"to": message.to_address, "from_": message.from_address}
    if settings.status_callback_url:
        options["status_callback"] = settings.status_callback_url
    if use_template is not None:
        options |= {
            "content_sid": use_template.content_sid,
            "content_variables": json.dumps(use_template.content_variables, ensure_ascii=False),
        }
    else:
        options["body"] = message.body
    client = twilio_for(settings, tenant)
    try:
        sent = client.messages.create(**options)
    except (TwilioException, requests.RequestException) as exc:
        status, code = _status_and_code(exc)
        outcome = classify_twilio_error(status, code)
        error = _describe(exc)
        if outcome is SendOutcome.RETRY:
            raise _Retry(error, code) from exc
        if outcome is SendOutcome.TEMPLATE and use_template is None:
            try:
                template = closed_window_send(conn, tenant, user, message)
            except TemplateUnavailable as unavailable:
                return _no_template(conn, message, unavailable)
            log.info("outside the 24-hour window; sending the template for its purpose",
                     purpose=template.purpose, language=template.language)  # fmt: skip
            return _create(conn, settings, message, tenant, user, use_template=template)
        if code == UNSUBSCRIBED:
            tenants.set_opted_out(conn, user.id, opted_out=True)
        outbox.mark_failed(conn, message.id, error, error_code=code)
        metrics.observe_send("failed", code)
        log.error("send failed", error=error, code=code)
        return "failed"
    template_sid = use_template.content_sid if use_template is not None else None
    outbox.mark_sent(conn, message.id, str(sent.sid), str(sent.status or "queued"), template_sid)
    metrics.observe_send("sent")
    if use_template is not None:
        metrics.observe_template_send(use_template.purpose, "sent")
    log.info("sent", provider_sid=sent.sid, status=sent.status, template=bool(template_sid))
    return "sent"


def _status_and_code(exc: Exception) -> tuple[int | None, int | None]:
    if isinstance(exc, TwilioRestException):
        return exc.status, exc.code
    return None, None


def _describe(exc: Exception) -> str:
    if isinstance(exc, TwilioRestException):
        return f"Twilio error {exc.code} (HTTP {exc.status}): {exc.msg}"
    return f"{type(exc).__name__}: {exc}"


def backoff(settings: Settings, attempt: int) -> float:
    """Seconds before retry `attempt + 1`: exponential, capped, with full jitter on the top half."""
    ceiling = min(settings.send_backoff_max_seconds, settings.send_backoff_seconds * 2**attempt)
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _retry_or_fail(
    conn: Conn, settings: Settings, message: Message, attempt: int, retry: _Retry
) -> str:
    if attempt + 1 >= settings.send_max_attempts:
        outbox.mark_failed(conn, message.id, f"{retry.error} (gave up after {attempt + 1} tries)",
                         error_code=retry.code)  # fmt: skip
        metrics.observe_send("failed", retry.code)
        log.error("send failed for good", error=retry.error, attempts=attempt + 1)
        queue_next_send(conn, settings, message.conversation_id, after=message.id)
        return "failed"
    outbox.record_attempt(conn, message.id, retry.error, retry.code)
    metrics.observe_send("retrying", retry.code)
    delay = backoff(settings, attempt)
    job = send_job_data(message, attempt + 1)
    Queue(QUEUE_SEND, connection=redis_for(settings)).enqueue_in(
        timedelta(seconds=delay), job.func, args=job.args, job_timeout=job.timeout,
        meta=job.meta, description=job.description,
    )  # fmt: skip
    inbox.mark_enqueued(conn, [message.id])
    log.warning("send failed; retrying", error=retry.error, delay=round(delay, 2))
    return "retrying"


def queue_next_send(
    conn: Conn, settings: Settings, conversation_id: UUID, *, after: int | None = None
) -> None:
    """Queue the send of the conversation's oldest outbound message still waiting, if any
    (other than `after`, the one just handled: a send never re-queues itself)."""
    following = outbox.first_pending_outbound(conn, conversation_id)
    if following is not None and following.id != after:
        enqueue_send(redis_for(settings), following)
        inbox.mark_enqueued(conn, [following.id])
