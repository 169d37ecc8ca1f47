"""Turn the last AI message into the text that goes back to WhatsApp."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage

from graphs.prompts import FALLBACK_REPLY
from graphs.state import State


def reply(state: State) -> dict[str, Any]:
    """Set `reply` to the last AI answer, or to a polite fallback when it is empty."""
    last = state.messages[-1] if state.messages else None
    text = last.text.strip() if isinstance(last, AIMessage) else ""
    return {"reply": text or FALLBACK_REPLY[state.language]}
