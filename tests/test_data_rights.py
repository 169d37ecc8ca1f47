"""Users' data rights: a user with everything (tools, memories, a handoff, a voice-note
transcript, delivery statuses, queued and scheduled jobs) is exported, then erased; afterwards
no table, store namespace, checkpoint or Redis key holds their id, number or words."""

from __future__ import annotations

import contextlib
import zlib
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.registry import ScheduledJobRegistry

from channels.policy import NOTICES
from channels.sandbox.twilio import TwilioSandbox
from channels.twilio.inbound import sign
from server.api.auth import Role, mint_token
from server.settings import QUEUE_PROCESS, QUEUE_SEND, Settings, get_settings
from store.records import Tenant
from tests import conftest
from tests.conftest import inbound_form, post_inbound, relay, rows, run_jobs
from tests.fakes import ScriptedModel
from tests.test_brain import ALL, give_plan

ANA = "whatsapp:+5511988887777"
BIA = "whatsapp:+5511977776666"
PREFIX = "/api/v1"
NAMES = {ANA: "Ana Secreta", BIA: "Bia"}


def auth(settings: Settings, role: Role, tenant: Tenant | None = None) -> dict[str, str]:
    bearer = mint_token(
        settings, subject=f"{role}@example", role=role,
        tenant_id=tenant.id if tenant is not None and role is not Role.platform_admin else None,
    )  # fmt: skip
    return {"Authorization": f"Bearer {bearer}"}


def say(client: TestClient, settings: Settings, tenant: Tenant, text: str, user: str = ANA) -> None:
    conftest.say(client, settings, tenant, text, user=user, ProfileName=NAMES[user])


def route(name: str) -> dict[str, str]:
    return {"route": name, "reason": f"about {name}"}


