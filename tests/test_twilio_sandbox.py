"""Tests for the local Twilio sandbox and the redirecting Twilio client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client

from channels.twilio_client import RedirectingHttpClient, make_twilio_client
from channels.twilio_sandbox import TwilioSandbox

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
    first, second = sandbox.messages
    assert first["media_urls"] == ["https://example.test/a.png", "https://example.test/b.png"]
    assert second["content_sid"] == "HX" + "1" * 32
    assert json.loads(second["content_variables"]) == {"1": "Ana"}


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


def test_cli_serves_until_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    command = [sys.executable, "-m", "channels.twilio_sandbox", "--port", "0"]
    proc = subprocess.Popen(
        [*command, "--account", f"{ACCOUNT_SID}:{AUTH_TOKEN}"],
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
        url = line.rsplit(" ", 1)[1].strip()
        cli_client = make_twilio_client(ACCOUNT_SID, AUTH_TOKEN, api_base_url=url)
        sid = send(cli_client)
        assert [m["sid"] for m in httpx.get(f"{url}/sandbox/messages").json()] == [sid]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
