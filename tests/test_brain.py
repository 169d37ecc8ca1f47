"""The assistant through the worker: real tools on PostgreSQL, audit rows, handoff and resume
across worker processes, crash recovery without double writes, history and retention."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.rows import dict_row
from redis import Redis

from channels.sandbox.twilio import TwilioSandbox
from graphs.context import Context
from graphs.prompts import HANDOFF_REPLY
from server.api.auth import Role, mint_token
from server.jobs import runner
from server.jobs.common import connect
from server.jobs.retention import prune_checkpoints, schedule_retention
from server.settings import QUEUE_PROCESS, Settings
from store import conversations, inbox, tenants
from store.records import Tenant
from tests.conftest import inbound_form, post_inbound, queued_jobs, relay, rows, run_jobs, say
from tests.fakes import FakeLangSmith, ScriptedModel

BIN = Path(sys.executable).parent
ALL = ["finance", "relationships", "long_term_memory", "human_handoff", "reminders"]


def give_plan(settings: Settings, tenant: Tenant, features: list[str]) -> None:
    """Put every new user of `tenant` on a plan with `features`."""
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn, conn.transaction():
        plan = conn.execute(
            "insert into plans (tenant_id, slug, name, features) values (%s, 'p', 'P', %s) "
            "returning id",
            (tenant.id, features),
        ).fetchone()
        assert plan is not None
        conn.execute("update tenants set default_plan_id = %s where id = %s", (plan[0], tenant.id))


def _route(route: str) -> dict[str, str]:
    return {"route": route, "reason": f"about {route}"}


def test_an_expense_is_recorded_and_the_run_is_audited(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    give_plan(settings, tenant, ["finance"])
    llm.structured(_route("finance"))
    llm.call_tool(
        "record_transaction",
        {"kind": "expense", "amount": "45,90", "category": "groceries", "date": "ontem"},
        id="call_expense_1",
    )
    llm.say("Anotei R$ 45,90 em mercado, ontem.")

    say(client, settings, tenant, "gastei 45,90 no mercado ontem")

    assert [m["body"] for m in sandbox.wait_for_messages(1)] == [
        "Anotei R$ 45,90 em mercado, ontem."
    ]
    (entry,) = rows(settings, "select kind, amount::text, currency, category from finance_entries")
    assert entry == ("expense", "45.90", "BRL", "groceries")
    (audit,) = rows(
        settings,
        "select route, route_reason, tool_calls, prompt_tokens, completion_tokens, "
        "inbound_message_ids, error from ai_results",
    )
    route, reason, tool_calls, prompt_tokens, completion_tokens, inbound_ids, error = audit
    assert (route, reason, error) == ("finance", "about finance", None)
    (call,) = tool_calls
    assert call["name"] == "record_transaction" and call["id"] == "call_expense_1"
    assert call["args"]["amount"] == "45,90" and call["status"] == "success"
    assert "45.90" in call["result"]
    assert prompt_tokens > 0 and completion_tokens > 0
    assert inbound_ids == [r[0] for r in rows(settings, "select id from messages order by id")][:1]

    bearer = mint_token(settings, subject="qa", role=Role.support_agent, tenant_id=tenant.id)
    listed = client.get(
        f"/api/v1/tenants/{tenant.id}/ai-results",
        params={"route": "finance"},
        headers={"Authorization": f"Bearer {bearer}"},
    )
    assert listed.status_code == 200, listed.text
    (item,) = listed.json()["items"]
    assert item["route"] == "finance" and item["tool_calls"][0]["name"] == "record_transaction"


def test_a_crashed_run_resumes_from_its_checkpoint_without_writing_twice(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    llm: ScriptedModel,
) -> None:
    give_plan(settings, tenant, ["finance"])
    posted = post_inbound(client, settings, tenant, inbound_form(tenant, "gastei 30 no uber"))
    assert posted.status_code == 200
    relay(settings)
    llm.structured(_route("finance"))
    llm.call_tool(
        "record_transaction", {"kind": "expense", "amount": "30", "category": "transport"}
    )
    # The script ends here: the model's next call fails, as a worker dying there would.

    with connect(settings, str(tenant.id)) as conn:
        pending = inbox.unanswered_inbound(conn, _conversation_id(settings))
        conversation = conversations.conversation_by_id(conn, pending[0].conversation_id)
        user = tenants.user_by_id(conn, conversation.user_id)  # type: ignore[union-attr]
        assert conversation is not None and user is not None
        context = Context(tenant_id=str(tenant.id), user_id=str(user.id), features=["finance"])
        config = runner.run_config(tenant, user, conversation, "cid", [m.id for m in pending])
        kwargs: dict[str, Any] = {
            "tenant": tenant, "user": user, "conversation": conversation, "pending": pending,
            "context": context, "config": config,
        }  # fmt: skip
        with pytest.raises(Exception, match=r"500|scripted|Internal"):
            runner.run_turn(conn, settings, **kwargs)
        assert rows(settings, "select count(*) from finance_entries") == [(1,)]

        llm.say("Anotado: R$ 30,00 em transporte.")
        result = runner.run_turn(conn, settings, **kwargs)

    assert result.reply == "Anotado: R$ 30,00 em transporte." and result.resumed_from_checkpoint
    assert rows(settings, "select count(*) from finance_entries") == [(1,)]
    assert llm.remaining == 0


def _conversation_id(settings: Settings) -> Any:
    ((conversation_id,),) = rows(settings, "select id from conversations")
    return conversation_id


def _worker_burst(settings: Settings) -> str:
    """Run one `conversa worker --burst` process (a fresh process each time) to completion."""
    relay(settings)
    done = subprocess.run(
        [str(BIN / "conversa"), "worker", "--burst"],
        env={**os.environ, "LOG_LEVEL": "INFO"},
        capture_output=True,
        timeout=120,
        check=False,
    )
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, output
    return output


def test_a_handoff_pauses_in_one_worker_process_and_resumes_in_another(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    redis: Redis,
    llm: ScriptedModel,
) -> None:
    give_plan(settings, tenant, ALL)
    post_inbound(client, settings, tenant, inbound_form(tenant, "quero falar com um atendente"))
    first = _worker_burst(settings)

    assert [m["body"] for m in sandbox.wait_for_messages(1)] == [HANDOFF_REPLY["pt"]]
    assert rows(settings, "select state from conversations") == [("HANDOFF",)]
    assert rows(settings, "select route, interrupted from ai_results") == [("handoff", True)]
    assert llm.requests == []

    # While a person has the conversation, the user's messages are kept and not answered.
    post_inbound(client, settings, tenant, inbound_form(tenant, "alô?"))
    _worker_burst(settings)
    assert rows(settings, "select status from messages where body = 'alô?'") == [("handoff",)]
    assert len(sandbox.messages) == 1

    staff = {"Authorization": "Bearer " + mint_token(
        settings, subject="ana@support", role=Role.support_agent, tenant_id=tenant.id
    )}  # fmt: skip
    base = f"/api/v1/tenants/{tenant.id}/support/conversations/{_conversation_id(settings)}"
    assert client.post(f"{base}/reply", headers=staff, json={"text": "Oi! Sou a Ana."}).is_success
    assert client.post(f"{base}/hand-back", headers=staff, json={}).status_code == 202
    second = _worker_burst(settings)

    assert rows(settings, "select state from conversations") == [("ACTIVE",)]
    assert "handed back to the assistant" in second and "handing off" in first
    llm.structured(_route("general")).say("Que bom que deu certo!")
    say(client, settings, tenant, "obrigado, resolveram")
    assert sandbox.wait_for_messages(3)[-1]["body"] == "Que bom que deu certo!"
    # The assistant saw what the user and the person said during the handoff, in order.
    seen = [m["content"] for m in llm.requests[-1]["messages"][1:]]
    assert seen[-3:] == ["alô?", "Oi! Sou a Ana.", "obrigado, resolveram"]


def test_a_thread_without_checkpoints_is_rebuilt_from_the_message_history(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    llm.say("Prazer, Ana!")
    say(client, settings, tenant, "Oi, meu nome é Ana")
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        for table in ("checkpoint_writes", "checkpoint_blobs", "checkpoints"):
            conn.execute(f"delete from {table}")

    llm.say("Você é a Ana.")
    say(client, settings, tenant, "Qual é o meu nome?")

    seen = [m["content"] for m in llm.requests[-1]["messages"][1:]]
    assert seen == ["Oi, meu nome é Ana", "Prazer, Ana!", "Qual é o meu nome?"]


def test_retention_keeps_only_the_latest_checkpoint_and_the_conversation_goes_on(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    for turn in range(3):
        llm.say(f"resposta {turn}")
        say(client, settings, tenant, f"mensagem {turn}")
    assert rows(settings, "select count(*) > 3 from checkpoints") == [(True,)]

    assert prune_checkpoints() == 1

    assert rows(settings, "select count(*) from checkpoints") == [(1,)]
    llm.say("ainda lembro")
    say(client, settings, tenant, "lembra do que eu disse?")
    seen = [m["content"] for m in llm.requests[-1]["messages"][1:]]
    assert seen[0] == "mensagem 0" and seen[-1] == "lembra do que eu disse?"
    assert prune_checkpoints() == 1 and prune_checkpoints() == 0


def test_checkpoint_size_per_turn_stays_flat_as_the_conversation_grows(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    sizes = {}
    for turn in range(1, 41):
        llm.say(f"resposta número {turn:03d}")
        say(client, settings, tenant, f"mensagem número {turn:03d}")
        if turn in (15, 40):
            sizes[turn] = _latest_messages_blob(settings)

    assert sizes[40] <= sizes[15] * 1.05, sizes


def _latest_messages_blob(settings: Settings) -> int:
    assert settings.database_url
    with psycopg.connect(settings.database_url, row_factory=dict_row) as conn:
        row = conn.execute(
            """select length(b.blob) as size from checkpoints c
               join checkpoint_blobs b on b.thread_id = c.thread_id
                and b.checkpoint_ns = c.checkpoint_ns and b.channel = 'messages'
                and b.version = c.checkpoint -> 'channel_versions' ->> 'messages'
               order by c.checkpoint_id desc limit 1"""
        ).fetchone()
    assert row is not None
    return int(row["size"])


@pytest.mark.parametrize("privacy", ["full", "masked"])
def test_runs_are_traced_with_their_ids_and_masked_when_the_tenant_asks(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
    langsmith: FakeLangSmith,
    privacy: str,
) -> None:
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("update tenants set trace_privacy = %s", (privacy,))
    llm.say("Seu número é +55 11 99999-0000, Ana.")

    say(client, settings, tenant, "Oi, sou a Ana, meu número é +55 11 99999-0000")

    traced = langsmith.text
    ((conversation_id, correlation_id),) = rows(
        settings, "select conversation_id, correlation_id from messages where direction = 'inbound'"
    )
    assert str(tenant.id) in traced and str(conversation_id) in traced
    assert correlation_id in traced and "load_context" in traced and "router" in traced
    assert '"route":"general"' in traced.replace(" ", "")  # the specialist's runs carry it
    secret_bits = ("sou a Ana", "99999-0000", "Seu número")
    if privacy == "full":
        assert all(bit in traced for bit in secret_bits)
    else:
        leaks = [
            traced[max(0, traced.find(b) - 600) : traced.find(b) + 50]
            for b in secret_bits
            if b in traced
        ]
        assert not leaks, leaks[0]


def test_the_api_schedules_retention_once_per_interval_and_a_worker_runs_it(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    redis: Redis,
    llm: ScriptedModel,
) -> None:
    for turn in range(2):
        llm.say(f"resposta {turn}")
        say(client, settings, tenant, f"mensagem {turn}")
    hourly = settings.model_copy(update={"retention_interval_seconds": 3600})

    assert schedule_retention(redis, hourly) is True
    assert schedule_retention(redis, hourly) is False  # another API process, same hour
    assert schedule_retention(redis, settings) is False  # 0 turns the schedule off
    assert queued_jobs(settings, QUEUE_PROCESS) == 1

    run_jobs(settings)

    assert rows(settings, "select count(*) from checkpoints") == [(1,)]


def test_deleting_a_tenant_also_deletes_its_threads_and_memories(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    llm.say("Oi!")
    say(client, settings, tenant, "Oi")
    ((user_id,),) = rows(settings, "select id from users")
    rows(
        settings,
        "insert into store (prefix, key, value) values (%s, 'k', '{\"text\": \"gosta de chá\"}') "
        "returning key",
        f"{tenant.id}.{user_id}.memories",
    )
    assert rows(settings, "select count(*) > 0 from checkpoints") == [(True,)]
    admin = mint_token(settings, subject="root", role=Role.platform_admin)

    gone = client.delete(
        f"/api/v1/tenants/{tenant.id}", headers={"Authorization": f"Bearer {admin}"}
    )

    assert gone.status_code == 204, gone.text
    for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes", "store"):
        assert rows(settings, f"select count(*) from {table}") == [(0,)], table
