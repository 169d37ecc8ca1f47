"""The RQ jobs: answer a turn with the graph, and send a reply through Twilio.

Jobs take JSON primitives (a message id and the correlation id), open their own connections
after the worker forks, and are idempotent: running one twice changes nothing the second time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import structlog
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.store.postgres import PostgresStore
from psycopg.rows import dict_row
from rq import get_current_job
from twilio.base.exceptions import TwilioException, TwilioRestException

from channels.twilio_client import make_twilio_client
from graphs.assistant import build_graph
from graphs.context import Context
from server.logs import bind_correlation_id
from server.queueing import enqueue_send
from server.services import redis_client
from server.settings import Settings, get_settings
from store import repository as repo
from store.records import Conversation, Message, Tenant, User

log = structlog.get_logger(__name__)


@contextmanager
def _connect(settings: Settings) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL is not set; start the worker with `conversa worker`")
    with psycopg.connect(
        settings.database_url, autocommit=True, prepare_threshold=0, row_factory=dict_row
    ) as conn:
        yield conn


def _final_attempt() -> bool:
    job = get_current_job()
    return job is None or not job.retries_left


@contextmanager
def _conversation_lock(conn: psycopg.Connection[Any], conversation: Conversation) -> Iterator[None]:
    """Hold the conversation's advisory lock: one graph run per conversation at a time."""
    key = str(conversation.id)
    conn.execute("select pg_advisory_lock(hashtextextended(%s, 0))", (key,))
    try:
        yield
    finally:
        conn.execute("select pg_advisory_unlock(hashtextextended(%s, 0))", (key,))


def _context(tenant: Tenant, user: User) -> Context:
    return Context(
        tenant_id=str(tenant.id),
        tenant_name=tenant.name,
        persona=tenant.persona,
        user_id=str(user.id),
        user_name=user.profile_name or "",
        locale=user.locale or tenant.default_locale,
        timezone=tenant.timezone,
    )


def _human(message: Message) -> HumanMessage:
    text = message.body if message.body.strip() else f"[{message.kind} message]"
    return HumanMessage(content=text, id=f"wa-{message.id}")


def process_ai_response(message_id: int, correlation_id: str) -> str:
    """Answer inbound message `message_id`, together with any others still waiting in its turn."""
    settings = get_settings()
    bind_correlation_id(correlation_id, message_id=message_id, job="process_ai_response")
    with _connect(settings) as conn:
        message = repo.message_by_id(conn, message_id)
        if message is None or message.direction != "inbound":
            log.warning("no such inbound message; nothing to do")
            return "missing"
        conversation = repo.conversation_by_id(conn, message.conversation_id)
        assert conversation is not None
        with _conversation_lock(conn, conversation):
            return _answer_turn(conn, settings, conversation, correlation_id)


