"""Graph API routes of :mod:`channels.sandbox.cloud`, and what they have been sent.

`POST /{phone-number-id}/messages` (text, template, interactive, and the read receipt with the
typing indicator), `GET /{media-id}` and the media download, each behind the number's bearer
token and each able to fail with an error a test injected. A version prefix (`/v21.0`) is
accepted and ignored, so the sandbox's URL works with or without one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from channels.sandbox._cloud_wire import GraphError, new_wamid
from channels.sandbox._wire import RawReply, Reply

_VERSION = re.compile(r"^/v[0-9]+\.[0-9]+(?=/)")
_MESSAGES = re.compile(r"^/(?P<number>[0-9]+)/messages$")
_MEDIA = re.compile(r"^/(?P<media>[0-9]+)$")
DOWNLOAD_PREFIX = "/whatsapp_business/attachments/"
ENDPOINTS = ("messages", "typing", "media")
MAX_TEXT = 4096
MAX_INTERACTIVE_BODY = 1024
_PLACEHOLDER = re.compile(r"\{\{([0-9]+)\}\}")

FollowUp = Callable[[dict[str, Any]], Callable[[], None] | None]
"""Given an accepted message, what to run once the client has its answer (if anything)."""


@dataclass(frozen=True)
class Number:
    """A business phone number the sandbox serves."""

    phone_number_id: str
    display_phone_number: str
    token: str = field(repr=False)
    app_secret: str = field(repr=False)


@dataclass
class ErrorRule:
    code: int
    status: int
    message: str | None
    details: str | None
    times: int
    to: str | None
    endpoint: str


@dataclass(frozen=True)
class MediaFile:
    phone_number_id: str
    mime_type: str
    data: bytes


class CloudState:
    """Numbers, templates, media, records and injected errors, behind one condition variable."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.numbers: dict[str, Number] = {}
        self.templates: dict[tuple[str, str, str], str] = {}  # (number, name, language) -> text
        self.media: dict[str, MediaFile] = {}
        self.errors: list[ErrorRule] = []
        self.records: dict[str, list[dict[str, Any]]] = {
            "messages": [], "typing": [], "media_fetches": [], "callbacks": [],
        }  # fmt: skip

    def add(self, kind: str, record: dict[str, Any]) -> None:
        """Store a record and wake whoever waits for one."""
        with self.cond:
            self.records[kind].append(record)
            self.cond.notify_all()

    def all(self, kind: str) -> list[dict[str, Any]]:
        """Copies of every record of `kind`, oldest first."""
        with self.cond:
            return [json.loads(json.dumps(r)) for r in self.records[kind]]

    def wait_for(
        self, kind: str, count: int, timeout: float, fields: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """Wait until `count` records of `kind` match `fields`; else raise TimeoutError."""

        def matching() -> list[dict[str, Any]]:
            return [r for r in self.records[kind] if all(r.get(k) == v for k, v in fields.items())]

        with self.cond:
            if self.cond.wait_for(lambda: len(matching()) >= count, timeout=timeout):
                return [json.loads(json.dumps(r)) for r in matching()]
            found = len(matching())
            recent = self.records[kind][-5:]
        raise TimeoutError(f"expected {count} {kind} matching {dict(fields)} within {timeout}s, "
                           f"found {found}; the latest: {recent}")  # fmt: skip

    def take_error(self, endpoint: str, to: str | None = None) -> None:
        """Raise the first injected error that applies to this request, if any."""
        with self.cond:
            for rule in self.errors:
                if rule.endpoint == endpoint and (rule.to is None or rule.to == to):
                    rule.times -= 1
                    if rule.times <= 0:
                        self.errors.remove(rule)
                    raise GraphError(rule.code, rule.status, rule.message, rule.details)

    def inject(self, rule: ErrorRule) -> None:
        """Queue an injected error (checked by `take_error`)."""
        if rule.times < 1 or not 400 <= rule.status <= 599 or rule.endpoint not in ENDPOINTS:
            raise ValueError(
                "times must be >= 1, status 400-599, endpoint one of " + str(ENDPOINTS)
            )
        with self.cond:
            self.errors.append(rule)

    def clear(self) -> None:
        """Forget records, media, templates and injected errors (not the numbers)."""
        with self.cond:
            for records in self.records.values():
                records.clear()
            self.media.clear()
            self.templates.clear()
            self.errors.clear()
            self.cond.notify_all()


def _bearer(authorization: str | None) -> str:
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    raise GraphError(190, 401)


def _json(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body or b"null")
    except ValueError as exc:
        raise GraphError(100, 400, "Invalid parameter", f"The body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise GraphError(100, 400, "Invalid parameter", "The body must be a JSON object")
    return payload


def _need(parent: Any, name: str, what: str) -> Any:
    value = parent.get(name) if isinstance(parent, dict) else None
    if value in (None, "", [], {}):
        raise GraphError(100, 400, "Invalid parameter", f"{what} is missing {name}")
    return value


class CloudApi:
    """Answers Graph API requests from the sandbox's state."""

    def __init__(self, state: CloudState, base_url: Callable[[], str], follow_up: FollowUp) -> None:
        self._state, self._base_url, self._follow_up = state, base_url, follow_up

    def _token(self, authorization: str | None) -> str:
        """The request's bearer token, if it is any number's (else Meta's 401)."""
        token = _bearer(authorization)
        with self._state.cond:
            known = [n.token for n in self._state.numbers.values()]
        if not any(hmac.compare_digest(token, t) for t in known):
            raise GraphError(190, 401)
        return token

    def _number(self, number_id: str, authorization: str | None) -> Number:
        """The number the request names, if its token is that number's."""
        token = self._token(authorization)
        with self._state.cond:
            number = self._state.numbers.get(number_id)
        if number is None or not hmac.compare_digest(token, number.token):
            raise GraphError(100, 400, "Unsupported post request",
                             f"Object with ID '{number_id}' does not exist or the token "
                             "lacks permission for it")  # fmt: skip
        return number

    def answer(self, method: str, path: str, query: dict[str, list[str]],
               authorization: str | None, body: bytes) -> Reply | RawReply:  # fmt: skip
        """Answer one Graph API request, or raise the `GraphError` Meta would."""
        path = _VERSION.sub("", path)
        if path == DOWNLOAD_PREFIX and method == "GET":
            return self._download(query, authorization)
        if (match := _MESSAGES.match(path)) and method == "POST":
            number = self._number(match["number"], authorization)
            payload = _json(body)
            if payload.get("messaging_product") != "whatsapp":
                raise GraphError(
                    100, 400, "Invalid parameter", "messaging_product must be whatsapp"
                )
            if payload.get("status") == "read":
                return self._read(number, payload)
            return self._send(number, payload)
        if (match := _MEDIA.match(path)) and method == "GET":
            return self._media_url(match["media"], query, authorization)
        raise GraphError(100, 400, "Unsupported request", f"{method} {path} is not served")

    def _read(self, number: Number, payload: dict[str, Any]) -> Reply:
        self._state.take_error("typing")
        message_id = _need(payload, "message_id", "A read receipt")
        indicator = payload.get("typing_indicator")
        if indicator is not None and (
            not isinstance(indicator, dict) or indicator.get("type") != "text"
        ):
            raise GraphError(100, 400, "Invalid parameter", "typing_indicator.type must be text")
        self._state.add("typing", {
            "phone_number_id": number.phone_number_id, "message_id": message_id,
            "typing": indicator is not None, "at": time.time(),
        })  # fmt: skip
        return Reply(200, {"success": True})

    def _send(self, number: Number, payload: dict[str, Any]) -> Reply:
        to = str(_need(payload, "to", "A message"))
        self._state.take_error("messages", to)
        if not to.isdigit():
            raise GraphError(100, 400, "Invalid parameter", "to must be a phone number (digits)")
        kind = payload.get("type", "text")  # Meta's default
        record: dict[str, Any] = {
            "id": new_wamid(), "phone_number_id": number.phone_number_id, "to": to, "type": kind,
            "body": None, "template": None, "interactive": None, "choices": None,
            "status": "accepted",
            "opaque": payload.get("biz_opaque_callback_data"), "payload": payload,
            "at": time.time(),
        }  # fmt: skip
        if kind == "text":
            text = _need(payload, "text", "A text message")
            body = _need(text, "body", "text")
            if not isinstance(body, str) or len(body) > MAX_TEXT:
                raise GraphError(
                    100, 400, "Invalid parameter", f"text.body: a string of up to {MAX_TEXT}"
                )
            record["body"] = body
        elif kind == "template":
            record["template"] = template = _need(payload, "template", "A template message")
            record["body"] = self._render(number, template)
        elif kind == "interactive":
            record["interactive"] = interactive = _need(
                payload, "interactive", "An interactive message"
            )
            record["choices"] = _check_interactive(interactive)
            record["body"] = interactive["body"]["text"]
        else:
            raise GraphError(
                100, 400, "Invalid parameter", f"The sandbox does not send type {kind!r}"
            )
        self._state.add("messages", record)
        answer: dict[str, Any] = {"messaging_product": "whatsapp",
                                  "contacts": [{"input": to, "wa_id": to}],
                                  "messages": [{"id": record["id"]}]}  # fmt: skip
        if kind == "template":
            answer["messages"][0]["message_status"] = "accepted"
        return Reply(200, answer, self._follow_up(record))

    def _render(self, number: Number, template: Any) -> str:
        """The words a template send puts on the user's screen (templates come from
        `add_template`: an unknown one, or a wrong count of parameters, is refused)."""
        name = _need(template, "name", "template")
        language = _need(_need(template, "language", "template"), "code", "template.language")
        with self._state.cond:
            text = self._state.templates.get((number.phone_number_id, name, language))
        if text is None:
            raise GraphError(132001, 404, details=f"template {name!r} ({language}) does not exist")
        parameters: list[str] = []
        for component in template.get("components") or []:
            if isinstance(component, dict) and component.get("type") == "body":
                parameters += [str(p.get("text", "")) for p in component.get("parameters") or []]
        expected = {int(n) for n in _PLACEHOLDER.findall(text)}
        if len(parameters) != len(expected):
            raise GraphError(132000, 400, details=f"expected {len(expected)} body parameters")
        return _PLACEHOLDER.sub(lambda m: parameters[int(m[1]) - 1], text)

    def _media_url(
        self, media_id: str, query: Mapping[str, list[str]], authorization: str | None
    ) -> Reply:
        """Step one of a media download: the file's short-lived URL (here, on the sandbox)."""
        token = self._token(authorization)
        self._state.take_error("media")
        asked = (query.get("phone_number_id") or [None])[-1]
        with self._state.cond:
            found = self._state.media.get(media_id)
            owner = self._state.numbers.get(found.phone_number_id) if found else None
        if (
            found is None
            or owner is None
            or not hmac.compare_digest(token, owner.token)
            or (asked is not None and asked != found.phone_number_id)
        ):
            raise GraphError(100, 400, "Unsupported get request", f"No media {media_id} for you")
        url = f"{self._base_url()}{DOWNLOAD_PREFIX}?mid={media_id}&hash={secrets.token_hex(8)}"
        return Reply(200, {
            "messaging_product": "whatsapp", "url": url, "mime_type": found.mime_type,
            "sha256": hashlib.sha256(found.data).hexdigest(), "file_size": str(len(found.data)),
            "id": media_id,
        })  # fmt: skip

    def _download(self, query: Mapping[str, list[str]], authorization: str | None) -> RawReply:
        """Step two: the bytes, to the owning number's bearer token only (every try recorded)."""
        media_id = (query.get("mid") or [""])[-1]
        record: dict[str, Any] = {"media_id": media_id, "authorized": False, "at": time.time()}
        try:
            token = _bearer(authorization)
            with self._state.cond:
                found = self._state.media.get(media_id)
                owner = self._state.numbers.get(found.phone_number_id) if found else None
            if found is None or owner is None:
                raise GraphError(100, 404, "Not found", f"No media {media_id}")
            if not hmac.compare_digest(token, owner.token):
                raise GraphError(190, 401)
            record["authorized"] = True
        finally:
            self._state.add("media_fetches", record)
        return RawReply(200, {"Content-Type": found.mime_type}, found.data)


def _invalid(details: str) -> GraphError:
    """Meta's refusal of a value it reads but does not take (a count, a length, a repeat)."""
    return GraphError(131009, 400, details=details)


def _text(parent: Any, name: str, what: str, limit: int) -> str:
    """A required string of 1 to `limit` characters."""
    value = _need(parent, name, what)
    if not isinstance(value, str):
        raise GraphError(100, 400, "Invalid parameter", f"{what}.{name} must be a string")
    if len(value) > limit:
        raise _invalid(f"{what} {name} length invalid. Min length: 1, Max length: {limit}")
    return value


def _optional_text(parent: Mapping[str, Any], name: str, what: str, limit: int) -> str:
    return _text(parent, name, what, limit) if parent.get(name) not in (None, "") else ""


def _unique(values: list[str], what: str) -> None:
    if len(set(values)) != len(values):
        raise _invalid(f"{what} must be unique within the message")


def _check_interactive(interactive: Any) -> dict[str, Any]:
    """Refuse an interactive message Meta would, with Meta's codes (100 for a missing or
    mistyped field, 131009 for a value out of its limits); return its options normalised
    (`{"type": "buttons" or "list", "button", "options": [{"id", "title", "description"}]}`).

    Reply buttons: 1 to 3, ids up to 256 characters, titles up to 20, both unique. A list: a
    button label up to 20, 1 to 10 sections (titled, up to 24, when more than one) with 1 to
    10 rows in all, row ids up to 200 and unique, titles up to 24, descriptions up to 72. The
    body is up to 1024 characters, a footer up to 60."""
    kind = _need(interactive, "type", "interactive")
    _text(_need(interactive, "body", "interactive"), "text", "Body", MAX_INTERACTIVE_BODY)
    if isinstance(footer := interactive.get("footer"), dict):
        _optional_text(footer, "text", "Footer", 60)
    action = _need(interactive, "action", "interactive")
    if kind == "button":
        return {"type": "buttons", "button": "", "options": _buttons(action)}
    if kind == "list":
        button = _text(action, "button", "Button", 20)
        return {"type": "list", "button": button, "options": _rows(action)}
    raise GraphError(
        100, 400, "Invalid parameter", f"The sandbox does not send interactive {kind!r}"
    )


def _buttons(action: Any) -> list[dict[str, str]]:
    buttons = _need(action, "buttons", "interactive.action")
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
        count = len(buttons) if isinstance(buttons, list) else 0
        raise _invalid(
            f"Invalid buttons count. Min allowed buttons: 1, Max allowed buttons: 3 ({count})"
        )
    options = []
    for button in buttons:
        if _need(button, "type", "a button") != "reply":
            raise GraphError(100, 400, "Invalid parameter", "a reply button's type is reply")
        reply = _need(button, "reply", "a button")
        options.append({"id": _text(reply, "id", "Button id", 256),
                        "title": _text(reply, "title", "Button title", 20),
                        "description": ""})  # fmt: skip
    _unique([o["id"] for o in options], "Button ids")
    _unique([o["title"] for o in options], "Button titles")
    return options


def _rows(action: Any) -> list[dict[str, str]]:
    sections = _need(action, "sections", "interactive.action")
    if not isinstance(sections, list) or not 1 <= len(sections) <= 10:
        raise _invalid("Invalid sections count. Min allowed sections: 1, Max allowed sections: 10")
    options = []
    for section in sections:
        if not isinstance(section, dict):
            raise GraphError(100, 400, "Invalid parameter", "a section must be an object")
        if len(sections) > 1:
            _text(section, "title", "Section title", 24)
        else:
            _optional_text(section, "title", "Section title", 24)
        rows = _need(section, "rows", "a section")
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise GraphError(100, 400, "Invalid parameter", "a section's rows must be objects")
        options += [{"id": _text(row, "id", "Row id", 200),
                     "title": _text(row, "title", "Row title", 24),
                     "description": _optional_text(row, "description", "Row description", 72)}
                    for row in rows]  # fmt: skip
    if len(options) > 10:
        raise _invalid("Total row count exceed max allowed count: 10")
    _unique([o["id"] for o in options], "Row ids")
    return options
