"""A terminal chat that plays a WhatsApp user: it posts webhooks signed exactly as Twilio signs
them and reads the assistant's replies back from the Twilio API (the local sandbox in the demo);
or, with `CloudChatClient` (`conversa demo --channel cloud`), posts Meta's signed Cloud API
webhooks and reads the replies from the local Cloud API sandbox.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import requests
from twilio.base.exceptions import TwilioException

from channels.sandbox.twilio import press_form
from channels.twilio.client import make_twilio_client
from channels.twilio.inbound import sign
from server.settings import Settings

if TYPE_CHECKING:
    from channels.sandbox.cloud import CloudSandbox

# The demo tenant and user (`conversa demo` seeds them): the chat's identity unless told otherwise.
DEMO_SENDER = "whatsapp:+14155238886"
DEMO_USER = "whatsapp:+5511999990000"
DEMO_ACCOUNT_SID = "AC" + "d3m0" * 8
DEMO_AUTH_TOKEN = "demo-auth-token-not-a-secret"
# The demo tenant's number on the local Cloud API sandbox (`conversa demo --channel cloud`).
DEMO_CLOUD_PHONE_NUMBER_ID = "100000000000001"
DEMO_CLOUD_ACCESS_TOKEN = "EAAG-demo-access-token-not-a-secret"
DEMO_CLOUD_APP_SECRET = "demo-app-secret-not-a-secret"


def whatsapp_form(
    *,
    account_sid: str,
    sender: str,
    user: str,
    body: str,
    profile_name: str = "Demo User",
    media: Sequence[tuple[str, str]] = (),
) -> dict[str, str]:
    """Return the form fields Twilio posts to the webhook for a WhatsApp message.

    `media` lists (URL, content type) attachments: a voice note is one `audio/ogg` file.
    """
    sid = ("MM" if media else "SM") + secrets.token_hex(16)
    form = {
        "SmsMessageSid": sid,
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": account_sid,
        "From": user,
        "To": sender,
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1",
        "ProfileName": profile_name,
        "WaId": user.removeprefix("whatsapp:").lstrip("+"),
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
        "MessageType": "text",
    }
    for index, (url, content_type) in enumerate(media):
        form[f"MediaUrl{index}"] = url
        form[f"MediaContentType{index}"] = content_type
    if media:
        form["NumMedia"] = str(len(media))
        kind = media[0][1].split("/", 1)[0]
        form["MessageType"] = {"audio": "audio", "image": "image", "video": "video"}.get(
            kind, "document"
        )
    return form


AUDIO_COMMAND = "/audio "
"""A chat line `/audio path/to/file.ogg` sends that file as a voice note."""
PRESS_COMMAND = "/press"
"""A chat line `/press 2` taps option 2 of the latest reply that offered buttons or a list."""

_AUDIO_TYPES = {".ogg": "audio/ogg", ".opus": "audio/ogg", ".oga": "audio/ogg",
                ".mp3": "audio/mpeg", ".m4a": "audio/mp4", ".aac": "audio/aac",
                ".amr": "audio/amr", ".wav": "audio/wav", ".webm": "audio/webm",
                ".flac": "audio/flac"}  # fmt: skip


class ChatError(RuntimeError):
    """The chat could not deliver a message or get a reply; the text says what to check."""


def _read_audio(path: Path) -> tuple[bytes, str]:
    """The bytes and content type of an audio file for `/audio`."""
    content_type = _AUDIO_TYPES.get(path.suffix.lower())
    if content_type is None:
        known = ", ".join(sorted(_AUDIO_TYPES))
        raise ChatError(f"{path.name}: not an audio file this chat knows ({known})")
    try:
        return path.read_bytes(), content_type
    except OSError as exc:
        raise ChatError(f"cannot read {path}: {exc.strerror or exc}") from exc


def render(body: str, choices: Mapping[str, Any] | None) -> str:
    """A message as the chat prints it: its body, then its buttons or list, numbered."""
    if not choices:
        return body
    options = choices.get("options") or []
    lines = [f"  [{n}] {o['title']}" + (f" — {o['description']}" if o.get("description") else "")
             for n, o in enumerate(options, 1)]  # fmt: skip
    label = f"list «{choices['button']}»" if choices.get("button") else "buttons"
    return "\n".join([body, *lines, f"  ({label}: /press N to tap one)"])


class Chat:
    """What `converse` needs of a chat, whichever provider carries it."""

    offered: dict[str, Any] | None = None
    """The sandbox's record of the latest message that offered buttons or a list."""

    def send(self, body: str) -> None:
        """Post `body` to the service's webhook as the provider would."""
        raise NotImplementedError

    def press(self, number: int) -> None:
        """Tap option `number` (1-based) of the latest message that offered some."""
        raise NotImplementedError

    def _pressable(self, number: int) -> dict[str, Any]:
        """The record whose option `number` the user taps, or a `ChatError` saying why not."""
        record = self.offered
        if record is None:
            raise ChatError("no reply has offered buttons or a list yet")
        count = len(record["choices"]["options"])
        if not 1 <= number <= count:
            raise ChatError(f"choose an option from 1 to {count}")
        return record

    def send_audio(self, path: Path) -> None:
        """Send an audio file as a voice note."""
        raise NotImplementedError

    def unseen(self) -> list[str]:
        """Messages to this user not shown yet (replies, reminders, staff), oldest first."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the chat holds."""

    def replies(self, *, wait: float, settle: float = 1.0) -> list[str]:
        """Return new replies to this user, waiting up to `wait` s for the first one."""
        deadline = time.monotonic() + wait
        found: list[str] = []
        quiet_since = time.monotonic()
        while True:
            for body in self.unseen():
                found.append(body)
                quiet_since = time.monotonic()
            now = time.monotonic()
            if found and now - quiet_since >= settle:
                return found
            if not found and now > deadline:
                raise ChatError(f"no reply within {wait:.0f} s")
            time.sleep(0.2)


