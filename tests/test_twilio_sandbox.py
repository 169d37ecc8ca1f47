"""Tests for the local Twilio sandbox and the redirecting Twilio client."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from channels.sandbox.twilio import TwilioSandbox
from channels.twilio.client import RedirectingHttpClient, make_twilio_client

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "sandbox-token"
FROM = "whatsapp:+14155238886"
TO = "whatsapp:+5511999990000"
OTHER = "whatsapp:+5511988880000"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def sandbox() -> Iterator[TwilioSandbox]:
    """Run a sandbox that only accepts the test account."""
    with TwilioSandbox(accounts={ACCOUNT_SID: AUTH_TOKEN}) as running:
        yield running


@pytest.fixture
def client(sandbox: TwilioSandbox) -> Client:
    """Build the real twilio client pointed at the sandbox."""
    return make_twilio_client(ACCOUNT_SID, AUTH_TOKEN, api_base_url=sandbox.url)


def send(client: Client, body: str = "hello", to: str = TO) -> str:
    """Send a WhatsApp message through the client and return its SID."""
    return client.messages.create(to=to, from_=FROM, body=body).sid


def test_create_list_and_fetch(sandbox: TwilioSandbox, client: Client) -> None:
    message = client.messages.create(
        to=TO,
        from_=FROM,
        body="Olá! 👋",
        status_callback="https://example.test/status",
    )

    assert message.sid.startswith("SM") and len(message.sid) == 34
    assert message.account_sid == ACCOUNT_SID
    assert (message.to, message.from_, message.body) == (TO, FROM, "Olá! 👋")
    assert message.status == "queued"
    assert message.direction == "outbound-api"
    assert message.num_segments == "1"
    assert message.num_media == "0"
    assert message.api_version == "2010-04-01"
    assert message.date_created is not None and message.date_created.tzinfo is not None
    assert message.date_sent is not None
    assert message.price is None and message.error_code is None
    assert message.uri == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{message.sid}.json"

    [stored] = sandbox.messages
    assert stored["sid"] == message.sid
    assert stored["status_callback"] == "https://example.test/status"
    stored["body"] = "mutated"
    assert sandbox.messages[0]["body"] == "Olá! 👋"

    listed = client.messages.list(to=TO)
    assert [m.sid for m in listed] == [message.sid]
    assert client.messages.list(to=OTHER) == []

    fetched = client.messages(message.sid).fetch()
    assert (fetched.sid, fetched.body, fetched.to) == (message.sid, "Olá! 👋", TO)


def test_media_and_content_template(sandbox: TwilioSandbox, client: Client) -> None:
    sandbox.add_content("Olá {{1}}, tudo bem?", account_sid=ACCOUNT_SID, sid="HX" + "1" * 32)
    media = client.messages.create(
        to=TO, from_=FROM, media_url=["https://example.test/a.png", "https://example.test/b.png"]
    )
    template = client.messages.create(
        to=TO,
        messaging_service_sid="MG" + "0" * 32,
        content_sid="HX" + "1" * 32,
        content_variables=json.dumps({"1": "Ana"}),
    )

    assert media.num_media == "2"
    assert template.messaging_service_sid == "MG" + "0" * 32
    assert template.body == "Olá Ana, tudo bem?"
    first, second = sandbox.messages
    assert first["media_urls"] == ["https://example.test/a.png", "https://example.test/b.png"]
    assert second["content_sid"] == "HX" + "1" * 32
    assert json.loads(second["content_variables"]) == {"1": "Ana"}
    assert second["body"] == "Olá Ana, tudo bem?"


def test_content_api_creates_templates_and_reports_approval(
    sandbox: TwilioSandbox, client: Client
) -> None:
    from twilio.rest.content.v1.content import ContentList

    request = ContentList.ContentCreateRequest(
        {
            "friendly_name": "lembrete",
            "language": "pt",
            "variables": {"1": "a conta de luz"},
            "types": {"twilio/text": {"body": "⏰ Lembrete: {{1}}"}},
        }
    )
    created = client.content.v1.contents.create(content_create_request=request)
    assert created.sid.startswith("HX") and created.language == "pt"
    fetched = client.content.v1.contents(created.sid).fetch()
    assert fetched.types == {"twilio/text": {"body": "⏰ Lembrete: {{1}}"}}
    approval = client.content.v1.contents(created.sid).approval_fetch().fetch()
    assert approval.whatsapp["status"] == "unsubmitted"

    sandbox.contents.set_approval(created.sid, "rejected", "Variables at the edges.")
    again = client.content.v1.contents(created.sid).approval_fetch().fetch()
    assert (again.whatsapp["status"], again.whatsapp["rejection_reason"]) == (
        "rejected",
        "Variables at the edges.",
    )
    with pytest.raises(TwilioRestException) as unknown:
        client.content.v1.contents("HX" + "9" * 32).approval_fetch().fetch()
    assert unknown.value.status == 404


def test_a_template_submitted_to_whatsapp_is_approved_by_the_sandbox(client: Client) -> None:
    from twilio.rest.content.v1.content import ContentList
    from twilio.rest.content.v1.content.approval_create import ApprovalCreateList

    request = ContentList.ContentCreateRequest(
        {"language": "pt", "types": {"twilio/text": {"body": "⏰ Lembrete: {{1}}"}}}
    )
    sid = client.content.v1.contents.create(content_create_request=request).sid
    with pytest.raises(TwilioRestException) as bad:  # WhatsApp names are lowercase_with_underscores
        client.content.v1.contents(sid).approval_create.create(
            ApprovalCreateList.ContentApprovalRequest({"name": "Lembrete!", "category": "UTILITY"})
        )
    assert bad.value.status == 400
    assert client.content.v1.contents(sid).approval_fetch().fetch().whatsapp["status"] == (
        "unsubmitted"
    )

    submitted = client.content.v1.contents(sid).approval_create.create(
        ApprovalCreateList.ContentApprovalRequest({"name": "lembrete", "category": "UTILITY"})
    )

    assert (submitted.name, submitted.status) == ("lembrete", "approved")
    assert client.content.v1.contents(sid).approval_fetch().fetch().whatsapp["status"] == (
        "approved"
    )


@pytest.mark.parametrize(
    ("sid", "variables", "code"),
    [
        ("HX" + "2" * 32, {"1": "x", "2": "y"}, 21655),  # no such template
        ("HX" + "1" * 32, {"1": "x"}, 21656),  # {{2}} left empty
        ("HX" + "1" * 32, {"1": "x", "2": "  "}, 21656),
        ("HX" + "3" * 32, {"1": "x", "2": "y"}, 63027),  # WhatsApp has not approved it
    ],
)
def test_template_sends_must_fit_the_template(
    sandbox: TwilioSandbox, client: Client, sid: str, variables: dict[str, str], code: int
) -> None:
    sandbox.add_content("{{1}} às {{2}}", account_sid=ACCOUNT_SID, sid="HX" + "1" * 32)
    sandbox.add_content("{{1}} às {{2}}", account_sid=ACCOUNT_SID, sid="HX" + "3" * 32,
                        status="pending")  # fmt: skip
    with pytest.raises(TwilioRestException) as info:
        client.messages.create(
            to=TO, from_=FROM, content_sid=sid, content_variables=json.dumps(variables)
        )
    assert (info.value.status, info.value.code) == (400, code)
    assert sandbox.messages == []


@pytest.mark.parametrize("variables", ['["x", "y"]', '"x"', "null", "{not json"])
def test_content_variables_that_are_not_an_object_are_21656(
    sandbox: TwilioSandbox, variables: str
) -> None:
    from channels.sandbox._wire import ApiError

    sid = sandbox.add_content("{{1}} às {{2}}", account_sid=ACCOUNT_SID)
    with pytest.raises(ApiError) as info:
        sandbox.contents.render(ACCOUNT_SID, sid, variables)
    assert (info.value.status, info.value.payload["code"]) == (400, 21656)


def test_fetch_unknown_message_is_404(client: Client) -> None:
    with pytest.raises(TwilioRestException) as info:
        client.messages("SM" + "f" * 32).fetch()
    assert (info.value.status, info.value.code) == (404, 20404)


def test_wrong_auth_token_is_rejected(sandbox: TwilioSandbox) -> None:
    bad = make_twilio_client(ACCOUNT_SID, "wrong-token", api_base_url=sandbox.url)
    with pytest.raises(TwilioRestException) as info:
        send(bad)
    assert (info.value.status, info.value.code) == (401, 20003)
    assert sandbox.messages == []


def test_unknown_account_is_rejected(sandbox: TwilioSandbox) -> None:
    other = make_twilio_client("AC" + "9" * 32, AUTH_TOKEN, api_base_url=sandbox.url)
    with pytest.raises(TwilioRestException) as info:
        send(other)
    assert (info.value.status, info.value.code) == (401, 20003)

    # Paged reads don't raise TwilioRestException: Page wraps any non-200 in a bare
    # TwilioException whose second arg is the raw response.
    with pytest.raises(TwilioException) as page_info:
        other.messages.list()
    assert not isinstance(page_info.value, TwilioRestException)
    assert page_info.value.args[1].status_code == 401


def test_any_credentials_accepted_without_accounts() -> None:
    with TwilioSandbox() as open_sandbox:
        anyone = make_twilio_client("AC" + "1" * 32, "whatever", api_base_url=open_sandbox.url)
        send(anyone)
        assert open_sandbox.messages[0]["account_sid"] == "AC" + "1" * 32


def test_injected_error_fails_once(sandbox: TwilioSandbox, client: Client) -> None:
    sandbox.inject_error(63016)

    with pytest.raises(TwilioRestException) as info:
        send(client)
    assert (info.value.code, info.value.status) == (63016, 400)
    assert "outside the allowed window" in info.value.msg

    send(client)
    assert len(sandbox.messages) == 1


def test_injected_error_only_for_recipient(sandbox: TwilioSandbox, client: Client) -> None:
    sandbox.inject_error(21610, message="unsubscribed", times=2, to=OTHER)

    send(client, to=TO)
    for _ in range(2):
        with pytest.raises(TwilioRestException) as info:
            send(client, to=OTHER)
        assert info.value.code == 21610
    send(client, to=OTHER)
    assert [m["to"] for m in sandbox.messages] == [TO, OTHER]


def test_rate_limit_is_not_retried_by_client(sandbox: TwilioSandbox, client: Client) -> None:
    # If the twilio client retried on 429, this create would succeed on its second try.
    sandbox.inject_error(20429, status=429)

    with pytest.raises(TwilioRestException) as info:
        send(client)
    assert (info.value.status, info.value.code) == (429, 20429)
    assert sandbox.messages == []

    send(client)
    assert len(sandbox.messages) == 1


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"to": "", "from_": FROM, "body": "hi"}, 21604),
        ({"to": TO, "from_": FROM}, 21602),
        ({"to": TO, "body": "hi"}, 21603),
        ({"to": TO, "from_": FROM, "body": "x" * 1601}, 21617),
        ({"to": TO, "from_": FROM, "content_sid": "HX1", "content_variables": "{"}, 21656),
    ],
)
def test_validation_errors(
    sandbox: TwilioSandbox, client: Client, kwargs: dict[str, str], code: int
) -> None:
    with pytest.raises(TwilioRestException) as info:
        client.messages.create(**kwargs)
    assert (info.value.status, info.value.code) == (400, code)
    assert sandbox.messages == []


def test_body_at_limit_is_accepted(client: Client) -> None:
    message = client.messages.create(to="+15005550006", from_="+15005550001", body="x" * 1600)
    assert message.num_segments == str(-(-1600 // 153))


def test_pagination(sandbox: TwilioSandbox, client: Client) -> None:
    sids = [send(client, body=f"msg {i}") for i in range(5)]
    send(client, to=OTHER)
    newest_first = sids[::-1]

    assert [m.sid for m in client.messages.list(to=TO, page_size=2)] == newest_first
    assert [m.sid for m in client.messages.list(to=TO, limit=3, page_size=2)] == newest_first[:3]
    assert [m.sid for m in client.messages.stream(to=TO, page_size=2)] == newest_first
    assert len(client.messages.list(page_size=2)) == 6

    first = client.messages.page(to=TO, page_size=2)
    assert [m.sid for m in first] == newest_first[:2]
    assert first.next_page_url is not None and first.previous_page_url is None
    second = first.next_page()
    assert second is not None and [m.sid for m in second] == newest_first[2:4]
    third = second.next_page()
    assert third is not None and [m.sid for m in third] == newest_first[4:]
    assert third.next_page_url is None and third.next_page() is None


def test_list_page_shape(sandbox: TwilioSandbox, client: Client) -> None:
    for i in range(3):
        send(client, body=str(i))
    response = httpx.get(
        f"{sandbox.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
        params={"To": TO, "PageSize": 2, "Page": 1},
        auth=(ACCOUNT_SID, AUTH_TOKEN),
    )
    assert response.status_code == 200
    page = response.json()
    assert [m["body"] for m in page["messages"]] == ["0"]
    assert (page["page"], page["page_size"], page["start"], page["end"]) == (1, 2, 2, 2)
    assert page["next_page_uri"] is None
    assert page["previous_page_uri"] is not None
    assert page["first_page_uri"].startswith(f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json?")
    assert "content_sid" not in page["messages"][0]


def test_date_sent_filters(client: Client) -> None:
    sid = send(client)
    sent = client.messages(sid).fetch().date_sent
    assert sent is not None

    assert [m.sid for m in client.messages.list(date_sent=sent.date().isoformat())] == [sid]
    assert [m.sid for m in client.messages.list(date_sent_after=sent)] == [sid]
    assert client.messages.list(date_sent="2001-01-01") == []


def test_control_endpoints(sandbox: TwilioSandbox, client: Client) -> None:
    with httpx.Client(base_url=sandbox.url) as http:
        assert http.get("/healthz").json() == {"status": "ok"}

        send(client, to=TO)
        send(client, to=OTHER)
        listed = http.get("/sandbox/messages", params={"to": OTHER}).json()
        assert [m["to"] for m in listed] == [OTHER]
        assert len(http.get("/sandbox/messages").json()) == 2

        response = http.post("/sandbox/errors", json={"code": 63016, "status": 400, "to": TO})
        assert response.status_code == 201
        with pytest.raises(TwilioRestException) as info:
            send(client, to=TO)
        assert info.value.code == 63016

        bad = http.post("/sandbox/errors", json={"status": 400})
        assert bad.status_code == 400 and bad.json()["status"] == 400

        http.post("/sandbox/errors", json={"code": 20429, "status": 429, "times": 5})
        assert http.post("/sandbox/reset").status_code == 200
        assert http.get("/sandbox/messages").json() == []
        send(client)

        missing = http.get("/nope")
        assert missing.status_code == 404
        assert missing.json()["more_info"] == "https://www.twilio.com/docs/errors/20404"


def test_wait_for_messages(sandbox: TwilioSandbox, client: Client) -> None:
    sender = threading.Thread(target=lambda: [send(client, body=str(i)) for i in range(2)])
    sender.start()
    found = sandbox.wait_for_messages(2, to=TO)
    sender.join()
    assert [m["body"] for m in found] == ["0", "1"]
    assert sandbox.wait_for_messages(1, from_=FROM, body="1")[0]["body"] == "1"


def test_wait_for_messages_times_out(sandbox: TwilioSandbox, client: Client) -> None:
    send(client, to=TO)
    with pytest.raises(TimeoutError, match="expected at least 1 Twilio message"):
        sandbox.wait_for_messages(1, timeout=0.2, to=OTHER)


def test_redirecting_http_client_rewrites_only_twilio_urls() -> None:
    http_client = RedirectingHttpClient("http://127.0.0.1:5050/")
    rewrite = http_client.rewrite_url

    assert (
        rewrite("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json?To=%2B1&Page=1")
        == "http://127.0.0.1:5050/2010-04-01/Accounts/AC1/Messages.json?To=%2B1&Page=1"
    )
    assert rewrite("https://messaging.twilio.com/v1/Services") == (
        "http://127.0.0.1:5050/v1/Services"
    )
    for url in (
        "https://example.com/2010-04-01/Accounts",
        "http://localhost:8000/healthz",
        "https://nottwilio.com/x",
        "https://api.twilio.com.evil.example/x",
    ):
        assert rewrite(url) == url

    prefixed = RedirectingHttpClient("https://mock.example/twilio")
    assert prefixed.rewrite_url("https://api.twilio.com/v1/x?a=1") == (
        "https://mock.example/twilio/v1/x?a=1"
    )
    with pytest.raises(ValueError):
        RedirectingHttpClient("127.0.0.1:5050")


def test_redirecting_http_client_request_passes_other_urls(sandbox: TwilioSandbox) -> None:
    http_client = RedirectingHttpClient("http://127.0.0.1:1", timeout=5)
    response = http_client.request("GET", f"{sandbox.url}/healthz")
    assert response.status_code == 200
    assert json.loads(response.text) == {"status": "ok"}


def test_make_twilio_client_defaults_to_real_twilio() -> None:
    real = make_twilio_client(ACCOUNT_SID, AUTH_TOKEN, timeout=3.5)
    assert type(real.http_client).__name__ == "TwilioHttpClient"
    assert real.http_client.timeout == 3.5
    assert real.account_sid == ACCOUNT_SID


@contextmanager
def cli_sandbox(*args: str) -> Iterator[str]:
    """Run ``python -m channels.sandbox.twilio`` and yield its URL; SIGTERM must end it."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    command = [sys.executable, "-m", "channels.sandbox.twilio", "--port", "0"]
    proc = subprocess.Popen(
        [*command, "--account", f"{ACCOUNT_SID}:{AUTH_TOKEN}", *args],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("Twilio sandbox listening on http://127.0.0.1:"), line
        yield line.rsplit(" ", 1)[1].strip()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_cli_serves_until_sigterm() -> None:
    with cli_sandbox() as url:
        cli_client = make_twilio_client(ACCOUNT_SID, AUTH_TOKEN, api_base_url=url)
        sid = send(cli_client)
        assert [m["sid"] for m in httpx.get(f"{url}/sandbox/messages").json()] == [sid]


def test_cli_without_auto_status(receiver: Receiver) -> None:
    with cli_sandbox("--no-auto-status") as url:
        cli_client = make_twilio_client(ACCOUNT_SID, AUTH_TOKEN, api_base_url=url)
        sid = send_tracked(cli_client, f"{receiver.url}/status")
        cli_client.messaging.v2.typing_indicator.create(channel="whatsapp", message_id=sid)
        assert [t["message_id"] for t in httpx.get(f"{url}/sandbox/typing").json()] == [sid]

        response = httpx.post(f"{url}/sandbox/status", json={"sid": sid, "status": "read"})
        assert response.json()["http_status"] == 200
        [post] = receiver.wait(1)
        assert post["form"]["MessageStatus"] == "read"
        assert RequestValidator(AUTH_TOKEN).validate(post["url"], post["form"], post["signature"])


# -- typing indicators -------------------------------------------------------------


def test_typing_indicator_through_client(sandbox: TwilioSandbox, client: Client) -> None:
    sid = send(client)

    indicator = client.messaging.v2.typing_indicator.create(channel="whatsapp", message_id=sid)

    assert indicator.success is True
    [typing] = sandbox.wait_for_typing(1, message_id=sid)
    assert typing["account_sid"] == ACCOUNT_SID
    assert typing["channel"] == "whatsapp"
    assert isinstance(typing["at"], float)
    assert sandbox.typing_indicators == [typing]


def test_typing_indicator_accepts_inbound_media_sids(
    sandbox: TwilioSandbox, client: Client
) -> None:
    # The SIDs of inbound messages were never created through the sandbox.
    client.messaging.v2.typing_indicator.create(channel="whatsapp", message_id="MM" + "a" * 32)
    assert [t["message_id"] for t in sandbox.typing_indicators] == ["MM" + "a" * 32]


@pytest.mark.parametrize(
    ("form", "fragment"),
    [
        ({"channel": "whatsapp"}, "messageId"),
        ({"channel": "whatsapp", "messageId": ""}, "messageId"),
        ({"channel": "sms", "messageId": "SM" + "1" * 32}, "channel"),
        ({"messageId": "SM" + "1" * 32}, "channel"),
        ({"channel": "whatsapp", "messageId": "wamid.123"}, "messageId"),
    ],
)
def test_typing_indicator_validation(
    sandbox: TwilioSandbox, form: dict[str, str], fragment: str
) -> None:
    response = httpx.post(
        f"{sandbox.url}/v2/Indicators/Typing.json", data=form, auth=(ACCOUNT_SID, AUTH_TOKEN)
    )
    assert response.status_code == 400
    error = response.json()
    assert (error["status"], error["code"]) == (400, 20001)
    assert fragment in error["message"]
    assert sandbox.typing_indicators == []


def test_typing_indicator_validation_through_client(sandbox: TwilioSandbox, client: Client) -> None:
    with pytest.raises(TwilioRestException) as info:
        client.messaging.v2.typing_indicator.create(channel="sms", message_id=send(client))
    assert (info.value.status, info.value.code) == (400, 20001)
    assert sandbox.typing_indicators == []


def test_typing_indicator_rejects_wrong_auth(sandbox: TwilioSandbox) -> None:
    for sid, token in ((ACCOUNT_SID, "wrong-token"), ("AC" + "9" * 32, AUTH_TOKEN)):
        bad = make_twilio_client(sid, token, api_base_url=sandbox.url)
        with pytest.raises(TwilioRestException) as info:
            bad.messaging.v2.typing_indicator.create(channel="whatsapp", message_id="SM" + "1" * 32)
        assert (info.value.status, info.value.code) == (401, 20003)
    missing = httpx.post(
        f"{sandbox.url}/v2/Indicators/Typing.json",
        data={"channel": "whatsapp", "messageId": "SM" + "1" * 32},
    )
    assert missing.status_code == 401
    assert sandbox.typing_indicators == []


def test_typing_indicator_accepts_any_known_account() -> None:
    other_sid, other_token = "AC" + "2" * 32, "other-token"
    with TwilioSandbox(accounts={ACCOUNT_SID: AUTH_TOKEN, other_sid: other_token}) as running:
        for sid, token in ((ACCOUNT_SID, AUTH_TOKEN), (other_sid, other_token)):
            typing = make_twilio_client(sid, token, api_base_url=running.url)
            typing.messaging.v2.typing_indicator.create(channel="whatsapp", message_id="SM1")
        assert [t["account_sid"] for t in running.typing_indicators] == [ACCOUNT_SID, other_sid]

    with TwilioSandbox() as open_sandbox:
        anyone = make_twilio_client("AC" + "3" * 32, "whatever", api_base_url=open_sandbox.url)
        assert anyone.messaging.v2.typing_indicator.create(channel="whatsapp", message_id="SM1")
        assert len(open_sandbox.typing_indicators) == 1


def test_injected_typing_error(sandbox: TwilioSandbox, client: Client) -> None:
    sid = send(client)
    sandbox.inject_error(20429, status=429, endpoint="typing")
    send(client)  # message creation is unaffected

    with pytest.raises(TwilioRestException) as info:
        client.messaging.v2.typing_indicator.create(channel="whatsapp", message_id=sid)
    assert (info.value.status, info.value.code) == (429, 20429)
    assert client.messaging.v2.typing_indicator.create(channel="whatsapp", message_id=sid).success
    assert len(sandbox.typing_indicators) == 1

    with pytest.raises(ValueError):
        sandbox.inject_error(20429, endpoint="typing", to=TO)
    with pytest.raises(ValueError):
        sandbox.inject_error(20429, endpoint="calls")


def test_wait_for_typing_times_out(sandbox: TwilioSandbox) -> None:
    with pytest.raises(TimeoutError, match="expected at least 1 typing indicator"):
        sandbox.wait_for_typing(1, timeout=0.2)


# -- status callbacks --------------------------------------------------------------


class Receiver:
    """A stdlib HTTP server that records the webhooks posted to it."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.answer = 200
        self.holds: dict[str, threading.Event] = {}
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                form = dict(parse_qsl(body.decode(), keep_blank_values=True))
                with receiver._cond:
                    receiver.posts.append(
                        {
                            "url": receiver.url + self.path,
                            "form": form,
                            "signature": self.headers.get("X-Twilio-Signature"),
                            "content_type": self.headers.get("Content-Type"),
                        }
                    )
                    receiver._cond.notify_all()
                    hold = receiver.holds.get(form.get("MessageStatus", ""))
                if hold is not None:
                    hold.wait(10)
                self.send_response(receiver.answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Return the posts once at least ``count`` have arrived."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.posts) >= count, timeout=timeout):
                raise TimeoutError(f"expected {count} webhook(s), got {len(self.posts)}")
            return list(self.posts)

    def statuses(self, sid: str) -> list[str]:
        with self._cond:
            return [
                p["form"]["MessageStatus"] for p in self.posts if p["form"]["MessageSid"] == sid
            ]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    thread = threading.Thread(
        target=running.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield running
    for hold in running.holds.values():
        hold.set()
    running.server.shutdown()
    running.server.server_close()


@pytest.fixture
def manual_sandbox() -> Iterator[TwilioSandbox]:
    """A sandbox that posts no status callbacks by itself."""
    with TwilioSandbox(accounts={ACCOUNT_SID: AUTH_TOKEN}, auto_status=()) as running:
        yield running


def send_tracked(client: Client, callback: str, to: str = TO) -> str:
    return client.messages.create(to=to, from_=FROM, body="hi", status_callback=callback).sid


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/status"


def test_auto_status_callbacks_arrive_in_order_and_signed(
    sandbox: TwilioSandbox, client: Client, receiver: Receiver
) -> None:
    callback = f"{receiver.url}/twilio/status?tenant=t1"
    sid = send_tracked(client, callback)

    posts = receiver.wait(2)
    assert [p["form"]["MessageStatus"] for p in posts] == ["sent", "delivered"]
    validator = RequestValidator(AUTH_TOKEN)
    for post in posts:
        assert post["url"] == callback
        assert post["content_type"] == "application/x-www-form-urlencoded"
        assert validator.validate(callback, post["form"], post["signature"]) is True
        assert not RequestValidator("wrong-token").validate(
            callback, post["form"], post["signature"]
        )
    form = posts[0]["form"]
    assert form["MessageSid"] == form["SmsSid"] == sid
    assert form["SmsStatus"] == "sent"
    assert (form["AccountSid"], form["From"], form["To"]) == (ACCOUNT_SID, FROM, TO)
    assert (form["ApiVersion"], form["ChannelPrefix"]) == ("2010-04-01", "whatsapp")
    assert "ErrorCode" not in form

    attempts = sandbox.wait_for_status_callbacks(2, sid=sid)
    assert [(a["status"], a["http_status"], a["error"]) for a in attempts] == [
        ("sent", 200, None),
        ("delivered", 200, None),
    ]
    assert attempts[0]["url"] == callback
    assert sandbox.messages[0]["status"] == "delivered"
    assert client.messages(sid).fetch().status == "delivered"


def test_callbacks_signed_with_request_password_without_accounts(receiver: Receiver) -> None:
    with TwilioSandbox() as open_sandbox:
        anyone = make_twilio_client("AC" + "4" * 32, "any-token", api_base_url=open_sandbox.url)
        send_tracked(anyone, f"{receiver.url}/status")
        for post in receiver.wait(2):
            assert RequestValidator("any-token").validate(
                post["url"], post["form"], post["signature"]
            )


def test_send_status_failed_with_error_code(
    manual_sandbox: TwilioSandbox, receiver: Receiver
) -> None:
    client = make_twilio_client(ACCOUNT_SID, AUTH_TOKEN, api_base_url=manual_sandbox.url)
    sid = send_tracked(client, f"{receiver.url}/status")

    assert manual_sandbox.send_status(sid, "failed", error_code=30008) == 200

    [post] = receiver.wait(1)
    form = post["form"]
    assert (form["MessageStatus"], form["SmsStatus"]) == ("failed", "failed")
    assert (form["ErrorCode"], form["ErrorMessage"]) == ("30008", "Unknown error")
    assert RequestValidator(AUTH_TOKEN).validate(post["url"], form, post["signature"])
    fetched = client.messages(sid).fetch()
    assert (fetched.status, fetched.error_code, fetched.error_message) == (
        "failed",
        30008,
        "Unknown error",
    )
    [attempt] = manual_sandbox.status_callbacks
    assert (attempt["sid"], attempt["status"], attempt["http_status"]) == (sid, "failed", 200)
    assert attempt["params"]["ErrorCode"] == "30008"


def test_send_status_reports_receiver_answer_and_url_override(
    manual_sandbox: TwilioSandbox, receiver: Receiver
) -> None:
    client = make_twilio_client(ACCOUNT_SID, AUTH_TOKEN, api_base_url=manual_sandbox.url)
    untracked = send(client)
    receiver.answer = 500

    assert manual_sandbox.send_status(untracked, "undelivered", url=f"{receiver.url}/x") == 500
    [post] = receiver.wait(1)
    assert post["url"] == f"{receiver.url}/x"
    assert post["form"]["ErrorCode"] == "30008"
    assert manual_sandbox.messages[0]["status"] == "undelivered"

    with pytest.raises(KeyError):
        manual_sandbox.send_status("SM" + "0" * 32, "sent")
    with pytest.raises(ValueError, match="no StatusCallback"):
        manual_sandbox.send_status(untracked, "sent")
    with pytest.raises(ValueError, match="unknown message status"):
        manual_sandbox.send_status(untracked, "teleported", url=receiver.url)
    with pytest.raises(ValueError, match="error_code"):
        manual_sandbox.send_status(untracked, "delivered", error_code=30003, url=receiver.url)
    assert len(receiver.posts) == 1


def test_receiver_down_does_not_break_sandbox(sandbox: TwilioSandbox, client: Client) -> None:
    dead = closed_port_url()
    sid = send_tracked(client, dead)

    attempts = sandbox.wait_for_status_callbacks(2, sid=sid)
    assert [a["status"] for a in attempts] == ["sent", "delivered"]
    assert all(a["http_status"] is None and a["error"] for a in attempts)
    assert sandbox.messages[0]["status"] == "delivered"

    with pytest.raises(httpx.HTTPError):
        sandbox.send_status(sid, "read")
    assert sandbox.messages[0]["status"] == "read"
    response = httpx.post(f"{sandbox.url}/sandbox/status", json={"sid": sid, "status": "read"})
    assert (response.status_code, response.json()["code"]) == (502, 11200)

    assert send(client)
    assert httpx.get(f"{sandbox.url}/healthz").json() == {"status": "ok"}


def test_no_auto_status_sends_nothing(manual_sandbox: TwilioSandbox, receiver: Receiver) -> None:
    client = make_twilio_client(ACCOUNT_SID, AUTH_TOKEN, api_base_url=manual_sandbox.url)
    sid = send_tracked(client, f"{receiver.url}/status")
    with pytest.raises(TimeoutError):
        receiver.wait(1, timeout=0.3)
    assert manual_sandbox.status_callbacks == []
    assert manual_sandbox.messages[0]["status"] == "queued"

    manual_sandbox.send_status(sid, "sent")
    assert receiver.statuses(sid) == ["sent"]


def test_manual_status_ends_automatic_progression(
    sandbox: TwilioSandbox, client: Client, receiver: Receiver
) -> None:
    release = receiver.holds["sent"] = threading.Event()
    sid = send_tracked(client, f"{receiver.url}/status")
    receiver.wait(1)  # "sent" is being delivered and held by the receiver

    assert sandbox.send_status(sid, "failed", error_code=30003) == 200
    release.set()
    # The worker handles messages in order, so once this one's callbacks arrive, the
    # first message's progression has finished.
    del receiver.holds["sent"]
    later = send_tracked(client, f"{receiver.url}/status", to=OTHER)
    sandbox.wait_for_status_callbacks(2, sid=later)

    assert receiver.statuses(sid) == ["sent", "failed"]
    assert sandbox.messages[0]["status"] == "failed"
    assert sandbox.messages[0]["error_code"] == 30003


def test_stop_does_not_wait_for_slow_receiver(receiver: Receiver) -> None:
    receiver.holds["sent"] = threading.Event()
    running = TwilioSandbox(accounts={ACCOUNT_SID: AUTH_TOKEN}, status_delay=0.0).start()
    client = make_twilio_client(ACCOUNT_SID, AUTH_TOKEN, api_base_url=running.url)
    send_tracked(client, f"{receiver.url}/status")
    receiver.wait(1)
    # stop() must return although the "sent" callback is still waiting for an answer; a stop
    # that waited would hang, so it runs in a thread the test gives up on after 30 s.
    stopping = threading.Thread(target=running.stop, daemon=True)
    stopping.start()
    stopping.join(timeout=30)
    try:
        assert not stopping.is_alive(), "stop() waited for the slow status receiver"
    finally:
        receiver.holds["sent"].set()


def test_reset_forgets_typing_and_callbacks(
    manual_sandbox: TwilioSandbox, receiver: Receiver
) -> None:
    client = make_twilio_client(ACCOUNT_SID, AUTH_TOKEN, api_base_url=manual_sandbox.url)
    sid = send_tracked(client, f"{receiver.url}/status")
    client.messaging.v2.typing_indicator.create(channel="whatsapp", message_id=sid)
    manual_sandbox.send_status(sid, "sent")
    manual_sandbox.reset()
    assert manual_sandbox.typing_indicators == [] and manual_sandbox.status_callbacks == []


def test_status_and_typing_control_endpoints(
    manual_sandbox: TwilioSandbox, receiver: Receiver
) -> None:
    client = make_twilio_client(ACCOUNT_SID, AUTH_TOKEN, api_base_url=manual_sandbox.url)
    sid = send_tracked(client, f"{receiver.url}/status")
    client.messaging.v2.typing_indicator.create(channel="whatsapp", message_id=sid)

    with httpx.Client(base_url=manual_sandbox.url) as http:
        [typing] = http.get("/sandbox/typing", params={"message_id": sid}).json()
        assert (typing["account_sid"], typing["channel"]) == (ACCOUNT_SID, "whatsapp")
        assert http.get("/sandbox/typing", params={"message_id": "SM0"}).json() == []

        sent = http.post("/sandbox/status", json={"sid": sid, "status": "delivered"})
        assert sent.status_code == 200
        assert sent.json() == {"sid": sid, "status": "delivered", "http_status": 200}
        failed = http.post(
            "/sandbox/status", json={"sid": sid, "status": "failed", "error_code": 63024}
        )
        assert failed.status_code == 200
        posts = receiver.wait(2)
        assert [p["form"]["MessageStatus"] for p in posts] == ["delivered", "failed"]
        assert posts[1]["form"]["ErrorCode"] == "63024"

        listed = http.get("/sandbox/status", params={"sid": sid}).json()
        assert [(c["status"], c["http_status"]) for c in listed] == [
            ("delivered", 200),
            ("failed", 200),
        ]

        unknown = http.post("/sandbox/status", json={"sid": "SM" + "0" * 32, "status": "sent"})
        assert (unknown.status_code, unknown.json()["code"]) == (404, 20404)
        for bad in ({"sid": sid}, {"sid": sid, "status": "nope"}, [1]):
            response = http.post("/sandbox/status", json=bad)
            assert (response.status_code, response.json()["code"]) == (400, 20001)
        assert http.post("/sandbox/status", content=b"{").status_code == 400

        injected = http.post("/sandbox/errors", json={"code": 20500, "endpoint": "typing"})
        assert injected.status_code == 201 and injected.json()["endpoint"] == "typing"
        with pytest.raises(TwilioRestException) as info:
            client.messaging.v2.typing_indicator.create(channel="whatsapp", message_id=sid)
        assert info.value.code == 20500
