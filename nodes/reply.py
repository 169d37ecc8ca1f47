"""Turn the last AI message into the text that goes back to WhatsApp, and trim the thread.

The thread keeps the last `HISTORY_WINDOW` messages only: the full history lives in Postgres
(the `messages` table), and long-term facts in the memory store. Bounding the list keeps each
checkpoint the same size however long the conversation grows.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, RemoveMessage

from graphs.prompts import FALLBACK_REPLY
from graphs.state import State
from nodes.choices import ask, turn_offer

HISTORY_WINDOW = 24
"""How many recent messages the thread (and so the model) keeps across turns."""


def reply(state: State) -> dict[str, Any]:
    """Set `reply` to the last AI answer (or a fallback), with the options this turn's tools
    offered (`nodes.choices`); drop messages past the window."""
    last = state.messages[-1] if state.messages else None
    answer = last if isinstance(last, AIMessage) and not last.tool_calls else None
    text = answer.text.strip() if answer is not None else ""
    update: dict[str, Any] = {"reply": text or FALLBACK_REPLY[state.language], "choices": None}
    offered = turn_offer(state.messages)
    if answer is not None and text and offered is not None:
        update |= ask(state, answer, offered)
    stale = stale_messages(state.messages, HISTORY_WINDOW)
    if stale:
        removed = [RemoveMessage(id=m.id) for m in stale if m.id]
        update["messages"] = [*removed, *update.get("messages", [])]
    return update


def stale_messages(messages: list[AnyMessage], window: int = HISTORY_WINDOW) -> list[AnyMessage]:
    """The messages before the window; the kept part starts at a user message.

    Starting at a user message keeps tool calls and their results together.
    """
    if len(messages) <= window:
        return []
    cut = len(messages) - window
    while cut < len(messages) and not isinstance(messages[cut], HumanMessage):
        cut += 1
    return list(messages[:cut])
