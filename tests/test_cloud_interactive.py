"""Replies with options on Meta's Cloud API: reply buttons and lists go out as Meta's
interactive messages (numbered text when they cannot), the sandbox refuses what Meta refuses
with Meta's codes, and a press comes back as the option's id, signed as Meta signs it."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from channels.base import (
    BadSignature,
    InvalidRequest,
    OutboundMessage,
    SendFailed,
    SendOutcome,
    WebhookRequest,
)
from channels.choices import BODY_CHARS, OPTION_ID_CHARS, Choices, Option, make_choices
from channels.cloud.channel import WEBHOOK_PATH, CloudChannel, CloudWebhooks
from channels.sandbox._cloud_wire import user_message
from channels.sandbox.cloud import CloudSandbox
from store.records import Tenant
from tests.test_cloud_channel import USER, USER_WA_ID, channel, cloud, tenant

__all__ = ["channel", "cloud", "tenant"]  # the Cloud API channel tests' fixtures


def _outbound(tenant: Tenant, choices: Choices | None, body: str | None = None) -> OutboundMessage:
    text = body if body is not None else (choices.as_text() if choices else "Oi")
    return OutboundMessage(message_id=7, to=USER, sender=tenant.whatsapp_sender, body=text,
                           created_at=datetime.now(UTC), choices=choices)  # fmt: skip


def _sent(cloud: CloudSandbox, tenant: Tenant, count: int = 1) -> list[dict[str, Any]]:
    return cloud.wait_for_messages(count, phone_number_id=tenant.cloud_phone_number_id)


def _request(signed: tuple[bytes, dict[str, str]]) -> WebhookRequest:
    body, headers = signed
    lowered = {k.lower(): v for k, v in headers.items()}
    return WebhookRequest(url=f"https://bot.example.com{WEBHOOK_PATH}", headers=lowered, body=body)


BUTTONS = make_choices("Desfazer o gasto de R$ 50?", [Option("undo:17", "Desfazer")])
THREE = make_choices("Qual conta?", [Option("acc:1", "Nubank"), Option("acc:2", "Itaú"),
                                     Option("acc:3", "Dinheiro vivo")])  # fmt: skip
LIST = make_choices(
    "Qual lançamento apagar?",
    [Option(f"entry:{i}", f"Lançamento {i}", f"R$ {i}0,00" if i % 2 else "") for i in range(10)],
    button="Ver lançamentos",
)


# -- sending -----------------------------------------------------------------------


@pytest.mark.parametrize("choices", [BUTTONS, THREE], ids=["one", "three"])
def test_buttons_go_out_as_metas_reply_buttons(
    cloud: CloudSandbox, channel: CloudChannel, tenant: Tenant, choices: Choices
) -> None:
    result = channel.send(_outbound(tenant, choices))
    (stored,) = _sent(cloud, tenant)
    assert (stored["id"], stored["type"], stored["body"], stored["opaque"]) == (
        result.provider_message_id, "interactive", choices.body, "outbox:7")  # fmt: skip
    assert stored["interactive"] == {
        "type": "button",
        "body": {"text": choices.body},
        "action": {"buttons": [{"type": "reply", "reply": {"id": o.id, "title": o.title}}
                               for o in choices.options]},
    }  # fmt: skip
    assert stored["choices"] == {
        "type": "buttons", "button": "",
        "options": [{"id": o.id, "title": o.title, "description": ""} for o in choices.options],
    }  # fmt: skip


def test_ten_rows_go_out_as_metas_list_without_empty_descriptions(
    cloud: CloudSandbox, channel: CloudChannel, tenant: Tenant
) -> None:
    channel.send(_outbound(tenant, LIST))
    (stored,) = _sent(cloud, tenant)
    interactive = stored["interactive"]
    assert (interactive["type"], interactive["body"], interactive["action"]["button"]) == (
        "list", {"text": LIST.body}, "Ver lançamentos")  # fmt: skip
    (section,) = interactive["action"]["sections"]
    assert section["title"] == "Ver lançamentos"
    assert section["rows"][:2] == [
        {"id": "entry:0", "title": "Lançamento 0"},
        {"id": "entry:1", "title": "Lançamento 1", "description": "R$ 10,00"},
    ]
    assert len(section["rows"]) == 10
    assert stored["choices"] == {"type": "list", "button": "Ver lançamentos",
                                 "options": LIST.to_json()["options"]}  # fmt: skip


def test_a_send_without_choices_is_the_plain_text_it_was(
    cloud: CloudSandbox, channel: CloudChannel, tenant: Tenant
) -> None:
    channel.send(_outbound(tenant, None, "Olá"))
    (stored,) = _sent(cloud, tenant)
    assert stored["payload"] == {
        "messaging_product": "whatsapp", "recipient_type": "individual", "to": USER_WA_ID,
        "biz_opaque_callback_data": "outbox:7", "type": "text",
        "text": {"preview_url": False, "body": "Olá"},
    }  # fmt: skip
    assert (stored["choices"], stored["interactive"]) == (None, None)


def test_a_body_too_long_for_buttons_goes_as_numbered_text(
    cloud: CloudSandbox, channel: CloudChannel, tenant: Tenant
) -> None:
    long = make_choices("x" * (BODY_CHARS + 1), [Option("a", "Sim"), Option("b", "Não")])
    channel.send(_outbound(tenant, long))
    (stored,) = _sent(cloud, tenant)
    assert (stored["type"], stored["choices"]) == ("text", None)
    assert stored["body"] == long.as_text()
    assert stored["body"].endswith("\n\n1. Sim\n2. Não")


# -- what Meta refuses ---------------------------------------------------------------


def _buttons(*titles: str, ids: tuple[str, ...] = ()) -> dict[str, Any]:
    buttons = [{"type": "reply", "reply": {"id": ids[i] if ids else f"b{i}", "title": t}}
               for i, t in enumerate(titles)]  # fmt: skip
    return {"type": "button", "body": {"text": "Qual?"}, "action": {"buttons": buttons}}


def _list(*rows: dict[str, Any], button: str = "Ver") -> dict[str, Any]:
    return {
        "type": "list",
        "body": {"text": "Qual?"},
        "action": {"button": button, "sections": [{"title": "Opções", "rows": list(rows)}]},
    }


def _row(i: int, title: str | None = None, **extra: str) -> dict[str, Any]:
    return {"id": f"r{i}", "title": title or f"Linha {i}", **extra}


REFUSED = [
    ("four buttons", _buttons("a", "b", "c", "d"), 131009),
    ("a 21-character button title", _buttons("x" * 21), 131009),
    ("repeated button ids", _buttons("Sim", "Não", ids=("same", "same")), 131009),
    ("repeated button titles", _buttons("Sim", "Sim"), 131009),
    ("a 257-character button id", _buttons("Sim", ids=("i" * 257,)), 131009),
    ("eleven rows", _list(*(_row(i) for i in range(11))), 131009),
    ("a 25-character row title", _list(_row(0, "y" * 25)), 131009),
    ("a 73-character row description", _list(_row(0, description="d" * 73)), 131009),
    ("repeated row ids", _list(_row(0), {"id": "r0", "title": "Outra"}), 131009),
    ("a 21-character list button", _list(_row(0), button="z" * 21), 131009),
    ("a body over 1024 characters", {**_buttons("Sim"), "body": {"text": "b" * 1025}}, 131009),
    ("a button without a title", _buttons(""), 100),
    ("a list without a button label", _list(_row(0), button=""), 100),
]  # fmt: skip


@pytest.mark.parametrize(("what", "interactive", "code"), REFUSED, ids=[r[0] for r in REFUSED])
def test_the_sandbox_refuses_what_meta_refuses_with_metas_code(
    cloud: CloudSandbox, tenant: Tenant, what: str, interactive: dict[str, Any], code: int
) -> None:
    payload = {"messaging_product": "whatsapp", "to": USER_WA_ID, "type": "interactive",
               "interactive": interactive}  # fmt: skip
    headers = {"Authorization": f"Bearer {tenant.cloud_access_token}"}
    url = f"{cloud.url}/v21.0/{tenant.cloud_phone_number_id}/messages"
    response = httpx.post(url, json=payload, headers=headers)
    assert response.status_code == 400, what
    error = response.json()["error"]
    assert error["code"] == code and f"(#{code})" in error["message"]
    assert not [m for m in cloud.messages if m["phone_number_id"] == tenant.cloud_phone_number_id]


def test_the_sandbox_takes_metas_limits_exactly(cloud: CloudSandbox, tenant: Tenant) -> None:
    headers = {"Authorization": f"Bearer {tenant.cloud_access_token}"}
    url = f"{cloud.url}/{tenant.cloud_phone_number_id}/messages"
    payload = {"messaging_product": "whatsapp", "to": USER_WA_ID, "type": "interactive"}
    edge_buttons = _buttons("a" * 20, "b", "c", ids=("i" * 256, "j", "k"))
    edge_list = _list(*(_row(i, "t" * 24, description="d" * 72) for i in range(10)),
                      button="v" * 20)  # fmt: skip
    for interactive in (edge_buttons, edge_list):
        response = httpx.post(url, json=payload | {"interactive": interactive}, headers=headers)
        assert response.status_code == 200, response.text
    buttons, listed = _sent(cloud, tenant, 2)
    assert [o["id"] for o in buttons["choices"]["options"]] == ["i" * 256, "j", "k"]
    assert listed["choices"]["button"] == "v" * 20 and len(listed["choices"]["options"]) == 10


def test_a_refused_interactive_send_is_a_failure_with_metas_code(
    cloud: CloudSandbox, channel: CloudChannel, tenant: Tenant
) -> None:
    duplicated = Choices("Qual?", (Option("same", "Sim"), Option("same", "Não")))
    with pytest.raises(SendFailed) as failed:
        channel.send(_outbound(tenant, duplicated))
    assert (failed.value.outcome, failed.value.code) == (SendOutcome.FAIL, 131009)


# -- presses coming back ---------------------------------------------------------------


INBOUND = [
    ("interactive",
     {"type": "button_reply", "button_reply": {"id": "undo:17", "title": "Desfazer"}},
     "Desfazer", "undo:17"),
    ("interactive", {"type": "list_reply", "list_reply": {
        "id": "entry:3", "title": "Mercado", "description": "R$ 50"}}, "Mercado", "entry:3"),
    ("button", {"payload": "STOP_PROMOS", "text": "Parar promoções"}, "Parar promoções",
     "STOP_PROMOS"),
]  # fmt: skip


@pytest.mark.parametrize(("kind_name", "content", "body", "choice"), INBOUND)
def test_a_press_is_read_as_the_options_id_with_its_title_as_the_body(
    cloud: CloudSandbox, channel: CloudChannel, tenant: Tenant,
    kind_name: str, content: dict[str, Any], body: str, choice: str,
) -> None:  # fmt: skip
    assert tenant.cloud_phone_number_id
    signed = cloud.signed_inbound(tenant.cloud_phone_number_id, USER_WA_ID, kind=kind_name,
                                  content=content)  # fmt: skip
    (message,) = channel.parse(_request(signed), "inbound").messages
    assert (message.kind, message.body, message.choice) == ("button", body, choice)


def test_a_text_has_no_choice(cloud: CloudSandbox, channel: CloudChannel, tenant: Tenant) -> None:
    assert tenant.cloud_phone_number_id
    signed = cloud.signed_inbound(tenant.cloud_phone_number_id, USER_WA_ID, "1")
    (message,) = channel.parse(_request(signed), "inbound").messages
    assert (message.kind, message.body, message.choice) == ("text", "1", None)


@pytest.mark.parametrize("reply_type", ["button_reply", "list_reply", "button"])
def test_an_option_id_over_metas_256_characters_is_refused(
    cloud: CloudSandbox, channel: CloudChannel, tenant: Tenant, reply_type: str
) -> None:
    assert tenant.cloud_phone_number_id and OPTION_ID_CHARS < 256
    for length, refused in ((256, False), (257, True)):
        option_id = "i" * length
        if reply_type == "button":
            kind, content = "button", {"payload": option_id, "text": "Sim"}
        else:
            kind = "interactive"
            content = {"type": reply_type, reply_type: {"id": option_id, "title": "Sim"}}
        request = _request(cloud.signed_inbound(tenant.cloud_phone_number_id, USER_WA_ID,
                                                kind=kind, content=content))  # fmt: skip
        if refused:
            with pytest.raises(InvalidRequest) as invalid:
                channel.parse(request, "inbound")
            assert invalid.value.code == "invalid_message"
        else:
            (message,) = channel.parse(request, "inbound").messages
            assert message.choice == option_id


@pytest.mark.parametrize("choices", [THREE, LIST], ids=["buttons", "list"])
def test_signed_press_round_trips_through_the_webhook(
    cloud: CloudSandbox, channel: CloudChannel, tenant: Tenant, choices: Choices
) -> None:
    assert tenant.cloud_phone_number_id
    channel.send(_outbound(tenant, choices))
    (record,) = _sent(cloud, tenant)
    signed = cloud.signed_press(tenant.cloud_phone_number_id, USER_WA_ID, record, 2,
                                wamid="wamid.press-2")  # fmt: skip
    request = _request(signed)
    assert CloudWebhooks().addressee(request, "inbound") == tenant.whatsapp_sender
    (message,) = channel.parse(request, "inbound").messages
    option = choices.options[1]
    read = (message.provider_message_id, message.sender, message.kind, message.body)
    assert read == ("wamid.press-2", USER, "button", option.title)
    assert message.choice == option.id
    display = tenant.whatsapp_sender.removeprefix("whatsapp:+")
    assert message.payload["context"] == {"from": display, "id": record["id"]}
    reply_type = "button_reply" if choices.kind == "buttons" else "list_reply"
    reply = message.payload["interactive"][reply_type]
    assert reply["id"] == option.id and reply.get("description", "") == option.description
    by_wamid = cloud.signed_press(tenant.cloud_phone_number_id, USER_WA_ID, record["id"], 3)
    (third,) = channel.parse(_request(by_wamid), "inbound").messages
    assert third.choice == choices.options[2].id
    tampered = replace(request, body=request.body.replace(option.id.encode(), b"acc:9"))
    with pytest.raises(BadSignature):
        channel.parse(tampered, "inbound")


def test_signed_press_refuses_what_a_user_could_not_press(
    cloud: CloudSandbox, channel: CloudChannel, tenant: Tenant
) -> None:
    assert tenant.cloud_phone_number_id
    number_id = tenant.cloud_phone_number_id
    channel.send(_outbound(tenant, BUTTONS))
    channel.send(_outbound(tenant, None, "Só texto"))
    buttons, text = _sent(cloud, tenant, 2)
    with pytest.raises(ValueError, match="out of"):
        cloud.signed_press(number_id, USER_WA_ID, buttons, 2)
    with pytest.raises(ValueError, match="no buttons"):
        cloud.signed_press(number_id, USER_WA_ID, text, 1)
    with pytest.raises(ValueError, match="not sent"):
        cloud.signed_press(number_id, "5511000000000", buttons, 1)
    with pytest.raises(KeyError):
        cloud.signed_press(number_id, USER_WA_ID, "wamid.unknown", 1)
    body, _ = cloud.signed_press(number_id, USER_WA_ID, buttons, 1)
    (sent,) = json.loads(body)["entry"][0]["changes"][0]["value"]["messages"]
    assert sent == user_message(USER_WA_ID, wamid=sent["id"], kind="interactive", content={
        "type": "button_reply", "button_reply": {"id": "undo:17", "title": "Desfazer"}},
        context={"from": tenant.whatsapp_sender.removeprefix("whatsapp:+"),
                 "id": buttons["id"]}) | {"timestamp": sent["timestamp"]}  # fmt: skip
