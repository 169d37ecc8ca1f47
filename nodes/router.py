"""Route the turn to one specialist, or to a person.

The choice is one structured-output call among the routes this user's plan enables (feature
flags decide which exist in the choice: `graphs.features.routes_for`). Two cases need no model
at all: an explicit request for a person goes straight to handoff, and a user with only the
general assistant has nothing to choose between.
"""

from __future__ import annotations

import contextlib
import re
from functools import lru_cache
from typing import Any, Literal

import openai
import structlog
from langchain_core.callbacks import dispatch_custom_event
from langchain_core.messages import AnyMessage, HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field, create_model

from graphs.context import Context
from graphs.features import GENERAL, HANDOFF, routes_for
from graphs.language import fold
from graphs.prompts import render, route_choices
from graphs.state import State
from graphs.structured import error_text, failure_reason, invoke_structured
from nodes.context import turn_text
from store.budgets import BudgetExhausted
from store.pii import mask_pii

log = structlog.get_logger(__name__)

ROUTER_HISTORY = 6
"""How many recent messages the router reads besides the turn itself."""

LOGGED_ERROR_CHARS = 200
"""How much of a failed routing call's error text the warning keeps (after masking)."""

ROUTING_FALLBACK_EVENT = "conversa_routing_fallback"
"""The custom callback event a failed routing call sends (`{"reason", "route"}`); the worker's
metrics callback counts it."""

_HUMAN_REQUEST = re.compile(
    r"\b(?:"
    # Portuguese: falar com / quero / chama / preciso de + uma pessoa, um atendente, humano...
    r"(?:falar|conversar|fale|falo)\s+com\s+(?:um|uma|o|a|algum|alguma)?\s*"
    r"(?:atendente|humano|humana|pessoa|gente de verdade|operador|operadora|suporte|gerente)"
    r"|(?:quero|preciso\s+de|chama|chame|chamar|me\s+passa\s+para|transfere|transferir)\s+"
    r"(?:(?:para|pra)\s+)?(?:um|uma|o|a|algum|alguma)?\s*"
    r"(?:atendente|humano|humana|pessoa|operador|operadora)"
    r"|atendimento\s+humano"
    # English: talk/speak to a person, human, agent, representative...
    r"|(?:talk|speak|chat)\s+(?:to|with)\s+(?:a|an|the|some|real)?\s*(?:real\s+)?"
    r"(?:person|human|agent|representative|operator|someone)"
    r"|(?:get|want|need)\s+(?:me\s+)?(?:a|an)?\s*(?:real\s+)?(?:human|person|agent|representative)"
    r"|human\s+(?:agent|support)"
    r")\b",
    re.IGNORECASE,
)


def asks_for_human(text: str) -> bool:
    """Whether the user explicitly asks for a person (Portuguese or English)."""
    return bool(_HUMAN_REQUEST.search(fold(text)))


class RouteDecision(BaseModel):
    """Where the turn goes and why."""

    route: str
    reason: str = Field(description="One short sentence: why this route.")


def decision_schema(routes: list[str]) -> type[RouteDecision]:
    """`RouteDecision` with `route` limited to `routes` (the JSON schema lists them as an enum)."""
    return _decision_schema(tuple(routes))


@lru_cache(maxsize=64)  # a handful of route sets exist (plans differ in their features)
def _decision_schema(routes: tuple[str, ...]) -> type[RouteDecision]:
    return create_model(  # type: ignore[call-overload, no-any-return]
        "RouteDecision",
        __base__=RouteDecision,
        __doc__=RouteDecision.__doc__,
        route=(Literal[routes], Field(description="The route to take.")),
    )


def route(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Choose the route for this turn and remember the specialist that takes it."""
    context = runtime.context or Context()
    routes = routes_for(context.features)
    text = turn_text(state.messages)
    if HANDOFF.name in routes and asks_for_human(text):
        return _decided(HANDOFF.name, "The user asked for a person.", state)
    if len(routes) == 1:
        return _decided(routes[0], "The only route this user's plan enables.", state)
    active = state.active_specialist if state.active_specialist in routes else "none"
    system = render(context.router_prompt, choices=route_choices(routes), active=active)
    model = context.router_model or context.model
    messages = [SystemMessage(system), *_recent(state.messages)]
    try:
        decision = invoke_structured(model, decision_schema(routes), messages)
    except BudgetExhausted:  # not a failed call: the turn degrades as the tenant chose
        raise
    except Exception as exc:  # a bad or failed routing call must not cost the user an answer
        fallback = active if active != "none" else GENERAL.name
        reason = failure_reason(exc)
        log.warning(
            "routing call failed; using a fallback",
            reason=reason,
            error=_loggable(exc, reason),
            route=fallback,
            model=model,
        )
        with contextlib.suppress(RuntimeError):  # outside a run there is nobody to tell
            dispatch_custom_event(ROUTING_FALLBACK_EVENT, {"reason": reason, "route": fallback})
        return _decided(fallback, f"Routing failed ({type(exc).__name__}); kept {fallback}.", state)
    return _decided(decision.route, decision.reason, state)


def _loggable(exc: Exception, reason: str) -> str:
    """Name a failed routing call's error for the log without what the conversation said.

    An invalid answer's text is the model's completion (it may quote the user), so only its
    type is kept; any other error keeps a short, masked message (a server's refusal says why).
    """
    kind = type(exc).__name__
    if reason == "invalid_output":
        return kind
    text = error_text(exc) if isinstance(exc, openai.APIStatusError) else str(exc)
    return f"{kind}: {mask_pii(text)[:LOGGED_ERROR_CHARS]}"


def _decided(chosen: str, reason: str, state: State) -> dict[str, Any]:
    update: dict[str, Any] = {"route": chosen, "route_reason": reason}
    if chosen != HANDOFF.name:
        update["active_specialist"] = chosen
    log.info("routed", route=chosen, reason=reason, previous=state.active_specialist or None)
    return update


def _recent(messages: list[AnyMessage]) -> list[AnyMessage]:
    """The last few user and assistant texts (tool traffic left out), ending with the turn."""
    plain = [
        m
        for m in messages
        if isinstance(m, HumanMessage) or (m.type == "ai" and m.text and not m.tool_calls)
    ]
    return plain[-ROUTER_HISTORY:]