@dataclass
class ChatClient(Chat):
    """Send messages as one WhatsApp user and wait for the assistant's replies (Twilio)."""

    api_url: str
    public_base_url: str
    account_sid: str
    auth_token: str
    sender: str
    user: str
    profile_name: str = "Demo User"
    twilio_api_base_url: str | None = None
    _seen: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._twilio = make_twilio_client(
            self.account_sid, self.auth_token, api_base_url=self.twilio_api_base_url
        )
        self._http = httpx.Client(base_url=self.api_url, timeout=30)
        self._seen.update(m.sid for m in self._twilio.messages.list(to=self.user, limit=200))

    def send(
        self,
        body: str,
        media: Sequence[tuple[str, str]] = (),
        extra: Mapping[str, str] | None = None,
    ) -> None:
        """Post `body` (and `media`, URL and content type; `extra` form fields) to the webhook
        as Twilio would."""
        form = whatsapp_form(
            account_sid=self.account_sid,
            sender=self.sender,
            user=self.user,
            body=body,
            profile_name=self.profile_name,
            media=media,
        )
        form.update(extra or {})
        signature = sign(
            self.auth_token, self.public_base_url.rstrip("/") + "/webhooks/inbound", form
        )
        response = self._http.post(
            "/webhooks/inbound", data=form, headers={"X-Twilio-Signature": signature}
        )
        if response.status_code != 200:
            raise ChatError(f"the webhook answered {response.status_code}: {response.text}")

    def send_audio(self, path: Path) -> None:
        """Send an audio file as a voice note: stored in the sandbox's media, then posted."""
        if not self.twilio_api_base_url:
            raise ChatError("/audio needs the local Twilio sandbox (TWILIO_API_BASE_URL)")
        data, content_type = _read_audio(path)
        stored = httpx.post(
            self.twilio_api_base_url.rstrip("/") + "/sandbox/media",
            params={"account_sid": self.account_sid, "content_type": content_type},
            content=data,
            timeout=30,
        )
        if stored.status_code != 201:
            raise ChatError(f"the sandbox refused the file: {stored.text}")
        self.send("", media=[(stored.json()["url"], content_type)])

    def press(self, number: int) -> None:
        """Tap an option as Twilio posts it (`ButtonPayload`, or `ListId` for a list row)."""
        fields = press_form(self._pressable(number), number)
        self.send(fields.pop("Body", ""), extra=fields)

    def _records(self) -> dict[str, dict[str, Any]]:
        """The sandbox's records of what was sent, by SID (their buttons and lists)."""
        if not self.twilio_api_base_url:
            return {}
        found = httpx.get(self.twilio_api_base_url.rstrip("/") + "/sandbox/messages",
                          params={"to": self.user}, timeout=30)  # fmt: skip
        found.raise_for_status()
        return {str(m["sid"]): m for m in found.json()}

    def unseen(self) -> list[str]:
        """Messages to this user not shown yet (replies, reminders, staff), oldest first."""
        with self._lock:
            fresh = [
                m
                for m in reversed(self._twilio.messages.list(to=self.user, limit=50))
                if m.sid not in self._seen
            ]
            self._seen.update(str(m.sid) for m in fresh)
            records = self._records() if fresh else {}
            shown = []
            for message in fresh:
                record = records.get(str(message.sid))
                choices = record.get("choices") if record else None
                if choices:
                    self.offered = record
                shown.append(render(str(message.body), choices))
        return shown

    def close(self) -> None:
        """Close the HTTP clients."""
        self._http.close()