@pytest.fixture
def settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The suite's settings, with cached profiles kept for an hour: the erasure must find (and
    remove) the profile cached by Ana's turns however long building her data took, rather than
    one the default TTL (60 s) let expire on a busy machine."""
    monkeypatch.setenv("PROFILE_CACHE_SECONDS", "3600")
    get_settings.cache_clear()  # the suite's fixture clears it again at the end
    return get_settings()


@dataclass
class Traces:
    """What identifies Ana, to look for everywhere after her erasure."""

    user_id: str
    conversation_ids: list[str]
    message_ids: list[int]
    reminder_ids: list[int]
    texts: list[str] = field(default_factory=list)

    @property
    def needles(self) -> list[str]:
        return [self.user_id, "5511988887777", *self.conversation_ids, *self.texts]


@pytest.fixture
def ana(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> Traces:
    """Ana, with data in every table; and Bia, another user of the tenant, with some."""
    give_plan(settings, tenant, ALL)
    admin = auth(settings, Role.tenant_admin, tenant)

    llm.structured(route("finance"))
    llm.call_tool("record_transaction", {"kind": "expense", "amount": "45,90",
                  "category": "groceries", "description": "feira da Ana"})  # fmt: skip
    llm.say("Anotei R$ 45,90 da feira orgânica.")
    say(client, settings, tenant, "gastei 45,90 na feira orgânica ontem")

    llm.structured(route("relationships"))
    llm.call_tool("remember_person", {"name": "Zuleica", "relation": "tia", "notes": "toca harpa"})
    llm.call_tool("add_important_date",
                  {"person_name": "Zuleica", "kind": "birthday", "date": "12/12/1950"})  # fmt: skip
    llm.say("Guardei o aniversário da tia Zuleica.")
    say(client, settings, tenant, "o aniversário da tia Zuleica é 12 de dezembro")

    llm.structured(route("relationships"))
    llm.call_tool("schedule_reminder", {"text": "levar bolo para Zuleica", "when": "amanhã às 9h"})
    llm.say("Lembrete marcado para amanhã às 9h.")
    say(client, settings, tenant, "lembra de levar bolo para Zuleica amanhã às 9h")

    llm.structured(route("general"))
    llm.call_tool("save_memory", {"text": "Prefere ser chamada de Aninha"})
    llm.say("Vou lembrar, Aninha.")
    llm.structured({"facts": ["Sou alérgica a camarão"]})  # the extraction job after the turn
    say(client, settings, tenant, "me chama de Aninha, sou alérgica a camarão")

    say(client, settings, tenant, "quero falar com um atendente")  # no model call
    ((conversation,),) = rows(settings, "select id from conversations")
    support = f"{PREFIX}/tenants/{tenant.id}/support/conversations/{conversation}"
    staff = auth(settings, Role.support_agent, tenant)
    sent = client.post(f"{support}/reply", headers=staff, json={"text": "Oi, aqui é o Caio."})
    assert sent.status_code == 202, sent.text
    assert client.post(f"{support}/hand-back", headers=staff, json={}).status_code == 202
    run_jobs(settings)

    # A voice note's transcript, as the transcribe job records it on the inbound message.
    rows(settings, "update messages set transcription_status = 'done', "
         "transcript = 'transcrição do áudio da Ana sobre o jardim' "
         "where body = 'gastei 45,90 na feira orgânica ontem' returning id")  # fmt: skip
    # A delivery status from Twilio for the first reply.
    ((sid,),) = rows(settings, "select provider_message_id from messages where direction = "
                     "'outbound' and provider_message_id is not null "
                     "order by id limit 1")  # fmt: skip
    status = {"MessageSid": sid, "MessageStatus": "delivered", "From": tenant.whatsapp_sender,
              "To": ANA, "AccountSid": tenant.twilio_account_sid}  # fmt: skip
    url = settings.public_url("/webhooks/status")
    signature = sign(tenant.twilio_auth_token, url, status)
    posted = client.post("/webhooks/status", data=status, headers={"X-Twilio-Signature": signature})
    assert posted.status_code == 204, posted.text

    ((user_id,),) = rows(settings, "select id from users where wa_id = '5511988887777'")
    ((plan_id,),) = rows(settings, "select id from plans")
    base = f"{PREFIX}/tenants/{tenant.id}"
    subscription = {"user_id": str(user_id), "plan_id": str(plan_id)}
    assert client.post(f"{base}/subscriptions", headers=admin, json=subscription).is_success
    assert client.post(f"{base}/feature-overrides", headers=admin,
                       json={"feature": "reminders", "enabled": True,
                             "user_id": str(user_id)}).is_success  # fmt: skip

    # Bia: another user of the same tenant, who must not lose anything.
    llm.structured(route("finance"))
    llm.call_tool("record_transaction", {"kind": "expense", "amount": "12", "category": "food"})
    llm.say("Anotei R$ 12,00 para a Bia.")
    say(client, settings, tenant, "gastei 12 na padaria", user=BIA)
    # A message of each still waiting for its job when the erasure comes.
    for user, text in ((ANA, "ainda está aí? pergunta pendente da Ana"), (BIA, "oi de novo")):
        form = inbound_form(tenant, text, user=user, ProfileName=NAMES[user])
        assert post_inbound(client, settings, tenant, form).status_code == 200
    relay(settings)
    assert llm.remaining == 0

    texts = [r[0] for r in rows(
        settings, "select m.body from messages m join conversations c on c.id = m.conversation_id "
        "where c.user_id = %s and m.body <> ''", user_id,
    )]  # fmt: skip
    traces = Traces(
        user_id=str(user_id),
        conversation_ids=[str(r[0]) for r in rows(
            settings, "select id from conversations where user_id = %s", user_id)],
        message_ids=[r[0] for r in rows(
            settings, "select m.id from messages m join conversations c "
            "on c.id = m.conversation_id where c.user_id = %s", user_id)],
        reminder_ids=[r[0] for r in rows(
            settings, "select id from reminders where user_id = %s", user_id)],
        texts=[*texts, "Ana Secreta", "Zuleica", "Aninha", "camarão", "harpa",
               "transcrição do áudio da Ana sobre o jardim", "feira da Ana"],
    )  # fmt: skip
    assert "Oi, aqui é o Caio." in texts and "Vou lembrar, Aninha." in texts
    return traces


# -- searching everywhere --------------------------------------------------------------------


def database_hits(settings: Settings, needles: list[str]) -> list[str]:
    """Every (table.column, needle) of the public schema that holds one of `needles`."""
    assert settings.database_url
    hits: list[str] = []
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        columns = conn.execute(
            """select c.table_name, c.column_name, c.data_type from information_schema.columns c
               join information_schema.tables t on t.table_schema = c.table_schema
                and t.table_name = c.table_name and t.table_type = 'BASE TABLE'
               where c.table_schema = 'public' and c.data_type in ('text', 'character varying',
                 'character', 'jsonb', 'json', 'uuid', 'ARRAY', 'bytea', 'USER-DEFINED')
               order by 1, 2"""
        ).fetchall()
        assert len(columns) > 50, "every text-like column of every table"
        for table, column, kind in columns:
            for needle in needles:
                if kind == "bytea":
                    found = f'position(%s::bytea in "{column}") > 0'
                    query = f'select count(*) from "{table}" where {found}'
                    param: Any = needle.encode()
                else:
                    query = f'select count(*) from "{table}" where "{column}"::text like %s'
                    param = f"%{needle}%"
                (count,) = conn.execute(query, (param,)).fetchone()  # type: ignore[misc]
                if count:
                    hits.append(f"{table}.{column}: {needle!r}")
    return hits


def _redis_values(redis: Redis, key: bytes) -> list[bytes]:
    kind = redis.type(key).decode()
    if kind == "string":
        values = [redis.get(key) or b""]
    elif kind == "hash":
        values = [v for pair in redis.hgetall(key).items() for v in pair]
    elif kind == "list":
        values = redis.lrange(key, 0, -1)
    elif kind == "set":
        values = list(redis.smembers(key))
    elif kind == "zset":
        values = redis.zrange(key, 0, -1)
    elif kind == "stream":
        values = [v for _, entry in redis.xrange(key) for pair in entry.items() for v in pair]
    else:
        values = []
    out = [key]
    for value in values:
        out.append(value)
        with contextlib.suppress(zlib.error):  # RQ keeps job data zlib-compressed
            out.append(zlib.decompress(value))
    return out


def redis_hits(redis: Redis, needles: list[str]) -> list[str]:
    """Every Redis key whose name or content (decompressed where it can be) holds a needle."""
    hits = []
    for key in redis.scan_iter(count=1000):
        blob = b"\0".join(_redis_values(redis, key))
        hits += [f"{key.decode()}: {n!r}" for n in needles if n.encode() in blob]
    return hits


def job_descriptions(redis: Redis) -> list[str]:
    """What every job hash in Redis says it is ("answer message 12", "deliver reminder 3")."""
    found = []
    for key in redis.scan_iter(match="rq:job:*"):
        description = redis.hget(key, "description")
        if description:
            found.append(description.decode())
    return found


# -- export ----------------------------------------------------------------------------------


def test_a_tenant_admin_exports_everything_held_about_a_user(
    client: TestClient, settings: Settings, tenant: Tenant, ana: Traces
) -> None:
    url = f"{PREFIX}/tenants/{tenant.id}/users/{ana.user_id}/export"
    response = client.get(url, headers=auth(settings, Role.tenant_admin, tenant))

    assert response.status_code == 200, response.text
    assert "attachment" in response.headers["content-disposition"]
    doc = response.json()
    assert doc["format"] == "conversa.user-export/1" and doc["tenant"]["name"] == "Acme"
    assert doc["user"]["wa_id"] == "5511988887777" and doc["user"]["profile_name"] == "Ana Secreta"
    assert [s["status"] for s in doc["subscriptions"]] == ["active"]
    assert [(o["feature"], o["enabled"]) for o in doc["feature_overrides"]] == [("reminders", True)]
    assert doc["usage_days"] and doc["usage_days"][0]["messages"] >= 5
    assert {entry["kind"] for entry in doc["usage_ledger"]} == {"model", "send"}

    (conversation,) = doc["conversations"]
    messages = conversation["messages"]
    bodies = [m["body"] for m in messages]
    for text in ("gastei 45,90 na feira orgânica ontem", "quero falar com um atendente",
                 "Oi, aqui é o Caio.", "ainda está aí? pergunta pendente da Ana"):  # fmt: skip
        assert text in bodies
    # The recorded expense's reply, with the undo button it offered.
    recorded = next(m for m in messages if m["body"].startswith("Anotei R$ 45,90 da feira"))
    assert recorded["choices"]["body"] == "Anotei R$ 45,90 da feira orgânica."
    assert [o["title"][:10] for o in recorded["choices"]["options"]] == ["Desfazer #"]
    assert "oi de novo" not in bodies and "gastei 12 na padaria" not in bodies, "Bia's"
    voiced = next(m for m in messages if m["transcript"])
    assert voiced["transcript"] == "transcrição do áudio da Ana sobre o jardim"
    delivered = next(m for m in messages if m["status_events"])
    assert delivered["status_events"][0]["status"] == "delivered"
    assert next(m for m in messages if m["purpose"] == "staff")["sent_by"] == (
        "support_agent@example"
    )
    assert [(t["from_state"], t["to_state"]) for t in conversation["transitions"]][:2] == [
        ("ACTIVE", "HANDOFF"), ("HANDOFF", "WAITING_USER"),
    ]  # fmt: skip
    routes = [r["route"] for r in conversation["ai_results"]]
    assert {"finance", "relationships", "general", "handoff"} <= set(routes)
    assert conversation["assistant_checkpoints"] >= 1

    memories = {m["value"]["text"] for m in doc["memories"]}
    assert "Prefere ser chamada de Aninha" in memories
    assert "Sou alérgica a camarão" in memories
    assert all(m["namespace"] == f"{tenant.id}.{ana.user_id}.memories" for m in doc["memories"])
    (entry,) = doc["finance_entries"]
    assert (entry["amount"], entry["category"], entry["description"]) == (
        "45.90", "groceries", "feira da Ana",
    )  # fmt: skip
    (person,) = doc["people"]
    assert (person["name"], person["relation"], person["notes"]) == ("Zuleica", "tia", "toca harpa")
    assert [(d["kind"], d["month"], d["day"], d["year"]) for d in person["important_dates"]] == [
        ("birthday", 12, 12, 1950)
    ]
    (reminder,) = doc["reminders"]
    assert reminder["text"] == "levar bolo para Zuleica" and reminder["status"] == "scheduled"
    assert "tenant_id" not in response.text.replace(f'"{tenant.id}', "")


# -- erasure ---------------------------------------------------------------------------------


def test_erasure_leaves_nothing_of_the_user_anywhere_and_a_record_without_them(
    client: TestClient, settings: Settings, tenant: Tenant, redis: Redis, ana: Traces
) -> None:
    bia_before = _bia(settings)
    assert database_hits(settings, ana.needles), "the search finds Ana before her erasure"
    assert redis_hits(redis, [ana.user_id]), "her cached profile names her"
    ttls = [redis.ttl(key) for key in redis.scan_iter(match=f"conversa:profile:*:{ana.user_id}")]
    assert ttls and min(ttls) > 60, "cached for this module's hour, not the default minute"
    scheduled = ScheduledJobRegistry(QUEUE_SEND, connection=redis)
    waiting = Job.fetch_many(scheduled.get_job_ids(), connection=redis)
    assert [j for j in waiting if j and j.args[1] in ana.reminder_ids], "a scheduled reminder"
    pending_ana = f"answer message {max(ana.message_ids)}"
    assert pending_ana in job_descriptions(redis)

    url = f"{PREFIX}/tenants/{tenant.id}/users/{ana.user_id}/data?reference=LGPD-2024-7"
    erased = client.delete(url, headers=auth(settings, Role.tenant_admin, tenant))

    assert erased.status_code == 200, erased.text
    record = erased.json()
    counts = record["counts"]
    assert counts["users"] == 1 and counts["conversations"] == 1
    assert counts["messages"] == len(ana.message_ids)
    for table in ("finance_entries", "people", "important_dates", "reminders", "ai_results",
                  "conversation_transitions", "message_status_events", "subscriptions",
                  "feature_overrides", "usage_days", "checkpoints", "checkpoint_blobs",
                  "checkpoint_writes", "store", "store_vectors", "usage_ledger"):  # fmt: skip
        assert counts[table] >= 1, f"{table}: {counts}"
    assert record["redis_cleaned"] is True and record["jobs_removed"] >= 2
    assert record["erased_by"] == "tenant_admin@example"

    # Nothing of Ana in any column of any table (checkpoints and the store included) ...
    assert database_hits(settings, ana.needles) == []
    assert rows(settings, "select count(*) from store where prefix like %s",
                f"{tenant.id}.{ana.user_id}%") == [(0,)]  # fmt: skip
    assert rows(settings, "select count(*) from checkpoints where thread_id like %s",
                f"%{ana.conversation_ids[0]}") == [(0,)]  # fmt: skip
    # ... nor in Redis: no key, job, result or cached profile names her, and no job is about
    # her messages, reminders or conversation.
    assert redis_hits(redis, ana.needles) == []
    descriptions = job_descriptions(redis)
    about_ana = [
        d
        for d in descriptions
        if any(
            d.endswith((f"message {m}", f"reminder {r}"))
            for m in ana.message_ids
            for r in ana.reminder_ids
        )
        or ana.conversation_ids[0] in d
    ]
    assert about_ana == []
    assert not [j for j in Job.fetch_many(scheduled.get_job_ids(), connection=redis)
                if j and j.args[1] in ana.reminder_ids]  # fmt: skip

    # Bia has everything she had, and her queued message is still queued.
    assert _bia(settings) == bia_before
    ((bia_pending,),) = rows(settings, "select id from messages where body = 'oi de novo'")
    assert f"answer message {bia_pending}" in descriptions
    assert Queue(QUEUE_PROCESS, connection=redis).count == 1

    # The record: who, when, counts; nothing about Ana.
    (stored,) = rows(settings, "select to_jsonb(e)::text from data_erasures e")
    assert "LGPD-2024-7" in stored[0] and "tenant_admin@example" in stored[0]
    assert not [n for n in ana.needles if n in stored[0]]
    listed = client.get(f"{PREFIX}/tenants/{tenant.id}/erasures",
                        headers=auth(settings, Role.tenant_admin, tenant))  # fmt: skip
    assert listed.status_code == 200
    (item,) = listed.json()["items"]
    assert item["counts"] == counts and item["redis_cleaned_at"] is not None

    # Twice: she is gone.
    again = client.delete(url, headers=auth(settings, Role.tenant_admin, tenant))
    assert again.status_code == 404
    export = client.get(f"{PREFIX}/tenants/{tenant.id}/users/{ana.user_id}/export",
                        headers=auth(settings, Role.tenant_admin, tenant))  # fmt: skip
    assert export.status_code == 404

    # The jobs that were queued for her find nothing to do; Bia is answered.
    run_jobs(settings)
    assert database_hits(settings, ana.needles) == []


def _bia(settings: Settings) -> list[Any]:
    """Everything Bia has, to compare before and after Ana's erasure."""
    return rows(
        settings,
        """select u.id, u.wa_id, u.profile_name,
                  (select count(*) from conversations c where c.user_id = u.id),
                  (select array_agg(m.body order by m.id) from messages m
                     join conversations c on c.id = m.conversation_id where c.user_id = u.id),
                  (select count(*) from finance_entries f where f.user_id = u.id),
                  (select count(*) from ai_results a join conversations c
                     on c.id = a.conversation_id where c.user_id = u.id),
                  (select count(*) from checkpoints k join conversations c
                     on k.thread_id = c.thread_id where c.user_id = u.id)
           from users u where u.wa_id = '5511977776666'""",
    )


