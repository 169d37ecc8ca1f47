"""The Twilio webhooks fuzzed as a hostile client would post to them, over real HTTP.

Hypothesis builds forms for `POST /webhooks/inbound` and `POST /webhooks/status`: any text in
every field (NUL, bidirectional marks, quotes, percent signs), raw bytes that are not UTF-8 (a
lone surrogate's `%ED%A0%80`, an overlong NUL, a truncated sequence), very long values, extra
fields, repeated keys, and the same bytes spelled several ways on the wire (`+` or `%20`,
lower-case hex, every byte escaped, raw UTF-8). Each form is signed as Twilio signs one (over the
decoded fields, every value of a repeated key) with the tenant's auth token, or signed wrongly.
The API runs as it is served (uvicorn, `InboundFastPath`) in a thread, and every post goes over
a fresh TCP connection, so a dropped connection shows as one. Whatever is posted:

- an answer always comes, and it is never a 5xx;
- a refusal (4xx) wrote nothing: every table has as many rows after as before;
- an accepted message is stored once, cleaned (no NUL, payload as decoded), and a replay of the
  same bytes is acknowledged and stores nothing more; an accepted status adds one status event;
- a validly signed form whose required fields are Twilio's is accepted, however hostile the
  rest of it;
- the ack is an empty TwiML `<Response/>`: nothing a post says ever costs a message.

`FUZZ_EXAMPLES` sets the examples per test (default 60, derandomised, so CI's run is the same
every time and the file takes well under a minute); `make fuzz` runs many more on a random seed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import operator
import os
import re
import secrets
import threading
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, quote_from_bytes, quote_plus, urlencode

import httpx
import hypothesis
import psycopg
import pytest
import uvicorn
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from channels.base import STATUSES
from channels.sandbox.twilio import TwilioSandbox
from server.api.webhooks import MAX_FORM_BYTES
from server.app import create_app
from server.settings import Settings
from store import outbox, tenants
from store.embedded import free_port
from store.records import Tenant
from store.scoping import tenant_scope
from tests.conftest import wait_until

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
"""Examples per test; `make fuzz` raises it."""

FUZZ = hypothesis.settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize="FUZZ_EXAMPLES" not in os.environ,
    database=None,  # nothing written under the work tree; a failure prints its reproduction
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

INBOUND, STATUS = "/webhooks/inbound", "/webhooks/status"
USER = "whatsapp:+5511977776666"
FORM = "application/x-www-form-urlencoded"


# -- the server, over real HTTP ----------------------------------------------------------------


@dataclass
class Webhooks:
    """The API served by uvicorn in a thread, a tenant of its own, and an outbound message of
    that tenant's that status callbacks can move forward."""

    settings: Settings
    url: str
    tenant: Tenant
    conn: psycopg.Connection[Any]
    sent_sid: str = ""
    tables: list[str] = field(default_factory=list)
    sids: Iterator[int] = field(default_factory=itertools.count)
    client: httpx.Client = field(init=False)
    """No connection kept alive: each post has its own, so a dropped one raises."""

    def __post_init__(self) -> None:
        self.client = httpx.Client(
            base_url=self.url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)
        )

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """POST `body` as it is, on a connection of its own."""
        return self.client.post(path, content=body, headers=headers)

    def counts(self) -> dict[str, int]:
        """Rows in every table, in one statement."""
        query = "select " + ", ".join(f"(select count(*) from {t})" for t in self.tables)
        return dict(zip(self.tables, self.conn.execute(query).fetchone() or (), strict=True))

    def unique_sid(self) -> str:
        """A MessageSid no other example uses (hypothesis replays and shrinks examples)."""
        return f"SM{secrets.token_hex(8)}{next(self.sids):08d}"