@dataclass
class CloudChatClient(Chat):
    """Chat as one WhatsApp user through Meta's WhatsApp Cloud API: each line is Meta's signed
    webhook (`CloudSandbox.signed_inbound`) posted to `/webhooks/cloud`; the replies are what the
    local Cloud API sandbox (in this process) received for the user."""

    api_url: str
    sandbox: CloudSandbox
    phone_number_id: str
    user: str
    profile_name: str = "Demo User"
    _seen: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._http = httpx.Client(base_url=self.api_url, timeout=30)
        self._wa_id = self.user.removeprefix("whatsapp:").lstrip("+")
        self._seen.update(str(m["id"]) for m in self.sandbox.messages if m["to"] == self._wa_id)

    def _post(self, signed: tuple[bytes, dict[str, str]]) -> None:
        body, headers = signed
        response = self._http.post("/webhooks/cloud", content=body, headers=headers)
        if response.status_code != 200:
            raise ChatError(f"the webhook answered {response.status_code}: {response.text}")

    def send(self, body: str) -> None:
        """Post `body` to `/webhooks/cloud` as Meta would, signed with the app secret."""
        self._post(self.sandbox.signed_inbound(
            self.phone_number_id, self._wa_id, body, profile_name=self.profile_name
        ))  # fmt: skip

    def send_audio(self, path: Path) -> None:
        """Send an audio file as a voice note: stored in the sandbox's media, then posted."""
        data, content_type = _read_audio(path)
        media_id = self.sandbox.add_media(data, content_type, self.phone_number_id)
        content = {"id": media_id, "mime_type": content_type, "voice": True}
        self._post(self.sandbox.signed_inbound(
            self.phone_number_id, self._wa_id, kind="audio", content=content,
            profile_name=self.profile_name,
        ))  # fmt: skip

    def press(self, number: int) -> None:
        """Tap an option as Meta posts it (an interactive `button_reply` or `list_reply`)."""
        record = self._pressable(number)
        self._post(self.sandbox.signed_press(self.phone_number_id, self._wa_id, record, number))

    def unseen(self) -> list[str]:
        """Messages the sandbox took for this user not shown yet, oldest first."""
        with self._lock:
            fresh = [m for m in self.sandbox.messages
                     if m["to"] == self._wa_id and str(m["id"]) not in self._seen]  # fmt: skip
            self._seen.update(str(m["id"]) for m in fresh)
            for record in fresh:
                if record.get("choices"):
                    self.offered = record
        return [render(str(m.get("body") or ""), m.get("choices")) for m in fresh]

    def close(self) -> None:
        """Close the HTTP client."""
        self._http.close()