def test_the_user_delete_route_is_the_same_full_erasure(
    client: TestClient, settings: Settings, tenant: Tenant, redis: Redis, ana: Traces
) -> None:
    url = f"{PREFIX}/tenants/{tenant.id}/users/{ana.user_id}"
    gone = client.delete(url, headers=auth(settings, Role.platform_admin))

    assert gone.status_code == 204, gone.text
    assert database_hits(settings, ana.needles) == []
    assert redis_hits(redis, ana.needles) == []
    ((counts, role),) = rows(settings, "select counts, erased_by_role from data_erasures")
    assert counts["checkpoints"] >= 1 and role == "platform_admin"
    audit = rows(settings, "select action, tenant_id, detail::text from admin_audit")
    assert ("erase user", tenant.id, "{}") in audit, "a platform admin's erasure is audited"


def test_only_admins_of_the_tenant_may_export_or_erase(
    client: TestClient, settings: Settings, tenant: Tenant, sandbox: TwilioSandbox, llm: Any
) -> None:
    say(client, settings, tenant, "STOP")  # a user, with no model call
    ((user_id,),) = rows(settings, "select id from users")
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn, conn.transaction():
        other = conn.execute(
            "insert into tenants (slug, name, whatsapp_sender, twilio_account_sid, "
            "twilio_auth_token) values ('globex', 'Globex', 'whatsapp:+14155550999', %s, 't') "
            "returning id",
            ("AC" + "c" * 32,),
        ).fetchone()[0]  # type: ignore[index]
    base = f"{PREFIX}/tenants/{tenant.id}/users/{user_id}"
    agent = auth(settings, Role.support_agent, tenant)
    assert client.get(f"{base}/export", headers=agent).status_code == 403
    assert client.delete(f"{base}/data", headers=agent).status_code == 403
    assert client.delete(base, headers=agent).status_code == 403

    stranger = {"Authorization": "Bearer " + mint_token(
        settings, subject="x", role=Role.tenant_admin, tenant_id=other)}  # fmt: skip
    assert client.get(f"{base}/export", headers=stranger).status_code == 404
    assert client.delete(f"{base}/data", headers=stranger).status_code == 404
    across = f"{PREFIX}/tenants/{other}/users/{user_id}"
    admin = auth(settings, Role.tenant_admin, tenant)
    assert client.get(f"{across}/export", headers=admin).status_code == 404
    assert client.delete(f"{across}/data", headers=admin).status_code == 404
    platform = auth(settings, Role.platform_admin)
    assert client.delete(f"{across}/data", headers=platform).status_code == 404, "wrong tenant"
    assert client.delete(f"{base}/data?reference=Ana%20Silva", headers=admin).status_code == 422
    assert rows(settings, "select count(*) from users") == [(1,)]
    assert rows(settings, "select count(*) from data_erasures") == [(0,)]


