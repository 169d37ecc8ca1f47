"""The support side of a handoff, as RQ jobs: take over, hand back, and the automatic return.

The graph pauses in its `wait_for_human` node (an `interrupt()`); the thread's checkpoint in
PostgreSQL is the only state, so any worker process can resume it. Each job takes the
conversation's advisory lock (waiting for a turn in progress to finish), checks the state, acts
on the thread, and records the transition.

- `hand_back`: staff are done. The thread resumes with `Command(resume=...)` carrying the
  exchange between the user and staff, so the assistant knows what the person said; the
  conversation is ACTIVE again.
- `take_over`: staff take an ACTIVE conversation proactively: the thread is sent to the
  handoff node as if the router had chosen it.
- `auto_return`: when staff stay silent for the tenant's `handoff_auto_return_seconds` while
  the user waits, the assistant takes the conversation back and tells the user once.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import structlog
from langchain_core.runnables import RunnableConfig

from channels.splitting import split_body
from graphs.context import Context
from graphs.language import detect_language
from graphs.prompts import HANDOFF_RETURN_REPLY
from server.jobs import runner
from server.jobs.common import connect, redis_for
from server.jobs.queue import enqueue_auto_return
from server.jobs.send import queue_next_send
from server.logs import bind_correlation_id
from server.settings import Settings, get_settings
from store import conversations, identity, outbox, support, tenants
from store.locks import conversation_lock, held
from store.records import Conversation, Tenant

log = structlog.get_logger(__name__)

Conn = psycopg.Connection[Any]


def handed_off(
    conn: Conn, settings: Settings, tenant: Tenant, conversation_id: UUID, result: runner.RunResult
) -> None:
    """Record that a turn paused on a handoff: the conversation is with a person now."""
    reason = result.route_reason or "A specialist asked for a person."
    with conn.transaction():
        conversations.transition(
            conn, conversation_id, "HANDOFF", actor_kind="assistant",
            actor=result.route or "handoff", reason=reason, route=_specialist(result),
        )  # fmt: skip
    schedule_auto_return(conn, settings, tenant, conversation_id)


def _specialist(result: runner.RunResult) -> str:
    names = [call["name"] for call in result.tool_calls]
    return "specialist" if "request_human" in names else "router"


def schedule_auto_return(
    conn: Conn, settings: Settings, tenant: Tenant, conversation_id: UUID
) -> None:
    """Queue the auto-return check for when staff's silence would run out."""
    seconds = tenant.handoff_auto_return_seconds
    if seconds <= 0:
        return
    handoff = conversations.handoff_of(conn, conversation_id)
    if handoff is None:
        return
    due = _return_due(handoff, seconds)
    enqueue_auto_return(redis_for(settings), settings, str(tenant.id), str(conversation_id), due)


def _return_due(handoff: conversations.Handoff, seconds: int) -> datetime:
    """When staff's silence runs out: `seconds` after the handoff or staff's last action."""
    moments = [handoff.handoff_at, handoff.staff_active_at, handoff.state_changed_at]
    latest = max(m for m in moments if m is not None)
    return latest + timedelta(seconds=seconds)


def hand_back(
    tenant_id: str, conversation_id: str, staff: str, note: str, correlation_id: str
) -> str:
    """Resume the paused thread with what staff and the user said; the assistant takes over."""
    settings = get_settings()
    bind_correlation_id(correlation_id, job="hand_back", conversation_id=conversation_id)
    with connect(settings, tenant_id) as conn, held(conn, conversation_lock(conversation_id)):
        conversation = conversations.conversation_by_id(conn, UUID(conversation_id))
        if conversation is None or conversation.state not in conversations.WITH_STAFF:
            log.info("nothing to hand back", state=conversation and conversation.state)
            return "not with staff"
        exchange = _exchange(conn, conversation)
        resume = [{"type": "response", "args": {"note": note, "exchange": exchange}}]
        _resume(conn, settings, conversation, resume, correlation_id)
        with conn.transaction():
            conversations.transition(
                conn, conversation.id, "ACTIVE", actor_kind="staff", actor=staff,
                reason=note or "Handed back to the assistant.",
            )  # fmt: skip
    log.info("handed back to the assistant", staff=staff, exchanged=len(exchange))
    return "handed back"


def _exchange(conn: Conn, conversation: Conversation) -> list[dict[str, Any]]:
    """What the user and staff said since the handoff, oldest first."""
    since = conversation.handoff_at or datetime.min.replace(tzinfo=UTC)
    return [
        {"id": r.id, "role": "user" if r.direction == "inbound" else "staff", "text": r.body}
        for r in support.said_since(conn, conversation.id, since)
    ]


def _prepare(
    conn: Conn, conversation: Conversation, cid: str
) -> tuple[Tenant, Context, RunnableConfig]:
    """The tenant, run context and thread config to run `conversation`'s graph."""
    tenant = tenants.tenant_by_id(conn, conversation.tenant_id)
    user = tenants.user_by_id(conn, conversation.user_id)
    assert tenant is not None and user is not None
    context = runner.context_for(tenant, user, identity.entitlement(conn, tenant.id, user.id))
    return tenant, context, runner.run_config(tenant, user, conversation, cid, [])


