"""Run the assistant graph for a job: checkpointed in Postgres, traced, audited, resumable.

One place compiles the graph with the Postgres checkpointer and memory store, binds the job's
tenant-scoped connection for the tools, labels the run for LangSmith, and keeps an `ai_results`
row of what it decided and did.

Durability is `sync`: every step's checkpoint is written before the next step starts. A worker
killed after a tool ran resumes from the checkpoint that holds the tool's result, and the model's
tool calls keep their ids, so the tools' per-call idempotency keys stop a second write.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import psycopg
import structlog
from langchain_core.callbacks import UsageMetadataCallbackHandler
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    HumanMessage,
    RemoveMessage,
    ToolMessage,
)
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, StateSnapshot

from graphs.assistant import graph as assistant
from graphs.context import Context
from server import metrics
from server.budget_guard import BudgetGuard
from server.budgets import raise_alerts, spender_for
from server.jobs.common import redis_for
from server.jobs.queue import schedule_reminder
from server.metrics_llm import LLMMetrics
from server.privacy import flush_traces, tracers_for
from server.settings import Settings, get_settings
from store import conversations, identity
from store.memory import memory_store
from store.pii import effective_policy
from store.records import Conversation, Message, Tenant, User
from tools._runtime import ToolResources, bind_resources

log = structlog.get_logger(__name__)

Conn = psycopg.Connection[Any]

HISTORY_REBUILD = 20
"""Messages read back from Postgres when a thread has no checkpoint (new or pruned)."""


@dataclass
class RunResult:
    """What one run (or resume) of the graph produced."""

    reply: str | None
    route: str | None = None
    route_reason: str | None = None
    interrupted: bool = False
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    resumed_from_checkpoint: bool = False
    answered: list[int] | None = None
    """The inbound message ids the run answered, when not all it was given: a crashed run
    finished first answers only its own messages; the newer ones are the next turn's."""
    choices: dict[str, Any] | None = None
    """The buttons or list offered with the reply (`graphs.state.State.choices`)."""


def compile_graph(conn: Conn) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The assistant graph on the job's connection: Postgres checkpoints and memory store.

    The graph is compiled once per process (`graphs.assistant.graph`, the one Studio serves);
    each run gets a copy bound to its own connection, which costs microseconds, not the ~10 ms
    of compiling again.
    """
    return assistant.copy(update={"checkpointer": PostgresSaver(conn), "store": memory_store(conn)})


def run_config(
    tenant: Tenant, user: User, conversation: Conversation, correlation_id: str, ids: list[int]
) -> RunnableConfig:
    """The thread, and what LangSmith shows about the run (ids only: no numbers, no text)."""
    return {
        "configurable": {"thread_id": conversation.thread_id},
        "run_name": "assistant",
        "tags": [f"tenant:{tenant.slug}", f"conversation:{conversation.id}"],
        "metadata": {
            "tenant_id": str(tenant.id),
            "tenant": tenant.slug,
            "user_id": str(user.id),
            "conversation_id": str(conversation.id),
            "correlation_id": correlation_id,
            "inbound_message_ids": ids,
        },
    }


VOICE_NOTE = "[voice note] "
"""Marks a transcript of the user's audio in the text the model reads."""
UNSURE = " (transcription unsure)"


def human_message(message: Message) -> HumanMessage:
    """Render one WhatsApp message for the model; the id makes a replay replace, not repeat.

    A voice note's transcript is the user's text, marked as heard from audio (and as unsure
    when the transcriber was, so the reply can say what it understood).
    """
    text = message.body.strip()
    parts = [f"[shared a location: {text}]" if message.kind == "location" else text] if text else []
    if heard := message.heard:
        parts.append(VOICE_NOTE + heard + (UNSURE if message.transcript_unsure else ""))
    for item in message.media:
        if heard and str(item.get("content_type", "")).lower().startswith("audio/"):
            continue
        parts.append(f"[attached {item.get('content_type') or 'a file'}, which you cannot open]")
    if not parts:
        parts = [f"[{message.kind} message]"]
    # A press names the option it answers (`nodes.choices`); the model reads only its title.
    pressed = {"choice": message.choice} if message.choice else {}
    return HumanMessage(content="\n".join(parts), id=f"wa-{message.id}", additional_kwargs=pressed)


