"""The WhatsApp channel's rules, with a real RQ worker in process: opt-out, kinds, splitting,
delivery statuses, the 24-hour window, Twilio's error codes, typing, replays after a crash."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue
from rq.registry import ScheduledJobRegistry

from channels.policy import NOTICES
from channels.sandbox.twilio import TwilioSandbox
from channels.twilio.inbound import sign
from graphs.prompts import HANDOFF_REPLY
from server.api.auth import Role, mint_token
from server.jobs.send import send_whatsapp_message
from server.jobs.turn import process_ai_response
from server.settings import QUEUE_SEND, Settings, get_settings
from store import outbox, tenants
from store.records import Tenant
from tests.conftest import USER, inbound_form, post_inbound, rows, run_jobs
from tests.fakes import ScriptedModel
from tests.providers import Provider, provider
from tests.test_brain import give_plan

__all__ = ["provider"]  # the fixture that runs a test through each WhatsApp provider

TEMPLATE = "HX" + "ab" * 16


def _say(client: TestClient, settings: Settings, tenant: Tenant, body: str, **extra: str) -> None:
    response = post_inbound(client, settings, tenant, inbound_form(tenant, body, **extra))
    assert response.status_code == 200, response.text


def _bodies(sandbox: TwilioSandbox) -> list[str]:
    return [m["body"] for m in sandbox.messages]


def _configure(settings: Settings, tenant: Tenant, **changes: Any) -> Tenant:
    assert settings.database_url
    fields = {
        "slug": tenant.slug,
        "name": tenant.name,
        "whatsapp_sender": tenant.whatsapp_sender,
        "twilio_account_sid": tenant.twilio_account_sid,
        "twilio_auth_token": tenant.twilio_auth_token,
    } | changes
    with psycopg.connect(settings.database_url) as conn, conn.transaction():
        return tenants.upsert_tenant(conn, **fields)


# -- opt-out -------------------------------------------------------------------------------------


def test_stop_confirms_once_then_silence_until_voltar(
    settings: Settings, provider: Provider, llm: ScriptedModel
) -> None:
    assert provider.say("PARAR") == 200
    run_jobs(settings)
    assert provider.bodies() == [NOTICES["opt_out"]["pt"]]
    assert rows(settings, "select opted_out_at is not null from users") == [(True,)]

    provider.say("quanto gastei ontem?")
    provider.say("stop")
    run_jobs(settings)
    assert provider.bodies() == [NOTICES["opt_out"]["pt"]], "nothing more while opted out"
    statuses = rows(settings, "select status, error from messages where direction = 'inbound'")
    assert statuses[1] == ("suppressed", "The user opted out (STOP).")

    llm.say("Claro, vamos lá.")
    provider.say("VOLTAR")
    provider.say("Oi de novo")
    run_jobs(settings)
    assert provider.bodies()[1:] == [NOTICES["opt_in"]["pt"], "Claro, vamos lá."]
    assert rows(settings, "select opted_out_at from users") == [(None,)]


def test_a_message_delivered_twice_is_stored_and_answered_once(
    settings: Settings, provider: Provider, llm: ScriptedModel
) -> None:
    llm.say("Uma resposta só.")
    assert [provider.say("Oi", message_id="dup-1") for _ in range(3)] == [200, 200, 200]
    run_jobs(settings)
    assert provider.bodies() == ["Uma resposta só."]
    assert rows(settings, "select provider_message_id from messages where direction = "
                "'inbound'") == [("dup-1",)]  # fmt: skip


def test_a_person_takes_over_and_answers_through_the_same_provider(
    client: TestClient, settings: Settings, tenant: Tenant, provider: Provider
) -> None:
    give_plan(settings, tenant, ["human_handoff"])
    provider.say("quero falar com um atendente")
    run_jobs(settings)
    assert provider.bodies() == [HANDOFF_REPLY["pt"]]
    ((conversation,),) = rows(settings, "select id from conversations where state = 'HANDOFF'")

    bearer = mint_token(settings, subject="ana@acme", role=Role.support_agent, tenant_id=tenant.id)
    base = f"/api/v1/tenants/{tenant.id}/support/conversations/{conversation}"
    sent = client.post(f"{base}/reply", headers={"Authorization": f"Bearer {bearer}"},
                       json={"text": "Oi, aqui é a Ana."})  # fmt: skip
    assert sent.status_code == 202, sent.text
    run_jobs(settings)
    assert provider.bodies() == [HANDOFF_REPLY["pt"], "Oi, aqui é a Ana."]


def test_a_reply_already_queued_is_suppressed_after_stop(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    llm.say("Resposta que não deve sair.")
    _say(client, settings, tenant, "Oi")
    # Run only the turn; the send job stays queued while the user opts out.
    ((inbound_id, cid),) = rows(settings, "select id, correlation_id from messages")
    assert process_ai_response(str(tenant.id), inbound_id, cid) == "answered"
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("update users set opted_out_at = now()")
    ((outbound_id,),) = rows(settings, "select id from messages where direction = 'outbound'")

    assert send_whatsapp_message(str(tenant.id), outbound_id, cid) == "suppressed"
    assert sandbox.messages == []
    assert rows(settings, "select status from messages where id = %s", outbound_id) == [
        ("suppressed",)
    ]


# -- message kinds -------------------------------------------------------------------------------


def _media(content_type: str) -> dict[str, str]:
    return {
        "NumMedia": "1",
        "MediaUrl0": "https://api.twilio.com/m/1",
        "MediaContentType0": content_type,
    }


@pytest.mark.parametrize(
    ("extra", "notice"),
    [
        (_media("audio/ogg"), "audio"),
        (_media("image/jpeg"), "media"),
        ({}, "unsupported"),
    ],
)
def test_kinds_we_cannot_handle_get_a_polite_reply_without_the_model(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
    extra: dict[str, str],
    notice: str,
) -> None:
    _say(client, settings, tenant, "", **extra)
    run_jobs(settings)

    assert _bodies(sandbox) == [NOTICES[notice]["pt"]]
    assert llm.requests == []
    (media,) = rows(settings, "select media from messages where direction = 'inbound'")[0]
    if extra:
        assert media == [{"url": extra["MediaUrl0"], "content_type": extra["MediaContentType0"]}]


def test_location_button_and_captioned_media_reach_the_model(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    llm.say("Anotado.")
    _say(client, settings, tenant, "", Latitude="-23.5", Longitude="-46.6", Address="Av. Paulista")
    _say(client, settings, tenant, "", ButtonText="Sim", ButtonPayload="yes")
    _say(
        client,
        settings,
        tenant,
        "nota do mercado",
        NumMedia="1",
        MediaUrl0="https://api.twilio.com/m/3",
        MediaContentType0="image/png",
    )
    run_jobs(settings)

    users = [m["content"] for m in llm.requests[0]["messages"] if m["role"] == "user"]
    assert users == [
        "[shared a location: Av. Paulista (-23.5, -46.6)]",
        "Sim",
        "nota do mercado\n[attached image/png, which you cannot open]",
    ]
    assert rows(settings, "select kind from messages where direction = 'inbound' order by id") == [
        ("location",),
        ("button",),
        ("media",),
    ]


def test_identity_is_the_whatsapp_id_not_a_phone_number(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    llm.say("Oi!")
    form = inbound_form(tenant, "Oi", user="whatsapp:ana.souza")
    form["WaId"] = "ana.souza"
    assert post_inbound(client, settings, tenant, form).status_code == 200
    run_jobs(settings)

    assert rows(settings, "select wa_id, address from users") == [
        ("ana.souza", "whatsapp:ana.souza")
    ]
    assert sandbox.messages[0]["to"] == "whatsapp:ana.souza"


# -- outbound ------------------------------------------------------------------------------------


def test_long_replies_are_sent_in_parts_in_order(
    settings: Settings, provider: Provider, llm: ScriptedModel
) -> None:
    paragraphs = [f"Parágrafo {i}: " + "texto " * 100 for i in range(5)]  # ~615 characters each
    llm.say("\n\n".join(paragraphs))
    provider.say("Me explica tudo")
    run_jobs(settings)

    bodies = provider.bodies()
    assert len(bodies) == 3 and all(len(b) <= 1600 for b in bodies)
    assert " ".join(bodies).split() == "\n\n".join(paragraphs).split()
    keys = rows(
        settings, "select idempotency_key from messages where direction = 'outbound' order by id"
    )
    assert [k[0].rsplit(":", 1)[1] for k in keys] == ["0", "1", "2"]


def test_later_parts_wait_for_earlier_ones(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    llm.say("a " * 900)
    _say(client, settings, tenant, "Oi")
    ((inbound_id, cid),) = rows(settings, "select id, correlation_id from messages")
    process_ai_response(str(tenant.id), inbound_id, cid)
    first, second = (
        r[0]
        for r in rows(settings, "select id from messages where direction = 'outbound' order by id")
    )

    assert send_whatsapp_message(str(tenant.id), second, cid) == "waiting"
    assert send_whatsapp_message(str(tenant.id), first, cid) == "sent"
    run_jobs(settings)  # the first send queued the second
    assert len(sandbox.messages) == 2
    assert rows(settings, "select status from messages where id = %s", second) == [("queued",)]


def test_status_callbacks_move_forward_only(
    settings: Settings, provider: Provider, llm: ScriptedModel
) -> None:
    llm.say("Oi!")
    provider.say("Oi")
    run_jobs(settings)
    (sent_id,) = provider.sent_ids()

    def status() -> str:
        query = "select status from messages where provider_message_id = %s"
        return str(rows(settings, query, sent_id)[0][0])

    codes = [provider.report(sent_id, s) for s in ("sent", "read", "delivered", "sent")]
    assert all(200 <= code < 300 for code in codes), codes
    assert status() == "read"
    applied = rows(settings, "select status, applied from message_status_events order by id")
    assert applied == [("sent", True), ("read", True), ("delivered", False), ("sent", False)]


def test_a_status_that_arrives_before_the_send_is_recorded_is_applied_when_it_is(
    client: TestClient, settings: Settings, tenant: Tenant, llm: ScriptedModel
) -> None:
    """Twilio's callback can beat the worker's commit of the message's SID: the status is kept
    and applied once the SID is recorded, not lost (the reply would look undelivered)."""
    llm.say("Oi!")
    _say(client, settings, tenant, "Oi")
    ((inbound_id, cid),) = rows(settings, "select id, correlation_id from messages")
    process_ai_response(str(tenant.id), inbound_id, cid)  # the reply waits in the outbox
    ((reply_id,),) = rows(settings, "select id from messages where direction = 'outbound'")
    sid = "SM" + "ab" * 16
    for status in ("delivered", "sent"):  # ahead of the worker, and out of order
        form = {
            "MessageSid": sid,
            "MessageStatus": status,
            "To": USER,
            "AccountSid": tenant.twilio_account_sid,
            "From": tenant.whatsapp_sender,
        }
        signature = sign(tenant.twilio_auth_token, settings.public_url("/webhooks/status"), form)
        posted = client.post(
            "/webhooks/status", data=form, headers={"X-Twilio-Signature": signature}
        )
        assert posted.status_code == 204
    assert rows(settings, "select status from messages where id = %s", reply_id) == [("pending",)]

    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn, conn.transaction():
        outbox.mark_sent(conn, reply_id, sid, "queued")  # what the send job records

    assert rows(settings, "select status from messages where id = %s", reply_id) == [("delivered",)]
    events = "select message_id, status from message_status_events order by id"
    assert rows(settings, events) == [(reply_id, "delivered"), (reply_id, "sent")]


def test_twilios_sending_status_does_not_make_a_sent_reply_look_unsent(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    llm.say("Oi!")
    _say(client, settings, tenant, "Oi")
    run_jobs(settings)
    sid = sandbox.messages[0]["sid"]
    form = {"MessageSid": sid, "MessageStatus": "sending", "AccountSid": tenant.twilio_account_sid,
            "From": tenant.whatsapp_sender, "To": USER}  # fmt: skip
    signature = sign(tenant.twilio_auth_token, settings.public_url("/webhooks/status"), form)
    posted = client.post("/webhooks/status", data=form, headers={"X-Twilio-Signature": signature})
    assert posted.status_code == 204

    llm.say("Tudo bem!")
    _say(client, settings, tenant, "Tudo bem?")
    run_jobs(settings)

    # The next reply is not held behind it, and the first is not sent again.
    assert [m["body"] for m in sandbox.messages] == ["Oi!", "Tudo bem!"]
    assert rows(settings, "select status from messages where provider_message_id = %s", sid) == [
        ("sending",)
    ]


def test_status_callback_failure_keeps_the_error_code(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    llm.say("Oi!")
    _say(client, settings, tenant, "Oi")
    run_jobs(settings)
    sid = sandbox.messages[0]["sid"]
    form = {
        "MessageSid": sid,
        "MessageStatus": "undelivered",
        "ErrorCode": "63024",
        "From": tenant.whatsapp_sender,
        "To": USER,
    }
    url = settings.public_url("/webhooks/status")
    response = client.post(
        "/webhooks/status",
        data=form,
        headers={"X-Twilio-Signature": sign(tenant.twilio_auth_token, url, form)},
    )

    assert response.status_code == 204
    assert rows(
        settings, "select status, error_code from messages where provider_message_id = %s", sid
    ) == [("undelivered", 63024)]


@pytest.mark.parametrize(
    ("form", "status"),
    [
        ({"MessageStatus": "delivered"}, 400),
        ({"MessageSid": "SM1", "MessageStatus": "teleported"}, 400),
        ({"MessageSid": "SM1", "MessageStatus": "failed", "ErrorCode": "abc"}, 400),
        ({"MessageSid": "SM1", "MessageStatus": "delivered", "From": "whatsapp:+1999"}, 404),
        ({"MessageSid": "\x00", "MessageStatus": "delivered"}, 400),  # nothing left of the sid
    ],
)
def test_bad_status_callbacks(
    client: TestClient, settings: Settings, tenant: Tenant, form: dict[str, str], status: int
) -> None:
    form = {"From": tenant.whatsapp_sender, "To": USER} | form
    url = settings.public_url("/webhooks/status")
    headers = {"X-Twilio-Signature": sign(tenant.twilio_auth_token, url, form)}

    assert client.post("/webhooks/status", data=form, headers=headers).status_code == status
    assert rows(settings, "select count(*) from message_status_events") == [(0,)]


def test_a_status_callback_with_nul_characters_is_recorded_cleaned(
    client: TestClient, settings: Settings, tenant: Tenant
) -> None:
    form = {"From": tenant.whatsapp_sender, "To": USER, "MessageSid": "SM\x001",
            "MessageStatus": "delivered\x00"}  # fmt: skip
    url = settings.public_url("/webhooks/status")
    headers = {"X-Twilio-Signature": sign(tenant.twilio_auth_token, url, form)}

    assert client.post("/webhooks/status", data=form, headers=headers).status_code == 204
    assert rows(settings, "select provider_message_id, status from message_status_events") == [
        ("SM1", "delivered")
    ]


def test_unsigned_status_callback_is_403(
    client: TestClient, settings: Settings, tenant: Tenant
) -> None:
    form = {"MessageSid": "SM1", "MessageStatus": "delivered", "From": tenant.whatsapp_sender}
    response = client.post("/webhooks/status", data=form, headers={"X-Twilio-Signature": "nope"})

    assert response.status_code == 403
    assert rows(settings, "select count(*) from message_status_events") == [(0,)]


def _close_window(settings: Settings) -> None:
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("update conversations set last_inbound_at = now() - interval '25 hours'")


def _answer_without_sending(settings: Settings, tenant: Tenant) -> tuple[int, str]:
    ((inbound_id, cid),) = rows(settings, "select id, correlation_id from messages")
    assert process_ai_response(str(tenant.id), inbound_id, cid) == "answered"
    ((outbound_id,),) = rows(settings, "select id from messages where direction = 'outbound'")
    return outbound_id, cid


def test_closed_window_without_template_fails_with_the_reason(
    settings: Settings, tenant: Tenant, provider: Provider, llm: ScriptedModel
) -> None:
    llm.say("Tarde demais.")
    assert provider.say("Oi") == 200
    outbound_id, cid = _answer_without_sending(settings, tenant)
    _close_window(settings)

    assert send_whatsapp_message(str(tenant.id), outbound_id, cid) == "failed"
    assert provider.bodies() == []
    ((status, code, error),) = rows(
        settings, "select status, error_code, error from messages where id = %s", outbound_id
    )
    assert (status, code) == ("failed", provider.window_closed_code)
    assert "24 hours" in error and "no approved template for purpose 're_engagement'" in error


def test_closed_window_sends_the_reply_inside_the_re_engagement_template(
    settings: Settings, tenant: Tenant, provider: Provider, llm: ScriptedModel
) -> None:
    template = provider.add_template(
        "re_engagement", "Olá {{1}}! Sobre a sua mensagem: {{2}}", {"1": "name", "2": "text"}
    )
    llm.say("Tarde demais.")
    assert provider.say("Oi") == 200
    outbound_id, cid = _answer_without_sending(settings, tenant)
    _close_window(settings)

    assert send_whatsapp_message(str(tenant.id), outbound_id, cid) == "sent"
    assert provider.sent_templates() == [template]
    assert provider.bodies() == [
        f"Olá {provider.profile_name}! Sobre a sua mensagem: Tarde demais."
    ]
    assert rows(settings, "select template_sid from messages where id = %s", outbound_id) == [
        (template,)
    ]


def test_closed_window_falls_back_to_the_legacy_tenant_template(
    settings: Settings, tenant: Tenant, provider: Provider, llm: ScriptedModel
) -> None:
    """Without a 're_engagement' template, a reply goes out as the tenant's old fixed one."""
    template = provider.approve_template("Olá {{1}}, responda para continuar.")
    _configure(
        settings,
        tenant,
        closed_window_template_sid=template,
        closed_window_template_variables={"1": "Ana"},
    )
    llm.say("Tarde demais.")
    assert provider.say("Oi") == 200
    outbound_id, cid = _answer_without_sending(settings, tenant)
    _close_window(settings)

    assert send_whatsapp_message(str(tenant.id), outbound_id, cid) == "sent"
    assert provider.sent_templates() == [template]
    assert provider.bodies() == ["Olá Ana, responda para continuar."]


