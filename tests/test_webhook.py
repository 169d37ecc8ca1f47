"""The inbound webhook's bad inputs: each gets a clear 4xx (or 503), and nothing half-written."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlencode

import psycopg
import pytest
from fastapi.testclient import TestClient
from redis import RedisError

from channels.twilio.inbound import sign
from server.api.webhooks import MAX_FORM_BYTES, InboundFastPath
from server.app import create_app
from server.relay import RelayProcess, relay_once
from server.services import Services
from server.settings import QUEUE_PROCESS, Settings
from store.embedded import free_port
from store.records import Tenant
from tests.conftest import inbound_form, post_inbound, queued_jobs, rows, run_jobs
from tests.fakes import ScriptedModel


@pytest.fixture(params=["fast path", "route"])
def client(request: pytest.FixtureRequest, settings: Settings) -> Iterator[TestClient]:
    """The API, its webhook answered by `InboundFastPath` (as served) and again by the
    documented route alone (the middleware taken out): every case here holds for both."""
    app = create_app(settings, relay=False)
    if request.param == "route":
        app.user_middleware = [m for m in app.user_middleware if m.cls is not InboundFastPath]
    with TestClient(app) as test_client:
        yield test_client


def test_the_app_answers_the_webhook_on_its_fast_path(settings: Settings) -> None:
    assert [m.cls for m in create_app(settings).user_middleware] == [InboundFastPath]


def _nothing_stored(settings: Settings) -> None:
    assert rows(settings, "select count(*) from messages") == [(0,)]
    assert rows(settings, "select count(*) from users") == [(0,)]
    assert rows(settings, "select count(*) from conversations") == [(0,)]
    assert queued_jobs(settings, QUEUE_PROCESS) == 0


def test_missing_signature_is_403(client: TestClient, settings: Settings, tenant: Tenant) -> None:
    response = client.post("/webhooks/inbound", data=inbound_form(tenant, "Oi"))

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "invalid_signature"
    _nothing_stored(settings)


@pytest.mark.parametrize(
    "how", ["other token", "other url", "tampered body", "garbage", "another tenant's token"]
)
def test_wrong_signature_is_403(
    client: TestClient, settings: Settings, tenant: Tenant, how: str
) -> None:
    form = inbound_form(tenant, "Oi")
    url = settings.public_url("/webhooks/inbound")
    signature = {
        "other token": sign("not-the-token", url, form),
        "other url": sign(tenant.twilio_auth_token, "https://evil.example.com/webhooks/in", form),
        "tampered body": sign(tenant.twilio_auth_token, url, {**form, "Body": "Tchau"}),
        "garbage": "not base64 at all!",
        "another tenant's token": sign("f" * 32, url, form),
    }[how]

    response = post_inbound(client, settings, tenant, form, signature=signature)

    assert response.status_code == 403
    _nothing_stored(settings)


def test_signature_uses_public_base_url_behind_a_proxy(
    client: TestClient, settings: Settings, tenant: Tenant
) -> None:
    """The test client talks to http://testserver, but Twilio signed the public https URL."""
    form = inbound_form(tenant, "Oi")
    as_seen_locally = sign(tenant.twilio_auth_token, "http://testserver/webhooks/inbound", form)

    local = post_inbound(client, settings, tenant, form, signature=as_seen_locally)
    assert local.status_code == 403
    assert post_inbound(client, settings, tenant, form).status_code == 200


@pytest.mark.parametrize("field", ["MessageSid", "From"])
def test_form_missing_a_required_field_is_400(
    client: TestClient, settings: Settings, tenant: Tenant, field: str
) -> None:
    form = inbound_form(tenant, "Oi")
    del form[field]

    response = post_inbound(client, settings, tenant, form)

    assert response.status_code == 400
    assert field in response.json()["error"]["message"]
    _nothing_stored(settings)


def test_form_missing_to_is_400(client: TestClient, settings: Settings, tenant: Tenant) -> None:
    form = inbound_form(tenant, "Oi")
    del form["To"]

    response = post_inbound(client, settings, tenant, form)

    assert response.status_code == 400
    assert "To" in response.json()["error"]["message"]
    _nothing_stored(settings)


def test_unknown_sender_is_404(client: TestClient, settings: Settings, tenant: Tenant) -> None:
    form = inbound_form(tenant, "Oi", To="whatsapp:+19999999999")

    response = post_inbound(client, settings, tenant, form)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_sender"
    _nothing_stored(settings)