def test_an_erasure_waits_for_a_running_turn_and_refuses_when_it_does_not_end(
    client: TestClient, settings: Settings, tenant: Tenant, llm: Any
) -> None:
    from store import userdata

    say(client, settings, tenant, "STOP")
    ((user_id, conversation),) = rows(
        settings, "select u.id, c.id from users u join conversations c on c.user_id = u.id"
    )
    assert settings.database_url
    with psycopg.connect(settings.database_url, autocommit=True) as worker:
        worker.execute("select pg_advisory_lock(hashtextextended(%s, 0))",
                       (f"conversation:{conversation}",))  # fmt: skip
        original, userdata.LOCK_TIMEOUT = userdata.LOCK_TIMEOUT, "200ms"
        try:
            busy = client.delete(f"{PREFIX}/tenants/{tenant.id}/users/{user_id}/data",
                                 headers=auth(settings, Role.tenant_admin, tenant))  # fmt: skip
        finally:
            userdata.LOCK_TIMEOUT = original
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "user_busy"
    assert busy.headers["retry-after"] == "30"
    assert rows(settings, "select count(*) from users") == [(1,)], "nothing half-erased"
    assert rows(settings, "select count(*) from data_erasures") == [(0,)]


# -- the WhatsApp side -----------------------------------------------------------------------


