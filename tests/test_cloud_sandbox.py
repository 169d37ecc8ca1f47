"""The Cloud API sandbox speaks the part of Meta's Graph API the service uses, as Meta does:
bearer tokens per number, Meta's error bodies and codes, templates, interactive messages,
media in two steps, injected errors, and signed status webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from channels.sandbox.cloud import CloudSandbox


@dataclass(frozen=True)
class Number:
    id: str
    display: str
    token: str
    secret: str


@pytest.fixture(scope="module")
def cloud() -> Iterator[CloudSandbox]:
    with CloudSandbox(auto_status=()) as server:
        yield server


@pytest.fixture
def number(cloud: CloudSandbox) -> Number:
    """A business number the sandbox serves, with fresh credentials."""
    registered = Number(str(10**14 + secrets.randbelow(10**14)),
                        f"1555{secrets.randbelow(10**7):07d}",
                        "EAA" + secrets.token_hex(16), secrets.token_hex(16))  # fmt: skip
    cloud.add_number(registered.id, registered.display, registered.token, registered.secret)
    return registered


def _post(cloud: CloudSandbox, number: Number, payload: Any, token: str | None = None,
          version: str = "/v21.0") -> httpx.Response:  # fmt: skip
    headers = {"Authorization": f"Bearer {token or number.token}"}
    return httpx.post(f"{cloud.url}{version}/{number.id}/messages", json=payload, headers=headers)


def _text(to: str = "5511999990000", body: str = "Oi") -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": body}}


def _mine(cloud: CloudSandbox, number: Number) -> list[dict[str, Any]]:
    return [m for m in cloud.messages if m["phone_number_id"] == number.id]


def _error(response: httpx.Response) -> int:
    return int(response.json()["error"]["code"])


def test_a_text_is_recorded_and_answered_with_a_wamid(cloud: CloudSandbox, number: Number) -> None:
    response = _post(cloud, number, _text(body="Olá"), version="")
    assert response.status_code == 200
    (stored,) = _mine(cloud, number)
    assert response.json()["messages"] == [{"id": stored["id"]}]
    assert stored["id"].startswith("wamid.")
    assert (stored["to"], stored["type"], stored["body"]) == ("5511999990000", "text", "Olá")


def test_credentials_are_checked_per_number(cloud: CloudSandbox, number: Number) -> None:
    other = Number(str(int(number.id) + 1), "15550000000", "EAA" + secrets.token_hex(16), "s")
    cloud.add_number(other.id, other.display, other.token, other.secret)
    wrong = _post(cloud, number, _text(), token="EAAnot-a-token")
    someone_elses = _post(cloud, number, _text(), token=other.token)
    missing = httpx.post(f"{cloud.url}/{number.id}/messages", json=_text())
    assert (wrong.status_code, _error(wrong)) == (401, 190)
    assert (someone_elses.status_code, _error(someone_elses)) == (400, 100)
    assert (missing.status_code, _error(missing)) == (401, 190)
    assert _mine(cloud, number) == []


@pytest.mark.parametrize(
    "payload",
    [{"to": "5511999990000", "type": "text", "text": {"body": "no product"}},
     {"messaging_product": "whatsapp", "type": "text", "text": {"body": "no to"}},
     {"messaging_product": "whatsapp", "to": "+55 11", "type": "text", "text": {"body": "x"}},
     {"messaging_product": "whatsapp", "to": "5511999990000", "type": "text", "text": {}},
     _text(body="x" * 4097),
     {"messaging_product": "whatsapp", "to": "5511999990000", "type": "sticker"}],
)  # fmt: skip
def test_a_message_meta_would_refuse_is_refused(
    cloud: CloudSandbox, number: Number, payload: dict[str, Any]
) -> None:
    response = _post(cloud, number, payload)
    assert (response.status_code, _error(response)) == (400, 100)
    assert _mine(cloud, number) == []


def test_templates_are_rendered_and_unknown_ones_refused(
    cloud: CloudSandbox, number: Number
) -> None:
    cloud.add_template(number.id, "lembrete", "Oi {{1}}, seu lembrete: {{2}}")
    template = {"name": "lembrete", "language": {"code": "pt_BR"}, "components": [
        {"type": "body", "parameters": [{"type": "text", "text": "Ana"},
                                        {"type": "text", "text": "pagar a luz"}]}]}  # fmt: skip
    payload = {"messaging_product": "whatsapp", "to": "5511999990000", "type": "template"}
    ok = _post(cloud, number, payload | {"template": template})
    unknown = _post(cloud, number, payload | {"template": template | {"name": "nope"}})
    english = _post(cloud, number, payload | {"template": template | {"language": {"code": "en"}}})
    short = _post(cloud, number, payload | {"template": template | {"components": []}})
    assert ok.json()["messages"][0]["message_status"] == "accepted"
    assert [_error(r) for r in (unknown, english, short)] == [132001, 132001, 132000]
    assert [m["body"] for m in _mine(cloud, number)] == ["Oi Ana, seu lembrete: pagar a luz"]


def _buttons(count: int) -> dict[str, Any]:
    buttons = [{"type": "reply", "reply": {"id": f"b{i}", "title": f"Opção {i}"}}
               for i in range(count)]  # fmt: skip
    return {"type": "button", "body": {"text": "Desfazer?"}, "action": {"buttons": buttons}}


def test_interactive_buttons_and_lists_within_metas_limits(
    cloud: CloudSandbox, number: Number
) -> None:
    payload = {"messaging_product": "whatsapp", "to": "5511999990000", "type": "interactive"}
    rows = [{"id": f"r{i}", "title": f"Linha {i}"} for i in range(10)]
    listed = {"type": "list", "body": {"text": "Qual?"},
              "action": {"button": "Ver", "sections": [{"title": "A", "rows": rows}]}}  # fmt: skip
    responses = [
        _post(cloud, number, payload | {"interactive": _buttons(3)}),
        _post(cloud, number, payload | {"interactive": _buttons(4)}),
        _post(cloud, number, payload | {"interactive": listed}),
        _post(cloud, number, payload | {"interactive": {**listed, "action": {
            "button": "Ver", "sections": [{"rows": [*rows, {"id": "r10", "title": "11"}]}]}}}),
    ]  # fmt: skip
    assert [r.status_code for r in responses] == [200, 400, 200, 400]
    stored = _mine(cloud, number)
    assert [(m["body"], m["interactive"]["type"]) for m in stored] == [
        ("Desfazer?", "button"), ("Qual?", "list")]  # fmt: skip


def test_injected_errors_hit_the_next_requests_then_stop(
    cloud: CloudSandbox, number: Number
) -> None:
    cloud.fail_next(131056, times=2, to="5511000000001", details="pair rate limit")
    other = _post(cloud, number, _text(to="5511000000002"))
    first, second, third = (_post(cloud, number, _text(to="5511000000001")) for _ in range(3))
    assert [r.status_code for r in (other, first, second, third)] == [200, 400, 400, 200]
    assert first.json()["error"]["error_data"]["details"] == "pair rate limit"
    assert _error(first) == 131056 and "(#131056)" in first.json()["error"]["message"]
    httpx.post(f"{cloud.url}/sandbox/errors", json={"code": 130429, "status": 429})
    limited = _post(cloud, number, _text())
    assert (limited.status_code, _error(limited)) == (429, 130429)
    assert [m["to"] for m in _mine(cloud, number)] == ["5511000000002", "5511000000001"]


def test_read_receipts_and_typing_are_recorded(cloud: CloudSandbox, number: Number) -> None:
    receipt = {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.A"}
    assert _post(cloud, number, receipt).json() == {"success": True}
    typing = receipt | {"message_id": "wamid.B", "typing_indicator": {"type": "text"}}
    assert _post(cloud, number, typing).status_code == 200
    bad = _post(cloud, number, receipt | {"typing_indicator": {"type": "audio"}})
    assert bad.status_code == 400
    mine = [
        (t["message_id"], t["typing"]) for t in cloud.typing if t["phone_number_id"] == number.id
    ]
    assert mine == [("wamid.A", False), ("wamid.B", True)]
    listed = httpx.get(f"{cloud.url}/sandbox/typing", params={"phone_number_id": number.id})
    assert [t["message_id"] for t in listed.json()] == ["wamid.A", "wamid.B"]


def test_media_comes_in_two_steps_and_only_to_the_numbers_token(
    cloud: CloudSandbox, number: Number
) -> None:
    media_id = cloud.add_media(b"OggS-voice", "audio/ogg", number.id)
    auth = {"Authorization": f"Bearer {number.token}"}
    described = httpx.get(f"{cloud.url}/v21.0/{media_id}", headers=auth).json()
    assert (described["id"], described["mime_type"], described["file_size"]) == (
        media_id, "audio/ogg", "10")  # fmt: skip
    assert described["sha256"] == hashlib.sha256(b"OggS-voice").hexdigest()
    assert httpx.get(described["url"]).status_code == 401
    stranger = Number(str(int(number.id) + 7), "1", "EAA" + secrets.token_hex(8), "s")
    cloud.add_number(stranger.id, stranger.display, stranger.token, stranger.secret)
    foreign = {"Authorization": f"Bearer {stranger.token}"}
    assert httpx.get(described["url"], headers=foreign).status_code == 401
    assert httpx.get(f"{cloud.url}/{media_id}", headers=foreign).status_code == 400
    download = httpx.get(described["url"], headers=auth)
    assert (download.content, download.headers["content-type"]) == (b"OggS-voice", "audio/ogg")
    fetches = [f["authorized"] for f in cloud.media_fetches if f["media_id"] == media_id]
    assert fetches == [False, False, True]


class _Receiver(ThreadingHTTPServer):
    """The service's webhook, as far as the sandbox can tell: records each POST, answers 200."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.arrived = threading.Condition()
        super().__init__(("127.0.0.1", 0), _Record)