@pytest.mark.parametrize(
    ("extra", "word"),
    [
        ({"From": "+5511988887777"}, "WhatsApp"),
        ({"NumMedia": "two"}, "NumMedia"),
        ({"NumMedia": "-1"}, "NumMedia"),
        ({"NumMedia": "1"}, "MediaUrl0"),
    ],
)
def test_malformed_fields_are_400(
    client: TestClient, settings: Settings, tenant: Tenant, extra: dict[str, str], word: str
) -> None:
    response = post_inbound(client, settings, tenant, inbound_form(tenant, "Oi", **extra))

    assert response.status_code == 400
    assert word in response.json()["error"]["message"]
    _nothing_stored(settings)


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"", "application/x-www-form-urlencoded"),
        (b'{"Body": "Oi"}', "application/json"),
        (b"\xff\xfe\x00garbage", "application/x-www-form-urlencoded"),
        (b"--x\r\nbroken multipart", "multipart/form-data; boundary=x"),
    ],
)
def test_non_form_bodies_are_4xx(
    client: TestClient, settings: Settings, tenant: Tenant, content: bytes, content_type: str
) -> None:
    response = client.post(
        "/webhooks/inbound", content=content, headers={"Content-Type": content_type}
    )

    assert 400 <= response.status_code < 500
    _nothing_stored(settings)


def test_postgres_down_is_503_and_nothing_is_enqueued(settings: Settings, tenant: Tenant) -> None:
    dead = settings.model_copy(
        update={
            "database_url": f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
            "db_pool_timeout": 0.5,
        }
    )
    with TestClient(create_app(dead, relay=False)) as client:
        response = post_inbound(client, settings, tenant, inbound_form(tenant, "Oi"))
        health = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"
    assert response.headers["Retry-After"] == "5"
    assert health.status_code == 503 and health.json()["redis"] == "ok"
    _nothing_stored(settings)


def test_redis_down_stores_answers_200_and_the_relay_enqueues_later(
    settings: Settings, tenant: Tenant, sandbox, llm: ScriptedModel
) -> None:
    llm.say("Cheguei atrasado, mas cheguei.")
    no_redis = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    # No relay thread: it would race this test's own pass for the row (SKIP LOCKED).
    with TestClient(create_app(no_redis, relay=False)) as client:
        response = post_inbound(client, settings, tenant, inbound_form(tenant, "Oi"))
        health = client.get("/readyz")
        services: Services = client.app.state.services  # type: ignore[attr-defined]
        with pytest.raises(RedisError):
            relay_once(services.pool, services.redis, no_redis)

    assert response.status_code == 200
    assert health.status_code == 503 and health.json()["postgres"] == "ok"
    assert rows(settings, "select status, enqueued_at is null from messages") == [
        ("received", True)
    ]
    assert queued_jobs(settings, QUEUE_PROCESS) == 0

    # Redis is back: the relay finds the stored message and enqueues it, once.
    services = Services.build(settings)
    try:
        assert relay_once(services.pool, services.redis, settings) == 1
        assert relay_once(services.pool, services.redis, settings) == 0
    finally:
        services.close()
    assert queued_jobs(settings, QUEUE_PROCESS) == 1
    run_jobs(settings)

    assert [m["body"] for m in sandbox.wait_for_messages(1)] == ["Cheguei atrasado, mas cheguei."]
    assert rows(settings, "select status from messages where direction = 'inbound'") == [
        ("answered",)
    ]


def test_the_relay_process_enqueues_what_the_webhook_stored(
    settings: Settings, tenant: Tenant, sandbox, llm: ScriptedModel
) -> None:
    llm.say("Oi!")
    with TestClient(create_app(settings)) as client:
        post_inbound(client, settings, tenant, inbound_form(tenant, "Oi"))
        deadline = time.monotonic() + 10
        while queued_jobs(settings, QUEUE_PROCESS) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)

    assert queued_jobs(settings, QUEUE_PROCESS) == 1
    assert rows(settings, "select enqueued_at is not null from messages") == [(True,)]


def test_a_form_larger_than_twilio_sends_is_413(
    client: TestClient, settings: Settings, tenant: Tenant
) -> None:
    form = inbound_form(tenant, "x" * (MAX_FORM_BYTES + 1))

    response = post_inbound(client, settings, tenant, form)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "form_too_large"
    _nothing_stored(settings)


