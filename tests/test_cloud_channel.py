"""Meta's Cloud API channel keeps the `Channel` protocol's promises against the Cloud API sandbox:
signed webhooks in, every message and status of a batch read, sends, refusals mapped to what the
send job does, typing, and media downloaded in two steps."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from channels.base import (
    BadSignature,
    InvalidRequest,
    OutboundMessage,
    SendFailed,
    SendOutcome,
    Template,
    WebhookRequest,
)
from channels.cloud.channel import WEBHOOK_PATH, CloudChannel, CloudWebhooks, meta_language
from channels.cloud.inbound import verify_subscription
from channels.media import MediaPolicy, MediaRefused, download_media
from channels.sandbox._cloud_wire import signature, status_item, user_message
from channels.sandbox.cloud import CloudSandbox
from store.records import Tenant
from tests.speech import make_tone

USER_WA_ID = "5511987654321"
USER = f"whatsapp:+{USER_WA_ID}"


@dataclass(frozen=True)
class Settings:
    """What the channel reads of the service's settings."""

    cloud_api_base_url: str | None

    def public_url(self, path: str) -> str:
        return f"https://bot.example.com{path}"


@pytest.fixture(scope="module")
def cloud() -> Iterator[CloudSandbox]:
    """The local Graph API (no status webhooks unless a test asks)."""
    with CloudSandbox(auto_status=()) as server:
        yield server


def _tenant(cloud: CloudSandbox, app_secret: str | None = None) -> Tenant:
    """A tenant on the Cloud API whose number the sandbox serves (fresh ids and secrets)."""
    number_id = str(100000000000000 + secrets.randbelow(10**14))
    display = f"1555{secrets.randbelow(10**7):07d}"
    token, app_secret = "EAA" + secrets.token_hex(20), app_secret or secrets.token_hex(16)
    cloud.add_number(number_id, display, token, app_secret)
    return Tenant(
        id=uuid.uuid4(), slug="acme", name="Acme", whatsapp_sender=f"whatsapp:+{display}",
        twilio_account_sid="", twilio_auth_token="", default_locale="pt-BR",
        timezone="America/Sao_Paulo", persona="", typing_indicator=True,
        closed_window_template_sid=None, closed_window_template_variables={},
        default_plan_id=None, auto_enroll=True, trace_privacy="none", system_prompt=None,
        channel="cloud", cloud_phone_number_id=number_id, cloud_access_token=token,
        cloud_app_secret=app_secret,
    )  # fmt: skip


@pytest.fixture
def tenant(cloud: CloudSandbox) -> Tenant:
    return _tenant(cloud)


@pytest.fixture
def channel(cloud: CloudSandbox, tenant: Tenant) -> CloudChannel:
    return CloudChannel(Settings(cloud.url), tenant)


def _request(body: bytes, headers: dict[str, str]) -> WebhookRequest:
    lowered = {k.lower(): v for k, v in headers.items()}
    return WebhookRequest(url=f"https://bot.example.com{WEBHOOK_PATH}", headers=lowered, body=body)


def _signed(tenant: Tenant, document: Any) -> WebhookRequest:
    """A POST of any body, signed with the tenant's app secret (a signed post is read)."""
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    assert tenant.cloud_app_secret
    return _request(body, {"X-Hub-Signature-256": signature(tenant.cloud_app_secret, body)})


def _post(cloud: CloudSandbox, tenant: Tenant, *messages: dict[str, Any],
          statuses: tuple[dict[str, Any], ...] = ()) -> WebhookRequest:  # fmt: skip
    assert tenant.cloud_phone_number_id
    body, headers = cloud.signed_webhook(
        tenant.cloud_phone_number_id, messages=messages, statuses=statuses,
        profiles={USER_WA_ID: "Ana"},
    )  # fmt: skip
    return _request(body, headers)


def _outbound(tenant: Tenant, body: str, template: Template | None = None) -> OutboundMessage:
    return OutboundMessage(message_id=42, to=USER, sender=tenant.whatsapp_sender, body=body,
                           created_at=datetime.now(UTC), template=template)  # fmt: skip


# -- webhooks in ---------------------------------------------------------------------