def _history(conn: Conn, conversation: Conversation, before: int) -> list[AnyMessage]:
    """The conversation's recent exchange from Postgres, for a thread with no checkpoint."""
    history: list[AnyMessage] = []
    for message in conversations.recent_history(conn, conversation.id, before, HISTORY_REBUILD):
        if message.direction == "inbound":
            history.append(human_message(message))
        else:
            history.append(AIMessage(message.body, id=f"wa-{message.id}"))
    return history


@contextmanager
def _tools_bound(conn: Conn, tenant: Tenant, settings: Settings) -> Iterator[ToolResources]:
    schedule = partial(schedule_reminder, redis_for(settings)) if settings.redis_url else None
    resources = ToolResources(conn=conn, tenant_id=str(tenant.id), schedule_reminder=schedule)
    with bind_resources(resources):
        yield resources


def budget_guard(
    conn: Conn,
    settings: Settings,
    tenant: Tenant,
    user: User | None,
    config: RunnableConfig,
    *,
    enforce: bool,
    lock: Any = None,
) -> BudgetGuard:
    """The callback that holds each model call's cost against the budgets (`server.budgets`);
    with `enforce` off the calls are recorded, never stopped. Alerts go to the log and, after
    the settle commits, to the tenant's alert webhook."""
    cid = str((config.get("metadata") or {}).get("correlation_id") or "")
    alert = partial(raise_alerts, settings, tenant, cid=cid)
    return BudgetGuard(
        conn, settings, spender_for(tenant, user), enforce=enforce, correlation_id=cid or None,
        lock=lock, on_alerts=alert,
    )  # fmt: skip


def waiting_for_human(snapshot: StateSnapshot) -> bool:
    """Whether the thread (as `snapshot` shows it) is paused on a handoff interrupt."""
    return any(task.interrupts for task in snapshot.tasks)


def run_turn(
    conn: Conn,
    settings: Settings,
    *,
    tenant: Tenant,
    user: User,
    conversation: Conversation,
    pending: list[Message],
    context: Context,
    config: RunnableConfig,
    enforce_budget: bool = True,
) -> RunResult:
    """Answer `pending` on the conversation's thread; resume a crashed run of the same turn.

    Each model call holds its cost against the budgets first (`server.budgets`): a spent one
    raises `BudgetExhausted` out of the run, unless `enforce_budget` is off (a degraded run)."""
    graph = compile_graph(conn)
    snapshot = graph.get_state(config)
    values = snapshot.values
    in_thread = {m.id for m in values.get("messages") or []}
    started = [m.id for m in pending if f"wa-{m.id}" in in_thread]
    turn_started = bool(started) and started[-1] == pending[-1].id
    payload: Any
    resumed = False
    if turn_started and values.get("reply") and not snapshot.next:
        log.info("the checkpoint already holds this turn's reply; not running again")
        return _result(snapshot, resumed=True, usage={})
    if started and snapshot.next:
        # Finish the crashed step from its checkpoint: new input would drop it, and could
        # leave a tool call with no result in the thread. Newer messages wait for the next turn.
        log.info("resuming this turn's interrupted run from its checkpoint", next=snapshot.next,
                 later=[m.id for m in pending if m.id not in started])  # fmt: skip
        result = _invoke(graph, conn, settings, tenant, None, config, context, resumed=True,
                         user=user, enforce_budget=enforce_budget)  # fmt: skip
        result.answered = None if turn_started else started
        return result
    else:
        messages: list[AnyMessage] = [human_message(m) for m in pending]
        if not values.get("messages"):
            messages = [*_history(conn, conversation, pending[0].id), *messages]
        payload = {"messages": messages}
    return _invoke(graph, conn, settings, tenant, payload, config, context, resumed=resumed,
                   user=user, enforce_budget=enforce_budget)  # fmt: skip


def drop_unsent_reply(conn: Conn, config: RunnableConfig) -> None:
    """Take the turn's final answer out of the thread: it was never sent, so the next turn's
    model must not read it as said. The turn's messages, tool calls and results stay."""
    graph = compile_graph(conn)
    messages = graph.get_state(config).values.get("messages") or []
    last = messages[-1] if messages else None
    update: dict[str, Any] = {"reply": ""}
    if isinstance(last, AIMessage) and not last.tool_calls and last.id:
        update["messages"] = [RemoveMessage(id=last.id)]
    graph.update_state(config, update, as_node="reply")


