"""Assemble the assistant graph.

`graph` (compiled without a checkpointer) is what `langgraph dev` serves; the worker compiles
`build_graph()` with the Postgres checkpointer and store. No code differs between the two.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from graphs.context import Context
from graphs.state import InputState, OutputState, State
from nodes.context import load_context
from nodes.general import general_assistant
from nodes.reply import reply


def build_graph() -> StateGraph[State, Context, InputState, OutputState]:
    """Return the uncompiled assistant graph: load context -> general assistant -> reply."""
    builder = StateGraph(
        State, context_schema=Context, input_schema=InputState, output_schema=OutputState
    )
    builder.add_node("load_context", load_context)
    builder.add_node("general", general_assistant)
    builder.add_node("reply", reply)
    builder.add_edge(START, "load_context")
    builder.add_edge("load_context", "general")
    builder.add_edge("general", "reply")
    builder.add_edge("reply", END)
    return builder


graph = build_graph().compile(name="assistant")
