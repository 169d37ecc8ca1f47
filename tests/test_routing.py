"""The graph's thinking on its own: routing, plan gating, specialists' tool loops, handoff.

Compiled with an in-memory saver and the scripted model; no tool here reaches the database
(those run in tests/test_brain.py through the worker).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from graphs.assistant import build_graph
from graphs.context import Context
from graphs.features import routes_for
from graphs.prompts import HANDOFF_REPLY
from nodes.reply import HISTORY_WINDOW, stale_messages
from nodes.router import asks_for_human
from nodes.specialists import MAX_TOOL_ROUNDS
from tests.fakes import ScriptedModel

ALL = ["finance", "relationships", "long_term_memory", "human_handoff", "reminders"]


class Thread:
    """One conversation thread on an in-memory saver."""

    def __init__(self, features: list[str], **context: Any) -> None:
        self.graph = build_graph().compile(checkpointer=InMemorySaver())
        self.config: Any = {"configurable": {"thread_id": "t"}}
        self.context = Context(features=features, tenant_id="", user_id="", **context)

    def say(self, text: str) -> dict[str, Any]:
        return self.graph.invoke(
            {"messages": [{"role": "user", "content": text}]}, self.config, context=self.context
        )

    def resume(self, value: Any) -> dict[str, Any]:
        return self.graph.invoke(Command(resume=value), self.config, context=self.context)

    @property
    def values(self) -> dict[str, Any]:
        return self.graph.get_state(self.config).values


def _route(route: str, reason: str = "because") -> dict[str, str]:
    return {"route": route, "reason": reason}


def _enum(request: dict[str, Any]) -> list[str]:
    schema = request["response_format"]["json_schema"]["schema"]
    return list(schema["properties"]["route"]["enum"])


def _tool_names(request: dict[str, Any]) -> list[str]:
    return [t["function"]["name"] for t in request.get("tools") or []]


@pytest.mark.parametrize(
    "text",
    [
        "quero falar com um atendente",
        "Quero falar com uma PESSOA, por favor",
        "me passa para um humano",
        "preciso de atendimento humano",
        "Can I talk to a person?",
        "I want to speak with a human",
        "get me a real agent",
    ],
)
def test_an_explicit_request_for_a_person_is_recognised(text: str) -> None:
    assert asks_for_human(text)


@pytest.mark.parametrize(
    "text",
    ["gastei 50 reais com a pessoa do mercado", "humano é errar", "my agent said hi", "Oi"],
)
def test_other_messages_are_not_requests_for_a_person(text: str) -> None:
    assert not asks_for_human(text)


def test_the_routes_follow_the_plan() -> None:
    assert routes_for([]) == ["general"]
    assert routes_for(["relationships", "human_handoff"]) == ["general", "relationships", "handoff"]
    assert routes_for(ALL) == ["general", "finance", "relationships", "handoff"]


def test_a_request_for_a_person_pauses_the_run_without_a_model_call(
    scripted: ScriptedModel,
) -> None:
    thread = Thread(["human_handoff"], user_name="Ana")

    result = thread.say("quero falar com um atendente")

    assert scripted.requests == []
    assert result["reply"] == HANDOFF_REPLY["pt"] and result["route"] == "handoff"
    (interrupt,) = result["__interrupt__"]
    (request,) = interrupt.value
    assert request["action_request"]["action"] == "handoff"
    assert request["action_request"]["args"]["reason"] == "The user asked for a person."
    assert "user: quero falar com um atendente" in request["action_request"]["args"]["summary"]
    assert request["config"] == {
        "allow_ignore": True, "allow_respond": True, "allow_edit": False, "allow_accept": True,
    }  # fmt: skip
    assert "Ana" in request["description"]


def test_staff_resume_ends_the_pause_and_the_assistant_answers_again(
    scripted: ScriptedModel,
) -> None:
    thread = Thread(["human_handoff"])
    thread.say("I want to talk to a person")

    resumed = thread.resume([{"type": "response", "args": "Sorted it out on the phone."}])

    assert "__interrupt__" not in resumed and thread.values["handoff"] is None
    assert not thread.graph.get_state(thread.config).next
    scripted.structured(_route("general")).say("Glad it's sorted!")
    assert thread.say("thanks, all good now")["reply"] == "Glad it's sorted!"


def test_without_the_handoff_feature_the_request_goes_to_the_general_assistant(
    scripted: ScriptedModel,
) -> None:
    scripted.say("Isso não faz parte do seu plano.")

    result = Thread([]).say("quero falar com um atendente")

    assert result == {
        "route": "general",
        "reply": "Isso não faz parte do seu plano.",
        "choices": None,
    }


def test_the_router_offers_only_enabled_routes_and_the_specialist_only_enabled_tools(
    scripted: ScriptedModel,
) -> None:
    scripted.structured(_route("relationships")).say("Anotado!")

    result = Thread(["relationships", "human_handoff"]).say("o aniversário da minha mãe é 12/03")

    router, specialist = scripted.requests
    assert _enum(router) == ["general", "relationships", "handoff"]
    assert router["messages"][0]["content"].startswith("You route")
    assert _tool_names(specialist) == [
        "remember_person", "add_important_date", "upcoming_dates", "request_human",
    ]  # fmt: skip
    assert "relationships specialist" in specialist["messages"][0]["content"]
    assert result == {"route": "relationships", "reply": "Anotado!", "choices": None}


def test_a_user_without_finance_never_sees_finance(scripted: ScriptedModel) -> None:
    scripted.structured(_route("general")).say("Não consigo controlar gastos no seu plano.")

    Thread(["relationships"]).say("gastei 50 reais no mercado")

    router, general = scripted.requests
    assert "finance" not in _enum(router)
    assert not any(name in _tool_names(general) for name in ("record_transaction", "get_balance"))


def test_a_route_outside_the_plan_falls_back_instead_of_failing(scripted: ScriptedModel) -> None:
    scripted.structured(_route("finance")).say("Posso ajudar com datas.")

    thread = Thread(["relationships"])
    result = thread.say("gastei 50 reais")

    assert result == {"route": "general", "reply": "Posso ajudar com datas.", "choices": None}
    assert "Routing failed" in thread.values["route_reason"]


def test_the_active_specialist_is_offered_to_the_router_next_turn(
    scripted: ScriptedModel,
) -> None:
    thread = Thread(ALL)
    scripted.structured(_route("finance")).call_tool("get_balance", {"period": "nope", "x": 1})
    scripted.say("Qual período?")
    thread.say("qual meu saldo?")
    scripted.structured(_route("finance", "follow-up")).say("Ok")

    thread.say("e o mês passado?")

    follow_up_router = scripted.requests[3]
    assert (
        "The specialist that answered last: finance" in follow_up_router["messages"][0]["content"]
    )
    assert thread.values["active_specialist"] == "finance"


def test_a_tool_error_goes_back_to_the_model_and_the_run_goes_on(
    scripted: ScriptedModel,
) -> None:
    scripted.structured(_route("finance"))
    scripted.call_tool(
        "record_transaction",
        {"kind": "expense", "amount": 12.5, "category": "food", "tenant_id": "someone-else"},
    )
    scripted.say("Pode confirmar o valor?")

    thread = Thread(ALL)
    result = thread.say("gastei 12,50 no almoço")

    assert result["reply"] == "Pode confirmar o valor?"
    tool_result = scripted.requests[2]["messages"][-1]
    assert tool_result["role"] == "tool" and "Error" in tool_result["content"]
    assert "tenant_id" in tool_result["content"]  # the extra argument is refused by name


def test_a_tool_the_plan_does_not_allow_is_refused_even_if_the_model_calls_it(
    scripted: ScriptedModel,
) -> None:
    scripted.structured(_route("relationships"))
    scripted.call_tool("schedule_reminder", {"text": "call mom", "when": "in 5 minutes"})
    scripted.say("Lembretes não fazem parte do seu plano.")

    thread = Thread(["relationships"])
    thread.say("remind me to call mom in 5 minutes")

    tool_result = next(m for m in thread.values["messages"] if isinstance(m, ToolMessage))
    assert tool_result.status == "error" and "not available" in tool_result.text


def test_request_human_from_a_specialist_hands_off(scripted: ScriptedModel) -> None:
    scripted.structured(_route("finance"))
    scripted.call_tool("request_human", {"reason": "The user disputes a bank charge."})

    result = Thread(ALL).say("o banco me cobrou duas vezes, quero contestar")

    assert result["route"] == "handoff" and result["reply"] == HANDOFF_REPLY["pt"]
    (interrupt,) = result["__interrupt__"]
    assert interrupt.value[0]["action_request"]["args"]["route"] == "finance"


def test_a_model_that_keeps_calling_tools_must_answer_after_the_limit(
    scripted: ScriptedModel,
) -> None:
    scripted.structured(_route("finance"))
    for _ in range(MAX_TOOL_ROUNDS):
        scripted.call_tool("get_balance", {"period": "not-a-period", "bogus": True})
    scripted.say("Não consegui consultar agora.")

    result = Thread(ALL).say("saldo")

    assert result["reply"] == "Não consegui consultar agora."
    assert all(_tool_names(r) for r in scripted.requests[1:-1])
    assert _tool_names(scripted.requests[-1]) == []


def test_the_language_is_remembered_when_a_message_is_unclear(scripted: ScriptedModel) -> None:
    thread = Thread([], locale="pt-BR")
    scripted.say("Hi!").say("Great.")

    thread.say("Hello, how are you today?")
    thread.say("ok 👍")

    assert "Answer in English" in scripted.requests[1]["messages"][0]["content"]
    assert thread.values["language"] == "en"


def test_the_thread_keeps_a_bounded_window_of_messages(scripted: ScriptedModel) -> None:
    thread = Thread([])
    for turn in range(HISTORY_WINDOW):
        scripted.say(f"answer {turn}")
        thread.say(f"message {turn}")

    messages = thread.values["messages"]
    assert len(messages) <= HISTORY_WINDOW
    assert messages[-1].text == f"answer {HISTORY_WINDOW - 1}"
    assert messages[0].type == "human"
    # The model saw the window, not the whole conversation.
    assert len(scripted.requests[-1]["messages"]) <= HISTORY_WINDOW + 2


def test_trimming_never_separates_a_tool_call_from_its_result() -> None:
    messages: list[Any] = []
    for turn in range(10):
        messages += [
            {"type": "human", "content": f"q{turn}"},
            AIMessage("", tool_calls=[{"name": "t", "args": {}, "id": f"c{turn}"}]),
            ToolMessage("r", tool_call_id=f"c{turn}"),
            AIMessage(f"a{turn}"),
        ]
    from langchain_core.messages import convert_to_messages

    converted = convert_to_messages(messages)
    stale = stale_messages(converted, window=7)
    kept = converted[len(stale) :]
    assert kept[0].type == "human" and len(kept) <= 7
    assert json.dumps([m.type for m in kept]) == json.dumps(["human", "ai", "tool", "ai"])