def resume_turn(
    conn: Conn,
    settings: Settings,
    *,
    tenant: Tenant,
    resume: Any,
    context: Context,
    config: RunnableConfig,
) -> RunResult:
    """Resume a thread paused on a handoff with staff's response (`Command(resume=...)`);
    with `resume=None`, carry on a thread whose state was just updated (a staff takeover)."""
    graph = compile_graph(conn)
    payload = Command(resume=resume) if resume is not None else None
    return _invoke(graph, conn, settings, tenant, payload, config, context)


def _invoke(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    conn: Conn,
    settings: Settings,
    tenant: Tenant,
    payload: Any,
    config: RunnableConfig,
    context: Context,
    *,
    resumed: bool = False,
    user: User | None = None,
    enforce_budget: bool = False,
) -> RunResult:
    """Run the graph; without `user` (staff resuming a thread) only the tenant's budgets count
    the calls, and nothing is stopped: staff actions always go through."""
    usage = UsageMetadataCallbackHandler()
    tracers = tracers_for(tenant)
    started = time.monotonic()
    try:
        with _tools_bound(conn, tenant, settings) as resources:
            guard = budget_guard(conn, settings, tenant, user, config,
                                 enforce=enforce_budget and user is not None,
                                 lock=resources.lock)  # fmt: skip
            graph.invoke(
                payload,
                {**config, "callbacks": [usage, LLMMetrics(), guard, *tracers]},
                context=context,
                durability="sync",
            )
        elapsed = time.monotonic() - started
    except Exception:
        metrics.observe_graph_run("unknown", "error", time.monotonic() - started)
        raise
    finally:
        flush_traces(tracers)
    result = _result(graph.get_state(config), resumed=resumed, usage=usage.usage_metadata)
    metrics.observe_graph_run(result.route or "none", "ok", elapsed)
    return result


def context_for(tenant: Tenant, user: User, rights: identity.Entitlement) -> Context:
    """The run context for `user`: who they are, their plan's features, the tenant's prompts."""
    prompt = {"system_prompt": tenant.system_prompt} if tenant.system_prompt else {}
    settings = get_settings()
    notices_on = settings.date_notice_interval_seconds > 0  # the relay sweeps only then
    return Context(
        tenant_id=str(tenant.id),
        tenant_name=tenant.name,
        persona=tenant.persona,
        user_id=str(user.id),
        user_name=user.profile_name or "",
        locale=user.locale or tenant.default_locale,
        timezone=user.timezone or tenant.timezone,
        features=sorted(rights.features),
        handoff_message=tenant.handoff_message or "",
        pii_policy=effective_policy(tenant.pii_policy, tenant.trace_privacy),
        date_notice_days_before=settings.date_notice_days_before if notices_on else None,
        **prompt,
    )


def _result(snapshot: StateSnapshot, *, resumed: bool, usage: dict[str, Any]) -> RunResult:
    """What the run left in the thread's latest checkpoint (one read for all of it)."""
    values = snapshot.values
    interrupted = waiting_for_human(snapshot)
    return RunResult(
        reply=str(values.get("reply") or "") or None,
        choices=values.get("choices") or None,
        route=values.get("route") or None,
        route_reason=values.get("route_reason") or None,
        interrupted=interrupted,
        tool_calls=turn_tool_calls(values.get("messages") or []),
        prompt_tokens=sum(int(u.get("input_tokens", 0)) for u in usage.values()),
        completion_tokens=sum(int(u.get("output_tokens", 0)) for u in usage.values()),
        resumed_from_checkpoint=resumed,
    )


def turn_tool_calls(messages: list[AnyMessage]) -> list[dict[str, Any]]:
    """The tool calls since the turn's last user message, each with its result."""
    start = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=-1)
    results = {m.tool_call_id: m for m in messages[start + 1 :] if isinstance(m, ToolMessage)}
    calls = []
    for message in messages[start + 1 :]:
        if isinstance(message, AIMessage):
            for call in message.tool_calls:
                result = results.get(call["id"] or "")
                calls.append({
                    "id": call["id"], "name": call["name"], "args": call["args"],
                    "result": result.text if result is not None else None,
                    "status": result.status if result is not None else "not run",
                })  # fmt: skip
    return calls


def ms_since(started: float) -> int:
    """Milliseconds since `started` (a `time.monotonic()` reading)."""
    return int((time.monotonic() - started) * 1000)
