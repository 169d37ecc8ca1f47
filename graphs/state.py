"""The state the assistant graph keeps per conversation thread."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages

from graphs.language import Language


@dataclass
class InputState:
    """What a turn brings in."""

    messages: Annotated[list[AnyMessage], add_messages] = field(default_factory=list)
    """The conversation so far; new user messages are appended (same id replaces)."""


@dataclass
class State(InputState):
    """Everything the nodes share within a thread."""

    language: Language = "pt"
    """The language the user writes in; replies use it."""

    local_time: str = ""
    """The user's local date and time when the turn started (ISO 8601)."""

    memories: list[str] = field(default_factory=list)
    """Long-term memories relevant to this turn, retrieved before routing."""

    route: str = ""
    """Where the router sent this turn: a name in `graphs.features.ROUTES`."""

    route_reason: str = ""
    """Why, in the router's words (or the rule that decided without a model)."""

    active_specialist: str = ""
    """The specialist that answered last; it keeps the user while they stay on its topic."""

    handoff: dict[str, Any] | None = None
    """The request a person must answer, while the conversation waits for one."""

    reply: str = ""
    """The text to send back to the user for this turn."""

    choices: dict[str, Any] | None = None
    """The buttons or list offered with this turn's reply: `{"button", "options": [{"id",
    "title", "description"}]}` (an empty button: quick replies), or None."""

    questions: list[dict[str, Any]] = field(default_factory=list)
    """The questions with options that still stand in this thread, newest last: each with its
    `id`, the `message_id` of the answer that asked it, the `route` that asked and its
    `options`, each with the `action` a press of it runs (`nodes.choices`)."""


@dataclass
class OutputState:
    """What a turn hands back to its caller."""

    route: str = ""
    """Where the router sent this turn."""

    reply: str = ""
    """The text to send back to the user for this turn."""

    choices: dict[str, Any] | None = None
    """The buttons or list offered with the reply, if any (see `State.choices`)."""
