"""Replies with options on Twilio: quick-reply and list-picker content, one resource per shape
per account, rendered by the sandbox into what the user sees, and the presses that come back."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client
from twilio.rest.content.v1.content import ContentList

from channels.base import OutboundMessage, SendFailed, SendOutcome, WebhookRequest
from channels.choices import OPTION_ID_CHARS, Choices, Option, make_choices
from channels.registry import channel_for
from channels.sandbox.twilio import TwilioSandbox, press_form
from channels.twilio.channel import TwilioChannel
from channels.twilio.content import NO_DESCRIPTION
from channels.twilio.inbound import parse_inbound, sign
from server.settings import Settings
from store.records import Tenant
from tests.conftest import USER, inbound_form

FRUITS = (Option("apple", "Maçã"), Option("pear", "Pera"), Option("plum", "Ameixa"))


def _channel(settings: Settings, tenant: Tenant) -> TwilioChannel:
    channel = channel_for(settings, tenant)
    assert isinstance(channel, TwilioChannel)
    return channel


def _outbound(tenant: Tenant, choices: Choices | None, body: str = "") -> OutboundMessage:
    text = body or (choices.as_text() if choices else "Oi")
    return OutboundMessage(message_id=1, to=USER, sender=tenant.whatsapp_sender, body=text,
                           created_at=datetime.now(UTC), choices=choices)  # fmt: skip


def _rows(count: int) -> list[Option]:
    return [
        Option(f"row-{n}", f"Opção {n}", f"Descrição {n}" if n % 2 else "")
        for n in range(1, count + 1)
    ]


def _names(client: Client) -> list[str]:
    return sorted(str(c.friendly_name) for c in client.content.v1.contents.list())


def _create(client: Client, content_type: str, spec: dict[str, Any]) -> str:
    request = ContentList.ContentCreateRequest(
        {"friendly_name": "test", "language": "pt", "types": {content_type: spec}}
    )
    return str(client.content.v1.contents.create(content_create_request=request).sid)


def _signed(settings: Settings, tenant: Tenant, form: dict[str, str]) -> WebhookRequest:
    url = settings.public_url("/webhooks/inbound")
    headers = {
        "content-type": "application/x-www-form-urlencoded",
        "x-twilio-signature": sign(tenant.twilio_auth_token, url, form),
    }
    return WebhookRequest(url=url, headers=headers, body=urlencode(form).encode())


@pytest.mark.parametrize("count", [1, 3])
def test_buttons_go_out_as_quick_reply_content(
    settings: Settings, tenant: Tenant, sandbox: TwilioSandbox, count: int
) -> None:
    choices = make_choices("Qual fruta?", FRUITS[:count])
    sent = _channel(settings, tenant).send(_outbound(tenant, choices))

    [record] = sandbox.messages
    assert record["sid"] == sent.provider_message_id
    assert record["content_sid"].startswith("HX") and record["body"] == "Qual fruta?"
    assert record["choices"] == {
        "type": "buttons",
        "button": "",
        "options": [{"id": o.id, "title": o.title, "description": ""} for o in FRUITS[:count]],
    }
    assert json.loads(record["content_variables"])["1"] == "Qual fruta?"


def test_a_list_of_ten_rows_goes_out_as_list_picker_content(
    settings: Settings, tenant: Tenant, sandbox: TwilioSandbox
) -> None:
    choices = make_choices("Escolha um horário", _rows(10), button="Ver horários")
    _channel(settings, tenant).send(_outbound(tenant, choices))

    [record] = sandbox.messages
    assert record["body"] == "Escolha um horário"
    assert record["choices"]["type"] == "list"
    assert record["choices"]["button"] == "Ver horários"
    assert record["choices"]["options"] == [
        {"id": o.id, "title": o.title, "description": o.description or NO_DESCRIPTION}
        for o in choices.options
    ]


def test_one_content_per_shape_per_account_found_or_created_once(
    settings: Settings, tenant: Tenant, sandbox: TwilioSandbox
) -> None:
    channel = _channel(settings, tenant)
    _create(channel.client, "twilio/text", {"body": "Oi {{1}}"})
    request = ContentList.ContentCreateRequest({
        "friendly_name": "conversa_quick_reply_1", "language": "en",
        "types": {"twilio/quick-reply": {"body": "{{1}}",
                                         "actions": [{"title": "{{2}}", "id": "{{3}}"}]}},
    })  # fmt: skip
    ours = channel.client.content.v1.contents.create(content_create_request=request).sid

    channel.send(_outbound(tenant, make_choices("Um?", FRUITS[:1])))
    channel.send(_outbound(tenant, make_choices("Dois?", FRUITS[:2])))
    channel.send(_outbound(tenant, make_choices("Outros dois?", FRUITS[1:])))
    channel.send(_outbound(tenant, make_choices("Lista?", _rows(4), button="Abrir")))
    _channel(settings, tenant).send(
        _outbound(tenant, make_choices("De novo?", _rows(4), button="X"))
    )

    assert sandbox.messages[0]["content_sid"] == ours
    assert len({m["content_sid"] for m in sandbox.messages[1:3]}) == 1
    assert sandbox.messages[3]["content_sid"] == sandbox.messages[4]["content_sid"]
    assert _names(channel.client) == [
        "conversa_list_picker_4", "conversa_quick_reply_1", "conversa_quick_reply_2", "test"
    ]  # fmt: skip
    assert [m["body"] for m in sandbox.messages] == [
        "Um?", "Dois?", "Outros dois?", "Lista?", "De novo?"
    ]  # fmt: skip


def test_a_long_body_travels_in_variables_of_at_most_255_characters(
    settings: Settings, tenant: Tenant, sandbox: TwilioSandbox
) -> None:
    question = ("Qual destas frutas você prefere para a salada de amanhã? " * 10).strip()
    assert 2 * 255 < len(question) <= 3 * 255 - 32
    channel = _channel(settings, tenant)
    channel.send(_outbound(tenant, make_choices(question, FRUITS[:2])))

    [record] = sandbox.messages
    assert record["body"] == question
    assert all(len(v) <= 255 for v in json.loads(record["content_variables"]).values())
    assert _names(channel.client) == ["conversa_quick_reply_2_body3"]


def test_without_interactive_choices_the_body_goes_out_as_before(
    settings: Settings, tenant: Tenant, sandbox: TwilioSandbox
) -> None:
    channel = _channel(settings, tenant)
    channel.send(_outbound(tenant, None, "Só texto"))
    long = make_choices("x" * 1100, FRUITS)
    channel.send(_outbound(tenant, long))

    plain, numbered = sandbox.messages
    assert (plain["body"], plain["content_sid"], plain["choices"]) == ("Só texto", None, None)
    assert numbered["body"] == long.as_text() and numbered["content_sid"] is None
    assert numbered["choices"] is None
    assert _names(channel.client) == []


def test_find_sent_matches_an_interrupted_interactive_send(
    settings: Settings, tenant: Tenant, sandbox: TwilioSandbox
) -> None:
    channel = _channel(settings, tenant)
    message = _outbound(tenant, make_choices("Confirma?", FRUITS[:2]))
    sent = channel.send(message)

    assert sandbox.messages[0]["body"] != message.body
    assert channel.find_sent(message) == sent
    other = replace(message, body="1. Outra", choices=make_choices("Outra?", FRUITS[:2]))
    assert channel.find_sent(other) is None


def test_a_content_api_refusal_is_a_send_failure(settings: Settings, tenant: Tenant) -> None:
    wrong = _channel(settings, replace(tenant, twilio_auth_token="not-the-token"))
    with pytest.raises(SendFailed) as info:
        wrong.send(_outbound(tenant, make_choices("Sim?", FRUITS[:1])))
    assert info.value.outcome is SendOutcome.FAIL and info.value.code == 20003


def test_content_deleted_at_twilio_is_forgotten_and_created_again(
    settings: Settings, tenant: Tenant, sandbox: TwilioSandbox
) -> None:
    channel = _channel(settings, tenant)
    message = _outbound(tenant, make_choices("Sim?", FRUITS[:1]))
    channel.send(message)
    sandbox.contents.clear()

    with pytest.raises(SendFailed) as info:
        channel.send(message)
    assert (info.value.outcome, info.value.code) == (SendOutcome.RETRY, 21655)
    channel.send(message)
    assert _names(channel.client) == ["conversa_quick_reply_1"]
    assert [m["body"] for m in sandbox.messages] == ["Sim?", "Sim?"]


def test_presses_parse_into_the_option_id(tenant: Tenant) -> None:
    button = parse_inbound(inbound_form(tenant, "Sim", ButtonText="Sim", ButtonPayload="yes"))
    row = parse_inbound(
        inbound_form(tenant, "Pera", ListId="pear", ListTitle="Pera", ListDescription="Doce")
    )
    text = parse_inbound(inbound_form(tenant, "pera"))

    assert (button.kind, button.choice, button.body) == ("button", "yes", "Sim")
    assert (row.kind, row.choice, row.body) == ("button", "pear", "Pera")
    assert (text.kind, text.choice) == ("text", None)
    # An id longer than any we send names none of our options: the press stays the user's
    # words (its title), never refused, since Twilio does not post a refused message again.
    long_button = parse_inbound(
        inbound_form(tenant, "Sim", ButtonPayload="x" * (OPTION_ID_CHARS + 1))
    )
    long_row = parse_inbound(inbound_form(tenant, "", ListId="x" * (OPTION_ID_CHARS + 1),
                                          ListTitle="Pera"))  # fmt: skip
    assert (long_button.kind, long_button.choice, long_button.body) == ("button", None, "Sim")
    assert (long_row.kind, long_row.choice, long_row.body) == ("button", None, "Pera")


@pytest.mark.parametrize(
    ("choices", "number"),
    [
        (make_choices("Qual?", FRUITS), 2),
        (make_choices("Qual?", _rows(5), button="Ver"), 3),
        (make_choices("Qual?", _rows(5), button="Ver"), 4),
    ],
)
def test_a_press_in_the_sandbox_round_trips_through_the_webhook(
    settings: Settings, tenant: Tenant, sandbox: TwilioSandbox, choices: Choices, number: int
) -> None:
    channel = _channel(settings, tenant)
    channel.send(_outbound(tenant, choices))
    extra = press_form(sandbox.messages[0], number)
    form = inbound_form(tenant, extra.pop("Body"), **extra)

    [pressed] = channel.parse(_signed(settings, tenant, form), "inbound").messages
    option = choices.options[number - 1]
    assert (pressed.kind, pressed.choice, pressed.body) == ("button", option.id, option.title)
    assert pressed.payload["OriginalRepliedMessageSid"] == sandbox.messages[0]["sid"]
    described = extra.get("ListDescription")
    assert described == (option.description or NO_DESCRIPTION if choices.button else None)
    with pytest.raises(ValueError):
        press_form(sandbox.messages[0], len(choices.options) + 1)


def test_sandbox_refuses_what_whatsapp_would_not_show(
    settings: Settings, tenant: Tenant, sandbox: TwilioSandbox
) -> None:
    client = _channel(settings, tenant).client
    four = _create(client, "twilio/quick-reply", {
        "body": "Qual?", "actions": [{"title": f"Opção {n}", "id": f"o{n}"} for n in range(4)],
    })  # fmt: skip
    long_title = _create(client, "twilio/quick-reply", {
        "body": "Qual?", "actions": [{"title": "{{1}}", "id": "a"}],
    })  # fmt: skip

    def send(sid: str, variables: dict[str, str] | None = None) -> int:
        with pytest.raises(TwilioRestException) as info:
            client.messages.create(to=USER, from_=tenant.whatsapp_sender, content_sid=sid,
                                   content_variables=json.dumps(variables or {}))  # fmt: skip
        return int(info.value.code)

    assert send(four) == 63005
    assert send(long_title, {"1": "x" * 21}) == 63005
    assert send(long_title, {"1": ""}) == 21656
    assert sandbox.messages == []
    client.messages.create(to=USER, from_=tenant.whatsapp_sender, content_sid=long_title,
                           content_variables=json.dumps({"1": "x" * 20}))  # fmt: skip
    assert sandbox.messages[0]["choices"]["options"][0]["title"] == "x" * 20

    with pytest.raises(TwilioRestException) as info:
        _create(client, "twilio/list-picker", {
            "body": "Qual?", "button": "Ver",
            "items": [{"item": f"Opção {n}", "id": f"o{n}", "description": "d"} for n in range(11)],
        })  # fmt: skip
    assert (info.value.status, info.value.code) == (400, 20001)


def test_a_list_picker_cannot_be_submitted_but_a_quick_reply_can(
    settings: Settings, tenant: Tenant, sandbox: TwilioSandbox
) -> None:
    from twilio.rest.content.v1.content.approval_create import ApprovalCreateList

    client = _channel(settings, tenant).client
    listing = _create(client, "twilio/list-picker", {
        "body": "Qual?", "button": "Ver", "items": [{"item": "Um", "id": "1", "description": "d"}],
    })  # fmt: skip
    four = _create(client, "twilio/quick-reply", {
        "body": "Qual?", "actions": [{"title": f"Opção {n}", "id": f"o{n}"} for n in range(4)],
    })  # fmt: skip
    approval = ApprovalCreateList.ContentApprovalRequest({"name": "four", "category": "UTILITY"})

    with pytest.raises(TwilioRestException) as info:
        client.content.v1.contents(listing).approval_create.create(approval)
    assert info.value.status == 400
    client.content.v1.contents(four).approval_create.create(approval)
    client.messages.create(to=USER, from_=tenant.whatsapp_sender, content_sid=four)
    assert len(sandbox.messages[0]["choices"]["options"]) == 4


def test_contents_list_in_pages(settings: Settings, tenant: Tenant) -> None:
    client = _channel(settings, tenant).client
    sids = [
        _create(
            client, "twilio/quick-reply", {"body": f"{n}?", "actions": [{"title": "a", "id": "a"}]}
        )
        for n in range(5)
    ]
    assert [c.sid for c in client.content.v1.contents.list(page_size=2)] == sids
    assert [c.sid for c in client.content.v1.contents.list(limit=3, page_size=2)] == sids[:3]
