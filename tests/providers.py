"""The channel guarantees' tests, run through either WhatsApp provider.

`provider` (a fixture parametrised over Twilio and Meta's Cloud API) posts a user's message
as that provider's signed webhook, reports a delivery status the way that provider does, and
reads back what the tenant sent through that provider's local sandbox. A test written against
it runs once per provider: the guarantee is the service's, not one provider's.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any, Protocol

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from channels.sandbox._cloud_wire import status_item
from channels.sandbox.cloud import CloudSandbox
from channels.sandbox.twilio import TwilioSandbox, press_form
from channels.twilio.inbound import sign
from server.settings import Settings, get_settings
from store import templates, tenants
from store.records import Tenant
from tests.conftest import USER, inbound_form, post_inbound
from tests.templating import register_template

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

    def choices(self) -> dict[str, Any] | None:
        """The buttons or list of the tenant's last message as the sandbox drew them
        (`{"type", "button", "options"}`), or None."""
        ...

    def press(self, number: int) -> int:
        """Tap option `number` of the latest message that offered some, as the provider posts
        it; return the HTTP status."""
        ...

    window_closed_code: int
    """The provider's error code for a free-form send outside the 24-hour window."""

    profile_name: str
    """The user's WhatsApp profile name, as the provider's webhooks give it."""

    def say_as(self, text: str, *, user: str, profile_name: str) -> int:
        """Post `text` from `user` whose WhatsApp profile name is `profile_name`."""
        ...

    def bodies_to(self, user: str) -> list[str]:
        """What the tenant sent to `user` (a `whatsapp:+...` address), in order."""
        ...

    def sent_templates(self) -> list[str | None]:
        """The provider's id of the template each sent message went out as (None: free-form)."""
        ...

    def approve_template(self, body: str) -> str:
        """Have the provider hold `body` ({{1}}...) as an approved template; return its id."""
        ...

    def add_template(self, purpose: str, body: str, variables: dict[str, str]) -> str:
        """Approve a template at the provider and register it for the tenant's `purpose`
        (language 'pt'); return its id."""
        ...

    def fail_next(self, code: int) -> None:
        """Have the provider refuse the tenant's next send with its error `code`."""
        ...

    def serve(self, base_url: str) -> dict[str, str]:
        """Post webhooks to the service running at `base_url` (its own processes) from now on,
        with a status webhook for each send as the provider posts them; return the environment
        those processes need to reach the provider's sandbox."""
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

    def choices(self) -> dict[str, Any] | None:
        return self.sandbox.messages[-1]["choices"] if self.sandbox.messages else None

    def press(self, number: int) -> int:
        offered = [m for m in self.sandbox.messages if m["choices"]]
        fields = press_form(offered[-1], number)
        form = inbound_form(self.tenant, fields.pop("Body", ""), **fields)
        return int(post_inbound(self.client, self.settings, self.tenant, form).status_code)

    def voice_note(self, audio: bytes, content_type: str) -> int:
        url = self.sandbox.add_media(
            audio, content_type, account_sid=self.tenant.twilio_account_sid
        )
        form = inbound_form(self.tenant, "", NumMedia="1", MediaUrl0=url,
                            MediaContentType0=content_type, MessageType="audio")  # fmt: skip
        return int(post_inbound(self.client, self.settings, self.tenant, form).status_code)

    window_closed_code = 63016
    profile_name = "Demo User"

    def say_as(self, text: str, *, user: str, profile_name: str) -> int:
        form = inbound_form(self.tenant, text, user=user, ProfileName=profile_name)
        return int(post_inbound(self.client, self.settings, self.tenant, form).status_code)

    def bodies_to(self, user: str) -> list[str]:
        return [m["body"] for m in self.sandbox.messages if m["to"] == user]

    def sent_templates(self) -> list[str | None]:
        return [m["content_sid"] for m in self.sandbox.messages]

    def approve_template(self, body: str) -> str:
        return self.sandbox.add_content(body, account_sid=self.tenant.twilio_account_sid)

    def add_template(self, purpose: str, body: str, variables: dict[str, str]) -> str:
        return register_template(self.settings, self.sandbox, self.tenant, purpose, body,
                                 variables)  # fmt: skip

    def fail_next(self, code: int) -> None:
        self.sandbox.inject_error(code, 400, f"Twilio error {code}")

    def serve(self, base_url: str) -> dict[str, str]:
        # Signed for the served URL; Twilio posts statuses to the StatusCallback of each send.
        self.client = httpx.Client(base_url=base_url, timeout=10)  # type: ignore[assignment]
        self.settings = self.settings.model_copy(update={"public_base_url": base_url})
        self.sandbox.auto_status = ("sent", "delivered")
        return {"TWILIO_API_BASE_URL": self.sandbox.url}


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

    def choices(self) -> dict[str, Any] | None:
        messages = self.sandbox.messages
        return messages[-1]["choices"] if messages else None

    def press(self, number: int) -> int:
        offered = [m for m in self.sandbox.messages if m["choices"]]
        wa_id = USER.removeprefix("whatsapp:").lstrip("+")
        return self._post(self.sandbox.signed_press(CLOUD_NUMBER_ID, wa_id, offered[-1], number))

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

    window_closed_code = 131047
    profile_name = "Sandbox User"
    settings: Settings
    tenant: Tenant

    def say_as(self, text: str, *, user: str, profile_name: str) -> int:
        wa_id = user.removeprefix("whatsapp:").lstrip("+")
        inbound = self.sandbox.signed_inbound(CLOUD_NUMBER_ID, wa_id, text,
                                              profile_name=profile_name)  # fmt: skip
        return self._post(inbound)

    def bodies_to(self, user: str) -> list[str]:
        wa_id = user.removeprefix("whatsapp:").lstrip("+")
        return [str(m["body"]) for m in self.sandbox.messages if m["to"] == wa_id]

    def sent_templates(self) -> list[str | None]:
        return [m["template"]["name"] if m["template"] else None for m in self.sandbox.messages]

    def approve_template(self, body: str) -> str:
        # Registered as 'pt' (below), it goes out as Meta's pt_BR (`meta_language`).
        name = f"modelo_{secrets.token_hex(4)}"
        self.sandbox.add_template(CLOUD_NUMBER_ID, name, body, "pt_BR")
        return name

    def add_template(self, purpose: str, body: str, variables: dict[str, str]) -> str:
        name = self.approve_template(body)
        assert self.settings.database_url
        with psycopg.connect(self.settings.database_url) as conn, conn.transaction():
            templates.create_template(
                conn, self.tenant.id, purpose=purpose, language="pt", content_sid=name,
                body=body, variables=variables, status="approved",
            )  # fmt: skip
        return name

    def fail_next(self, code: int) -> None:
        self.sandbox.fail_next(code, message=f"Cloud API error {code}")

    def serve(self, base_url: str) -> dict[str, str]:
        self.client = httpx.Client(base_url=base_url, timeout=10)  # type: ignore[assignment]
        self.sandbox.webhook_url = f"{base_url}/webhooks/cloud"
        return {"CLOUD_API_BASE_URL": self.sandbox.url}


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
            credentials = (CLOUD_NUMBER_ID, CLOUD_TOKEN, CLOUD_SECRET)
            tenants.set_channel(conn, tenant.id, "cloud", *credentials)
        on_cloud = _Cloud(client, cloud)
        on_cloud.settings, on_cloud.tenant = settings, tenant  # for registering its templates
        yield on_cloud
    get_settings.cache_clear()
