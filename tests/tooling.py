"""Run one tool the way the graph does: through a `ToolNode`, with a run context.

`replay_tool` runs a call in a step that dies right after its tool ran, then resumes that step
from its checkpoint, as a worker restarted after a crash does.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from graphs.context import Context


def run_tool(
    tool: BaseTool, args: dict[str, Any], context: Context, *, call_id: str = "call_1"
) -> ToolMessage:
    """Call `tool` with `args` as a model would, and return the message the model gets back."""
    builder = StateGraph(MessagesState, context_schema=Context)
    builder.add_node("tools", ToolNode([tool], handle_tool_errors=True))
    builder.add_edge(START, "tools")
    builder.add_edge("tools", END)
    call = {"name": tool.name, "args": args, "id": call_id, "type": "tool_call"}
    result = builder.compile().invoke(
        {"messages": [AIMessage("", tool_calls=[call])]}, context=context
    )
    message = result["messages"][-1]
    assert isinstance(message, ToolMessage)
    return message


class Crash(Exception):
    """The worker dying right after a step's tools wrote, before the step was checkpointed."""


def crashing_graph(tools: list[BaseTool], crashes: int = 0) -> Any:
    """Compile START -> tools -> END on an in-memory checkpointer; the step dies `crashes` times.

    The graph's `answers` attribute collects every message the tools answered, crashed or not.
    """
    node = ToolNode(tools, handle_tool_errors=True)
    left = [crashes]
    answers: list[ToolMessage] = []

    def run(state: MessagesState, config: RunnableConfig) -> dict[str, Any]:
        result = node.invoke(state, config)
        answers.extend(m for m in result["messages"] if isinstance(m, ToolMessage))
        if left[0] > 0:
            left[0] -= 1
            raise Crash("worker killed after the tools ran")
        return result

    builder = StateGraph(MessagesState, context_schema=Context)
    builder.add_node("tools", run)
    builder.add_edge(START, "tools")
    builder.add_edge("tools", END)
    graph = builder.compile(checkpointer=InMemorySaver())
    graph.answers = answers  # type: ignore[attr-defined]
    return graph


def replay_tool(
    tool: BaseTool, args: dict[str, Any], context: Context, *, call_id: str = "call_1"
) -> tuple[ToolMessage, ToolMessage]:
    """Run a call in a step that crashes after it, resume the step; return both answers."""
    graph = crashing_graph([tool], crashes=1)
    config: RunnableConfig = {"configurable": {"thread_id": f"replay-{call_id}"}}
    call = {"name": tool.name, "args": args, "id": call_id, "type": "tool_call"}
    try:
        graph.invoke({"messages": [AIMessage("", tool_calls=[call])]}, config, context=context)
    except Crash:
        pass
    else:
        raise AssertionError("the step was meant to crash")
    graph.invoke(None, config, context=context)
    first, again = graph.answers
    return first, again
