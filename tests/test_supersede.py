"""A reply that newer messages overtook is not sent: the turn is folded into the next one."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from channels.twilio_sandbox import TwilioSandbox
from server.settings import Settings, get_settings
from store.records import Tenant
from tests.conftest import inbound_form, post_inbound, rows, run_jobs
from tests.fakes import ScriptedModel


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


@pytest.fixture
def bound(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Settings:
    """Settings where the user waits at most 4 s before an overtaken reply goes out anyway."""
    monkeypatch.setenv("TURN_SUPERSEDE_MAX_SECONDS", "4")
    get_settings.cache_clear()
    return get_settings()


def test_a_user_who_keeps_typing_still_gets_an_answer_within_the_bound(
    client: TestClient,
    bound: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    # First turn: overtaken after ~2.5 s (under the bound): folded.
    llm.say("R1", delay=2.5, during=_writes(client, bound, tenant, "segunda"))
    # Second turn: overtaken again; the user has now waited ~4.5 s since their first message
    # (though only ~2 s since the second): past the bound, so this reply goes out.
    llm.say("R2", delay=2.0, during=_writes(client, bound, tenant, "terceira"))
    llm.say("R3")
    post_inbound(client, bound, tenant, inbound_form(tenant, "primeira"))
    run_jobs(bound)

    assert [m["body"] for m in sandbox.messages] == ["R2", "R3"]
    assert rows(bound, "select status from messages where direction = 'inbound' order by id") == [
        ("superseded",),
        ("answered",),
        ("answered",),
    ]
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