def test_a_signed_post_is_read_and_any_other_signature_is_refused(
    cloud: CloudSandbox, channel: CloudChannel, tenant: Tenant
) -> None:
    request = _post(cloud, tenant, user_message(USER_WA_ID, text="Oi!"))
    assert CloudWebhooks().addressee(request, "inbound") == tenant.whatsapp_sender
    (message,) = channel.parse(request, "inbound").messages
    sent = json.loads(request.body)["entry"][0]["changes"][0]["value"]["messages"][0]
    assert (message.provider_message_id, message.sender, message.recipient, message.wa_id,
            message.kind, message.body, message.profile_name) == (
        sent["id"], USER, tenant.whatsapp_sender, USER_WA_ID, "text", "Oi!", "Ana")  # fmt: skip

    missing = replace(request, headers={})
    tampered = replace(request, body=request.body.replace(b"Oi!", b"Tchau"))
    other_secret = replace(request, headers={
        "x-hub-signature-256": signature(secrets.token_hex(16), request.body)})  # fmt: skip
    bare_hex = replace(request, headers={
        "x-hub-signature-256": request.headers["x-hub-signature-256"].removeprefix("sha256=")
    })  # fmt: skip
    for forged in (missing, tampered, other_secret, bare_hex):
        with pytest.raises(BadSignature):
            channel.parse(forged, "inbound")
    without_secret = CloudChannel(Settings(cloud.url), replace(tenant, cloud_app_secret=None))
    with pytest.raises(BadSignature):
        without_secret.parse(request, "inbound")


def test_the_signature_is_checked_before_the_body_is_read(
    channel: CloudChannel, tenant: Tenant
) -> None:
    with pytest.raises(BadSignature):
        channel.parse(_request(b"not json", {"X-Hub-Signature-256": "sha256=00"}), "inbound")
    with pytest.raises(InvalidRequest):
        channel.parse(_signed(tenant, b"not json"), "inbound")


@pytest.mark.parametrize(
    ("query", "answer"),
    [({"hub.mode": "subscribe", "hub.verify_token": "s3cret", "hub.challenge": "1158201444"},
      "1158201444"),
     ({"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1158201444"}, None),
     ({"hub.verify_token": "s3cret", "hub.challenge": "1158201444"}, None),
     ({"hub.mode": "unsubscribe", "hub.verify_token": "s3cret", "hub.challenge": "1"}, None),
     ({"hub.mode": "subscribe", "hub.challenge": "1158201444"}, None)],
)  # fmt: skip
def test_the_subscription_check_echoes_the_challenge_only_for_our_token(
    query: dict[str, str], answer: str | None
) -> None:
    assert verify_subscription(query, "s3cret") == answer
    assert verify_subscription(query, "") is None


MESSAGES = [
    # (type, content, kind, body, media (url id, content type) or None)
    ("audio", {"id": "1000001", "mime_type": "audio/ogg; codecs=opus", "voice": True},
     "media", "", ("1000001", "audio/ogg; codecs=opus")),
    ("image", {"id": "1000002", "mime_type": "image/jpeg", "caption": "nota fiscal"},
     "media", "nota fiscal", ("1000002", "image/jpeg")),
    ("location", {"latitude": -23.55, "longitude": -46.63, "name": "Padaria",
                  "address": "Rua Augusta, 1"},
     "location", "Padaria — Rua Augusta, 1 (-23.55, -46.63)", None),
    ("location", {"latitude": 1, "longitude": 2}, "location", "1.0, 2.0", None),
    ("interactive",
     {"type": "button_reply", "button_reply": {"id": "undo:17", "title": "Desfazer"}},
     "button", "Desfazer", None),
    ("interactive", {"type": "list_reply",
                     "list_reply": {"id": "entry:3", "title": "Mercado", "description": "R$ 50"}},
     "button", "Mercado", None),
    ("button", {"payload": "STOP_PROMOS", "text": "Parar promoções"}, "button", "Parar promoções",
     None),
    ("reaction", {"message_id": "wamid.ABC", "emoji": "👍"}, "unsupported", "", None),
    ("order", {"catalog_id": "1", "product_items": []}, "unsupported", "", None),
]  # fmt: skip


@pytest.mark.parametrize(("kind_name", "content", "kind", "body", "media"), MESSAGES)
def test_every_message_type_becomes_the_services_message(
    cloud: CloudSandbox, channel: CloudChannel, tenant: Tenant,
    kind_name: str, content: dict[str, Any], kind: str, body: str,
    media: tuple[str, str] | None,
) -> None:  # fmt: skip
    sent = user_message(USER_WA_ID, kind=kind_name, content=content)
    (message,) = channel.parse(_post(cloud, tenant, sent), "inbound").messages
    assert (message.provider_message_id, message.kind, message.body) == (sent["id"], kind, body)
    assert [(m.url, m.content_type) for m in message.media] == (
        [(f"cloud-media:{media[0]}", media[1])] if media else []
    )
    assert message.payload[kind_name] == content  # the reply's id travels with the message


