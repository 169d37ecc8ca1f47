"""Assemble the assistant graph.

load_context → retrieve_memories → router → one specialist (with its tools) → reply; or
router → handoff → wait_for_human, which pauses on `interrupt()` until staff resume it; or,
when the user pressed one of the options a reply offered, load_context → answer_choice → reply.

`graph` (compiled without a checkpointer) is what `langgraph dev` serves; the worker compiles
`build_graph()` with the Postgres checkpointer and store. No code differs between the two.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from graphs.context import Context
from graphs.state import InputState, OutputState, State
from nodes.choices import after_context, answer_choice
from nodes.context import load_context
from nodes.handoff import handoff, wait_for_human
from nodes.memory import retrieve_memories
from nodes.reply import reply
from nodes.router import route
from nodes.specialists import SPECIALISTS, after_agent, after_tools, agent_node, tools_node


def _to_route(state: State) -> str:
    return state.route or "general"


def build_graph() -> StateGraph[State, Context, InputState, OutputState]:
    """Return the uncompiled assistant graph."""
    builder = StateGraph(
        State, context_schema=Context, input_schema=InputState, output_schema=OutputState
    )
    builder.add_node("load_context", load_context)
    builder.add_node("retrieve_memories", retrieve_memories)
    builder.add_node("router", route)
    builder.add_node("answer_choice", answer_choice)
    builder.add_edge(START, "load_context")
    builder.add_conditional_edges("load_context", after_context,
                                  ["answer_choice", "retrieve_memories"])  # fmt: skip
    builder.add_edge("answer_choice", "reply")
    builder.add_edge("retrieve_memories", "router")
    builder.add_conditional_edges("router", _to_route, [*SPECIALISTS, "handoff"])
    for name, specialist in SPECIALISTS.items():
        # The route rides on the specialist's runs as LangSmith metadata, to filter traces by.
        builder.add_node(name, agent_node(specialist), metadata={"route": name})
        builder.add_node(tools_node(specialist), metadata={"route": name})
        builder.add_conditional_edges(name, after_agent, [f"{name}_tools", "reply"])
        builder.add_conditional_edges(f"{name}_tools", after_tools, [name, "handoff"])
    builder.add_node("handoff", handoff, metadata={"route": "handoff"})
    builder.add_node("wait_for_human", wait_for_human)
    builder.add_node("reply", reply)
    builder.add_edge("handoff", "wait_for_human")
    builder.add_edge("wait_for_human", END)
    builder.add_edge("reply", END)
    return builder


graph = build_graph().compile(name="assistant")
