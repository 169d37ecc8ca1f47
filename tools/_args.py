"""The base of every tool's arguments: strict, with the injected runtime hidden from the model."""

from __future__ import annotations

from typing import Annotated

from langchain_core.tools import InjectedToolArg
from langgraph.prebuilt import ToolRuntime
from pydantic import BaseModel, ConfigDict, Field, SkipValidation


class ToolArgs(BaseModel):
    """Arguments a model may pass, and no others; `runtime` is injected by the ToolNode.

    A model that invents an argument (a `user_id`, say) is refused with the name of it; one that
    passes `runtime` has it overwritten by the injection.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    runtime: Annotated[SkipValidation[ToolRuntime], InjectedToolArg] = Field(exclude=True)