def test_a_batch_is_read_whole_in_order_with_its_duplicate(
    cloud: CloudSandbox, channel: CloudChannel, tenant: Tenant
) -> None:
    first = user_message(USER_WA_ID, text="um")
    second = user_message("5521912345678", text="dois")
    events = channel.parse(_post(cloud, tenant, first, second, first), "inbound")
    assert [(m.provider_message_id, m.sender, m.body) for m in events.messages] == [
        (first["id"], USER, "um"),
        (second["id"], "whatsapp:+5521912345678", "dois"),
        (first["id"], USER, "um"),
    ]
    assert [m.profile_name for m in events.messages] == ["Ana", None, "Ana"]


def test_statuses_are_read_with_their_error_codes(
    cloud: CloudSandbox, channel: CloudChannel, tenant: Tenant
) -> None:
    wamids = [f"wamid.{i}" for i in range(6)]
    statuses = (
        status_item(wamids[0], "sent", USER_WA_ID),
        status_item(wamids[1], "delivered", USER_WA_ID),
        status_item(wamids[2], "read", USER_WA_ID),
        status_item(wamids[3], "failed", USER_WA_ID, error_code=131047),
        {**status_item(wamids[4], "sent", USER_WA_ID), "status": "played"},
        {**status_item(wamids[5], "sent", USER_WA_ID), "status": "something_new"},
    )
    reply = user_message(USER_WA_ID, text="e aí")
    events = channel.parse(_post(cloud, tenant, reply, statuses=statuses), "inbound")
    assert [(s.provider_message_id, s.status, s.error_code) for s in events.statuses] == [
        (wamids[0], "sent", None),
        (wamids[1], "delivered", None),
        (wamids[2], "read", None),
        (wamids[3], "failed", 131047),
        (wamids[4], "read", None),  # a played voice note has been read; an unknown status skipped
    ]
    assert [m.body for m in events.messages] == ["e aí"]


def test_nul_characters_are_removed_from_a_signed_post(
    cloud: CloudSandbox, channel: CloudChannel, tenant: Tenant
) -> None:
    sent = user_message(USER_WA_ID, text="O\x00i\ud800!")
    (message,) = channel.parse(_post(cloud, tenant, sent), "inbound").messages
    assert message.body == "Oi\ufffd!"
    assert "\x00" not in json.dumps(dict(message.payload))


def _document(tenant: Tenant, value: dict[str, Any]) -> dict[str, Any]:
    metadata = {"display_phone_number": tenant.whatsapp_sender.removeprefix("whatsapp:+"),
                "phone_number_id": tenant.cloud_phone_number_id}  # fmt: skip
    return {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
        {"field": "messages",
         "value": {"messaging_product": "whatsapp", "metadata": metadata, **value}}]}]}  # fmt: skip


MALFORMED: list[Any] = [
    b"\xff\xfe not utf-8",
    b'{"object": "whatsapp_business_account", "entry": [], "entry": []}',
    b'{"object": "whatsapp_business_account", "entry": [{"changes": [NaN]}]}',
    {"object": "page", "entry": [{"changes": []}]},
    {"object": "whatsapp_business_account", "entry": {}},
    {"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages"}]}]},
    {"messages": "not a list"},
    {"messages": [{"from": USER_WA_ID, "type": "text", "text": {"body": "no id"}}]},
    {"messages": [{"id": "wamid.1", "from": "+55 11", "type": "text", "text": {"body": "x"}}]},
    {"messages": [{"id": "wamid.1", "from": USER_WA_ID, "type": "text"}]},
    {"messages": [{"id": "wamid.1", "from": USER_WA_ID, "type": "audio", "audio": {"id": "../x"}}]},
    {"messages": [{"id": "w" * 300, "from": USER_WA_ID, "type": "text", "text": {"body": "x"}}]},
    {"messages": [{"id": "wamid.1", "from": USER_WA_ID, "type": "location",
                   "location": {"latitude": "north"}}]},
    {"statuses": [{"id": "wamid.1", "status": "failed", "errors": [{"code": "131047"}]}]},
    {"statuses": [{"status": "sent"}]},
]  # fmt: skip


@pytest.mark.parametrize("case", range(len(MALFORMED)))
def test_a_signed_post_that_is_not_the_cloud_apis_is_invalid(
    channel: CloudChannel, tenant: Tenant, case: int
) -> None:
    document = MALFORMED[case]
    if isinstance(document, dict) and "object" not in document:
        document = _document(tenant, document)
    with pytest.raises(InvalidRequest):
        channel.parse(_signed(tenant, document), "inbound")


