"""Run one example through the real assistant graph, stopping before any tool runs.

The graph is `graphs.assistant.build_graph()` compiled with an in-memory checkpointer and
`interrupt_before` every `*_tools` node: the specialist's tool calls are recorded but never
executed, so no database is needed and nothing is written. A handoff pauses on `interrupt()`,
which counts as a finished handoff. The model is whatever the environment configures (the
offline model when no `OPENAI_API_KEY`/`OPENAI_BASE_URL` is set).
"""

from __future__ import annotations

import uuid
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.state import CompiledStateGraph, StateGraph

from evals.dataset import Example
from evals.scoring import Outcome, ToolCall
from graphs.context import Context

EVAL_TENANT_ID = "00000000-0000-4000-8000-00000000e7a1"
EVAL_USER_ID = "00000000-0000-4000-8000-00000000e7a2"
"""Fake ids for the run context: tools never run, so nothing looks them up."""


def compile_for_eval(
    builder: StateGraph[Any, Any, Any, Any],
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Compile ``builder`` to stop before every tool node, with an in-memory checkpointer."""
    tool_nodes = [name for name in builder.nodes if name.endswith("_tools")]
    return builder.compile(checkpointer=InMemorySaver(), interrupt_before=tool_nodes)


class GraphTarget:
    """Run examples through one compiled graph, each on a new thread."""

    def __init__(self, builder: StateGraph[Any, Any, Any, Any] | None = None) -> None:
        """Compile ``builder`` (default: the assistant graph) for evaluation."""
        if builder is None:
            from graphs.assistant import build_graph

            builder = build_graph()
        self.graph = compile_for_eval(builder)

    def __call__(self, example: Example) -> Outcome:
        """Run ``example`` and report what the graph did; a crash becomes an outcome error."""
        config: dict[str, Any] = {"configurable": {"thread_id": f"eval-{uuid.uuid4()}"}}
        context = Context(features=example.plan, tenant_id=EVAL_TENANT_ID, user_id=EVAL_USER_ID)
        try:
            self.graph.invoke({"messages": [HumanMessage(example.text)]}, config, context=context)
            values = self.graph.get_state(config).values
        except Exception as exc:  # one broken example must not stop the evaluation
            return Outcome(error=f"{type(exc).__name__}: {exc}")
        return outcome_of(values)


def outcome_of(values: dict[str, Any]) -> Outcome:
    """Read the route, first tool calls, reply and language from a run's state values."""
    messages = list(values.get("messages") or [])
    last_human = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=-1)
    first_ai = next((m for m in messages[last_human + 1 :] if isinstance(m, AIMessage)), None)
    calls = tuple(
        ToolCall(str(call["name"]), dict(call.get("args") or {}))
        for call in (first_ai.tool_calls if first_ai is not None else [])
    )
    return Outcome(
        route=str(values.get("route") or ""),
        tool_calls=calls,
        reply=str(values.get("reply") or ""),
        language=str(values.get("language") or ""),
        local_time=str(values.get("local_time") or ""),
    )
