"""A tenant on Meta's WhatsApp Cloud API, end to end: Meta's signed webhook in, the stored
message, the worker's turn, the reply through the Graph API (the local Cloud API sandbox), the
delivery status back; and the tenant's Cloud settings through the management API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from channels.sandbox._cloud_wire import status_item, user_message
from channels.sandbox.cloud import CloudSandbox
from server.api.auth import Role, mint_token
from server.app import create_app
from server.jobs.send import send_whatsapp_message
from server.settings import Settings, get_settings
from store.records import Tenant
from tests.conftest import rows, run_jobs
from tests.fakes import ScriptedModel

NUMBER_ID = "106540352242922"
TOKEN = "EAAG-cloud-token-for-tests"
SECRET = "cloud-app-secret-for-tests"


@pytest.fixture
def cloud(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[CloudSandbox]:
    with CloudSandbox() as sandbox:
        monkeypatch.setenv("CLOUD_API_BASE_URL", sandbox.url)
        monkeypatch.setenv("CLOUD_VERIFY_TOKEN", "meu-token-de-verificacao")
        get_settings.cache_clear()
        yield sandbox
    get_settings.cache_clear()


def _admin(settings: Settings, tenant: Tenant) -> dict[str, str]:
    bearer = mint_token(settings, subject="admin", role=Role.tenant_admin, tenant_id=tenant.id)
    return {"Authorization": f"Bearer {bearer}"}


@pytest.fixture
def api(cloud: CloudSandbox) -> Iterator[TestClient]:
    """The API built after the Cloud settings are in the environment."""
    with TestClient(create_app(get_settings(), relay=False)) as client:
        yield client


@pytest.fixture
def on_cloud(api: TestClient, settings: Settings, tenant: Tenant, cloud: CloudSandbox) -> Tenant:
    """The tenant switched to the Cloud API with one PATCH, its number known to the sandbox."""
    display = tenant.whatsapp_sender.removeprefix("whatsapp:+")
    cloud.add_number(NUMBER_ID, display, TOKEN, SECRET)
    response = api.patch(
        f"/api/v1/tenants/{tenant.id}",
        headers=_admin(settings, tenant),
        json={"channel": "cloud", "cloud_phone_number_id": NUMBER_ID,
              "cloud_access_token": TOKEN, "cloud_app_secret": SECRET},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    assert TOKEN not in response.text and SECRET not in response.text, "secrets are write-only"
    return tenant


def _post(api: TestClient, signed: tuple[bytes, dict[str, str]]) -> Any:
    body, headers = signed
    return api.post("/webhooks/cloud", content=body, headers=headers)


def test_a_cloud_tenant_chats_end_to_end(
    api: TestClient,
    settings: Settings,
    on_cloud: Tenant,
    cloud: CloudSandbox,
    llm: ScriptedModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TYPING_AFTER_SECONDS", "0.05")  # the model takes longer than that
    get_settings.cache_clear()
    llm.say("Olá! Como posso ajudar?", delay=0.5)
    response = _post(api, cloud.signed_inbound(NUMBER_ID, "5511977776666", "Oi", wamid="wamid.A1"))
    assert response.status_code == 200, response.text
    run_jobs(settings)

    (sent,) = cloud.wait_for_messages(1)
    assert (sent["to"], sent["type"], sent["body"]) == (
        "5511977776666",
        "text",
        "Olá! Como posso ajudar?",
    )
    inbound = rows(settings, "select provider_message_id, from_address, body, status from messages "
                   "where direction = 'inbound'")  # fmt: skip
    assert inbound == [("wamid.A1", "whatsapp:+5511977776666", "Oi", "answered")]
    assert [r["message_id"] for r in cloud.typing] == ["wamid.A1"], "typing shown on the message"

    # Meta's status webhook moves our message on, signed like every post.
    delivered = cloud.signed_webhook(
        NUMBER_ID, statuses=[status_item(sent["id"], "delivered", "5511977776666")]
    )
    assert _post(api, delivered).status_code == 200
    outbound = rows(settings, "select provider_message_id, status from messages "
                    "where direction = 'outbound'")  # fmt: skip
    assert outbound == [(sent["id"], "delivered")]


def test_a_send_a_killed_worker_never_recorded_is_adopted_from_metas_status_not_sent_twice(
    api: TestClient, settings: Settings, on_cloud: Tenant, cloud: CloudSandbox, llm: ScriptedModel
) -> None:
    llm.say("Só uma vez.")
    assert _post(api, cloud.signed_inbound(NUMBER_ID, "5511977776666", "Oi")).status_code == 200
    run_jobs(settings)
    (sent,) = cloud.wait_for_messages(1)
    ((outbox_id, cid),) = rows(settings, "select id, correlation_id from messages "
                               "where direction = 'outbound'")  # fmt: skip
    assert sent["opaque"] == f"outbox:{outbox_id}", "the send carries our outbox id"
    # As a worker killed after Meta accepted the send, before it was recorded, leaves it:
    rows(settings, "update messages set status = 'dispatching', provider_message_id = null "
         "where id = %s returning id", outbox_id)  # fmt: skip

    echo = status_item(sent["id"], "sent", "5511977776666", opaque=sent["opaque"])
    assert _post(api, cloud.signed_webhook(NUMBER_ID, statuses=[echo])).status_code == 200
    assert send_whatsapp_message(str(on_cloud.id), outbox_id, cid) == "sent"  # the retried job

    assert len(cloud.messages) == 1, "the reply went out once"
    assert rows(settings, "select provider_message_id, status from messages where id = %s",
                outbox_id) == [(sent["id"], "sent")]  # fmt: skip


def test_one_post_with_several_messages_and_a_duplicate_stores_each_once(
    api: TestClient, settings: Settings, on_cloud: Tenant, cloud: CloudSandbox, llm: ScriptedModel
) -> None:
    first = user_message("5511911112222", text="Oi", wamid="wamid.B1")
    other = user_message("5511933334444", text="Olá", wamid="wamid.C1")
    signed = cloud.signed_webhook(
        NUMBER_ID, messages=[first, first, other],
        profiles={"5511911112222": "Bia", "5511933334444": "Caio"},
    )  # fmt: skip
    assert _post(api, signed).status_code == 200
    assert _post(api, signed).status_code == 200, "Meta's retry of the whole post"
    llm.say("Resposta 1").say("Resposta 2")
    run_jobs(settings)

    stored = rows(settings, "select provider_message_id from messages "
                  "where direction = 'inbound' order by id")  # fmt: skip
    assert stored == [("wamid.B1",), ("wamid.C1",)]
    assert sorted(m["to"] for m in cloud.wait_for_messages(2)) == ["5511911112222", "5511933334444"]
    names = rows(settings, "select profile_name from users order by profile_name")
    assert names == [("Bia",), ("Caio",)]


def test_bad_posts_are_refused_and_store_nothing(
    api: TestClient, settings: Settings, on_cloud: Tenant, cloud: CloudSandbox
) -> None:
    body, headers = cloud.signed_inbound(NUMBER_ID, "5511977776666", "Oi")
    forged = {**headers, "X-Hub-Signature-256": "sha256=" + "0" * 64}
    assert api.post("/webhooks/cloud", content=body, headers=forged).status_code == 403
    unsigned = {k: v for k, v in headers.items() if k != "X-Hub-Signature-256"}
    assert api.post("/webhooks/cloud", content=body, headers=unsigned).status_code == 403
    tampered = body.replace(b'"Oi"', b'"Ol"')
    assert api.post("/webhooks/cloud", content=tampered, headers=headers).status_code == 403
    assert api.post("/webhooks/cloud", content=b"{not json", headers=headers).status_code == 400
    stranger = CloudSandbox()  # a number no tenant has
    with stranger:
        stranger.add_number("999", "15550009999", "t", "s")
        signed = stranger.signed_inbound("999", "5511977776666", "Oi")
    assert _post(api, signed).status_code == 404
    assert rows(settings, "select count(*) from messages") == [(0,)]


def test_a_post_for_another_field_is_acknowledged_and_dropped(
    api: TestClient, settings: Settings, on_cloud: Tenant
) -> None:
    """Meta posts every field the app subscribes to on the same URL; a 4xx would be retried."""
    template_update = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{
            "field": "message_template_status_update",
            "value": {"event": "APPROVED", "message_template_id": 123,
                      "message_template_name": "lembrete", "message_template_language": "pt_BR"},
        }]}],
    }  # fmt: skip
    response = api.post("/webhooks/cloud", json=template_update)
    assert (response.status_code, response.text) == (200, "")
    assert rows(settings, "select count(*) from messages") == [(0,)]
    not_whatsapp = api.post("/webhooks/cloud", json={"object": "page", "entry": [{}]})
    assert not_whatsapp.status_code == 400


def test_meta_subscription_check(api: TestClient) -> None:
    check = {"hub.mode": "subscribe", "hub.challenge": "1158201444"}
    ok = api.get(
        "/webhooks/cloud", params={**check, "hub.verify_token": "meu-token-de-verificacao"}
    )
    assert (ok.status_code, ok.text) == (200, "1158201444")
    wrong = api.get("/webhooks/cloud", params={**check, "hub.verify_token": "outro"})
    assert wrong.status_code == 403 and "1158201444" not in wrong.text
    assert api.get("/webhooks/cloud", params={"hub.challenge": "1"}).status_code == 403


def test_a_tenant_cannot_switch_to_the_cloud_api_half_configured(
    api: TestClient, settings: Settings, tenant: Tenant
) -> None:
    url, auth = f"/api/v1/tenants/{tenant.id}", _admin(settings, tenant)
    half = api.patch(url, headers=auth, json={"channel": "cloud", "cloud_phone_number_id": "1"})
    assert half.status_code == 422, half.text
    assert api.patch(url, headers=auth, json={"cloud_phone_number_id": "12ab"}).status_code == 422
    assert api.patch(url, headers=auth, json={"channel": "telegram"}).status_code == 422
    assert rows(settings, "select channel, cloud_phone_number_id from tenants") == [
        ("twilio", None)
    ]


def _platform(settings: Settings) -> dict[str, str]:
    bearer = mint_token(settings, subject="root", role=Role.platform_admin, tenant_id=None)
    return {"Authorization": f"Bearer {bearer}"}


def test_a_tenant_is_created_on_the_cloud_api_with_no_twilio_account(
    api: TestClient, settings: Settings, cloud: CloudSandbox, llm: ScriptedModel
) -> None:
    cloud.add_number("106540352299999", "15550009999", TOKEN, SECRET)
    new = {"slug": "loja", "name": "Loja", "whatsapp_sender": "whatsapp:+15550009999",
           "channel": "cloud", "cloud_phone_number_id": "106540352299999",
           "cloud_access_token": TOKEN, "cloud_app_secret": SECRET}  # fmt: skip
    created = api.post("/api/v1/tenants", headers=_platform(settings), json=new)
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["channel"], body["twilio_account_sid"]) == ("cloud", None)
    assert TOKEN not in created.text and SECRET not in created.text

    llm.say("Olá, loja aqui!")
    signed = cloud.signed_inbound("106540352299999", "5511955554444", "Oi")
    assert _post(api, signed).status_code == 200
    run_jobs(settings)
    (sent,) = cloud.wait_for_messages(1)
    assert (sent["to"], sent["body"]) == ("5511955554444", "Olá, loja aqui!")

    # It cannot move to Twilio without a Twilio account.
    url, auth = f"/api/v1/tenants/{body['id']}", _platform(settings)
    assert api.patch(url, headers=auth, json={"channel": "twilio"}).status_code == 422
    assert rows(settings, "select channel from tenants where slug = 'loja'") == [("cloud",)]


@pytest.mark.parametrize(
    ("fields", "missing"),
    [
        ({}, "twilio_account_sid, twilio_auth_token"),
        ({"channel": "twilio", "twilio_account_sid": "AC" + "a" * 32}, "twilio_auth_token"),
        ({"channel": "cloud", "cloud_phone_number_id": "1", "cloud_access_token": TOKEN},
         "cloud_app_secret"),
        ({"channel": "cloud"}, "cloud_phone_number_id, cloud_access_token, cloud_app_secret"),
    ],
)  # fmt: skip
def test_a_tenant_is_not_created_without_its_providers_credentials(
    api: TestClient, settings: Settings, fields: dict[str, str], missing: str
) -> None:
    new = {"slug": "loja", "name": "Loja", "whatsapp_sender": "whatsapp:+15550009999", **fields}
    refused = api.post("/api/v1/tenants", headers=_platform(settings), json=new)
    assert refused.status_code == 422, refused.text
    assert missing in refused.text
    assert rows(settings, "select count(*) from tenants where slug = 'loja'") == [(0,)]