def test_the_addressee_is_the_business_number_and_a_change_for_another_is_refused(
    cloud: CloudSandbox, channel: CloudChannel, tenant: Tenant
) -> None:
    other = _tenant(cloud, tenant.cloud_app_secret)  # one Meta app, two numbers
    assert other.cloud_phone_number_id
    body, headers = cloud.signed_inbound(other.cloud_phone_number_id, USER_WA_ID, "oi")
    request = _request(body, headers)
    assert CloudWebhooks().addressee(request, "inbound") == other.whatsapp_sender
    with pytest.raises(InvalidRequest, match="another business number"):
        channel.parse(request, "inbound")
    for unknown in (b"{}", b"[]", b"oi", json.dumps({"object": "page", "entry": [{}]}).encode()):
        with pytest.raises(InvalidRequest):
            CloudWebhooks().addressee(_request(unknown, {}), "inbound")
    assert CloudWebhooks().paths == {"/webhooks/cloud": "inbound"}
    assert CloudWebhooks().reply("inbound").status_code == 200


# -- sending -----------------------------------------------------------------------


def test_a_text_goes_to_the_users_number_and_its_wamid_comes_back(
    cloud: CloudSandbox, channel: CloudChannel, tenant: Tenant
) -> None:
    sent = channel.send(_outbound(tenant, "Olá 👋"))
    (stored,) = cloud.wait_for_messages(1, phone_number_id=tenant.cloud_phone_number_id)
    assert (stored["id"], stored["to"], stored["type"], stored["body"]) == (
        sent.provider_message_id, USER_WA_ID, "text", "Olá 👋")  # fmt: skip
    assert stored["payload"]["text"]["preview_url"] is False
    assert stored["opaque"] == "outbox:42"
    assert channel.find_sent(_outbound(tenant, "Olá 👋")) is None  # the API cannot list sends


def test_a_template_goes_with_its_language_and_parameters_in_numeric_order(
    cloud: CloudSandbox, channel: CloudChannel, tenant: Tenant
) -> None:
    assert tenant.cloud_phone_number_id
    cloud.add_template(tenant.cloud_phone_number_id, "retomar", "Oi {{1}}, {{2}}... {{10}}!", "en")
    variables = {str(i): f"v{i}" for i in (10, 2, 1, 3, 4, 5, 6, 7, 8, 9)} | {"language": "en"}
    with pytest.raises(SendFailed) as failed:  # the template has 3 placeholders, not 10
        channel.send(_outbound(tenant, "", Template("retomar", variables)))
    assert failed.value.code == 132000
    every = " ".join(f"{{{{{i}}}}}" for i in range(1, 11))
    cloud.add_template(tenant.cloud_phone_number_id, "retomar", every, "en")
    channel.send(_outbound(tenant, "", Template("retomar", variables)))
    cloud.add_template(tenant.cloud_phone_number_id, "oi", "Oi {{1}}!")  # pt_BR by default
    channel.send(_outbound(tenant, "", Template("oi", {"1": "Ana"})))
    sent = cloud.wait_for_messages(2, phone_number_id=tenant.cloud_phone_number_id)
    assert [m["body"] for m in sent] == ["v1 v2 v3 v4 v5 v6 v7 v8 v9 v10", "Oi Ana!"]
    assert [m["template"]["language"]["code"] for m in sent] == ["en", "pt_BR"]


REFUSALS = [
    (131047, 400, SendOutcome.TEMPLATE), (131050, 400, SendOutcome.OPTED_OUT),
    (130429, 400, SendOutcome.RETRY), (131056, 400, SendOutcome.RETRY),
    (131048, 400, SendOutcome.RETRY), (4, 400, SendOutcome.RETRY), (80007, 400, SendOutcome.RETRY),
    (2, 503, SendOutcome.RETRY), (99999, 500, SendOutcome.RETRY), (99999, 429, SendOutcome.RETRY),
    (131026, 400, SendOutcome.FAIL), (100, 400, SendOutcome.FAIL), (190, 401, SendOutcome.FAIL),
    (131049, 400, SendOutcome.FAIL), (99999, 400, SendOutcome.FAIL),
]  # fmt: skip


