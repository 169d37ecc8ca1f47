"""The one list of features (`graphs.features`): every reader follows it, and it is complete.

The router's choices, the specialists' prompts and tools, the system prompt's offer and the
offline model's routes all come from the registry; these tests hold each reader to it, so a new
entry (a new specialist) needs no change anywhere else to be routed, offered and gated.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, get_args

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from graphs import features, prompts
from graphs.assistant import build_graph
from graphs.context import Context
from graphs.offline.model import OfflineResponder
from graphs.state import Language
from nodes.router import decision_schema
from nodes.specialists import SPECIALISTS, TOOLSETS
from tests.fakes import ScriptedModel

ROUTED = [f for f in features.FEATURES.values() if f.route is not None]


def test_every_feature_is_offered_in_every_language() -> None:
    for feature in features.FEATURES.values():
        assert set(feature.offers) == set(get_args(Language)), feature.name
        assert all(text.strip() for text in feature.offers.values()), feature.name


def test_every_name_the_registry_uses_resolves() -> None:
    context_fields = {f.name for f in fields(Context)}
    named = {s for route in features.ROUTES.values() for s in route.toolsets}
    unlocked = {s for feature in features.FEATURES.values() for s in feature.unlocks}

    assert {route.prompt for route in features.SPECIALISTS.values()} <= context_fields
    assert named == unlocked == set(TOOLSETS)  # every toolset bound, unlockable and known
    assert list(SPECIALISTS) == list(features.SPECIALISTS)
    assert list(features.ROUTES) == [*features.SPECIALISTS, features.HANDOFF.name]


@pytest.mark.parametrize("removed", ROUTED, ids=lambda f: f.name)
def test_a_feature_off_the_plan_takes_its_route_off_the_router(
    scripted: ScriptedModel, removed: features.Feature
) -> None:
    assert removed.route is not None
    line = f"- {removed.route.name}: {removed.route.description}"
    for plan in (list(features.FEATURES), [f for f in features.FEATURES if f != removed.name]):
        scripted.structured({"route": "general", "reason": "a greeting"}).say("Oi!")
        graph = build_graph().compile(checkpointer=InMemorySaver())
        graph.invoke(
            {"messages": [{"role": "user", "content": "Oi, tudo bem?"}]},
            {"configurable": {"thread_id": removed.name}},
            context=Context(features=plan, tenant_id="", user_id=""),
        )

    with_it, _, without_it, _ = scripted.requests
    assert _choices(with_it) == list(features.ROUTES)
    assert line in _system(with_it)
    assert _choices(without_it) == [r for r in features.ROUTES if r != removed.route.name]
    assert line not in _system(without_it)


def test_the_system_prompt_offers_what_the_features_offer() -> None:
    for language in get_args(Language):
        offer = prompts.capabilities(["reminders", "finance", "teleport"], language)
        expected = [features.FINANCE.offers[language], features.REMINDERS.offers[language]]
        assert offer == "; ".join(expected)
        assert prompts.capabilities([], language) == prompts.NO_FEATURES[language]


def test_each_specialists_tools_follow_the_features_that_unlock_them() -> None:
    for route, specialist in SPECIALISTS.items():
        assert specialist.allowed_tools([]) == [], route
        everything = {t.name for t in specialist.allowed_tools(list(features.FEATURES))}
        assert everything == {t.name for t in specialist.tools}, route
    relationships = SPECIALISTS["relationships"]
    without_reminders = {t.name for t in relationships.allowed_tools(["relationships"])}
    assert without_reminders == {"remember_person", "add_important_date", "upcoming_dates"}


def test_the_offline_model_routes_among_the_registrys_routes() -> None:
    schema = decision_schema(list(features.ROUTES)).model_json_schema()
    request = {"messages": [{"role": "user", "content": "gastei 10 reais"}]}
    answer = OfflineResponder().structured("RouteDecision", schema, request)
    assert answer["route"] == "finance"
    unconstrained = OfflineResponder().structured("RouteDecision", {"type": "object"}, request)
    assert unconstrained["route"] == "finance"  # all of the registry's routes allowed


def _choices(request: dict[str, Any]) -> list[str]:
    schema = request["response_format"]["json_schema"]["schema"]
    return list(schema["properties"]["route"]["enum"])


def _system(request: dict[str, Any]) -> str:
    return str(request["messages"][0]["content"])
