"""One WhatsApp message end to end: signed webhook -> stored -> RQ job -> LangGraph run
checkpointed in Postgres -> outbox -> send job -> Twilio API (sandbox)."""

from __future__ import annotations

import psycopg
from fastapi.testclient import TestClient
from langgraph.checkpoint.postgres import PostgresSaver
from psycopg.rows import dict_row

from channels.sandbox.twilio import TwilioSandbox
from server.settings import QUEUE_PROCESS, Settings
from store.records import Tenant
from tests.conftest import USER, inbound_form, post_inbound, queued_jobs, relay, rows, run_jobs
from tests.fakes import ScriptedModel


def test_message_travels_end_to_end(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    llm.say("Oi! Tudo ótimo, e com você?")
    form = inbound_form(tenant, "Oi, tudo bem?", ProfileName="Ana")

    response = post_inbound(client, settings, tenant, form)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    assert "<Response" in response.text and "<Message" not in response.text
    assert rows(settings, "select status, enqueued_at is null from messages") == [
        ("received", True)
    ], "stored before the 200; the relay enqueues it"
    assert relay(settings) == 1
    assert queued_jobs(settings, QUEUE_PROCESS) == 1

    run_jobs(settings)

    sent = sandbox.wait_for_messages(1, timeout=5)
    assert len(sandbox.messages) == 1
    assert sent[0]["to"] == USER
    assert sent[0]["from"] == tenant.whatsapp_sender
    assert sent[0]["body"] == "Oi! Tudo ótimo, e com você?"
    assert sent[0]["account_sid"] == tenant.twilio_account_sid

    # The model saw the user's words, and a system prompt naming the tenant and the user.
    request = llm.requests[0]
    assert request["messages"][-1] == {"role": "user", "content": "Oi, tudo bem?"}
    assert "Acme" in request["messages"][0]["content"]
    assert "Ana" in request["messages"][0]["content"]
    assert "Brazilian Portuguese" in request["messages"][0]["content"]

    # Stored: the inbound answered, the outbound sent with Twilio's sid, one ai_result.
    messages = rows(
        settings,
        "select direction, status, provider_message_id, body, correlation_id from messages "
        "order by id",
    )
    assert [(m[0], m[1]) for m in messages] == [("inbound", "answered"), ("outbound", "queued")]
    assert messages[0][2] == form["MessageSid"]
    assert messages[1][2] == sent[0]["sid"]
    assert messages[0][4] == messages[1][4], "one correlation id for the message's whole life"
    (result,) = rows(settings, "select reply, error, correlation_id from ai_results")
    assert result == ("Oi! Tudo ótimo, e com você?", None, messages[0][4])

    # The LangGraph checkpoint exists for the conversation's thread, with both messages.
    (thread_id,) = rows(settings, "select thread_id from conversations")[0]
    assert thread_id.startswith(str(tenant.id) + ":")
    assert settings.database_url
    with psycopg.connect(
        settings.database_url, autocommit=True, row_factory=dict_row, prepare_threshold=0
    ) as conn:
        checkpoint = PostgresSaver(conn).get_tuple({"configurable": {"thread_id": thread_id}})
    assert checkpoint is not None
    values = checkpoint.checkpoint["channel_values"]
    assert [m.type for m in values["messages"]] == ["human", "ai"]
    assert values["reply"] == "Oi! Tudo ótimo, e com você?"
    assert checkpoint.metadata["correlation_id"] == messages[0][4]


def test_second_turn_continues_the_same_thread(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    llm.say("Olá!").say("Sou o assistente da Acme.")
    post_inbound(client, settings, tenant, inbound_form(tenant, "Oi"))
    run_jobs(settings)
    post_inbound(client, settings, tenant, inbound_form(tenant, "Quem é você?"))
    run_jobs(settings)

    assert [m["body"] for m in sandbox.wait_for_messages(2)] == [
        "Olá!",
        "Sou o assistente da Acme.",
    ]
    second = [(m["role"], m["content"]) for m in llm.requests[1]["messages"][1:]]
    assert second == [("user", "Oi"), ("assistant", "Olá!"), ("user", "Quem é você?")]
    assert rows(settings, "select count(*) from conversations") == [(1,)]


def test_replayed_message_sid_is_answered_once(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    llm.say("Uma resposta só.")
    form = inbound_form(tenant, "Oi")

    first = post_inbound(client, settings, tenant, form)
    again = post_inbound(client, settings, tenant, form)

    assert (first.status_code, again.status_code) == (200, 200)
    assert "<Response" in again.text
    assert rows(settings, "select count(*) from messages") == [(1,)]
    assert relay(settings) == 1
    assert queued_jobs(settings, QUEUE_PROCESS) == 1
    run_jobs(settings)
    # A replay a day later (after the answer) is dropped too.
    assert post_inbound(client, settings, tenant, form).status_code == 200
    run_jobs(settings)
    assert [m["body"] for m in sandbox.messages] == ["Uma resposta só."]
    assert llm.remaining == 0


def test_jobs_run_twice_send_nothing_twice(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    from server.jobs.send import send_whatsapp_message
    from server.jobs.turn import process_ai_response

    llm.say("Resposta.")
    post_inbound(client, settings, tenant, inbound_form(tenant, "Oi"))
    run_jobs(settings)
    inbound_id, cid = rows(settings, "select id, correlation_id from messages order by id")[0]
    outbound_id = rows(settings, "select id from messages where direction = 'outbound'")[0][0]

    assert process_ai_response(str(tenant.id), inbound_id, cid) == "already answered"
    assert send_whatsapp_message(str(tenant.id), outbound_id, cid) == "queued"
    run_jobs(settings)

    assert len(sandbox.messages) == 1
    assert rows(settings, "select count(*) from messages where direction = 'outbound'") == [(1,)]
