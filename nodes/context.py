"""Load the turn's context: the user's language and local time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from langchain_core.messages import HumanMessage
from langgraph.runtime import Runtime

from graphs.context import Context
from graphs.language import detect_language
from graphs.state import Language, State


def _local_now(timezone: str) -> datetime:
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return datetime.now(UTC).astimezone(zone)


def load_context(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Work out the language to answer in and the user's local time for this turn."""
    context = runtime.context or Context()
    fallback: Language = "en" if context.locale.lower().startswith("en") else "pt"
    last_human = next((m for m in reversed(state.messages) if isinstance(m, HumanMessage)), None)
    text = last_human.text if last_human is not None else ""
    return {
        "language": detect_language(text, default=fallback) if text.strip() else fallback,
        "local_time": _local_now(context.timezone).isoformat(timespec="minutes"),
        "reply": "",
    }
