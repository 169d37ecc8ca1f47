"""The specialists' way to bring in a person: `request_human`.

Calling it does not reach anyone by itself: the graph sees the call and goes to the handoff
node, which pauses the run for support staff.
"""

from __future__ import annotations

from typing import Annotated

from langchain_core.tools import InjectedToolArg, tool
from langgraph.prebuilt import ToolRuntime
from pydantic import BaseModel, ConfigDict, Field, SkipValidation


class RequestHumanArgs(BaseModel):
    """Arguments of `request_human`."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    reason: str = Field(min_length=3, max_length=500, description="Why a person should take over.")
    runtime: Annotated[SkipValidation[ToolRuntime], InjectedToolArg] = Field(exclude=True)


@tool(args_schema=RequestHumanArgs)
def request_human(reason: str, runtime: ToolRuntime) -> str:
    """Hand the conversation to a person from the support team.

    Use it when the user asks for a person, when they are upset with the assistant, or when they
    need something none of your tools can do.
    """
    return f"A person from the support team has been asked to take over. Reason: {reason}"
