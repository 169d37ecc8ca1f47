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
    """Pause until staff resume the thread; then keep what was said meanwhile and end the run.

    The response may carry the exchange between the user and staff
    (`{"type": "response", "args": {"exchange": [{"role": "user" | "staff", "text": ...,
    "id": ...}], "note": ...}}`): it joins the thread, so the assistant knows what the person
    said when the user writes next.
    """
    response = interrupt([state.handoff])
    answer = response[0] if isinstance(response, list) and response else response
    kind = answer.get("type", "response") if isinstance(answer, dict) else "response"
    args = answer.get("args") if isinstance(answer, dict) else None
    log.info("resumed by staff", response_type=kind)
    return {
        "handoff": None,
        "reply": "",
        "active_specialist": "",
        "messages": exchange_messages(args),
    }


def exchange_messages(args: Any) -> list[AnyMessage]:
    """The user's and staff's messages from a hand-back response, as thread messages."""
    if isinstance(args, str) and args.strip():
        return [AIMessage(args.strip(), name="staff")]
    if not isinstance(args, dict):
        return []
    messages: list[AnyMessage] = []
    for item in args.get("exchange") or []:
        if not isinstance(item, dict) or not str(item.get("text", "")).strip():
            continue
        text, ident = str(item["text"]).strip(), item.get("id")
        extra = {"id": f"wa-{ident}"} if ident is not None else {}
        if item.get("role") == "user":
            messages.append(HumanMessage(text, **extra))
        else:
            messages.append(AIMessage(text, name="staff", **extra))
    return messages


def summarize(messages: list[AnyMessage]) -> str:
    """A short transcript of the latest user and assistant messages, for staff."""
    lines = []
    for message in messages:
        if isinstance(message, HumanMessage):
            lines.append(f"user: {message.text}")
        elif isinstance(message, AIMessage) and message.text and not message.tool_calls:
            lines.append(f"assistant: {message.text}")
    return "\n".join(lines[-SUMMARY_MESSAGES:])
