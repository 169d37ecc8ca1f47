"""Load the turn's context: the user's language (detected, then remembered) and local time.

Who the user is, their plan and effective feature flags arrive in the run context, which the
worker fills from the database (through the Redis profile cache); this node derives what the
other nodes need from it and from the conversation so far.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.runtime import Runtime

from graphs.context import Context
from graphs.language import Language, detect_language, language_of_locale
from graphs.state import State


def _local_now(timezone: str) -> datetime:
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return datetime.now(UTC).astimezone(zone)


def turn_messages(messages: list[AnyMessage]) -> list[HumanMessage]:
    """The user's messages of this turn: those after the last answer."""
    turn: list[HumanMessage] = []
    for message in reversed(messages):
        if isinstance(message, AIMessage):
            break
        if isinstance(message, HumanMessage):
            turn.append(message)
    return turn[::-1]


def turn_text(messages: list[AnyMessage]) -> str:
    """The text of this turn's user messages, one per line."""
    return "\n".join(m.text for m in turn_messages(messages)).strip()


def load_context(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Work out the language to answer in and the user's local time for this turn.

    An unclear message ("ok", "👍") keeps the language the conversation already uses; a new
    conversation starts from the user's locale.
    """
    context = runtime.context or Context()
    started = any(isinstance(m, AIMessage) for m in state.messages)
    fallback: Language = state.language if started else language_of_locale(context.locale)
    text = turn_text(state.messages)
    return {
        "language": detect_language(text, default=fallback) if text else fallback,
        "local_time": _local_now(context.timezone).isoformat(timespec="minutes"),
        "route": "",
        "route_reason": "",
        "memories": [],
        "handoff": None,
        "reply": "",
        "choices": None,
    }