@pytest.mark.parametrize(("code", "status", "outcome"), REFUSALS)
def test_a_refusal_carries_the_outcome_and_metas_code(
    cloud: CloudSandbox, channel: CloudChannel, tenant: Tenant,
    code: int, status: int, outcome: SendOutcome,
) -> None:  # fmt: skip
    cloud.fail_next(code, status=status, to=USER_WA_ID)
    with pytest.raises(SendFailed) as failed:
        channel.send(_outbound(tenant, "Oi"))
    assert (failed.value.outcome, failed.value.code) == (outcome, code)
    assert f"{code}" in failed.value.reason
    channel.send(_outbound(tenant, "Oi de novo"))  # the error was for one request only
    assert [m["body"] for m in cloud.messages if m["phone_number_id"] ==
            tenant.cloud_phone_number_id] == ["Oi de novo"]  # fmt: skip


def test_a_wrong_token_an_unreachable_api_and_missing_settings_fail_as_they_should(
    cloud: CloudSandbox, tenant: Tenant
) -> None:
    wrong = CloudChannel(Settings(cloud.url), replace(tenant, cloud_access_token="EAAwrong"))
    with pytest.raises(SendFailed) as failed:
        wrong.send(_outbound(tenant, "Oi"))
    assert (failed.value.outcome, failed.value.code) == (SendOutcome.FAIL, 190)

    closed = CloudChannel(Settings("http://127.0.0.1:9"), tenant)
    with pytest.raises(SendFailed) as unreachable:
        closed.send(_outbound(tenant, "Oi"))
    assert (unreachable.value.outcome, unreachable.value.code) == (SendOutcome.RETRY, None)

    for missing in ({"cloud_access_token": None}, {"cloud_phone_number_id": None}):
        channel = CloudChannel(Settings(cloud.url), replace(tenant, **missing))
        with pytest.raises(SendFailed) as unset:
            channel.send(_outbound(tenant, "Oi"))
        assert unset.value.outcome == SendOutcome.FAIL
    assert not [m for m in cloud.messages if m["phone_number_id"] == tenant.cloud_phone_number_id]


def test_typing_marks_the_message_read_with_the_indicator(
    cloud: CloudSandbox, channel: CloudChannel, tenant: Tenant
) -> None:
    channel.send_typing("wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJDQjZCMzlEQUE4OTJBMTE4RTUA")
    (receipt,) = [t for t in cloud.typing if t["phone_number_id"] == tenant.cloud_phone_number_id]
    assert (receipt["message_id"], receipt["typing"]) == (
        "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJDQjZCMzlEQUE4OTJBMTE4RTUA", True)  # fmt: skip
    cloud.fail_next(130429, endpoint="typing")
    with pytest.raises(SendFailed):
        channel.send_typing("wamid.2")


def test_a_voice_note_downloads_in_two_steps_with_the_bearer_token(
    cloud: CloudSandbox, channel: CloudChannel, tenant: Tenant, tmp_path: Path
) -> None:
    assert tenant.cloud_phone_number_id
    clip = make_tone(tmp_path, 1.0).read_bytes()
    media_id = cloud.add_media(clip, "audio/ogg", tenant.cloud_phone_number_id)
    content = {"id": media_id, "mime_type": "audio/ogg; codecs=opus", "voice": True}
    sent = user_message(USER_WA_ID, kind="audio", content=content)
    (message,) = channel.parse(_post(cloud, tenant, sent), "inbound").messages
    (media,) = message.media
    source = channel.media_source(media)
    assert source.auth is not None and media_id in source.url
    policy = MediaPolicy(allowed_hosts=frozenset({urlsplit(cloud.url).netloc}),
                         require_https=False, temp_dir=tmp_path)  # fmt: skip
    with download_media(source.url, media.content_type, policy=policy, auth=source.auth) as file:
        assert file.path.read_bytes() == clip
    assert [f["authorized"] for f in cloud.media_fetches if f["media_id"] == media_id] == [True]

    stranger = CloudChannel(Settings(cloud.url), _tenant(cloud))  # another number's token
    with pytest.raises(MediaRefused):
        stranger.media_source(media)
    with pytest.raises(MediaRefused):
        channel.media_source(replace(media, url="cloud-media:../../me"))
    with pytest.raises(MediaRefused):
        channel.media_source(replace(media, url="https://evil.example/x"))


@pytest.mark.parametrize(
    ("registered", "sent"),
    [("pt", "pt_BR"), ("pt-BR", "pt_BR"), ("en", "en"), ("en-US", "en_US"), (None, "pt_BR")],
)
def test_a_template_goes_out_in_the_language_it_was_registered_in(
    registered: str | None, sent: str
) -> None:
    assert meta_language(registered) == sent
