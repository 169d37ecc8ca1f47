"""The support side of a handoff: queue, claims, staff replies, hand back, close, take over,
auto-return, and the transitions each leaves behind."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue, SimpleWorker

from channels.sandbox.twilio import TwilioSandbox
from graphs.prompts import HANDOFF_REPLY, HANDOFF_RETURN_REPLY
from server.api.auth import Role, mint_token
from server.jobs import handoff, runner
from server.jobs.common import connect
from server.settings import QUEUES, Settings
from store import conversations
from store.records import Tenant
from tests.conftest import inbound_form, post_inbound, rows, run_jobs, say, wait_until
from tests.fakes import ScriptedModel
from tests.templating import register_template
from tests.test_brain import ALL, give_plan

TEMPLATE = "HX" + "a" * 32


def staff(settings: Settings, tenant: Tenant, who: str = "ana@acme") -> dict[str, str]:
    bearer = mint_token(settings, subject=who, role=Role.support_agent, tenant_id=tenant.id)
    return {"Authorization": f"Bearer {bearer}"}


def conversation_id(settings: Settings, state: str | None = None) -> str:
    query = "select id from conversations" + (" where state = %s" if state else "")
    ((found,),) = rows(
        settings, query + " order by created_at desc limit 1", *([state] if state else [])
    )
    return str(found)


@pytest.fixture
def handed_off(
    client: TestClient, settings: Settings, tenant: Tenant, sandbox: TwilioSandbox
) -> str:
    """A conversation the user asked to hand to a person (no model call needed)."""
    give_plan(settings, tenant, ALL)
    say(client, settings, tenant, "quero falar com um atendente")
    assert [m["body"] for m in sandbox.wait_for_messages(1)] == [HANDOFF_REPLY["pt"]]
    return conversation_id(settings)


def url(tenant: Tenant, conversation: str, action: str = "") -> str:
    return f"/api/v1/tenants/{tenant.id}/support/conversations/{conversation}" + (
        f"/{action}" if action else ""
    )


def test_the_queue_lists_conversations_with_a_person_oldest_first(
    client: TestClient, settings: Settings, tenant: Tenant, handed_off: str
) -> None:
    listed = client.get(
        f"/api/v1/tenants/{tenant.id}/support/queue", headers=staff(settings, tenant)
    )

    assert listed.status_code == 200, listed.text
    (item,) = listed.json()["items"]
    assert item["id"] == handed_off and item["state"] == "HANDOFF"
    assert item["handoff_reason"] == "The user asked for a person."
    assert item["handoff_route"] == "router" and item["claimed_by"] is None
    assert item["waiting_seconds"] >= 0 and item["last_message"] == "quero falar com um atendente"


def test_two_people_cannot_claim_the_same_conversation(
    client: TestClient, settings: Settings, tenant: Tenant, handed_off: str
) -> None:
    first = client.post(url(tenant, handed_off, "claim"), headers=staff(settings, tenant, "ana"))
    again = client.post(url(tenant, handed_off, "claim"), headers=staff(settings, tenant, "ana"))
    second = client.post(url(tenant, handed_off, "claim"), headers=staff(settings, tenant, "bia"))
    reply = client.post(
        url(tenant, handed_off, "reply"),
        headers=staff(settings, tenant, "bia"),
        json={"text": "oi"},
    )

    assert first.status_code == 200 and first.json()["claimed_by"] == "ana"
    assert again.status_code == 200, "claiming one's own claim again is fine"
    assert second.status_code == 409 and second.json()["error"]["code"] == "already_claimed"
    assert "ana" in second.json()["error"]["message"]
    assert reply.status_code == 409 and reply.json()["error"]["code"] == "already_claimed"


def test_staff_reply_reaches_the_user_once_and_the_conversation_waits_for_the_user(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    handed_off: str,
) -> None:
    headers = {**staff(settings, tenant), "Idempotency-Key": "reply-1"}
    sent = client.post(url(tenant, handed_off, "reply"), headers=headers, json={"text": "Olá!"})
    repeat = client.post(url(tenant, handed_off, "reply"), headers=headers, json={"text": "Olá!"})
    run_jobs(settings)

    assert sent.status_code == 202 and repeat.json()["message_id"] == sent.json()["message_id"]
    assert [m["body"] for m in sandbox.wait_for_messages(2)] == [HANDOFF_REPLY["pt"], "Olá!"]
    assert rows(settings, "select purpose, sent_by from messages where body = 'Olá!'") == [
        ("staff", "ana@acme")
    ]
    assert rows(settings, "select state, claimed_by from conversations") == [
        ("WAITING_USER", "ana@acme")
    ]

    # The user answers: stored, shown to staff, no run; the ball is back with staff.
    say(client, settings, tenant, "obrigado!")
    assert rows(settings, "select status from messages where body = 'obrigado!'") == [("handoff",)]
    view = client.get(url(tenant, handed_off), headers=staff(settings, tenant)).json()
    assert view["state"] == "HANDOFF"
    assert [m["body"] for m in view["messages"]][-2:] == ["Olá!", "obrigado!"]
    assert [(t["from_state"], t["to_state"], t["actor_kind"]) for t in view["transitions"]] == [
        ("ACTIVE", "HANDOFF", "assistant"),
        ("HANDOFF", "WAITING_USER", "staff"),
        ("WAITING_USER", "HANDOFF", "user"),
    ]
    assert view["handoff_run"]["route"] == "handoff" and view["window_open"] is True


def test_outside_the_24_hour_window_the_reply_needs_the_template(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    handed_off: str,
) -> None:
    rows(settings, "update conversations set last_inbound_at = now() - interval '25 hours' "
         "returning id")  # fmt: skip
    body = {"text": "Ainda precisa de ajuda?"}

    refused = client.post(
        url(tenant, handed_off, "reply"), headers=staff(settings, tenant), json=body
    )
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "window_closed"
    assert "no approved 'staff_followup' template" in refused.json()["error"]["message"]
    forced = client.post(
        url(tenant, handed_off, "reply"), headers=staff(settings, tenant),
        json={**body, "use_template": True},
    )  # fmt: skip
    assert forced.status_code == 409, "no template to send it in: refused, nothing queued"
    assert rows(settings, "select count(*) from messages where purpose = 'staff'") == [(0,)]

    # The tenant's old fixed template does not carry staff words: it is not offered.
    rows(settings, "update tenants set closed_window_template_sid = %s returning id", TEMPLATE)
    view = client.get(url(tenant, handed_off), headers=staff(settings, tenant)).json()
    assert view["template_available"] is False
    sid = register_template(
        settings,
        sandbox,
        tenant,
        "staff_followup",
        "{{1}} da equipe Acme respondeu: {{2}}",
        {"1": "agent", "2": "text"},
    )
    offered = client.post(
        url(tenant, handed_off, "reply"), headers=staff(settings, tenant), json=body
    )
    assert offered.status_code == 409 and "use_template" in offered.json()["error"]["message"]
    view = client.get(url(tenant, handed_off), headers=staff(settings, tenant)).json()
    assert view["window_open"] is False and view["template_available"] is True

    sent = client.post(
        url(tenant, handed_off, "reply"), headers=staff(settings, tenant),
        json={**body, "use_template": True},
    )  # fmt: skip
    run_jobs(settings)
    assert sent.status_code == 202
    template = sandbox.wait_for_messages(2)[-1]
    assert template["content_sid"] == sid
    assert template["body"] == "ana da equipe Acme respondeu: Ainda precisa de ajuda?"


def test_a_closed_window_reply_its_template_cannot_carry_is_refused_and_nothing_written(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    handed_off: str,
) -> None:
    rows(settings, "update conversations set last_inbound_at = now() - interval '25 hours' "
         "returning id")  # fmt: skip
    rows(settings, "update users set profile_name = null returning id")
    register_template(settings, sandbox, tenant, "staff_followup", "Olá {{1}}! {{2}}",
                      {"1": "name", "2": "text"})  # fmt: skip
    templated = {"text": "Ainda precisa de ajuda?", "use_template": True}

    nameless = client.post(url(tenant, handed_off, "reply"), headers=staff(settings, tenant),
                           json=templated)  # fmt: skip
    rows(settings, "update users set profile_name = 'Bia' returning id")
    too_long = client.post(url(tenant, handed_off, "reply"), headers=staff(settings, tenant),
                           json={**templated, "text": "a" * 1016})  # fmt: skip
    fits = client.post(url(tenant, handed_off, "reply"), headers=staff(settings, tenant),
                       json={**templated, "text": "a" * 1015})  # fmt: skip

    assert nameless.status_code == 409, nameless.text
    assert nameless.json()["error"]["code"] == "template_unavailable"
    assert "needs name" in nameless.json()["error"]["message"]
    assert too_long.status_code == 422 and too_long.json()["error"]["code"] == (
        "too_long_for_template"
    )
    assert "1025 characters" in too_long.json()["error"]["message"]
    assert fits.status_code == 202, fits.text
    assert rows(settings, "select count(*) from messages where purpose = 'staff'") == [(1,)]
    assert rows(settings, "select to_state from conversation_transitions where actor_kind = "
                "'staff'") == [("WAITING_USER",)]  # fmt: skip


def test_bad_requests_are_refused_clearly(
    client: TestClient, settings: Settings, tenant: Tenant, handed_off: str
) -> None:
    headers = staff(settings, tenant)
    empty = client.post(url(tenant, handed_off, "reply"), headers=headers, json={"text": ""})
    extra = client.post(
        url(tenant, handed_off, "reply"), headers=headers, json={"text": "a", "x": 1}
    )
    missing = client.post(
        url(tenant, "00000000-0000-0000-0000-000000000000", "claim"), headers=headers
    )
    takeover = client.post(
        url(tenant, handed_off, "take-over"), headers=headers, json={"reason": "quero assumir"}
    )

    assert empty.status_code == 422 and extra.status_code == 422
    assert missing.status_code == 404
    assert takeover.status_code == 409 and takeover.json()["error"]["code"] == "wrong_state"


def test_closing_ends_the_conversation_and_the_next_message_opens_a_new_one(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    llm: ScriptedModel,
    handed_off: str,
) -> None:
    closed = client.post(url(tenant, handed_off, "close"), headers=staff(settings, tenant), json={})
    again = client.post(url(tenant, handed_off, "close"), headers=staff(settings, tenant), json={})
    llm.structured({"route": "general", "reason": "greeting"}).say("Oi de novo!")
    say(client, settings, tenant, "oi")

    assert closed.status_code == 204
    assert again.status_code == 204, "closing is idempotent"
    assert rows(settings, "select count(*) from conversation_transitions where to_state = "
                "'CLOSED'") == [(1,)]  # fmt: skip
    states = rows(settings, "select state from conversations order by created_at")
    assert states == [("CLOSED",), ("ACTIVE",)]
    assert conversation_id(settings, "ACTIVE") != handed_off


def test_staff_can_take_over_an_active_conversation_and_hand_it_back(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    give_plan(settings, tenant, ALL)
    llm.structured({"route": "general", "reason": "greeting"}).say("Oi! Como posso ajudar?")
    say(client, settings, tenant, "oi")
    active = conversation_id(settings)

    taken = client.post(
        url(tenant, active, "take-over"), headers=staff(settings, tenant),
        json={"reason": "Cliente VIP: atendimento pessoal."},
    )  # fmt: skip
    run_jobs(settings)

    assert taken.status_code == 202
    assert rows(settings, "select state, claimed_by, handoff_route from conversations") == [
        ("HANDOFF", "ana@acme", "staff")
    ]
    assert sandbox.wait_for_messages(2)[-1]["body"] == HANDOFF_REPLY["pt"]
    assert client.post(url(tenant, active, "hand-back"), headers=staff(settings, tenant),
                       json={"note": "tudo certo"}).status_code == 202  # fmt: skip
    run_jobs(settings)
    assert rows(settings, "select state from conversations") == [("ACTIVE",)]
    reasons = rows(settings, "select actor_kind, reason from conversation_transitions order by id")
    assert reasons == [
        ("staff", "Cliente VIP: atendimento pessoal."),
        ("staff", "tudo certo"),
    ]


def test_a_hand_back_after_a_crash_resumes_the_thread_once(
    client: TestClient, settings: Settings, tenant: Tenant, handed_off: str, llm: ScriptedModel
) -> None:
    client.post(
        url(tenant, handed_off, "reply"), headers=staff(settings, tenant), json={"text": "Oi"}
    )
    # A first hand-back resumed the thread, then its worker died before recording the state.
    with connect(settings, str(tenant.id)) as conn:
        conversation = conversations.conversation_by_id(conn, handed_off)  # type: ignore[arg-type]
        assert conversation is not None
        handoff._resume(conn, settings, conversation, [{"type": "response", "args": "Oi"}], "c1")
        graph = runner.compile_graph(conn)
        config: Any = {"configurable": {"thread_id": conversation.thread_id}}
        assert not runner.waiting_for_human(graph.get_state(config))

    assert handoff.hand_back(str(tenant.id), handed_off, "ana@acme", "", "c2") == "handed back"
    assert handoff.hand_back(str(tenant.id), handed_off, "ana@acme", "", "c3") == "not with staff"

    with connect(settings, str(tenant.id)) as conn:
        messages = runner.compile_graph(conn).get_state(config).values["messages"]
    assert [m.text for m in messages].count("Oi") == 1, "the exchange joined the thread once"
    assert rows(settings, "select state from conversations") == [("ACTIVE",)]
    assert rows(settings, "select count(*) from ai_results where route_reason = "
                "'Resumed from support.'") == [(1,)]  # fmt: skip


def test_auto_return_fires_through_the_scheduler_and_tells_the_user_once(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    redis: Redis,
    llm: ScriptedModel,
    worker_process: subprocess.Popen[bytes],
) -> None:
    rows(settings, "update tenants set handoff_auto_return_seconds = 2 returning id")
    give_plan(settings, tenant, ALL)
    post_inbound(client, settings, tenant, inbound_form(tenant, "quero falar com uma pessoa"))
    from tests.conftest import relay

    relay(settings)

    wait_until(
        lambda: rows(settings, "select state from conversations") == [("HANDOFF",)], what="handoff"
    )
    wait_until(
        lambda: rows(settings, "select state from conversations") == [("ACTIVE",)],
        what="auto-return",
    )
    bodies = [m["body"] for m in sandbox.wait_for_messages(2, timeout=30)]
    assert bodies == [HANDOFF_REPLY["pt"], HANDOFF_RETURN_REPLY["pt"]]
    assert rows(settings, "select actor_kind, actor from conversation_transitions order by id")[
        -1
    ] == ("system", "auto-return")
    # Once the assistant has it back, a later check changes nothing.
    queues = [Queue(name, connection=redis) for name in QUEUES]
    SimpleWorker(queues, connection=redis).work(burst=True, with_scheduler=True)
    assert len(sandbox.messages) == 2