@pytest.mark.parametrize("template", [True, False])
def test_the_providers_closed_window_refusal_falls_back_to_the_template(
    settings: Settings, provider: Provider, llm: ScriptedModel, template: bool
) -> None:
    """Twilio's 63016 or Meta's 131047: the window closed without our knowing it."""
    if template:
        sid = provider.add_template("re_engagement", "Novidade: {{1}}", {"1": "text"})
    llm.say("Olá!")
    provider.fail_next(provider.window_closed_code)
    assert provider.say("Oi") == 200
    run_jobs(settings)

    if template:
        assert provider.bodies() == ["Novidade: Olá!"]
        assert provider.sent_templates() == [sid]
    else:
        assert provider.bodies() == []
        ((status, code),) = rows(
            settings, "select status, error_code from messages where direction = 'outbound'"
        )
        assert (status, code) == ("failed", provider.window_closed_code)


@pytest.mark.parametrize("code", [21211, 21614, 63003, 21610])
def test_permanent_errors_fail_at_once(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
    code: int,
) -> None:
    llm.say("Olá!")
    sandbox.inject_error(code, 400)
    _say(client, settings, tenant, "Oi")
    run_jobs(settings)

    ((status, error_code, attempts),) = rows(
        settings, "select status, error_code, attempts from messages where direction = 'outbound'"
    )
    assert (status, error_code, attempts) == ("failed", code, 1)
    assert _scheduled(settings) == 0
    opted_out = rows(settings, "select opted_out_at is not null from users")[0][0]
    assert opted_out is (code == 21610), "21610 means the user unsubscribed"