class _Record(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server: Any = self.server
        with server.arrived:
            server.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
            server.arrived.notify_all()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_accepted_messages_get_signed_status_webhooks_in_order(
    number: Number, receiver: _Receiver
) -> None:
    url = f"http://127.0.0.1:{receiver.server_address[1]}/webhooks/cloud"
    with CloudSandbox(webhook_url=url) as cloud:
        cloud.add_number(number.id, number.display, number.token, number.secret)
        payload = _text() | {"biz_opaque_callback_data": "outbox:7"}
        wamid = _post(cloud, number, payload).json()["messages"][0]["id"]
        cloud.wait_for_status_callbacks(2, wamid=wamid)
        assert cloud.send_status(wamid, "failed", error_code=131026) == 200
    statuses = []
    for headers, body in receiver.posts:
        expected = "sha256=" + hmac.new(number.secret.encode(), body, hashlib.sha256).hexdigest()
        assert headers["x-hub-signature-256"] == expected
        value = json.loads(body)["entry"][0]["changes"][0]["value"]
        assert value["metadata"] == {"display_phone_number": number.display,
                                     "phone_number_id": number.id}  # fmt: skip
        (status,) = value["statuses"]
        assert (status["id"], status["recipient_id"], status["biz_opaque_callback_data"]) == (
            wamid, "5511999990000", "outbox:7")  # fmt: skip
        statuses.append((status["status"], [e["code"] for e in status.get("errors", [])]))
    assert statuses == [("sent", []), ("delivered", []), ("failed", [131026])]


def test_signed_inbound_is_signed_with_the_numbers_app_secret(
    cloud: CloudSandbox, number: Number
) -> None:
    body, headers = cloud.signed_inbound(number.id, "5511999990000", "Oi", profile_name="Ana")
    expected = "sha256=" + hmac.new(number.secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Hub-Signature-256"] == expected
    value = json.loads(body)["entry"][0]["changes"][0]["value"]
    assert value["contacts"] == [{"profile": {"name": "Ana"}, "wa_id": "5511999990000"}]
    assert value["messages"][0]["text"] == {"body": "Oi"}
    with pytest.raises(KeyError):
        cloud.signed_inbound("999", "5511999990000", "Oi")


def test_reset_forgets_records_but_keeps_numbers(cloud: CloudSandbox, number: Number) -> None:
    _post(cloud, number, _text())
    httpx.post(f"{cloud.url}/sandbox/reset")
    assert cloud.messages == [] and httpx.get(f"{cloud.url}/sandbox/messages").json() == []
    assert _post(cloud, number, _text()).status_code == 200
    assert httpx.get(f"{cloud.url}/healthz").json() == {"status": "ok"}
