"""Side-effecting tools are idempotent per run step and call, not per the model's call id.

Some OpenAI-compatible servers number tool calls `call_0`, `call_1`... on every turn. A later
turn's `call_0` must write again; a retried or resumed step must not.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.runnables import RunnableConfig

from channels.sandbox.twilio import TwilioSandbox
from graphs.context import Context
from server.settings import Settings
from store.records import Tenant
from tests.conftest import rows, say
from tests.fakes import ScriptedModel
from tests.test_brain import give_plan
from tests.toolcontext import context_for, make_user
from tests.tooling import Crash, crashing_graph
from tools.finance import delete_transaction, record_transaction
from tools.relationships import add_important_date, remember_person
from tools.reminders import cancel_reminder, schedule_reminder

_ROUTE = {"route": "finance", "reason": "money"}


def test_the_same_model_call_id_in_two_turns_records_both_expenses(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    give_plan(settings, tenant, ["finance"])
    for amount, reply in (("45,90", "Anotei R$ 45,90."), ("20", "Anotei R$ 20,00.")):
        llm.structured(_ROUTE)
        llm.call_tool(
            "record_transaction",
            {"kind": "expense", "amount": amount, "category": "mercado", "date": "2026-11-02"},
            id="call_0",  # the server reuses its ids on every turn
        )
        llm.say(reply)
        say(client, settings, tenant, f"gastei {amount} no mercado")

    assert llm.remaining == 0
    assert rows(settings, "select amount::text from finance_entries order by id") == [
        ("45.90",),
        ("20.00",),
    ]
    results = [
        call["result"]
        for (calls,) in rows(settings, "select tool_calls from ai_results order by id")
        for call in calls
    ]
    assert len(results) == 2
    assert "45.90 BRL" in results[0] and "#1" in results[0]
    assert "20.00 BRL" in results[1] and "#2" in results[1], "the second turn stored its own"


@pytest.fixture
def ana(settings: Settings, tenant: Tenant) -> Context:
    return context_for(tenant, make_user(settings, tenant))


_CALLS: list[tuple[Any, dict[str, Any], str]] = [
    (record_transaction, {"kind": "expense", "amount": "10", "category": "mercado"},
     "select count(*) from finance_entries"),
    (schedule_reminder, {"text": "água", "when": "em 10 minutos"},
     "select count(*) from reminders"),
    (add_important_date, {"person_name": "Bia", "kind": "other", "date": "12/03",
                          "label": "formatura"},
     "select count(*) from important_dates"),
]  # fmt: skip
"""A tool, its arguments, and how to count what it wrote."""


@pytest.mark.parametrize(("tool", "args", "count"), _CALLS, ids=lambda v: getattr(v, "name", ""))
def test_a_step_resumed_after_a_crash_writes_nothing_twice(
    settings: Settings, ana: Context, tool: Any, args: dict[str, Any], count: str
) -> None:
    graph = crashing_graph([tool], crashes=1)
    config: RunnableConfig = {"configurable": {"thread_id": "t-resume"}}
    call = {"name": tool.name, "args": args, "id": "call_0", "type": "tool_call"}
    with pytest.raises(Crash):
        graph.invoke({"messages": [AIMessage("", tool_calls=[call])]}, config, context=ana)
    assert rows(settings, count) == [(1,)]

    result = graph.invoke(None, config, context=ana)  # the worker resumes the same step
    message = result["messages"][-1]
    assert isinstance(message, ToolMessage) and message.status != "error", message.content
    assert rows(settings, count) == [(1,)]

    later = {**call, "args": {**args, "date": "13/03"} if "date" in args else args}
    graph.invoke({"messages": [AIMessage("", tool_calls=[later])]}, config, context=ana)
    assert rows(settings, count) == [(2,)], "a later turn with the same call id writes"


def test_a_later_turns_delete_cancel_and_person_update_are_not_taken_for_replays(
    settings: Settings, ana: Context
) -> None:
    graph = crashing_graph([record_transaction, delete_transaction, schedule_reminder,
                            cancel_reminder, remember_person])  # fmt: skip
    config: RunnableConfig = {"configurable": {"thread_id": "t-later"}}

    def turn(name: str, args: dict[str, Any]) -> ToolMessage:
        call = {"name": name, "args": args, "id": "call_0", "type": "tool_call"}
        result = graph.invoke({"messages": [AIMessage("", tool_calls=[call])]}, config, context=ana)
        message = result["messages"][-1]
        assert isinstance(message, ToolMessage)
        return message

    turn("record_transaction", {"kind": "expense", "amount": "10", "category": "mercado"})
    assert turn("delete_transaction", {"transaction_id": 1}).status != "error"
    second = turn("delete_transaction", {"transaction_id": 1})
    assert second.status == "error" and "already deleted" in str(second.content)

    turn("schedule_reminder", {"text": "água", "when": "em 10 minutos"})
    assert turn("cancel_reminder", {"reminder_id": 1}).status != "error"
    again = turn("cancel_reminder", {"reminder_id": 1})
    assert again.status == "error" and "already cancelled" in str(again.content)

    turn("remember_person", {"name": "Bia", "notes": "gosta de café"})
    turn("remember_person", {"name": "Bia", "notes": "mora em Recife"})
    assert rows(settings, "select notes from people") == [("gosta de café\nmora em Recife",)]


def test_two_calls_sharing_one_id_in_one_message_record_both_expenses(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    give_plan(settings, tenant, ["finance"])
    llm.structured(_ROUTE)
    llm.call_tools(
        [("record_transaction", {"kind": "expense", "amount": amount, "category": "mercado",
                                 "date": "2026-11-02"}) for amount in ("45,90", "20")],
        ids=["call_0", "call_0"],  # a server that numbers calls per message badly
    )  # fmt: skip
    llm.say("Anotei os dois.")
    say(client, settings, tenant, "gastei 45,90 e 20 no mercado")

    assert llm.remaining == 0
    assert sorted(rows(settings, "select amount::text from finance_entries")) == [
        ("20.00",),
        ("45.90",),
    ]


@pytest.mark.parametrize("call_id", ["call_0", ""])
def test_repeated_ids_in_one_message_each_write_once_even_when_resumed(
    settings: Settings, ana: Context, call_id: str
) -> None:
    graph = crashing_graph([record_transaction], crashes=1)
    config: RunnableConfig = {"configurable": {"thread_id": f"t-same-{call_id}"}}
    calls = [
        {"name": "record_transaction", "id": call_id, "type": "tool_call",
         "args": {"kind": "expense", "amount": amount, "category": "mercado"}}
        for amount in ("10", "10", "7")
    ]  # fmt: skip
    with pytest.raises(Crash):
        graph.invoke({"messages": [AIMessage("", tool_calls=calls)]}, config, context=ana)
    assert rows(settings, "select count(*) from finance_entries") == [(3,)]

    result = graph.invoke(None, config, context=ana)  # the worker resumes the same step
    answers = [m for m in result["messages"] if isinstance(m, ToolMessage)]
    assert [m.status for m in answers] == ["success"] * 3, [m.content for m in answers]
    assert sorted(rows(settings, "select amount::text from finance_entries")) == [
        ("10.00",),
        ("10.00",),
        ("7.00",),
    ]
    assert len({str(m.content) for m in answers}) == 3, "each call reports its own entry"