def test_a_stored_message_wakes_the_relay_process_at_once(
    settings: Settings, tenant: Tenant
) -> None:
    # Its own timer would not fire for a minute: only the webhook's wake-up can enqueue this.
    slow_timer = settings.model_copy(update={"relay_interval_seconds": 60.0})
    with TestClient(create_app(slow_timer)) as client:
        time.sleep(1.0)  # let the relay process start and take its first (idle) pass
        post_inbound(client, settings, tenant, inbound_form(tenant, "Oi"))
        deadline = time.monotonic() + 15
        while queued_jobs(settings, QUEUE_PROCESS) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)

    assert queued_jobs(settings, QUEUE_PROCESS) == 1


def test_the_relay_process_ends_when_its_api_process_is_gone(settings: Settings) -> None:
    relay = RelayProcess(settings)
    relay.start()
    process = relay._process
    assert process.is_alive()
    relay._writer.close()  # what the kernel does to the pipe when the API process dies

    process.join(15)

    assert process.exitcode == 0
    relay.set()  # waking a relay that is gone is harmless


def test_healthz_is_alive_and_readyz_checks_the_backends(client: TestClient) -> None:
    alive = client.get("/healthz")
    response = client.get("/readyz")

    assert alive.status_code == 200 and alive.json() == {"status": "alive"}
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "postgres": "ok", "redis": "ok", "migrations": "ok"}


def test_tenants_are_remembered_for_a_while(settings: Settings, tenant: Tenant) -> None:
    services = Services.build(settings.model_copy(update={"tenant_cache_seconds": 60}))
    uncached = Services.build(settings.model_copy(update={"tenant_cache_seconds": 0}))
    try:
        assert services.tenants.cached(tenant.whatsapp_sender) is None
        assert services.tenants.by_sender(tenant.whatsapp_sender) == tenant
        assert services.tenants.cached(tenant.whatsapp_sender) == tenant
        assert services.tenants.by_sender("whatsapp:+19999999999") is None
        assert services.tenants.cached("whatsapp:+19999999999") is None
        assert uncached.tenants.by_sender(tenant.whatsapp_sender) == tenant
        assert uncached.tenants.cached(tenant.whatsapp_sender) is None
    finally:
        services.close()
        uncached.close()


def test_a_tenant_deleted_behind_the_cache_is_404_not_500(
    client: TestClient, settings: Settings, tenant: Tenant
) -> None:
    assert post_inbound(client, settings, tenant, inbound_form(tenant, "Oi")).status_code == 200
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:  # another API process deletes it
        conn.execute("delete from tenants where id = %s", (tenant.id,))

    response = post_inbound(client, settings, tenant, inbound_form(tenant, "Ainda aí?"))

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_sender"
    assert rows(settings, "select count(*) from messages") == [(0,)]
    assert post_inbound(client, settings, tenant, inbound_form(tenant, "?")).status_code == 404


def test_nul_characters_are_stored_cleaned_not_a_500(
    client: TestClient, settings: Settings, tenant: Tenant
) -> None:
    # Signed over what was sent (NULs included), as Twilio would sign it.
    form = inbound_form(tenant, "oi\x00 tudo\x00bem", ProfileName="A\x00na", **{"X\x00tra": "\x00"})

    response = post_inbound(client, settings, tenant, form)

    assert response.status_code == 200, response.text
    assert rows(settings, "select body, payload->>'Xtra' from messages") == [("oi tudobem", "")]
    assert rows(settings, "select profile_name from users") == [("Ana",)]
    # A replay of the same message is still recognised as one.
    assert post_inbound(client, settings, tenant, form).status_code == 200
    assert rows(settings, "select count(*) from messages") == [(1,)]


def test_an_invalid_utf8_escape_is_stored_as_replacement_characters(
    client: TestClient, settings: Settings, tenant: Tenant
) -> None:
    # A lone surrogate's UTF-8 bytes (%ED%A0%80) are not valid UTF-8: form decoding replaces them,
    # and the signature covers the form as decoded.
    form = inbound_form(tenant, "X")
    raw = urlencode(form).replace("Body=X", "Body=%ED%A0%80").encode()
    decoded = dict(parse_qsl(raw.decode(), keep_blank_values=True))
    url = settings.public_url("/webhooks/inbound")
    response = client.post(
        "/webhooks/inbound",
        content=raw,
        headers={
            "X-Twilio-Signature": sign(tenant.twilio_auth_token, url, decoded),
            "content-type": "application/x-www-form-urlencoded",
        },
    )

    assert response.status_code == 200, response.text
    assert rows(settings, "select body from messages") == [("\ufffd\ufffd\ufffd",)]