def test_a_user_asking_to_delete_their_data_is_told_how_without_the_model(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    give_plan(settings, tenant, ["finance"])
    say(client, settings, tenant, "Quero apagar meus dados!")
    assert [m["body"] for m in sandbox.wait_for_messages(1)] == [NOTICES["data_request"]["pt"]]
    assert llm.requests == []

    custom = "Para pedir seus dados, escreva para privacidade@acme.example."
    patched = client.patch(f"{PREFIX}/tenants/{tenant.id}",
                           headers=auth(settings, Role.tenant_admin, tenant),
                           json={"data_request_message": custom})  # fmt: skip
    assert patched.status_code == 200 and patched.json()["data_request_message"] == custom
    # Within one turn, what came before the request is answered first, by the model.
    llm.structured(route("finance"))
    llm.call_tool("record_transaction", {"kind": "expense", "amount": "30", "category": "taxi"})
    llm.say("Anotei R$ 30,00.")
    for text in ("gastei 30 de taxi", "delete my data"):
        assert post_inbound(client, settings, tenant, inbound_form(tenant, text)).status_code == 200
    run_jobs(settings)

    assert [m["body"] for m in sandbox.wait_for_messages(3)][1:] == ["Anotei R$ 30,00.", custom]
    assert rows(settings, "select count(*) from finance_entries") == [(1,)]
    assert llm.remaining == 0
    purposes = rows(settings, "select purpose from messages where direction = 'outbound' "
                    "order by id")  # fmt: skip
    assert purposes == [("notice",), ("reply",), ("notice",)]