@pytest.fixture(scope="module")
def webhooks(
    pg_url: str, redis_server: str, sandbox: TwilioSandbox, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Webhooks]:
    """`create_app` as `conversa serve` runs it (its relay off: nothing here is answered), on a
    port of its own, for the whole module."""
    port = free_port()
    settings = Settings(
        app_env="test", database_url=pg_url, redis_url=redis_server,
        data_dir=tmp_path_factory.mktemp("fuzz-webhooks"), public_base_url="https://bot.example.com",
        twilio_api_base_url=sandbox.url, twilio_status_callbacks=False, db_pool_timeout=2,
        llm_check_at_start=False,
    )  # fmt: skip
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, relay=False), host="127.0.0.1", port=port, log_config=None,
            access_log=False,
        )
    )  # fmt: skip
    thread = threading.Thread(target=server.run, name="fuzz-uvicorn", daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=30, what="uvicorn to start")
    try:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            hooks = _seeded(settings, f"http://127.0.0.1:{port}", conn, sandbox)
            yield hooks
            hooks.client.close()
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def _seeded(
    settings: Settings, url: str, conn: psycopg.Connection[Any], sandbox: TwilioSandbox
) -> Webhooks:
    account_sid, token = "AC" + secrets.token_hex(16), secrets.token_hex(16)
    sandbox.add_account(account_sid, token)
    with conn.transaction():
        tenant = tenants.upsert_tenant(
            conn, slug="fuzz-webhooks", name="Fuzz", whatsapp_sender="whatsapp:+14155550190",
            twilio_account_sid=account_sid, twilio_auth_token=token,
        )  # fmt: skip
    hooks = Webhooks(settings, url, tenant, conn)
    hooks.tables = [
        name
        for (name,) in conn.execute(
            "select tablename from pg_tables where schemaname = 'public' "
            "and tablename not like '%%migrations' order by tablename"
        )
    ]
    # A conversation (from a plain message) and one reply of ours that Twilio has taken.
    form = inbound_fields(hooks, "Oi")
    response = hooks.post(INBOUND, urlencode(form).encode(), signed(hooks, INBOUND, form.items()))
    assert response.status_code == 200, response.text
    hooks.sent_sid = hooks.unique_sid()
    with tenant_scope(conn, tenant.id):
        (conversation,) = conn.execute(
            "select id from conversations where tenant_id = %s", (tenant.id,)
        ).fetchone()  # type: ignore[misc]
        reply = outbox.insert_outbound(
            conn, tenant_id=tenant.id, conversation_id=conversation, idempotency_key="fuzz",
            body="Olá!", from_address=tenant.whatsapp_sender, to_address=USER,
            correlation_id="fuzz",
        )  # fmt: skip
        outbox.mark_sent(conn, reply.id, hooks.sent_sid, "queued")
    return hooks


# -- Twilio's form and signature ---------------------------------------------------------------


Piece = str | bytes
"""A form key or value: text (sent as UTF-8), or raw bytes (sent as they are, UTF-8 or not)."""
Encoding = Literal["plus", "percent", "lower", "every", "raw"]


def decoded(piece: Piece) -> str:
    """What a form decoder makes of `piece`: bytes that are not UTF-8 become U+FFFD."""
    return piece if isinstance(piece, str) else piece.decode("utf-8", "replace")


def on_the_wire(piece: Piece, encoding: Encoding) -> bytes:
    """`piece` percent-encoded one of the ways a client may spell it."""
    raw = piece.encode() if isinstance(piece, str) else piece
    if encoding == "plus":
        return quote_plus(raw).encode()
    if encoding == "percent":
        return quote(raw, safe="").encode()
    if encoding == "lower":
        return re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), quote(raw, safe="")).encode()
    if encoding == "every":
        return "".join(f"%{byte:02X}" for byte in raw).encode()
    # Raw: unescaped, where nothing in it means something to the form.
    return raw if not any(c in raw for c in b"&=+%") else quote_from_bytes(raw).encode()


