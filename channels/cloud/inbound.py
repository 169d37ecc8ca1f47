"""Meta's WhatsApp Cloud API webhooks: the subscription check, the signature, the JSON, and the
records it becomes.

Meta posts one JSON document, `{"object": "whatsapp_business_account", "entry": [...]}`, for
users' messages and for the statuses of ours alike; each `entry[].changes[]` with
`field == "messages"` holds a `value` with the business number (`metadata`), the senders' profiles
(`contacts`), and any `messages` and `statuses`. One post can batch several of each.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from channels.base import (
    STATUSES,
    InboundMessage,
    InvalidRequest,
    Media,
    MessageKind,
    NothingForUs,
    StatusUpdate,
)

log = structlog.get_logger(__name__)

SIGNATURE_HEADER = "x-hub-signature-256"
MEDIA_SCHEME = "cloud-media:"
"""`Media.url` of a Cloud API attachment: Meta gives an id; the Graph API gives its URL later."""
MAX_ID_LENGTH = 256
"""Ids are unique keys in PostgreSQL's indexes; Meta's wamids are well under this."""

_DIGITS = re.compile(r"[0-9]{1,20}")
MEDIA_ID = re.compile(r"[0-9A-Za-z_-]{1,128}")
"""What a Cloud API media id may look like (it goes into a Graph API path)."""
_MEDIA_TYPES = ("audio", "voice", "image", "video", "document", "sticker")
_STATUS_NAMES = {"sent": "sent", "delivered": "delivered", "read": "read", "failed": "failed",
                 "played": "read"}  # fmt: skip
"""Meta's statuses in `channels.base.STATUSES` terms (a played voice note has been read)."""


