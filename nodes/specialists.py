"""The specialists: ReAct-style agents, each with its own prompt and tools.

Each specialist is two nodes: `<name>` asks the model (with the tools this user's plan allows
bound) and `<name>_tools` runs the tool calls it made, then hands back to `<name>`, until the
model answers in text. Tools read tenant and user from the run context; a tool that fails
answers the model with the error, and the run goes on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, AnyMessage, SystemMessage, ToolMessage
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_openai import ChatOpenAI
from langgraph.prebuilt import ToolNode
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.runtime import Runtime
from langgraph.types import Command

from graphs import features
from graphs.context import Context
from graphs.language import Language
from graphs.models import load_chat_model
from graphs.prompts import (
    LANGUAGE_NAMES,
    MEMORIES_HEADER,
    USER_DATA_RULE,
    VOICE_NOTES,
    capabilities,
    date_notice_promise,
    render,
)
from graphs.state import State
from tools.finance import FINANCE_TOOLS
from tools.handoff import request_human
from tools.memory import MEMORY_TOOLS
from tools.relationships import RELATIONSHIP_TOOLS
from tools.reminders import cancel_reminder, list_reminders, propose_reminder, schedule_reminder

MAX_TOOL_ROUNDS = 5
"""Model calls with tools per turn before the specialist must answer in text."""

_REMINDER_TOOLS: tuple[BaseTool, ...] = (
    schedule_reminder,
    propose_reminder,
    list_reminders,
    cancel_reminder,
)

TOOLSETS: Mapping[str, tuple[BaseTool, ...]] = {
    "memory": tuple(MEMORY_TOOLS),
    "finance": tuple(FINANCE_TOOLS),
    "relationships": tuple(t for t in RELATIONSHIP_TOOLS if t not in _REMINDER_TOOLS),
    "reminders": _REMINDER_TOOLS,
    "handoff": (request_human,),
}
"""The tools behind each toolset name that `graphs.features` uses."""


@dataclass(frozen=True)
class Specialist:
    """One specialist: its prompt (a run-context field) and its tools, by toolset."""

    name: str
    prompt_field: str
    toolsets: Mapping[str, tuple[BaseTool, ...]]

    @property
    def tools(self) -> tuple[BaseTool, ...]:
        """Every tool it may bind, in the order the model sees them."""
        return tuple(tool for tools in self.toolsets.values() for tool in tools)

    def allowed_tools(self, enabled: Collection[str]) -> list[BaseTool]:
        """The tools the `enabled` features let the specialist use."""
        unlocked = features.unlocked(enabled)
        return [tool for name, tools in self.toolsets.items() if name in unlocked for tool in tools]


def _specialist(route: features.Route) -> Specialist:
    return Specialist(route.name, route.prompt, {name: TOOLSETS[name] for name in route.toolsets})


SPECIALISTS = {name: _specialist(route) for name, route in features.SPECIALISTS.items()}
"""Every specialist the graph has, by route name, built from `graphs.features`."""


def _turn_rounds(messages: list[AnyMessage]) -> int:
    """How many times the model called tools since the user's latest message."""
    rounds = 0
    for message in reversed(messages):
        if message.type == "human":
            break
        if isinstance(message, AIMessage) and message.tool_calls:
            rounds += 1
    return rounds


def system_prompt(template: str, state: State, context: Context) -> str:
    """Fill a specialist's prompt template for this turn. A tenant's own prompt that leaves out
    the rule that the user's words are data, not instructions, gets it appended."""
    language: Language = state.language
    if USER_DATA_RULE.strip() not in template:
        template = template.rstrip() + "\n" + USER_DATA_RULE
    return render(
        template,
        tenant_name=context.tenant_name,
        user_name=context.user_name or "the user",
        language_name=LANGUAGE_NAMES[language],
        local_time=state.local_time,
        timezone=context.timezone,
        persona=context.persona,
        capabilities=capabilities(context.features, language),
        memories=_memories(state.memories),
        voice_notes=VOICE_NOTES if features.AUDIO_TRANSCRIPTION.name in context.features else "",
        date_notices=date_notice_promise(context.date_notice_days_before),
    )


def _memories(memories: list[str]) -> str:
    return "\n".join([MEMORIES_HEADER, *(f"- {m}" for m in memories)]) if memories else ""


def agent_node(specialist: Specialist) -> Callable[[State, Runtime[Context]], dict[str, Any]]:
    """The node that asks the model, as `specialist`, for an answer or tool calls."""

    def agent(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        context = runtime.context or Context()
        template = getattr(context, specialist.prompt_field)
        tools = specialist.allowed_tools(context.features)
        model = load_chat_model(context.model)
        if tools and _turn_rounds(state.messages) < MAX_TOOL_ROUNDS:
            runnable: Any = _with_tools(model, tools)
        else:
            runnable = model
        system = SystemMessage(system_prompt(template, state, context))
        response = runnable.invoke([system, *state.messages])
        return {"messages": [response]}

    agent.__name__ = specialist.name
    agent.__doc__ = f"The {specialist.name} specialist: answer, or call its tools."
    return agent


MAX_BINDINGS = 128
"""How many (model, tool list) bindings a process keeps; plans make a handful of tool lists."""

_bindings: dict[tuple[int, ...], tuple[ChatOpenAI, tuple[BaseTool, ...], Runnable[Any, Any]]] = {}
_bindings_lock = threading.Lock()


def _with_tools(model: ChatOpenAI, tools: Sequence[BaseTool]) -> Runnable[Any, Any]:
    """`model.bind_tools(tools)`, built once per process for the model's shared instance and
    these tools (binding converts every tool's schema). The entry keeps what its key names by
    id, so no id in it is reused while it lives."""
    bound = tuple(tools)
    key = (id(model), *map(id, bound))
    with _bindings_lock:
        found = _bindings.get(key)
    if found is not None and found[0] is model and found[1] == bound:
        return found[2]
    runnable = model.bind_tools(list(bound))
    with _bindings_lock:
        if len(_bindings) >= MAX_BINDINGS:
            _bindings.clear()
        _bindings[key] = (model, bound, runnable)
    return runnable


def tools_node(specialist: Specialist) -> ToolNode:
    """The node that runs `specialist`'s tool calls, refusing tools the plan does not allow."""

    def gate(
        request: ToolCallRequest, execute: Callable[[ToolCallRequest], ToolMessage | Command]
    ) -> ToolMessage | Command:
        context = request.runtime.context if request.runtime is not None else None
        features = context.features if isinstance(context, Context) else []
        allowed = {t.name for t in specialist.allowed_tools(features)}
        call = request.tool_call
        if call["name"] not in allowed:
            return ToolMessage(
                f"Error: the tool {call['name']!r} is not available to this user.",
                tool_call_id=call["id"] or "",
                name=call["name"],
                status="error",
            )
        return execute(request)

    return ToolNode(
        list(specialist.tools),
        name=f"{specialist.name}_tools",
        handle_tool_errors=True,
        wrap_tool_call=gate,
    )


def after_agent(state: State) -> str:
    """Run the tools the model called, or go to the reply."""
    last = state.messages[-1] if state.messages else None
    if isinstance(last, AIMessage) and last.tool_calls:
        return f"{state.route or features.GENERAL.name}_tools"
    return "reply"


def after_tools(state: State) -> str:
    """Back to the specialist, or to a person when it asked for one."""
    for message in reversed(state.messages):
        if not isinstance(message, ToolMessage):
            break
        if message.name == request_human.name and message.status != "error":
            return features.HANDOFF.name
    return state.route or features.GENERAL.name
