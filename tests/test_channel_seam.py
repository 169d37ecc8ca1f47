"""The channel seam: the Twilio channel, taken from the registry as the jobs and the webhook take
it, keeps the `Channel` protocol's promises against the sandbox."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import urlencode

import httpx
import pytest
from pydantic import ValidationError

from channels.base import (
    BadSignature,
    InvalidRequest,
    OutboundMessage,
    SendFailed,
    SendOutcome,
    Template,
    WebhookRequest,
)
from channels.registry import PROVIDERS, UnknownProvider, channel_for
from channels.sandbox.twilio import TwilioSandbox
from channels.twilio.inbound import sign
from server.api.routes import TenantChange
from server.api.webhooks import ROUTES
from server.settings import Settings
from store.records import Tenant
from tests.conftest import USER, inbound_form

FORM = "application/x-www-form-urlencoded"


def _post(settings: Settings, tenant: Tenant, path: str, form: dict[str, str]) -> WebhookRequest:
    url = settings.public_url(path)
    headers = {
        "content-type": FORM,
        "x-twilio-signature": sign(tenant.twilio_auth_token, url, form),
    }
    return WebhookRequest(url=url, headers=headers, body=urlencode(form).encode())


def _outbound(tenant: Tenant, body: str, template: Template | None = None) -> OutboundMessage:
    return OutboundMessage(message_id=1, to=USER, sender=tenant.whatsapp_sender, body=body,
                           created_at=datetime.now(UTC), template=template)  # fmt: skip


def test_a_signed_post_becomes_records_and_a_forged_one_nothing(
    settings: Settings, tenant: Tenant
) -> None:
    channel = channel_for(settings, tenant)
    form = inbound_form(tenant, "Oi!", ProfileName="Ana")
    request = _post(settings, tenant, "/webhooks/inbound", form)

    assert PROVIDERS["twilio"].webhooks.addressee(request, "inbound") == tenant.whatsapp_sender
    (message,) = channel.parse(request, "inbound").messages
    assert (message.provider_message_id, message.sender, message.recipient, message.kind,
            message.body, message.profile_name) == (
        form["MessageSid"], USER, tenant.whatsapp_sender, "text", "Oi!", "Ana")  # fmt: skip

    forged = replace(request, body=urlencode({**form, "Body": "Tchau"}).encode())
    with pytest.raises(BadSignature):
        channel.parse(forged, "inbound")
    status_form = {**form, "MessageStatus": "delivered"}
    with pytest.raises(InvalidRequest) as invalid:
        channel.parse(_post(settings, tenant, "/webhooks/status", status_form | {"ErrorCode": "x"}),
                      "status")  # fmt: skip
    assert invalid.value.code == "invalid_status"
    (update,) = channel.parse(
        _post(settings, tenant, "/webhooks/status", status_form), "status"
    ).statuses
    assert (update.provider_message_id, update.status) == (form["MessageSid"], "delivered")


def test_send_find_typing_and_media_through_the_sandbox(
    settings: Settings, tenant: Tenant, sandbox: TwilioSandbox
) -> None:
    channel = channel_for(settings, tenant)
    message = _outbound(tenant, "Olá 👋")
    sent = channel.send(message)
    (stored,) = sandbox.messages
    assert (stored["sid"], stored["body"], stored["to"]) == (
        sent.provider_message_id,
        "Olá 👋",
        USER,
    )
    assert channel.find_sent(message) == sent
    assert channel.find_sent(replace(message, body="something else")) is None

    template = Template("HX" + "ab" * 16, {"1": "Ana"})
    sandbox.add_content("Oi {{1}}", account_sid=tenant.twilio_account_sid, sid=template.id)
    channel.send(_outbound(tenant, "Oi Ana", template))
    assert sandbox.messages[-1]["content_sid"] == template.id

    channel.send_typing(sent.provider_message_id)
    assert [t["message_id"] for t in sandbox.typing_indicators] == [sent.provider_message_id]

    url = sandbox.add_media(b"OggS", "audio/ogg", account_sid=tenant.twilio_account_sid)
    (media,) = channel.parse(
        _post(settings, tenant, "/webhooks/inbound",
              inbound_form(tenant, "", NumMedia="1", MediaUrl0=url, MediaContentType0="audio/ogg")),
        "inbound",
    ).messages[0].media  # fmt: skip
    source = channel.media_source(media)
    assert source.url == url and source.auth is not None
    assert httpx.get(source.url, auth=source.auth).content == b"OggS"


@pytest.mark.parametrize(
    ("code", "outcome"),
    [(63016, SendOutcome.TEMPLATE), (21610, SendOutcome.OPTED_OUT), (21211, SendOutcome.FAIL),
     (63018, SendOutcome.RETRY)],
)  # fmt: skip
def test_refusals_carry_the_outcome_and_the_providers_code(
    settings: Settings, tenant: Tenant, sandbox: TwilioSandbox, code: int, outcome: SendOutcome
) -> None:
    sandbox.inject_error(code)
    with pytest.raises(SendFailed) as failed:
        channel_for(settings, tenant).send(_outbound(tenant, "Oi"))
    assert (failed.value.outcome, failed.value.code) == (outcome, code)


def test_every_providers_paths_are_routed_and_an_unknown_provider_is_refused(
    settings: Settings, tenant: Tenant
) -> None:
    assert {path for p in PROVIDERS.values() for path in p.webhooks.paths} == set(ROUTES)
    with pytest.raises(UnknownProvider):
        channel_for(settings, replace(tenant, channel="carrier-pigeon"))


def test_the_api_accepts_only_a_registered_provider_as_a_tenants_channel() -> None:
    assert TenantChange(channel="twilio").channel == "twilio"
    with pytest.raises(ValidationError, match="unknown channel"):
        TenantChange(channel="carrier-pigeon")
