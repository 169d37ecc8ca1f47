"""The general assistant: conversation and help, answered by the language model."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import SystemMessage
from langgraph.runtime import Runtime

from graphs.context import Context
from graphs.models import load_chat_model
from graphs.prompts import LANGUAGE_NAMES
from graphs.state import State

HISTORY_WINDOW = 30
"""How many recent messages the model sees; older ones live in Postgres and memory."""


def general_assistant(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Answer the user's latest messages with the configured chat model."""
    context = runtime.context or Context()
    system = context.system_prompt.format(
        tenant_name=context.tenant_name,
        user_name=context.user_name or "the user",
        language_name=LANGUAGE_NAMES[state.language],
        local_time=state.local_time,
        persona=context.persona,
    )
    model = load_chat_model(context.model)
    response = model.invoke([SystemMessage(system), *state.messages[-HISTORY_WINDOW:]])
    return {"messages": [response]}