def converse(
    client: Chat,
    says: list[str],
    *,
    timeout: float,
    listen: float = 0.0,
    out: Callable[[str], None] = print,
) -> int:
    """Say each line (or read them from the terminal), printing every reply; return an exit code.

    Messages that arrive on their own (a reminder, a person from support) are printed too: in
    the terminal as they come, and with `--say` during the `listen` seconds after the last line.
    """
    interactive = not says
    lines = _prompt_lines() if interactive else iter(says)
    stop = threading.Event()
    if interactive:
        threading.Thread(target=_print_arrivals, args=(client, stop, out), daemon=True).start()
    try:
        for line in lines:
            text = line.strip()
            if not text:
                continue
            if not interactive:
                out(f"you> {text}")
            try:
                if text.startswith(AUDIO_COMMAND):
                    client.send_audio(Path(text[len(AUDIO_COMMAND) :].strip()).expanduser())
                elif text.split(maxsplit=1)[0] == PRESS_COMMAND:
                    client.press(_option_number(text[len(PRESS_COMMAND) :]))
                else:
                    client.send(text)
                if not interactive:
                    for reply in client.replies(wait=timeout):
                        out(f"assistant> {reply}")
            except (ChatError, httpx.HTTPError) as exc:
                out(f"error: {exc}")
                if not interactive:
                    return 1
        if listen > 0:
            out(f"(listening {listen:.0f} s for messages that come on their own)")
            deadline = time.monotonic() + listen
            while time.monotonic() < deadline:
                for body in client.unseen():
                    out(f"assistant> {body}")
                time.sleep(0.5)
    finally:
        stop.set()
    return 0


def _option_number(text: str) -> int:
    number = text.strip()
    if not number.isdigit():
        raise ChatError("usage: /press N, the option's number")
    return int(number)


def _print_arrivals(client: Chat, stop: threading.Event, out: Callable[[str], None]) -> None:
    while not stop.wait(0.5):
        try:
            for body in client.unseen():
                out(f"assistant> {body}")
        except (ChatError, httpx.HTTPError, OSError):
            continue


def _prompt_lines() -> Iterable[str]:
    print(
        "Type a message and press Enter (Ctrl-D to quit); /audio FILE.ogg sends a voice note;"
        " /press N taps a reply's button."
    )
    while True:
        try:
            yield input("you> ")
        except EOFError:
            print()
            return


def run_chat_from_settings(settings: Settings, args: argparse.Namespace) -> int:
    """Run `conversa chat` against the service described by `settings`."""
    try:
        client = ChatClient(
            api_url=f"http://{settings.api_host}:{settings.api_port}",
            public_base_url=settings.public_base_url,
            account_sid=args.account_sid or DEMO_ACCOUNT_SID,
            auth_token=args.auth_token or DEMO_AUTH_TOKEN,
            sender=args.sender or DEMO_SENDER,
            user=args.user or DEMO_USER,
            profile_name=args.name,
            twilio_api_base_url=settings.twilio_api_base_url,
        )
    except (TwilioException, requests.RequestException) as exc:
        where = settings.twilio_api_base_url or "Twilio"
        print(
            f"error: cannot read messages from the Twilio API at {where} "
            f"({type(exc).__name__}). Is `conversa sandbox` running, and TWILIO_API_BASE_URL "
            "set to it?",
            file=sys.stderr,
        )
        return 1
    try:
        return converse(client, args.say or [], timeout=args.timeout, listen=args.listen)
    finally:
        client.close()
