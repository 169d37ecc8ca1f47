"""The base of every tool's arguments: strict, with the injected runtime hidden from the model."""

from __future__ import annotations

from typing import Annotated, Any

from langchain_core.tools import InjectedToolArg
from langgraph.prebuilt import ToolRuntime
from pydantic import BaseModel, ConfigDict, Field, SkipValidation, field_validator

MAX_ID = 2**63 - 1
"""The largest id a table's `bigint` key holds: a record number above it names nothing."""


class ToolArgs(BaseModel):
    """Arguments a model may pass, and no others; `runtime` is injected by the ToolNode.

    A model that invents an argument (a `user_id`, say) is refused with the name of it; one that
    passes `runtime` has it overwritten by the injection. Text holding a NUL character or a lone
    surrogate (which PostgreSQL cannot store, and no user writes) is refused, field by field.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    runtime: Annotated[SkipValidation[ToolRuntime], InjectedToolArg] = Field(exclude=True)

    @field_validator("*", mode="before")
    @classmethod
    def _plain_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            if "\x00" in value:
                raise ValueError("contains a NUL character; send plain text without it")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError("is not valid Unicode text; send plain text") from exc
        return value