def _scheduled(settings: Settings) -> int:
    assert settings.redis_url
    return ScheduledJobRegistry(QUEUE_SEND, connection=Redis.from_url(settings.redis_url)).count


def _release_scheduled(settings: Settings) -> None:
    assert settings.redis_url
    queue = Queue(QUEUE_SEND, connection=Redis.from_url(settings.redis_url))
    registry = ScheduledJobRegistry(QUEUE_SEND, connection=queue.connection)
    for job_id in registry.get_job_ids():
        registry.remove(job_id)
        job = queue.fetch_job(job_id)
        assert job is not None
        queue.enqueue_job(job)


@pytest.mark.parametrize(
    ("code", "status"), [(63018, 400), (20429, 429), (20500, 500), (20503, 503)]
)
def test_transient_errors_retry_with_backoff_then_send(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
    code: int,
    status: int,
) -> None:
    llm.say("Olá!")
    sandbox.inject_error(code, status, times=2)
    _say(client, settings, tenant, "Oi")
    run_jobs(settings)
    for _ in range(2):
        assert sandbox.messages == []
        assert _scheduled(settings) == 1, "the retry waits in RQ's scheduled registry"
        _release_scheduled(settings)
        run_jobs(settings)

    assert _bodies(sandbox) == ["Olá!"]
    assert rows(settings, "select status, attempts from messages where direction = 'outbound'") == [
        ("queued", 3)
    ]


