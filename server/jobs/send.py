"""The `send_whatsapp_message` job: send one outbox row through the tenant's channel, once, in
order.

A conversation's outbound messages leave one at a time in outbox order: a job sends only the
oldest pending row and then queues the next. Before calling the provider it checks the user's
opt-out, the 24-hour window and the sender's rate; afterwards the outcome the channel gives the
provider's error decides: retry with backoff, fall back to the approved template for the
message's purpose (`server.jobs.templating`), or fail with the reason kept on the row.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg
import structlog

from channels.base import Channel, OutboundMessage, SendFailed, SendOutcome, Template
from channels.choices import Choices, interactive
from channels.policy import window_open
from channels.ratelimit import SenderRateLimiter
from channels.registry import channel_for
from channels.templates import template_purpose
from server import metrics
from server.budgets import raise_alerts, record_usage, send_cost, spender_for
from server.jobs.common import connect, redis_for
from server.jobs.queue import enqueue_send, retry_send
from server.jobs.templating import TemplateSend, TemplateUnavailable, closed_window_send
from server.logs import bind_correlation_id
from server.settings import Settings, get_settings
from store import conversations, inbox, outbox, tenants
from store.budgets import Alert, Usage
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

    The message is marked `dispatching` (committed) before the provider is called, and an
    advisory lock keyed by the message is held until the job ends. A job that finds the lock taken
    leaves (the other job is sending); one that finds `dispatching` without the lock knows a
    worker died mid-send, and asks the provider whether that send got through before sending
    again.
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


def _outbound(
    message: Message, template: TemplateSend | None = None, *, plain: bool = False
) -> OutboundMessage:
    """The outbox row as the channel sends it: its body (with its buttons or list unless
    `plain`), or the template it goes out as."""
    offered = message.choices is not None and template is None and not plain
    return OutboundMessage(
        message_id=message.id,
        to=message.to_address,
        sender=message.from_address,
        body=message.body,
        created_at=message.created_at,
        template=(
            Template(template.content_sid, template.content_variables, template.language)
            if template
            else None
        ),
        choices=Choices.from_json(message.choices) if offered and message.choices else None,
    )


def _send(conn: Conn, settings: Settings, message: Message) -> str:
    conversation = conversations.conversation_by_id(conn, message.conversation_id)
    tenant = tenants.tenant_by_id(conn, message.tenant_id)
    user = tenants.user_by_id(conn, conversation.user_id) if conversation else None
    assert conversation is not None and tenant is not None and user is not None
    channel = channel_for(settings, tenant)
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
            return _no_template(conn, channel, message, exc)
    if message.status == "dispatching":
        try:
            earlier = channel.find_sent(_outbound(message))
        except SendFailed as exc:
            raise _Retry(f"could not check an interrupted send: {exc.reason}", None) from exc
        if earlier is not None:
            with conn.transaction():  # sent and billed together: never one without the other
                outbox.mark_sent(conn, message.id, earlier.provider_message_id, earlier.status)
                alerts = _charge(conn, settings, tenant, user, message)
            raise_alerts(settings, tenant, alerts, message.correlation_id)
            metrics.observe_send("sent")
            log.warning("an interrupted send had got through; recorded it, not sending again",
                        provider_message_id=earlier.provider_message_id)  # fmt: skip
            return "sent"
    outbox.begin_send(conn, message.id)
    return _create(conn, settings, channel, message, tenant, user, use_template=template)


def _no_template(conn: Conn, channel: Channel, message: Message, exc: TemplateUnavailable) -> str:
    """Fail a message that needs a template it cannot have, with the reason and the provider's
    code for a closed window."""
    code = channel.window_closed_code
    outbox.mark_failed(conn, message.id, exc.reason, error_code=code)
    metrics.observe_send("failed", code)
    purpose = template_purpose(message.purpose)
    metrics.observe_template_send(purpose, exc.outcome)
    log.warning("not sent: the 24-hour window is closed and no template fits",
                purpose=purpose, outcome=exc.outcome, reason=exc.reason)  # fmt: skip
    return "failed"


def _create(
    conn: Conn,
    settings: Settings,
    channel: Channel,
    message: Message,
    tenant: Tenant,
    user: User,
    *,
    use_template: TemplateSend | None,
    plain: bool = False,
) -> str:
    SenderRateLimiter(redis_for(settings), settings.send_rate_per_second).acquire(
        tenant.whatsapp_sender
    )
    try:
        sent = channel.send(_outbound(message, use_template, plain=plain))
    except SendFailed as failed:
        if _options_refused(message, use_template, plain, failed):
            log.warning("the provider refused the options; sending them as numbered text",
                        error=failed.reason, code=failed.code)  # fmt: skip
            return _create(conn, settings, channel, message, tenant, user,
                           use_template=None, plain=True)  # fmt: skip
        return _refused(conn, settings, channel, message, tenant, user, use_template, failed)
    template_id = use_template.content_sid if use_template is not None else None
    with conn.transaction():  # sent and billed together: never one without the other
        outbox.mark_sent(conn, message.id, sent.provider_message_id, sent.status, template_id)
        alerts = _charge(conn, settings, tenant, user, message)
    raise_alerts(settings, tenant, alerts, message.correlation_id)
    metrics.observe_send("sent")
    if use_template is not None:
        metrics.observe_template_send(use_template.purpose, "sent")
    log.info("sent", provider_message_id=sent.provider_message_id, status=sent.status,
             template=bool(template_id))  # fmt: skip
    return "sent"


def _options_refused(
    message: Message, use_template: TemplateSend | None, plain: bool, failed: SendFailed
) -> bool:
    """Whether a permanent refusal may be of the buttons or list themselves (a provider that
    does not draw them for this sender): then the same reply goes out as numbered text."""
    if message.choices is None or use_template is not None or plain:
        return False
    return failed.outcome is SendOutcome.FAIL and interactive(Choices.from_json(message.choices))


def _charge(
    conn: Conn, settings: Settings, tenant: Tenant, user: User, message: Message
) -> list[Alert]:
    """Count one sent message against the budgets and in the ledger. Sends are never held
    back by a budget: a reply already paid for, a notice or a staff reply always goes out."""
    cost = send_cost(settings, 1)
    usage = Usage(kind="send", parts=1, cost=cost, route=message.purpose,
                  correlation_id=message.correlation_id)  # fmt: skip
    return record_usage(conn, spender_for(tenant, user), usage)


def _refused(
    conn: Conn,
    settings: Settings,
    channel: Channel,
    message: Message,
    tenant: Tenant,
    user: User,
    use_template: TemplateSend | None,
    failed: SendFailed,
) -> str:
    """Act on the provider's refusal: retry, resend as the template, or fail with the reason."""
    if failed.outcome is SendOutcome.RETRY:
        raise _Retry(failed.reason, failed.code) from failed
    if failed.outcome is SendOutcome.TEMPLATE and use_template is None:
        try:
            template = closed_window_send(conn, tenant, user, message)
        except TemplateUnavailable as unavailable:
            return _no_template(conn, channel, message, unavailable)
        log.info("outside the 24-hour window; sending the template for its purpose",
                 purpose=template.purpose, language=template.language)  # fmt: skip
        return _create(conn, settings, channel, message, tenant, user, use_template=template)
    if failed.outcome is SendOutcome.OPTED_OUT:
        tenants.set_opted_out(conn, user.id, opted_out=True)
    outbox.mark_failed(conn, message.id, failed.reason, error_code=failed.code)
    metrics.observe_send("failed", failed.code)
    log.error("send failed", error=failed.reason, code=failed.code)
    return "failed"


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
    delay = retry_send(redis_for(settings), settings, message, attempt + 1)
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
