"""The general assistant: conversation and help, answered by the language model."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import SystemMessage
from langgraph.runtime import Runtime

from graphs.context import Context
from graphs.models import load_chat_model
from graphs.prompts import FEATURE_NAMES, LANGUAGE_NAMES, NO_FEATURES, render
from graphs.state import Language, State

HISTORY_WINDOW = 30
"""How many recent messages the model sees; older ones live in Postgres and memory."""


def general_assistant(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Answer the user's latest messages with the configured chat model."""
    context = runtime.context or Context()
    system = render(
        context.system_prompt,
        tenant_name=context.tenant_name,
        user_name=context.user_name or "the user",
        language_name=LANGUAGE_NAMES[state.language],
        local_time=state.local_time,
        persona=context.persona,
        capabilities=_capabilities(context.features, state.language),
    )
    model = load_chat_model(context.model)
    response = model.invoke([SystemMessage(system), *state.messages[-HISTORY_WINDOW:]])
    return {"messages": [response]}


def _capabilities(features: list[str], language: Language) -> str:
    names = [FEATURE_NAMES[f][language] for f in sorted(features) if f in FEATURE_NAMES]
    return "; ".join(names) if names else NO_FEATURES[language]
