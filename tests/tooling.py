"""Run one tool the way the graph does: through a `ToolNode`, with a run context."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import BaseTool
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
