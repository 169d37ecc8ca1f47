"""A reply that newer messages overtook is not sent: the turn is folded into the next one."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig

from channels.sandbox.twilio import TwilioSandbox
from server.jobs import runner
from server.jobs.common import connect
from server.settings import Settings, get_settings
from store import conversations, inbox
from store.records import Tenant
from tests.conftest import inbound_form, post_inbound, rows, run_jobs
from tests.fakes import ScriptedModel
from tests.test_brain import _conversation_id, give_plan


def _writes(
    client: TestClient, settings: Settings, tenant: Tenant, text: str
) -> Callable[[], None]:
    """The user sending `text` through the signed webhook (while the model is answering)."""

    def send() -> None:
        response = post_inbound(client, settings, tenant, inbound_form(tenant, text))
        assert response.status_code == 200, response.text

    return send


def _user_texts(request: dict[str, object]) -> list[str]:
    messages = request["messages"]
    assert isinstance(messages, list)
    return [m["content"] for m in messages if m["role"] == "user"]


def _assistant_texts(request: dict[str, object]) -> list[str]:
    messages = request["messages"]
    assert isinstance(messages, list)
    return [m.get("content") or "" for m in messages if m["role"] == "assistant"]


def test_a_reply_overtaken_by_a_new_message_is_folded_into_the_next_turn(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    llm.say("Anotei R$ 30.", during=_writes(client, settings, tenant, "e 20 no café"))
    llm.say("Anotei R$ 30 no almoço e R$ 20 no café.")
    post_inbound(client, settings, tenant, inbound_form(tenant, "gastei 30 no almoço"))
    run_jobs(settings)

    assert [m["body"] for m in sandbox.messages] == ["Anotei R$ 30 no almoço e R$ 20 no café."]
    # The next turn's model read both messages, and not the reply the user never got.
    assert _user_texts(llm.requests[1]) == ["gastei 30 no almoço", "e 20 no café"]
    assert "Anotei R$ 30." not in _assistant_texts(llm.requests[1])
    assert rows(
        settings, "select body, status from messages where direction = 'inbound' order by id"
    ) == [("gastei 30 no almoço", "superseded"), ("e 20 no café", "answered")]
    (error,) = rows(settings, "select error from messages where status = 'superseded'")[0]
    assert "Folded into the next turn" in error
    assert rows(settings, "select reply, superseded from ai_results order by id") == [
        ("Anotei R$ 30.", True),
        ("Anotei R$ 30 no almoço e R$ 20 no café.", False),
    ]
    # A second look at the thread (the next message) still does not see the unsent reply.
    llm.say("De nada!")
    post_inbound(client, settings, tenant, inbound_form(tenant, "valeu"))
    run_jobs(settings)
    assert "Anotei R$ 30." not in _assistant_texts(llm.requests[2])
    assert [m["body"] for m in sandbox.messages][-1] == "De nada!"


def _backdate(settings: Settings, body: str, seconds: int) -> Callable[[], None]:
    """Make the user's message `body` look `seconds` older (they have waited that long)."""

    def move() -> None:
        rows(
            settings,
            "update messages set created_at = created_at - make_interval(secs => %s) "
            "where body = %s returning id",
            seconds,
            body,
        )

    return move


def test_a_user_who_keeps_typing_still_gets_an_answer_within_the_bound(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    assert settings.turn_supersede_max_seconds == 60
    # First turn: overtaken at once: folded.
    llm.say("R1", during=_writes(client, settings, tenant, "segunda"))

    # Second turn: overtaken again, but by now the user has waited 90 s since their first
    # message (though not since their second): past the bound, so this reply goes out.
    def later() -> None:
        _writes(client, settings, tenant, "terceira")()
        _backdate(settings, "primeira", 90)()

    llm.say("R2", during=later)
    llm.say("R3")
    post_inbound(client, settings, tenant, inbound_form(tenant, "primeira"))
    run_jobs(settings)

    assert [m["body"] for m in sandbox.messages] == ["R2", "R3"]
    assert rows(
        settings, "select status from messages where direction = 'inbound' order by id"
    ) == [("superseded",), ("answered",), ("answered",)]
    assert _user_texts(llm.requests[1]) == ["primeira", "segunda"]


def test_an_overtaking_data_request_does_not_swallow_the_reply(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    # The data request is answered by a fixed notice, not the model: folding the first turn
    # into it would leave "oi" without an answer.
    llm.say("Oi! Como posso ajudar?", during=_writes(client, settings, tenant, "apagar meus dados"))
    post_inbound(client, settings, tenant, inbound_form(tenant, "oi"))
    run_jobs(settings)

    bodies = [m["body"] for m in sandbox.messages]
    assert bodies[0] == "Oi! Como posso ajudar?"
    assert len(bodies) == 2 and "LGPD" in bodies[1]
    assert rows(settings, "select count(*) from messages where status = 'superseded'") == [(0,)]


def test_folding_can_be_turned_off(
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    monkeypatch.setenv("TURN_SUPERSEDE_MAX_SECONDS", "0")
    get_settings.cache_clear()
    llm.say("Primeira resposta", during=_writes(client, settings, tenant, "mais uma"))
    llm.say("Segunda resposta")
    post_inbound(client, settings, tenant, inbound_form(tenant, "oi"))
    run_jobs(get_settings())

    assert [m["body"] for m in sandbox.messages] == ["Primeira resposta", "Segunda resposta"]


def test_a_crashed_tool_step_is_finished_before_the_messages_that_came_after_it(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    """A worker died inside a tool step, and the user wrote again before the retry: the step
    must finish from its checkpoint (new input would drop it and leave a tool call with no
    result in the thread, which OpenAI refuses), then one reply answers both messages."""
    give_plan(settings, tenant, ["finance"])
    for text in ("gastei 30 no uber", "e 20 no café"):
        post_inbound(client, settings, tenant, inbound_form(tenant, text))
    call = {"name": "record_transaction", "id": "call_1",
            "args": {"kind": "expense", "amount": "30", "category": "transport"}}  # fmt: skip
    with connect(settings, str(tenant.id)) as conn:
        first, _ = inbox.unanswered_inbound(conn, _conversation_id(settings))
        conversation = conversations.conversation_by_id(conn, first.conversation_id)
        assert conversation is not None
        graph = runner.compile_graph(conn)
        config: RunnableConfig = {"configurable": {"thread_id": conversation.thread_id}}
        crashed = {"messages": [runner.human_message(first), AIMessage("", tool_calls=[call])],
                   "route": "finance", "active_specialist": "finance"}  # fmt: skip
        graph.update_state(config, crashed, as_node="finance")
        assert graph.get_state(config).next, "the tool step is pending, as after a crash"

    llm.say("Anotei R$ 30.")  # the crashed step's model call, once its tool has run
    llm.structured({"route": "finance", "reason": "money"}).say("Anotei R$ 30 e R$ 20.")
    run_jobs(settings)

    for request in llm.requests:
        called = [c["id"] for m in request["messages"] for c in m.get("tool_calls") or []]
        answered = [m["tool_call_id"] for m in request["messages"] if m["role"] == "tool"]
        assert called == answered, "every tool call in the thread has its result"
    assert rows(settings, "select amount from finance_entries") == [(Decimal("30.00"),)]
    assert [m["body"] for m in sandbox.messages] == ["Anotei R$ 30 e R$ 20."]
    assert rows(
        settings, "select body, status from messages where direction = 'inbound' order by id"
    ) == [("gastei 30 no uber", "superseded"), ("e 20 no café", "answered")]
