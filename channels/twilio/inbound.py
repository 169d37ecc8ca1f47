"""Twilio's WhatsApp webhooks: the form, its signature, and the records it becomes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

from twilio.request_validator import RequestValidator, compare

from channels.base import (
    STATUSES,
    InboundMessage,
    InvalidRequest,
    Media,
    MessageKind,
    StatusUpdate,
)
from channels.choices import OPTION_ID_CHARS

MAX_ID_LENGTH = 256
"""Twilio's SIDs are 34 characters and its addresses a few dozen; ids are unique keys in
PostgreSQL's indexes, which refuse an entry over ~2.7 kB, so a longer one is not Twilio's."""


class _Params(dict[str, list[str]]):
    """A form as `RequestValidator` reads a MultiDict: every value of a field, found at once
    (for a plain dict it tries two other lookups first and raises twice per field)."""

    def getall(self, name: str) -> list[str]:
        return self[name]


@dataclass(frozen=True)
class Form:
    """A webhook form, as Twilio signed it and as it is read."""

    sent: Mapping[str, list[str]]
    """Every value of every field, in order, decoded and otherwise untouched: what Twilio's
    signature covers (each distinct value of a repeated field, sorted)."""
    fields: dict[str, str]
    """One value per field, NUL characters removed: PostgreSQL's text and jsonb cannot hold
    NUL, and no WhatsApp message needs one. Only to be believed once `sent` is verified."""
    cleaned: bool = False
    """Whether NUL characters were removed."""


def is_valid_signature(
    auth_token: str, url: str, params: Mapping[str, str | list[str]], signature: str | None
) -> bool:
    """Check `X-Twilio-Signature` exactly as Twilio computes it, with its own validator.

    `params` maps each field to its value, or to every value of a repeated field (Twilio signs
    each distinct one). `RequestValidator.validate` signs the URL twice, with and without its
    port, because Twilio's own signing is inconsistent about ports. `url` is always one of the
    two, so the common case is settled by one signature over `url`; only a mismatch pays for
    both.
    """
    if not signature:
        return False
    validator = RequestValidator(auth_token)
    form = _Params({k: [v] if isinstance(v, str) else list(v) for k, v in params.items()})
    if compare(validator.compute_signature(url, form), signature):
        return True
    return bool(validator.validate(url, form, signature))


def sign(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """Compute the `X-Twilio-Signature` Twilio would send for this form (for chat and tests)."""
    return str(RequestValidator(auth_token).compute_signature(url, dict(params)))


def parse_form(content_type: str | None, body: bytes) -> Form:
    """Parse Twilio's URL-encoded form, or say why it is not one.

    Percent-escapes that are not UTF-8 (a lone surrogate's `%ED%A0%80`) decode to U+FFFD, as
    Twilio's signature over the decoded form would have them; a body that is not UTF-8 itself
    is refused. A field given twice with different values is refused too: Twilio never sends
    one, and its signature, over the sorted values, does not say which one to believe.
    """
    if (content_type or "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise InvalidRequest("invalid_form", "The body must be application/x-www-form-urlencoded.")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest("invalid_form", "The form is not valid UTF-8 URL encoding.") from exc
    sent: dict[str, list[str]] = {}
    fields: dict[str, str] = {}
    for key, value in pairs:
        sent.setdefault(key, []).append(value)
        name, text = key.replace("\x00", ""), value.replace("\x00", "")
        if fields.setdefault(name, text) != text:
            raise InvalidRequest(
                "repeated_field",
                f"The form gives {name[:40]!r} more than one value; Twilio never does.",
            )
    cleaned = any("\x00" in key or "\x00" in "".join(values) for key, values in sent.items())
    return Form(sent, fields, cleaned)


def _identifier(form: Mapping[str, str], name: str) -> str:
    """`required`, for a field that names something (a SID, an address): a short one."""
    value = required(form, name)
    if len(value) > MAX_ID_LENGTH:
        raise InvalidRequest(
            "invalid_message", f"{name} is over {MAX_ID_LENGTH} characters; Twilio's are short."
        )
    return value


def required(form: Mapping[str, str], name: str) -> str:
    """The field's value, stripped; an `InvalidRequest` when Twilio would have sent one."""
    value = (form.get(name) or "").strip()
    if not value:
        raise InvalidRequest("invalid_message", f"The form has no {name}; Twilio always sends one.")
    return value


def parse_inbound(form: Mapping[str, str]) -> InboundMessage:
    """Turn Twilio's webhook form into an inbound message, or say what is missing."""
    message_sid = _identifier(form, "MessageSid")
    from_address = _identifier(form, "From")
    to_address = _identifier(form, "To")
    if not from_address.startswith("whatsapp:") or not to_address.startswith("whatsapp:"):
        raise InvalidRequest(
            "invalid_message", "From and To must be WhatsApp addresses ('whatsapp:...')."
        )
    try:
        num_media = int(form.get("NumMedia") or 0)
    except ValueError as exc:
        raise InvalidRequest("invalid_message", "NumMedia must be a whole number.") from exc
    if not 0 <= num_media <= 10:
        raise InvalidRequest("invalid_message", "NumMedia must be between 0 and 10.")
    media = tuple(
        Media(url=required(form, f"MediaUrl{i}"), content_type=form.get(f"MediaContentType{i}", ""))
        for i in range(num_media)
    )
    body = form.get("Body") or ""
    choice = _choice(form)
    kind: MessageKind
    if media:
        kind = "media"
    elif form.get("Latitude") and form.get("Longitude"):
        kind = "location"
        place = " — ".join(p for p in (form.get("Label"), form.get("Address")) if p)
        coordinates = f"{form['Latitude']}, {form['Longitude']}"
        body = f"{place} ({coordinates})" if place else coordinates
    elif pressed := form.get("ListId") or form.get("ButtonPayload") or form.get("ButtonText"):
        kind = "button"
        body = body or form.get("ListTitle") or form.get("ButtonText") or pressed
    elif body.strip():
        kind = "text"
    else:
        kind = "unsupported"
    wa_id = (form.get("WaId") or "").strip() or from_address.removeprefix("whatsapp:")
    if len(wa_id) > MAX_ID_LENGTH:
        raise InvalidRequest("invalid_message", f"WaId is over {MAX_ID_LENGTH} characters.")
    return InboundMessage(
        provider_message_id=message_sid,
        sender=from_address,
        recipient=to_address,
        wa_id=wa_id,
        kind=kind,
        body=body,
        profile_name=(form.get("ProfileName") or "").strip() or None,
        media=media,
        payload=dict(form),
        choice=choice if kind == "button" else None,
    )


def _choice(form: Mapping[str, str]) -> str | None:
    """The id of the option a press chose: a list row's `ListId`, a quick reply's
    `ButtonPayload` (ours, or a template button's), or None. An id longer than any we send
    names none of our options: the press is kept as the user's words (its title), since a
    refused post is never delivered again."""
    choice = form.get("ListId") or form.get("ButtonPayload") or None
    return choice if choice is not None and len(choice) <= OPTION_ID_CHARS else None


def parse_status(form: Mapping[str, str]) -> StatusUpdate:
    """Turn Twilio's status callback form into a status update, or say what is wrong."""
    sid = (form.get("MessageSid") or "").strip()
    status = (form.get("MessageStatus") or form.get("SmsStatus") or "").strip().lower()
    if not sid or len(sid) > MAX_ID_LENGTH:
        raise InvalidRequest(
            "invalid_status", "The form has no MessageSid, or not one of Twilio's."
        )
    if status not in STATUSES:
        raise InvalidRequest("invalid_status", f"Unknown MessageStatus {status[:40]!r}.")
    raw_code = (form.get("ErrorCode") or "").strip()
    if raw_code and not (raw_code.isascii() and raw_code.isdigit() and len(raw_code) <= 9):
        raise InvalidRequest("invalid_status", "ErrorCode must be a number of up to 9 digits.")
    return StatusUpdate(sid, status, int(raw_code) if raw_code else None)