def sign(app_secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` Meta sends with `body` (for the sandbox, chat and tests)."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def is_valid_signature(app_secret: str | None, body: bytes, signature: str | None) -> bool:
    """Check `X-Hub-Signature-256` (HMAC-SHA256 of the raw body with the app secret) in
    constant time; no secret, no header or any other scheme is a mismatch."""
    if not app_secret or not signature:
        return False
    return hmac.compare_digest(sign(app_secret, body).encode(), signature.strip().encode())


def verify_subscription(query: Mapping[str, str], verify_token: str) -> str | None:
    """Answer Meta's webhook subscription check: the `hub.challenge` to echo back when
    `hub.mode` is `subscribe` and `hub.verify_token` is ours, else None (answer 403)."""
    if not verify_token or query.get("hub.mode") != "subscribe":
        return None
    sent = query.get("hub.verify_token") or ""
    if not hmac.compare_digest(sent.encode(), verify_token.encode()):
        return None
    return query.get("hub.challenge")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key {key[:40]!r} appears twice")
        result[key] = value
    return result


def _clean(value: Any) -> Any:
    """The value with NUL removed and lone surrogates replaced in every string: PostgreSQL's
    text and jsonb can hold neither."""
    if isinstance(value, str):
        return (
            value.replace("\x00", "").encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        )
    if isinstance(value, list):
        return [_clean(item) for item in value]
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    return value


def load(body: bytes) -> dict[str, Any]:
    """Parse a webhook body as the Cloud API sends it, or say why it is not one: UTF-8 JSON,
    no repeated keys or NaN, an object for `whatsapp_business_account` with a list of entries."""
    try:
        document = json.loads(
            body.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_refuse_constant
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidRequest(
            "invalid_message", f"The body is not JSON the Cloud API sends: {exc}"
        ) from exc
    if not isinstance(document, dict) or document.get("object") != "whatsapp_business_account":
        raise InvalidRequest(
            "invalid_message", "The body is not a WhatsApp Business Account webhook."
        )
    if not isinstance(document.get("entry"), list) or not document["entry"]:
        raise InvalidRequest("invalid_message", "The webhook has no entry list.")
    return document


@dataclass(frozen=True)
class Change:
    """One `messages` change: the business number it is for, and its value."""

    display_phone_number: str
    """Digits only: the tenant's sender is `whatsapp:+` and these."""
    phone_number_id: str
    value: Mapping[str, Any]


def _object(parent: Mapping[str, Any], name: str, what: str) -> Mapping[str, Any]:
    value = parent.get(name)
    if not isinstance(value, dict):
        raise InvalidRequest("invalid_message", f"{what} has no {name} object.")
    return value


def _list(parent: Mapping[str, Any], name: str, what: str) -> list[Any]:
    value = parent.get(name, [])
    if not isinstance(value, list):
        raise InvalidRequest("invalid_message", f"{what}: {name} must be a list.")
    return value


def items(value: Mapping[str, Any], name: str) -> list[Any]:
    """A change's `messages` or `statuses` (none when absent)."""
    return _list(value, name, "A change")


def _string(parent: Mapping[str, Any], name: str, what: str, *, required: bool = True) -> str:
    value = parent.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise InvalidRequest("invalid_message", f"{what} has no {name} string.")
    return value


def changes(document: Mapping[str, Any]) -> Iterator[Change]:
    """Every `messages` change of the document, in order (other fields are not ours to read)."""
    for entry in document["entry"]:
        if not isinstance(entry, dict):
            raise InvalidRequest("invalid_message", "An entry is not an object.")
        for change in _list(entry, "changes", "An entry"):
            if not isinstance(change, dict):
                raise InvalidRequest("invalid_message", "A change is not an object.")
            if change.get("field") != "messages":
                continue
            value = _object(change, "value", "A change")
            if value.get("messaging_product") != "whatsapp":
                raise InvalidRequest("invalid_message", "A change is not for WhatsApp.")
            metadata = _object(value, "metadata", "A change")
            display = re.sub(r"[^0-9]", "", _string(metadata, "display_phone_number", "metadata"))
            number_id = _string(metadata, "phone_number_id", "metadata")
            if not _DIGITS.fullmatch(display) or not _DIGITS.fullmatch(number_id):
                raise InvalidRequest("invalid_message", "metadata does not name a phone number.")
            yield Change(display, number_id, value)


def addressee(body: bytes) -> str:
    """The tenant's sender the (unverified) post is for: the first change's business number."""
    first = next(changes(load(body)), None)
    if first is None:  # another field the Meta app is subscribed to: not ours to read
        raise NothingForUs("The webhook holds no messages change.")
    return f"whatsapp:+{first.display_phone_number}"


def _identifier(parent: Mapping[str, Any], name: str, what: str) -> str:
    value = _string(parent, name, what).strip()
    if len(value) > MAX_ID_LENGTH:
        raise InvalidRequest(
            "invalid_message", f"{what}: {name} is over {MAX_ID_LENGTH} characters."
        )
    return value


def profiles(value: Mapping[str, Any]) -> dict[str, str]:
    """The senders' profile names by WhatsApp id."""
    names: dict[str, str] = {}
    for contact in _list(value, "contacts", "A change"):
        if isinstance(contact, dict) and isinstance(contact.get("wa_id"), str):
            profile = contact.get("profile")
            name = profile.get("name") if isinstance(profile, dict) else None
            if isinstance(name, str) and name.strip():
                names[contact["wa_id"]] = name.strip()
    return names


def _coordinate(location: Mapping[str, Any], name: str) -> float:
    value = location.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest("invalid_message", f"location has no numeric {name}.")
    return float(value)


@dataclass(frozen=True)
class _Content:
    """What a message says: its kind, its text, its attachments and the option it chose."""

    kind: MessageKind
    body: str
    media: tuple[Media, ...] = ()
    choice: str | None = None


def _content(raw: Mapping[str, Any], kind_name: str) -> _Content:
    """What a message of `kind_name` says."""
    what = f"A {kind_name} message"
    if kind_name == "text":
        body = _string(_object(raw, "text", what), "body", what, required=False)
        return _Content("text" if body.strip() else "unsupported", body)
    if kind_name in _MEDIA_TYPES:
        attachment = _object(raw, kind_name, what)
        media_id = _string(attachment, "id", what)
        if not MEDIA_ID.fullmatch(media_id):
            raise InvalidRequest("invalid_message", f"{what} has a malformed media id.")
        mime = _string(attachment, "mime_type", what, required=False)
        caption = _string(attachment, "caption", what, required=False)
        return _Content("media", caption, (Media(f"{MEDIA_SCHEME}{media_id}", mime),))
    if kind_name == "location":
        location = _object(raw, "location", what)
        coordinates = f"{_coordinate(location, 'latitude')}, {_coordinate(location, 'longitude')}"
        parts = (_string(location, k, what, required=False).strip() for k in ("name", "address"))
        place = " — ".join(p for p in parts if p)
        return _Content("location", f"{place} ({coordinates})" if place else coordinates)
    if kind_name == "interactive":
        return _reply(_object(raw, "interactive", what), what)
    if kind_name == "button":  # a template's quick-reply button
        button = _object(raw, "button", what)
        payload = _string(button, "payload", what, required=False)
        text = _string(button, "text", what, required=False)
        choice = _choice_id(payload, what) if payload.strip() else None
        return _Content("button", text or payload, choice=choice)
    return _Content("unsupported", "")  # reaction, system notices, orders, unknown types


def _reply(interactive: Mapping[str, Any], what: str) -> _Content:
    """A press on one of our reply buttons or list rows: the option's id, its title as the
    text (a list row's description is left in the payload)."""
    reply_type = interactive.get("type")
    if reply_type not in ("button_reply", "list_reply"):
        return _Content("unsupported", "")  # a flow's or a product's reply: not ours to read
    reply = _object(interactive, str(reply_type), what)
    choice = _choice_id(_string(reply, "id", what), what)
    return _Content("button", _string(reply, "title", what, required=False), choice=choice)


def _choice_id(value: str, what: str) -> str:
    """The option id a press brings back. Meta allows up to 256 characters (ours are at most
    `channels.choices.OPTION_ID_CHARS`); a longer one is not Meta's."""
    choice = value.strip()
    if len(choice) > MAX_ID_LENGTH:
        raise InvalidRequest(
            "invalid_message", f"{what}: the option id is over {MAX_ID_LENGTH} characters."
        )
    return choice


def parse_message(raw: Any, recipient: str, profiles: Mapping[str, str]) -> InboundMessage:
    """Turn one of the change's `messages[]` into an inbound message, or say what is wrong."""
    if not isinstance(raw, dict):
        raise InvalidRequest("invalid_message", "A message is not an object.")
    wamid = _identifier(raw, "id", "A message")
    wa_id = _string(raw, "from", "A message").strip()
    if not _DIGITS.fullmatch(wa_id):
        raise InvalidRequest("invalid_message", "A message's from is not a WhatsApp id (digits).")
    content = _content(raw, _string(raw, "type", "A message"))
    return InboundMessage(
        provider_message_id=wamid,
        sender=f"whatsapp:+{wa_id}",
        recipient=recipient,
        wa_id=wa_id,
        kind=content.kind,
        body=content.body,
        profile_name=profiles.get(wa_id),
        media=content.media,
        payload=dict(raw),
        choice=content.choice,
    )


def parse_status(raw: Any) -> StatusUpdate | None:
    """Turn one of the change's `statuses[]` into a status update; None for a status the
    service has no name for (Meta adds some: refusing the batch would lose its messages)."""
    if not isinstance(raw, dict):
        raise InvalidRequest("invalid_status", "A status is not an object.")
    wamid = raw.get("id")
    if not isinstance(wamid, str) or not wamid.strip() or len(wamid) > MAX_ID_LENGTH:
        raise InvalidRequest("invalid_status", "A status has no id, or not one of Meta's.")
    status = _STATUS_NAMES.get(str(raw.get("status")))
    if status is None:
        log.info("skipped a Cloud API status the service does not know",
                 status=str(raw.get("status"))[:40])  # fmt: skip
        return None
    assert status in STATUSES
    errors = raw.get("errors", [])
    if not isinstance(errors, list):
        raise InvalidRequest("invalid_status", "A status's errors must be a list.")
    code: int | None = None
    if errors:
        first = errors[0]
        raw_code = first.get("code") if isinstance(first, dict) else None
        if isinstance(raw_code, bool) or not isinstance(raw_code, int) or not 0 <= raw_code < 10**9:
            raise InvalidRequest("invalid_status", "A status error has no numeric code.")
        code = raw_code
    opaque = raw.get("biz_opaque_callback_data")
    echoed = re.fullmatch(r"outbox:([0-9]{1,18})", opaque) if isinstance(opaque, str) else None
    return StatusUpdate(wamid.strip(), status, code, int(echoed[1]) if echoed else None)


def clean(document: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The document PostgreSQL-safe, and whether anything had to change."""
    cleaned = _clean(document)
    return cleaned, cleaned != document