def test_transient_errors_give_up_after_the_last_attempt(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SEND_MAX_ATTEMPTS", "2")
    get_settings.cache_clear()
    llm.say("Olá!")
    sandbox.inject_error(63018, 400, times=5)
    _say(client, settings, tenant, "Oi")
    run_jobs(settings)
    _release_scheduled(settings)
    run_jobs(settings)

    ((status, error),) = rows(
        settings, "select status, error from messages where direction = 'outbound'"
    )
    assert status == "failed" and "gave up after 2 tries" in error
    assert sandbox.messages == [] and _scheduled(settings) == 0


def test_backoff_grows_and_is_bounded() -> None:
    from server.jobs.queue import send_backoff as backoff

    settings = Settings(send_backoff_seconds=2, send_backoff_max_seconds=30)
    for attempt, ceiling in [(0, 2), (1, 4), (2, 8), (3, 16), (4, 30), (10, 30)]:
        delays = {backoff(settings, attempt) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1, "jittered"


# -- typing indicator, replays -------------------------------------------------------------------


@pytest.mark.parametrize("enabled", [True, False])
def test_typing_indicator_while_a_slow_turn_runs(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
    monkeypatch: pytest.MonkeyPatch,
    enabled: bool,
) -> None:
    monkeypatch.setenv("TYPING_AFTER_SECONDS", "0.1")
    monkeypatch.setenv("TYPING_REFRESH_SECONDS", "0.2")
    get_settings.cache_clear()
    _configure(settings, tenant, typing_indicator=enabled)
    llm.say("Pensei bastante.", delay=0.7)
    form = inbound_form(tenant, "Uma pergunta difícil")
    post_inbound(client, settings, tenant, form)
    run_jobs(settings)

    typing = sandbox.typing_indicators
    if enabled:
        assert len(typing) >= 2, "sent, then refreshed while the run lasted"
        assert {t["message_id"] for t in typing} == {form["MessageSid"]}
    else:
        assert typing == []
    assert _bodies(sandbox) == ["Pensei bastante."]


def test_a_run_that_crashed_after_the_graph_reuses_the_checkpointed_reply(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    llm.say("Resposta única.")
    _say(client, settings, tenant, "Oi")
    ((inbound_id, cid),) = rows(settings, "select id, correlation_id from messages")
    process_ai_response(str(tenant.id), inbound_id, cid)
    # As if the worker died after the graph's checkpoint but before the outbox commit:
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("delete from messages where direction = 'outbound'")
        conn.execute("update messages set processed_at = null, status = 'received'")

    assert (
        process_ai_response(str(tenant.id), inbound_id, cid) == "answered"
    )  # no model call left in the script
    run_jobs(settings)
    assert _bodies(sandbox) == ["Resposta única."]
    assert len(llm.requests) == 1


# -- a worker killed mid-send ----------------------------------------------------------------------


def _sent_once(
    client: TestClient, settings: Settings, tenant: Tenant, llm: ScriptedModel
) -> tuple[int, str]:
    llm.say("Só uma vez.")
    _say(client, settings, tenant, "Oi")
    run_jobs(settings)
    ((outbound_id, cid),) = rows(
        settings, "select id, correlation_id from messages where direction = 'outbound'"
    )
    return outbound_id, cid


def _as_if_killed_mid_send(settings: Settings, outbound_id: int) -> None:
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "update messages set status = 'dispatching', provider_message_id = null, "
            "processed_at = null where id = %s",
            (outbound_id,),
        )


def test_a_send_that_got_through_before_the_crash_is_not_sent_again(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    outbound_id, cid = _sent_once(client, settings, tenant, llm)
    (first,) = sandbox.messages
    _as_if_killed_mid_send(settings, outbound_id)

    assert send_whatsapp_message(str(tenant.id), outbound_id, cid) == "sent"

    assert len(sandbox.messages) == 1
    query = "select provider_message_id from messages where id = %s"
    assert rows(settings, query, outbound_id) == [(first["sid"],)]


def test_a_send_that_died_before_twilio_is_sent_once(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    outbound_id, cid = _sent_once(client, settings, tenant, llm)
    sandbox.reset()  # Twilio never saw it
    _as_if_killed_mid_send(settings, outbound_id)

    assert send_whatsapp_message(str(tenant.id), outbound_id, cid) == "sent"
    assert send_whatsapp_message(str(tenant.id), outbound_id, cid) == "queued"
    assert [m["body"] for m in sandbox.messages] == ["Só uma vez."]


def test_a_send_in_flight_elsewhere_is_left_alone(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    outbound_id, cid = _sent_once(client, settings, tenant, llm)
    sandbox.reset()
    _as_if_killed_mid_send(settings, outbound_id)
    assert settings.database_url
    with psycopg.connect(settings.database_url, autocommit=True) as other_worker:
        other_worker.execute(
            "select pg_advisory_lock(hashtextextended(%s, 0))", (f"send:{outbound_id}",)
        )
        assert send_whatsapp_message(str(tenant.id), outbound_id, cid) == "in flight"
    assert sandbox.messages == []