def twilio_signature(token: str, url: str, fields: list[tuple[str, str]]) -> str:
    """`X-Twilio-Signature` as Twilio documents it: HMAC-SHA1 over the URL and each field's name
    and value, fields sorted by name and, for a repeated name, each distinct value in order."""
    values: dict[str, set[str]] = {}
    for key, value in fields:
        values.setdefault(key, set()).add(value)
    text = url + "".join(key + value for key in sorted(values) for value in sorted(values[key]))
    digest = hmac.new(token.encode(), text.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signed(hooks: Webhooks, path: str, fields: Any, content_type: str = FORM) -> dict[str, str]:
    """Headers of a post of `fields` (decoded (name, value) pairs) that Twilio signed."""
    url = hooks.settings.public_url(path)
    signature = twilio_signature(hooks.tenant.twilio_auth_token, url, list(fields))
    return {"X-Twilio-Signature": signature, "content-type": content_type}


def inbound_fields(hooks: Webhooks, body: str) -> dict[str, str]:
    """A plain WhatsApp message form, as Twilio posts one."""
    return {
        "SmsMessageSid": (sid := hooks.unique_sid()), "MessageSid": sid,
        "AccountSid": hooks.tenant.twilio_account_sid, "From": USER,
        "To": hooks.tenant.whatsapp_sender, "Body": body, "NumMedia": "0", "NumSegments": "1",
        "WaId": USER.removeprefix("whatsapp:"), "ProfileName": "Ana", "ApiVersion": "2010-04-01",
    }  # fmt: skip


# -- the strategies ----------------------------------------------------------------------------


HOSTILE_TEXT = st.one_of(
    st.text(),  # any code point, NUL included (lone surrogates cannot be str: see RAW_BYTES)
    st.text(st.sampled_from("\x00\r\n\t \u00a0\u200b\u202e\ufeff\ufffd%+&=;#\\'\"<>{}$")),
    st.builds(operator.mul, st.text(min_size=1, max_size=4), st.integers(300, 20_000)),  # long
)
RAW_BYTES = st.one_of(
    st.sampled_from([
        b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xc0\x80", b"\xff\xfe", b"\xf4\x90\x80\x80",
        b"\xe2\x82", b"\x00", b"Oi \xed\xa0\x80 tudo bem?",
    ]),
    st.binary(),
)  # fmt: skip
"""Bytes that are not UTF-8: a lone surrogate (the `%ED%A0%80` of the issue), an overlong NUL,
a code point past U+10FFFF, a truncated sequence; and any bytes at all."""
PIECES = st.one_of(HOSTILE_TEXT, HOSTILE_TEXT, RAW_BYTES)
ENCODINGS: st.SearchStrategy[Encoding] = st.sampled_from(
    ["plus", "percent", "lower", "every", "raw"]
)
INBOUND_FIELDS = (
    "Body", "ProfileName", "Latitude", "Longitude", "Label", "Address", "ButtonText",
    "ButtonPayload", "MediaContentType0", "MediaUrl0", "MessagingServiceSid",
    "OriginalRepliedMessageSid", "ReferralBody", "Forwarded",
)  # fmt: skip
"""Fields whose content is the user's, never the ids the post is routed and stored by."""
STATUS_FIELDS = ("ErrorMessage", "ChannelPrefix", "ChannelInstallSid", "ChannelToAddress", "Body")
Signing = Literal["valid", "missing", "garbage", "other token", "last value only", "other url"]


@dataclass
class Post:
    """One hostile post: its fields in order, how each is spelled, and how it is signed."""

    pairs: list[tuple[Piece, Piece]]
    encodings: list[Encoding]
    signing: Signing
    content_type: str
    separators: bytes
    intact: bool
    """Whether Twilio could have sent it: its ids and addresses are Twilio's and no field is
    given twice with different values (then it must be accepted, whatever else it holds)."""

    def fields(self) -> list[tuple[str, str]]:
        """The form as a decoder reads it: (name, value) pairs, bytes that are not UTF-8 made
        U+FFFD."""
        return [(decoded(key), decoded(value)) for key, value in self.pairs]

    def body(self) -> bytes:
        """The form on the wire."""
        parts = [
            on_the_wire(key, encoding) + b"=" + on_the_wire(value, encoding)
            for (key, value), encoding in zip(self.pairs, self.encodings, strict=True)
        ]
        return (b"&" + self.separators).join(parts)

    def cleaned(self) -> dict[str, str]:
        """The form as it should be stored: NUL removed from every name and value."""
        return {k.replace("\x00", ""): v.replace("\x00", "") for k, v in self.fields()}

    def conflicting(self) -> bool:
        """Whether a field is given twice with different values (once NUL is removed)."""
        seen: dict[str, str] = {}
        for key, value in self.fields():
            key, value = key.replace("\x00", ""), value.replace("\x00", "")
            if seen.setdefault(key, value) != value:
                return True
        return False

    def headers(self, hooks: Webhooks, path: str) -> dict[str, str]:
        """The post's headers, signed as `signing` says."""
        headers = {"content-type": self.content_type}
        url, token = hooks.settings.public_url(path), hooks.tenant.twilio_auth_token
        fields = self.fields()
        if self.signing == "valid":
            headers["X-Twilio-Signature"] = twilio_signature(token, url, fields)
        elif self.signing == "garbage":
            headers["X-Twilio-Signature"] = base64.b64encode(secrets.token_bytes(20)).decode()
        elif self.signing == "other token":
            headers["X-Twilio-Signature"] = twilio_signature(secrets.token_hex(16), url, fields)
        elif self.signing == "last value only":  # what a decoder keeping one value would check
            headers["X-Twilio-Signature"] = twilio_signature(token, url, list(dict(fields).items()))
        elif self.signing == "other url":
            headers["X-Twilio-Signature"] = twilio_signature(token, url + "?x=1", fields)
        return headers

    def verified(self) -> bool:
        """Whether the signature holds over the form as sent."""
        if self.signing == "last value only":
            return len(dict(self.fields())) == len(set(self.fields()))  # no distinct repeats
        return self.signing == "valid"


SIGNINGS: st.SearchStrategy[Signing] = st.sampled_from(
    ["valid"] * 6 + ["missing", "garbage", "other token", "last value only", "other url"]
)
CONTENT_TYPES = st.sampled_from(
    [FORM] * 8 + [f"{FORM}; charset=utf-8", "APPLICATION/X-WWW-FORM-URLENCODED", "text/plain",
                  "multipart/form-data; boundary=x", "application/json", ""]
)  # fmt: skip


@st.composite
def posts(
    draw: st.DrawFn,
    base: dict[str, str],
    free: tuple[str, ...],
    drawn: tuple[tuple[str, Piece], ...] = (),
) -> Post:
    """A post of `base` (Twilio's own fields) and `drawn` (fields drawn by the caller) with
    hostile content in `free` fields, extra fields, and sometimes a field of `base` tampered
    with, repeated or missing."""
    pairs: list[tuple[Piece, Piece]] = [*base.items(), *drawn]
    for name in draw(st.lists(st.sampled_from(free), unique=True, max_size=len(free))):
        pairs.append((name, draw(PIECES)))
    keys = st.one_of(st.sampled_from((*free, *base)), PIECES)
    pairs += draw(st.lists(st.tuples(keys, PIECES), max_size=6))
    tampered = draw(st.booleans()) and draw(st.booleans())
    if tampered:
        index = draw(st.integers(0, len(base) - 1))
        action = draw(st.sampled_from(["hostile", "missing", "repeated"]))
        if action == "hostile":
            pairs[index] = (pairs[index][0], draw(PIECES))
        elif action == "missing":
            del pairs[index]
        else:
            pairs.append((pairs[index][0], draw(PIECES)))
    pairs = draw(st.permutations(pairs)) if draw(st.booleans()) else pairs
    post = Post(
        pairs=pairs,
        encodings=[draw(ENCODINGS) for _ in pairs],
        signing=draw(SIGNINGS),
        content_type=draw(CONTENT_TYPES),
        separators=draw(st.sampled_from([b"", b"", b"", b"&", b"&&"])),
        intact=False,
    )
    post.intact = (
        not tampered
        and not post.conflicting()
        and all(dict(post.fields()).get(name) == base[name] for name in base)
        and post.content_type.split(";")[0].lower() == FORM
        and len(post.body()) <= MAX_FORM_BYTES
        and _is_utf8(post.body())
    )
    return post


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode()
    except UnicodeDecodeError:  # raw bytes sent unescaped: the form as a whole is unreadable
        return False
    return True


def _ack_is_empty_twiml(response: httpx.Response) -> None:
    """The inbound ack sends nothing of its own: TwiML with no verb in it."""
    assert response.headers["content-type"].startswith("text/xml"), response.headers
    root = ElementTree.fromstring(response.content)
    assert root.tag == "Response" and len(root) == 0, response.text


# -- the properties ----------------------------------------------------------------------------


@given(data=st.data())
@FUZZ
def test_inbound_posts_are_answered_4xx_or_stored_once_cleaned(
    webhooks: Webhooks, data: st.DataObject
) -> None:
    base = inbound_fields(webhooks, "Oi")
    del base["Body"], base["ProfileName"]  # drawn as hostile content, or left out
    post = data.draw(posts(base, INBOUND_FIELDS), label="post")
    body, headers = post.body(), post.headers(webhooks, INBOUND)
    before = webhooks.counts()

    response = webhooks.post(INBOUND, body, headers)

    assert response.status_code < 500, response.text
    after = webhooks.counts()
    if response.status_code != 200:
        assert 400 <= response.status_code < 500, response.text
        assert after == before, f"a {response.status_code} wrote rows: {response.text}"
        assert not (post.intact and post.verified()), f"refused: {response.text}"
        return
    assert post.verified(), "accepted a post whose signature does not hold"
    _ack_is_empty_twiml(response)
    assert after["messages"] == before["messages"] + 1
    form = post.cleaned()
    sid = form["MessageSid"].strip()
    stored = webhooks.conn.execute(  # with its conversation and user: no partial rows
        "select m.body, m.kind, m.payload from messages m "
        "join conversations c on c.id = m.conversation_id join users u on u.id = c.user_id "
        "where m.tenant_id = %s and m.provider_message_id = %s",
        (webhooks.tenant.id, sid),
    ).fetchall()
    assert len(stored) == 1, stored
    stored_body, kind, payload = stored[0]
    assert payload == form
    if kind == "text":
        assert stored_body == form["Body"]

    replay = webhooks.post(INBOUND, body, headers)

    assert replay.status_code == 200, replay.text
    _ack_is_empty_twiml(replay)
    assert webhooks.counts() == after, "a replay was stored again"


@given(data=st.data())
@FUZZ
def test_status_callbacks_are_answered_4xx_or_recorded_once(
    webhooks: Webhooks, data: st.DataObject
) -> None:
    status = data.draw(st.one_of(st.sampled_from(sorted(STATUSES)), PIECES), label="status")
    code = data.draw(
        st.one_of(st.none(), st.integers(0, 99_999).map(str), PIECES, st.just("9" * 5000),
                  st.sampled_from(["²", "٣", "1_0", " 63016 ", "-1", "99999999999"])),
        label="ErrorCode",
    )  # fmt: skip
    base = {
        "MessageSid": data.draw(st.sampled_from([webhooks.sent_sid, webhooks.unique_sid()])),
        "AccountSid": webhooks.tenant.twilio_account_sid, "From": webhooks.tenant.whatsapp_sender,
        "To": USER, "ApiVersion": "2010-04-01",
    }  # fmt: skip
    drawn = (("MessageStatus", status),) + (() if code is None else (("ErrorCode", code),))
    post = data.draw(posts(base, STATUS_FIELDS, drawn), label="post")
    before = webhooks.counts()
    sent_before = _status_of(webhooks, webhooks.sent_sid)

    response = webhooks.post(STATUS, post.body(), post.headers(webhooks, STATUS))

    assert response.status_code < 500, response.text
    after = webhooks.counts()
    if response.status_code != 204:
        assert 400 <= response.status_code < 500, response.text
        assert after == before, f"a {response.status_code} wrote rows: {response.text}"
        twilios = decoded(status) in STATUSES and (code is None or _is_error_code(code))
        assert not (post.intact and post.verified() and twilios), response.text
        return
    assert post.verified(), "recorded a status whose signature does not hold"
    assert after == {**before, "message_status_events": before["message_status_events"] + 1}
    assert _status_of(webhooks, webhooks.sent_sid) in STATUSES | {sent_before}


def _is_error_code(code: Piece) -> bool:
    """Whether `code` is one Twilio could send: a few ASCII digits."""
    return isinstance(code, str) and code.isascii() and code.isdigit() and len(code) <= 5


def _status_of(hooks: Webhooks, sid: str) -> str:
    (status,) = hooks.conn.execute(
        "select status from messages where provider_message_id = %s", (sid,)
    ).fetchone()  # type: ignore[misc]
    return str(status)


# -- the two posts, as plain tests -----------------------------------------------------


def test_a_body_with_nul_is_stored_cleaned_over_http(webhooks: Webhooks) -> None:
    form = inbound_fields(webhooks, "oi\x00tudo bem")
    form["To"] = form["To"][:10] + "\x00" + form["To"][10:]  # even in the field it is routed by

    response = webhooks.post(
        INBOUND, urlencode(form).encode(), signed(webhooks, INBOUND, form.items())
    )

    assert response.status_code == 200, response.text
    assert webhooks.conn.execute(
        "select body from messages where provider_message_id = %s", (form["MessageSid"],)
    ).fetchall() == [("oitudo bem",)]


SURROGATE = "%ED%A0%80"
"""A lone surrogate's UTF-8 bytes, which no UTF-8 decoder accepts: each byte decodes to U+FFFD."""


@pytest.mark.parametrize(
    ("where", "expected"),
    [("Body", 200), ("MessageSid", 200), ("a field's name", 200), ("To", 404),
     ("the query", 200), ("the path", 404), ("the body, unescaped", 400)],
)  # fmt: skip
def test_a_lone_surrogate_escape_anywhere_is_answered(
    webhooks: Webhooks, where: str, expected: int
) -> None:
    form = inbound_fields(webhooks, "Oi")
    path, query, mark = INBOUND, "", "MARK"
    if where in ("Body", "MessageSid", "To"):
        form[where] += mark
    elif where == "a field's name":
        form[mark] = "x"
    elif where == "the query":
        query = f"?x={SURROGATE}"
    elif where == "the path":
        path = INBOUND + SURROGATE
    raw = urlencode(form).encode()
    if where == "the body, unescaped":
        raw += b"&Extra=\xed\xa0\x80"
    raw = raw.replace(mark.encode(), SURROGATE.encode())
    signed_form = {
        k.replace(mark, "\ufffd" * 3): v.replace(mark, "\ufffd" * 3) for k, v in form.items()
    }
    url = webhooks.settings.public_url(INBOUND) + query
    headers = {
        "X-Twilio-Signature": twilio_signature(
            webhooks.tenant.twilio_auth_token, url, list(signed_form.items())
        ),
        "content-type": FORM,
    }
    before = webhooks.counts()

    response = webhooks.post(path + query, raw, headers)

    assert response.status_code == expected, response.text
    if expected == 200:
        sid = signed_form["MessageSid"]
        assert webhooks.conn.execute(
            "select payload from messages where provider_message_id = %s", (sid,)
        ).fetchall() == [(signed_form,)]
    else:
        assert webhooks.counts() == before


@pytest.mark.parametrize("code", ["99999999999", "9" * 5000, "²", "٣", "-1"])
def test_an_error_code_twilio_never_sends_is_400(webhooks: Webhooks, code: str) -> None:
    # Past `integer`, past Python's 4,300-digit `int()`, a digit `int()` refuses, one it takes.
    form = {
        "MessageSid": webhooks.sent_sid, "MessageStatus": "failed", "ErrorCode": code,
        "AccountSid": webhooks.tenant.twilio_account_sid, "From": webhooks.tenant.whatsapp_sender,
        "To": USER,
    }  # fmt: skip
    before = webhooks.counts()

    response = webhooks.post(
        STATUS, urlencode(form).encode(), signed(webhooks, STATUS, form.items())
    )

    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_status"
    assert webhooks.counts() == before


@pytest.mark.parametrize(
    ("path", "field"),
    [(INBOUND, "MessageSid"), (INBOUND, "WaId"), (INBOUND, "From"), (STATUS, "MessageSid")],
)
def test_an_id_longer_than_twilio_sends_is_400(webhooks: Webhooks, path: str, field: str) -> None:
    # Ids are unique keys: PostgreSQL's index refuses an entry over ~2.7 kB (a 503 before, which
    # Twilio would retry forever, failing every message committed in the same batch with it).
    form = inbound_fields(webhooks, "Oi")
    if path == STATUS:
        form = {"MessageSid": "", "MessageStatus": "sent", "From": form["To"], "To": USER}
    form[field] = ("whatsapp:" if field == "From" else "") + secrets.token_urlsafe(3000)
    before = webhooks.counts()

    response = webhooks.post(path, urlencode(form).encode(), signed(webhooks, path, form.items()))

    assert response.status_code == 400, response.text
    assert webhooks.counts() == before
