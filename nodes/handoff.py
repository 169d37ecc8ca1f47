"""Hand the conversation to a person: tell the user, then pause the run until staff resume it.

`handoff` prepares the request (in the shape LangChain's Agent Inbox reads) and the message the
user gets; `wait_for_human` pauses on `interrupt()`. They are two nodes so that the user's
message is checkpointed before the pause: a resumed run never says it twice.

Support staff resume the thread with `Command(resume=...)`, an Agent Inbox response
(`{"type": "response" | "accept" | "ignore", "args": ...}`, or a list of one); the run then
ends, and the next user message is answered by the assistant again.
"""

from __future__ import annotations

from typing import Any

import structlog
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from graphs.context import Context
from graphs.prompts import HANDOFF_REPLY
from graphs.state import State

log = structlog.get_logger(__name__)

SUMMARY_MESSAGES = 6
"""How many recent messages the handoff summary quotes."""


def handoff(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Build the request for staff and the message that tells the user a person will answer."""
    context = runtime.context or Context()
    reply = context.handoff_message or HANDOFF_REPLY[state.language]
    reason = state.route_reason or "A specialist asked for a person."
    request = {
        "action_request": {
            "action": "handoff",
            "args": {
                "reason": reason,
                "summary": summarize(state.messages),
                "language": state.language,
                "route": state.active_specialist or "general",
            },
        },
        "config": {
            "allow_ignore": True,
            "allow_respond": True,
            "allow_edit": False,
            "allow_accept": True,
        },
        "description": (
            f"{context.user_name or 'A user'} needs a person: {reason} "
            "Reply to them on WhatsApp, then hand the conversation back to the assistant."
        ),
    }
    log.info("handing off to a person", reason=reason)
    return {
        "route": "handoff",
        "handoff": request,
        "reply": reply,
        "messages": [AIMessage(reply)],
    }


def wait_for_human(state: State) -> dict[str, Any]:
    """Pause until staff resume the thread; then clear the request and end the run."""
    response = interrupt([state.handoff])
    answer = response[0] if isinstance(response, list) and response else response
    kind = answer.get("type", "response") if isinstance(answer, dict) else "response"
    log.info("resumed by staff", response_type=kind)
    return {"handoff": None, "reply": "", "active_specialist": ""}


def summarize(messages: list[AnyMessage]) -> str:
    """A short transcript of the latest user and assistant messages, for staff."""
    lines = []
    for message in messages:
        if isinstance(message, HumanMessage):
            lines.append(f"user: {message.text}")
        elif isinstance(message, AIMessage) and message.text and not message.tool_calls:
            lines.append(f"assistant: {message.text}")
    return "\n".join(lines[-SUMMARY_MESSAGES:])
