"""What a tool may touch: the run's tenant and user, and a database connection scoped to them.

Tools never take a tenant or user id from the model. They read both from the run context
(`ToolRuntime.context`, filled by the worker from the database) and reach PostgreSQL through
`tool_db`, which yields a connection whose row-level security sees only that tenant.

In a worker the job binds its own tenant-scoped connection (and Redis) with `bind_resources`
for the length of the graph run, so tool writes share the job's session. Anywhere else
(`langgraph dev`, the eval command, a test) `tool_db` opens a connection from `DATABASE_URL`.
"""

from __future__ import annotations

import threading
import uuid
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from langchain_core.messages import AIMessage
from langgraph.prebuilt import ToolRuntime

from graphs.context import Context
from store.scoping import dedicated_connection
from store.settings import DatabaseSettings


class ToolError(Exception):
    """A problem the model should read and can fix (bad date, unknown id); never a crash."""


@dataclass(frozen=True)
class Scope:
    """Whose data a tool call reads and writes, from the run context."""

    tenant_id: str
    user_id: str
    timezone: str
    locale: str


def scope_of(context: Context | None) -> Scope:
    """Return the run's scope, or raise `ToolError` when the run has no tenant and user."""
    if context is None or not context.tenant_id or not context.user_id:
        raise ToolError(
            "This conversation has no tenant and user, so nothing can be stored or read. "
            "Tell the user this feature is unavailable here."
        )
    return Scope(context.tenant_id, context.user_id, context.timezone, context.locale)


def turn_language(runtime: ToolRuntime, scope: Scope) -> str:
    """The turn's language ("pt" or "en"): the graph's choice, else the user's locale."""
    state = runtime.state
    chosen = state.get("language") if isinstance(state, dict) else getattr(state, "language", "")
    if chosen in ("pt", "en"):
        return str(chosen)
    return "en" if scope.locale.lower().startswith("en") else "pt"


def call_key(runtime: ToolRuntime) -> str:
    """Return the idempotency key of this tool call: its run step, its place and its id.

    Side-effecting tools store it so that a retried or resumed step (which runs again from the
    same checkpoint) finds its own write and does nothing twice. The model's `tool_call_id`
    alone is not enough: some OpenAI-compatible servers number calls `call_0`, `call_1`... on
    every turn (a later turn's `call_0` must write again), and some send one id, or none, for
    every call of a message (each of those calls must write). Outside a graph (no checkpoint)
    every call gets a fresh key, so nothing is ever dropped.
    """
    call = runtime.tool_call_id or ""
    info = runtime.execution_info
    if info is None or not info.checkpoint_id:
        return f"adhoc:{uuid.uuid4().hex}:{call}"
    place = _place(runtime)
    return f"{info.thread_id or '-'}:{info.checkpoint_id}:{'-' if place is None else place}:{call}"


_claims_lock = threading.Lock()
_claims: dict[int, dict[str, list[weakref.ref[ToolRuntime]]]] = {}
"""Per AIMessage being executed (by `id`), which runtimes took which call of a repeated id."""


def _place(runtime: ToolRuntime) -> int | None:
    """Return the index of this call among the tool calls of the message being executed.

    The message is the last AI message of the state, as `ToolNode` reads it. When several calls
    share this call's id, each runtime of one execution takes the next of their places; such
    calls are told apart by place only, so on a resumed step each of them is still written
    once, though not necessarily answered under the same place as before.
    """
    message = _calling_message(runtime.state)
    if message is None:
        return None
    call = runtime.tool_call_id or ""
    places = [i for i, c in enumerate(message.tool_calls) if (c.get("id") or "") == call]
    if len(places) <= 1:
        return places[0] if places else None
    with _claims_lock:
        if id(message) not in _claims:
            _claims[id(message)] = {}
            weakref.finalize(message, _claims.pop, id(message), None)
        taken = _claims[id(message)].setdefault(call, [])
        for n, ref in enumerate(taken):
            if ref() is runtime:
                return places[n % len(places)]
        taken.append(weakref.ref(runtime))
        return places[(len(taken) - 1) % len(places)]


def _calling_message(state: object) -> AIMessage | None:
    """Return the last AI message of a tool node's state (a dict, an object or a list)."""
    if isinstance(state, dict):
        messages = state.get("messages")
    elif isinstance(state, list):
        messages = state
    else:
        messages = getattr(state, "messages", None)
    for message in reversed(messages or []):
        if isinstance(message, AIMessage):
            return message
    return None


ReminderScheduler = Callable[[str, int, str, datetime], object]
"""Schedule a stored reminder's delivery: (tenant id, reminder id, correlation id, due at)."""


@dataclass
class ToolResources:
    """What a job lends its tools: its tenant-scoped connection and how to schedule a reminder.

    The worker binds the scheduler (an RQ job at the reminder's time); tools never import the
    jobs, so they run the same under `langgraph dev`, where nothing is bound.
    """

    conn: psycopg.Connection[dict[str, Any]]
    tenant_id: str
    schedule_reminder: ReminderScheduler | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


_bound: ContextVar[ToolResources | None] = ContextVar("conversa_tool_resources", default=None)


@contextmanager
def bind_resources(resources: ToolResources) -> Iterator[None]:
    """Let the tools of the graph run inside this block use `resources`."""
    token = _bound.set(resources)
    try:
        yield
    finally:
        _bound.reset(token)


def bound_scheduler() -> ReminderScheduler | None:
    """The reminder scheduler bound by the worker, if any."""
    resources = _bound.get()
    return resources.schedule_reminder if resources is not None else None


@contextmanager
def tool_db(scope: Scope) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """Yield a connection scoped to `scope.tenant_id`, inside one transaction.

    Parallel tool calls run on threads; the bound connection is used by one at a time.
    """
    resources = _bound.get()
    if resources is not None:
        if resources.tenant_id != scope.tenant_id:
            raise ToolError("This run's tenant does not match the job's; refusing.")
        with resources.lock, resources.conn.transaction():
            yield resources.conn
        return
    settings = DatabaseSettings()
    if not settings.database_url:
        raise ToolError("No database is configured (DATABASE_URL); this tool cannot run here.")
    with (
        dedicated_connection(
            settings.database_url, settings.database_app_role, tenant_id=scope.tenant_id
        ) as conn,
        conn.transaction(),
    ):
        yield conn