def _answer_turn(
    conn: psycopg.Connection[Any],
    settings: Settings,
    conversation: Conversation,
    correlation_id: str,
) -> str:
    pending = repo.unanswered_inbound(conn, conversation.id)
    if not pending:
        log.info("turn already answered")
        return "already answered"
    tenant = repo.tenant_by_id(conn, conversation.tenant_id)
    user = repo.user_by_id(conn, conversation.user_id)
    assert tenant is not None and user is not None
    structlog.contextvars.bind_contextvars(tenant=tenant.slug, thread_id=conversation.thread_id)
    context = _context(tenant, user)
    config: RunnableConfig = {
        "configurable": {"thread_id": conversation.thread_id},
        "run_name": "assistant",
        "tags": [f"tenant:{tenant.slug}"],
        "metadata": {
            "tenant_id": str(tenant.id),
            "user_id": str(user.id),
            "conversation_id": str(conversation.id),
            "correlation_id": correlation_id,
            "inbound_message_ids": [m.id for m in pending],
        },
    }
    graph = build_graph().compile(checkpointer=PostgresSaver(conn), store=PostgresStore(conn))
    inbound_ids = [m.id for m in pending]
    started = time.monotonic()
    try:
        result = graph.invoke({"messages": [_human(m) for m in pending]}, config, context=context)
    except Exception as exc:
        elapsed = int((time.monotonic() - started) * 1000)
        error = f"{type(exc).__name__}: {exc}"
        final = _final_attempt()
        with conn.transaction():
            repo.record_ai_result(
                conn, conversation=conversation, correlation_id=correlation_id,
                inbound_ids=inbound_ids, reply=None, model=context.model, error=error,
                duration_ms=elapsed,
            )  # fmt: skip
            if final:
                repo.mark_processed(conn, inbound_ids, "failed", f"The assistant failed: {error}")
        log.error("graph run failed", error=error, final_attempt=final)
        raise
    finally:
        _flush_traces()
    elapsed = int((time.monotonic() - started) * 1000)
    reply: str = result["reply"]
    with conn.transaction():
        outbound = repo.insert_outbound(
            conn,
            tenant_id=tenant.id,
            conversation_id=conversation.id,
            idempotency_key=f"reply:{inbound_ids[0]}-{inbound_ids[-1]}:0",
            body=reply,
            from_address=tenant.whatsapp_sender,
            to_address=user.address,
            correlation_id=correlation_id,
        )
        repo.mark_processed(conn, inbound_ids, "answered")
        repo.record_ai_result(
            conn, conversation=conversation, correlation_id=correlation_id,
            inbound_ids=inbound_ids, reply=reply, model=context.model, error=None,
            duration_ms=elapsed,
        )  # fmt: skip
    log.info("turn answered", inbound=len(inbound_ids), outbound_id=outbound.id, ms=elapsed)
    if outbound.enqueued_at is None:
        enqueue_send(redis_client(_redis_url(settings)), settings, outbound.id, correlation_id)
        repo.mark_enqueued(conn, [outbound.id])
    return "answered"


def _redis_url(settings: Settings) -> str:
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set; start the worker with `conversa worker`")
    return settings.redis_url


def _flush_traces() -> None:
    """Send pending LangSmith traces before the work horse exits (a no-op when tracing is off)."""
    try:
        from langchain_core.tracers.langchain import wait_for_all_tracers

        wait_for_all_tracers()
    except Exception as exc:  # tracing must never fail a job
        log.warning("could not flush traces", error=str(exc))


_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


def send_whatsapp_message(message_id: int, correlation_id: str) -> str:
    """Send outbound message `message_id` through Twilio, once."""
    settings = get_settings()
    bind_correlation_id(correlation_id, message_id=message_id, job="send_whatsapp_message")
    with _connect(settings) as conn:
        try:
            with conn.transaction():
                return _send_locked(conn, settings, message_id)
        except (TwilioException, OSError) as exc:
            status = getattr(exc, "status", None)
            retryable = not isinstance(exc, TwilioRestException) or status in _RETRYABLE_STATUS
            error = _describe(exc)
            if retryable and not _final_attempt():
                log.warning("send failed; will retry", error=error)
                raise
            repo.mark_failed(conn, message_id, error)
            log.error("send failed", error=error, retryable=retryable)
            return "failed"


def _send_locked(conn: psycopg.Connection[Any], settings: Settings, message_id: int) -> str:
    message = repo.message_by_id(conn, message_id, lock=True)
    if message is None or message.direction != "outbound":
        log.warning("no such outbound message; nothing to do")
        return "missing"
    if message.status != "pending":
        log.info("already handled", status=message.status)
        return message.status
    tenant = repo.tenant_by_id(conn, message.tenant_id)
    assert tenant is not None
    client = make_twilio_client(
        tenant.twilio_account_sid,
        tenant.twilio_auth_token,
        api_base_url=settings.twilio_api_base_url,
    )
    sent = client.messages.create(
        to=message.to_address, from_=message.from_address, body=message.body
    )
    repo.mark_sent(conn, message.id, str(sent.sid), str(sent.status or "queued"))
    log.info("sent", provider_sid=sent.sid, status=sent.status)
    return "sent"


def _describe(exc: Exception) -> str:
    if isinstance(exc, TwilioRestException):
        return f"Twilio error {exc.code} (HTTP {exc.status}): {exc.msg}"
    return f"{type(exc).__name__}: {exc}"
