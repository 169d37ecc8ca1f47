"""The channel guarantees' tests, run through either WhatsApp provider.

`provider` (a fixture parametrised over Twilio and Meta's Cloud API) posts a user's message
as that provider's signed webhook, reports a delivery status the way that provider does, and
reads back what the tenant sent through that provider's local sandbox. A test written against
it runs once per provider: the guarantee is the service's, not one provider's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import psycopg
import pytest
from fastapi.testclient import TestClient

from channels.sandbox._cloud_wire import status_item
from channels.sandbox.cloud import CloudSandbox
from channels.sandbox.twilio import TwilioSandbox
from channels.twilio.inbound import sign
from server.settings import Settings, get_settings
from store import tenants
from store.records import Tenant
from tests.conftest import USER, inbound_form, post_inbound

CLOUD_NUMBER_ID = "106540352242922"
CLOUD_TOKEN = "EAAG-provider-tests"
CLOUD_SECRET = "provider-tests-app-secret"


class Provider(Protocol):
    """A provider as the guarantees' tests drive it."""

    name: str

    def say(self, text: str, *, user: str = USER, message_id: str | None = None) -> int:
        """Post `text` from `user` as the provider's signed webhook; return the HTTP status."""
        ...

    def bodies(self) -> list[str]:
        """What the tenant sent, in the order the provider accepted it."""
        ...

    def sent_ids(self) -> list[str]:
        """The provider's ids of what the tenant sent, in order."""
        ...

    def report(self, provider_message_id: str, status: str) -> int:
        """Post the provider's delivery status webhook for one of our messages."""
        ...

    def voice_note(self, audio: bytes, content_type: str) -> int:
        """Post a voice note the provider hosts (as its sandbox serves media)."""
        ...


class _Twilio:
    name = "twilio"

    def __init__(
        self, client: TestClient, settings: Settings, tenant: Tenant, sandbox: TwilioSandbox
    ) -> None:
        self.client, self.settings, self.tenant, self.sandbox = client, settings, tenant, sandbox

    def say(self, text: str, *, user: str = USER, message_id: str | None = None) -> int:
        ids = {"MessageSid": message_id, "SmsMessageSid": message_id, "SmsSid": message_id}
        form = inbound_form(self.tenant, text, user=user, **(ids if message_id else {}))
        return int(post_inbound(self.client, self.settings, self.tenant, form).status_code)

    def bodies(self) -> list[str]:
        return [m["body"] for m in self.sandbox.messages]

    def sent_ids(self) -> list[str]:
        return [m["sid"] for m in self.sandbox.messages]

    def report(self, provider_message_id: str, status: str) -> int:
        form = {"MessageSid": provider_message_id, "MessageStatus": status,
                "AccountSid": self.tenant.twilio_account_sid, "From": self.tenant.whatsapp_sender,
                "To": USER}  # fmt: skip
        url = self.settings.public_url("/webhooks/status")
        signature = sign(self.tenant.twilio_auth_token, url, form)
        response = self.client.post(
            "/webhooks/status", data=form, headers={"X-Twilio-Signature": signature}
        )
        return int(response.status_code)

    def voice_note(self, audio: bytes, content_type: str) -> int:
        url = self.sandbox.add_media(
            audio, content_type, account_sid=self.tenant.twilio_account_sid
        )
        form = inbound_form(self.tenant, "", NumMedia="1", MediaUrl0=url,
                            MediaContentType0=content_type, MessageType="audio")  # fmt: skip
        return int(post_inbound(self.client, self.settings, self.tenant, form).status_code)


class _Cloud:
    name = "cloud"

    def __init__(self, client: TestClient, sandbox: CloudSandbox) -> None:
        self.client, self.sandbox = client, sandbox

    def _post(self, signed: tuple[bytes, dict[str, str]]) -> int:
        body, headers = signed
        return int(self.client.post("/webhooks/cloud", content=body, headers=headers).status_code)

    def say(self, text: str, *, user: str = USER, message_id: str | None = None) -> int:
        wa_id = user.removeprefix("whatsapp:").lstrip("+")
        return self._post(
            self.sandbox.signed_inbound(CLOUD_NUMBER_ID, wa_id, text, wamid=message_id)
        )

    def bodies(self) -> list[str]:
        return [str(m["body"]) for m in self.sandbox.messages]

    def sent_ids(self) -> list[str]:
        return [str(m["id"]) for m in self.sandbox.messages]

    def voice_note(self, audio: bytes, content_type: str) -> int:
        media_id = self.sandbox.add_media(audio, content_type, CLOUD_NUMBER_ID)
        wa_id = USER.removeprefix("whatsapp:").lstrip("+")
        content = {"id": media_id, "mime_type": content_type, "voice": True}
        return self._post(
            self.sandbox.signed_inbound(CLOUD_NUMBER_ID, wa_id, kind="audio", content=content)
        )

    def report(self, provider_message_id: str, status: str) -> int:
        sent: dict[str, Any] = next(
            m for m in self.sandbox.messages if m["id"] == provider_message_id
        )
        item = status_item(provider_message_id, status, str(sent["to"]))
        return self._post(self.sandbox.signed_webhook(CLOUD_NUMBER_ID, statuses=[item]))


@pytest.fixture(params=["twilio", "cloud"])
def provider(
    request: pytest.FixtureRequest,
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Provider]:
    """The tenant on Twilio, or switched to the Cloud API (its own local sandbox)."""
    if request.param == "twilio":
        yield _Twilio(client, settings, tenant, sandbox)
        return
    with CloudSandbox() as cloud:
        display = tenant.whatsapp_sender.removeprefix("whatsapp:+")
        cloud.add_number(CLOUD_NUMBER_ID, display, CLOUD_TOKEN, CLOUD_SECRET)
        monkeypatch.setenv("CLOUD_API_BASE_URL", cloud.url)
        get_settings.cache_clear()
        assert settings.database_url
        with psycopg.connect(settings.database_url) as conn:
            secrets = (CLOUD_NUMBER_ID, CLOUD_TOKEN, CLOUD_SECRET)
            tenants.set_channel(conn, tenant.id, "cloud", *secrets)
        yield _Cloud(client, cloud)
    get_settings.cache_clear()
