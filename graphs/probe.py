"""Check what the configured chat model can do, before a user finds out.

A few tiny calls through the same `ChatOpenAI` the graph uses: a plain answer, a tool call
offered the way the specialists offer tools, strict `json_schema` structured output and, when
that is missing, structured output by function calling. The result says what works, what does
not and the server's own words about why, and which structured-output method routing and
memory extraction will use; with `LLM_STRUCTURED_OUTPUT=auto` that choice is remembered for
the process (`graphs.structured`), so no turn probes again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from graphs.models import OFFLINE_MODEL, load_chat_model
from graphs.settings import LLMSettings
from graphs.structured import (
    StructuredMethod,
    endpoint,
    failure_reason,
    remember_method,
)

_SYSTEM = "You are being checked by the service that will use you. Follow the instruction."
_MAX_DETAIL = 300


class CheckAnswer(BaseModel):
    """The answer the structured-output check asks for."""

    colour: str = Field(description="The colour of a clear daytime sky, in one word.")


class record_colour(BaseModel):  # the tool's name, as the model sees it
    """Record the colour of a clear daytime sky."""

    colour: str = Field(description="The colour, in one word.")


@dataclass(frozen=True)
class Capability:
    """Whether one kind of call worked, and the server's words when it did not."""

    ok: bool
    detail: str = ""
    """Why not (the error, with the server's message); or a remark on how it works."""

    def describe(self) -> str:
        """Say `ok`, `ok (remark)`, or `no (why)`."""
        if self.ok:
            return f"ok ({self.detail})" if self.detail else "ok"
        return f"no ({self.detail})"


_OFFLINE_TOOLS = Capability(True, "by fixed rules, for the assistant's own tools only; not checked")


@dataclass(frozen=True)
class ModelReport:
    """What the configured chat model can do, as one start-up check found it."""

    model: str
    endpoint: str
    """The server's base URL, or `offline` for the built-in stand-in."""
    chat: Capability
    tool_calls: Capability
    json_schema: Capability
    function_calling: Capability
    structured_output: StructuredMethod | None
    """The method routing and memory extraction will use; None when neither works."""
    notes: list[str] = field(default_factory=list)

    @property
    def offline(self) -> bool:
        """Whether this is the offline stand-in (no OPENAI_API_KEY or OPENAI_BASE_URL)."""
        return self.endpoint == "offline"

    @property
    def usable(self) -> bool:
        """Whether the specialists can work: the model answers with tool calls."""
        return self.tool_calls.ok

    def lines(self) -> list[str]:
        """Describe the check, one `name: result` line each, as `conversa check` prints it."""
        where = (
            "offline model (no OPENAI_API_KEY or OPENAI_BASE_URL: a stand-in, not a real model)"
            if self.offline
            else f"{self.model} at {self.endpoint}"
        )
        routing = self.structured_output or "none: every turn goes to the general assistant"
        return [
            f"model: {where}",
            f"model chat: {self.chat.describe()}",
            f"model tool calls: {self.tool_calls.describe()}",
            f"model json_schema output: {self.json_schema.describe()}",
            f"model function-calling output: {self.function_calling.describe()}",
            f"model routing uses: {routing}",
            *(f"model note: {note}" for note in self.notes),
        ]

    def summary(self) -> dict[str, Any]:
        """The check as structured log fields."""
        return {
            "model": self.model,
            "endpoint": self.endpoint,
            "chat": self.chat.describe(),
            "tool_calls": self.tool_calls.describe(),
            "json_schema": self.json_schema.describe(),
            "function_calling": self.function_calling.describe(),
            "routing_uses": self.structured_output or "none",
        }


def probe_model(model: str | None = None) -> ModelReport:
    """Check what `model` (default `LLM_MODEL`) can do; remember the structured-output method.

    Never raises for a model that is down or refuses a call: that is what the report says.
    """
    settings = LLMSettings()
    name = model or settings.llm_model
    where = endpoint(settings)
    llm = load_chat_model(name, max_retries=0)  # a check reports, it does not insist
    chat = _try(lambda: _chat(llm))
    if not chat.ok and chat.detail.startswith("unreachable"):
        down = Capability(False, "not tried: the model did not answer")
        return ModelReport(
            _shown(name, where), where, chat, down, down, down, None, [_down_note(where)]
        )
    tools = _try(lambda: _tool_call(llm)) if where != "offline" else _OFFLINE_TOOLS
    strict = _try(lambda: _structured(llm, "json_schema"))
    forced = (
        _try(lambda: _structured(llm, "function_calling")) if not strict.ok else Capability(True)
    )
    method = _method(settings.llm_structured_output, strict.ok, forced.ok)
    if settings.llm_structured_output == "auto" and method is not None:
        remember_method(name, method)  # under the name the router asks for
    notes = []
    if not strict.ok and not forced.ok:
        notes.append("routing cannot work: every turn would go to the general assistant")
    if settings.llm_structured_output != "auto":
        notes.append(f"LLM_STRUCTURED_OUTPUT={settings.llm_structured_output} chooses the method")
    return ModelReport(_shown(name, where), where, chat, tools, strict, forced, method, notes)


def _shown(name: str, where: str) -> str:
    return OFFLINE_MODEL if where == "offline" else name


def _method(setting: str, strict: bool, forced: bool) -> StructuredMethod | None:
    if setting == "json_schema":
        return "json_schema" if strict else None
    if setting == "function_calling":
        return "function_calling" if forced else None
    return "json_schema" if strict else "function_calling" if forced else None


def _down_note(where: str) -> str:
    return (
        f"nothing answered at {where}: start the model server or fix OPENAI_BASE_URL; "
        "the service starts anyway and turns fail until the model answers"
    )


def _try(call: Callable[[], str | None]) -> Capability:
    try:
        problem = call()
    except Exception as exc:
        text = " ".join(str(exc).split())[:_MAX_DETAIL]
        return Capability(False, f"{failure_reason(exc)}: {type(exc).__name__}: {text}")
    return Capability(problem is None, problem or "")


def _chat(llm: Any) -> str | None:
    answer = llm.invoke([SystemMessage(_SYSTEM), HumanMessage("Reply with the word: ok")])
    return None if answer.text.strip() else "the model answered with an empty message"


def _tool_call(llm: Any) -> str | None:
    answer = llm.bind_tools([record_colour]).invoke(
        [
            SystemMessage(_SYSTEM),
            HumanMessage("Call the record_colour tool with the colour of a clear daytime sky."),
        ]
    )
    names = [call["name"] for call in answer.tool_calls]
    if names and names[0] == "record_colour":
        return None
    if names:
        return f"the model called {names[0]!r} instead of the tool it was offered"
    return "the model answered in text instead of calling the tool it was offered"


def _structured(llm: Any, method: StructuredMethod) -> str | None:
    answer = llm.with_structured_output(CheckAnswer, method=method).invoke(
        [SystemMessage(_SYSTEM), HumanMessage("What colour is a clear daytime sky?")]
    )
    CheckAnswer.model_validate(answer)
    return None