def _resume(
    conn: Conn, settings: Settings, conversation: Conversation, resume: Any, cid: str
) -> runner.RunResult | None:
    """Resume the thread's pending interrupt, if it has one, and audit the run."""
    tenant, context, config = _prepare(conn, conversation, cid)
    if not runner.waiting_for_human(runner.compile_graph(conn).get_state(config)):
        log.info("the thread was not paused on a handoff; nothing to resume")
        return None
    started = time.monotonic()
    result = runner.resume_turn(
        conn, settings, tenant=tenant, resume=resume, context=context, config=config
    )
    with conn.transaction():
        conversations.record_ai_result(
            conn, conversation=conversation, correlation_id=cid, inbound_ids=[],
            reply=None, model=context.model, error=None, duration_ms=runner.ms_since(started),
            route="handoff", route_reason="Resumed from support.", interrupted=result.interrupted,
        )  # fmt: skip
    return result


def take_over(
    tenant_id: str, conversation_id: str, staff: str, reason: str, correlation_id: str
) -> str:
    """Pause an ACTIVE conversation's thread on the handoff node, for `staff`."""
    settings = get_settings()
    bind_correlation_id(correlation_id, job="take_over", conversation_id=conversation_id)
    with connect(settings, tenant_id) as conn, held(conn, conversation_lock(conversation_id)):
        conversation = conversations.conversation_by_id(conn, UUID(conversation_id))
        if conversation is None or conversation.state != "ACTIVE":
            return "not active"
        tenant, context, config = _prepare(conn, conversation, correlation_id)
        graph = runner.compile_graph(conn)
        graph.update_state(config, {"route": "handoff", "route_reason": reason}, as_node="router")
        result = runner.resume_turn(
            conn, settings, tenant=tenant, resume=None, context=context, config=config
        )
        with conn.transaction():
            conversations.transition(
                conn, conversation.id, "HANDOFF", actor_kind="staff", actor=staff,
                reason=reason, route="staff",
            )  # fmt: skip
            conversations.claim(conn, conversation.id, staff)
            if result.reply:
                _send(conn, tenant, conversation, [result.reply], f"takeover:{correlation_id}",
                      correlation_id, purpose="handoff")  # fmt: skip
        queue_next_send(conn, settings, conversation.id)
    log.info("staff took the conversation over", staff=staff)
    return "taken over"


def auto_return(tenant_id: str, conversation_id: str) -> str:
    """Give the conversation back to the assistant if staff have been silent long enough."""
    settings = get_settings()
    cid = f"auto-return-{conversation_id}"
    bind_correlation_id(cid, job="auto_return", conversation_id=conversation_id)
    with connect(settings, tenant_id) as conn, held(conn, conversation_lock(conversation_id)):
        conversation = conversations.conversation_by_id(conn, UUID(conversation_id))
        tenant = tenants.tenant_by_id(conn, UUID(tenant_id))
        handoff = conversations.handoff_of(conn, UUID(conversation_id))
        if conversation is None or tenant is None or handoff is None:
            return "missing"
        if handoff.state != "HANDOFF" or tenant.handoff_auto_return_seconds <= 0:
            return f"not waiting ({handoff.state})"
        due = _return_due(handoff, tenant.handoff_auto_return_seconds)
        if datetime.now(UTC) < due:  # staff acted since, or the scheduler ran it early
            schedule_auto_return(conn, settings, tenant, conversation.id)
            return "not yet"
        _resume(conn, settings, conversation, [{"type": "ignore", "args": None}], cid)
        with conn.transaction():
            conversations.transition(
                conn, conversation.id, "ACTIVE", actor_kind="system", actor="auto-return",
                reason=f"No reply from staff in {tenant.handoff_auto_return_seconds} s.",
            )  # fmt: skip
            stamp = int(handoff.handoff_at.timestamp()) if handoff.handoff_at else 0
            text = (
                tenant.handoff_return_message or HANDOFF_RETURN_REPLY[_language(conn, conversation)]
            )
            _send(conn, tenant, conversation, [text], f"auto-return:{conversation.id}:{stamp}",
                  cid, purpose="notice")  # fmt: skip
        queue_next_send(conn, settings, conversation.id)
    log.info("staff were silent; the assistant took the conversation back")
    return "returned"


def _language(conn: Conn, conversation: Conversation) -> str:
    return detect_language(support.recent_inbound_text(conn, conversation.id))


def _send(
    conn: Conn, tenant: Tenant, conversation: Conversation, parts: list[str], key: str,
    cid: str, *, purpose: str,
) -> None:  # fmt: skip
    """Put `parts` in the conversation's outbox (once per `key`)."""
    user = tenants.user_by_id(conn, conversation.user_id)
    assert user is not None
    outbox.insert_outbound_parts(
        conn, tenant=tenant, conversation_id=conversation.id, to_address=user.address,
        parts=[part for text in parts for part in split_body(text)], key=key,
        correlation_id=cid, purpose=purpose,
    )  # fmt: skip
