"""The specialists' way to bring in a person: `request_human`.

Calling it does not reach anyone by itself: the graph sees the call and goes to the handoff
node, which pauses the run for support staff.
"""

from __future__ import annotations

from langchain_core.tools import tool
from langgraph.prebuilt import ToolRuntime
from pydantic import Field

from tools._args import ToolArgs


class RequestHumanArgs(ToolArgs):
    """Arguments of `request_human`."""

    reason: str = Field(min_length=3, max_length=500, description="Why a person should take over.")


@tool(args_schema=RequestHumanArgs)
def request_human(reason: str, runtime: ToolRuntime) -> str:
    """Hand the conversation to a person from the support team.

    Use it when the user asks for a person, when they are upset with the assistant, or when they
    need something none of your tools can do.
    """
    return f"A person from the support team has been asked to take over. Reason: {reason}"
