"""Twilio's WhatsApp webhooks: the form, its signature, and the records it becomes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import structlog
from twilio.request_validator import RequestValidator, compare

from channels.base import (
    STATUSES,
    InboundMessage,
    InvalidRequest,
    Media,
    MessageKind,
    StatusUpdate,
)

log = structlog.get_logger(__name__)


class _Params(dict[str, str]):
    """A form as `RequestValidator` reads a MultiDict: one value per field, found at once
    (for a plain dict it tries two other lookups first and raises twice per field)."""

    def getall(self, name: str) -> list[str]:
        return [self[name]]


def is_valid_signature(
    auth_token: str, url: str, params: Mapping[str, Any], signature: str | None
) -> bool:
    """Check `X-Twilio-Signature` exactly as Twilio computes it, with its own validator.

    `RequestValidator.validate` signs the URL twice, with and without its port, because
    Twilio's own signing is inconsistent about ports. `url` is always one of the two, so the
    common case is settled by one signature over `url`; only a mismatch pays for both.
    """
    if not signature:
        return False
    validator, form = RequestValidator(auth_token), _Params(params)
    if compare(validator.compute_signature(url, form), signature):
        return True
    return bool(validator.validate(url, form, signature))


def sign(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """Compute the `X-Twilio-Signature` Twilio would send for this form (for chat and tests)."""
    return str(RequestValidator(auth_token).compute_signature(url, dict(params)))


def parse_form(content_type: str | None, body: bytes) -> dict[str, str]:
    """Parse Twilio's URL-encoded form (the last value wins for a repeated field)."""
    if (content_type or "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise InvalidRequest("invalid_form", "The body must be application/x-www-form-urlencoded.")
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest("invalid_form", "The form is not valid UTF-8 URL encoding.") from exc


def without_nul(form: dict[str, str]) -> dict[str, str]:
    """The form with NUL characters taken out, once the signature (over what was sent) holds:
    PostgreSQL's text and jsonb cannot hold NUL, and no WhatsApp message needs one."""
    if not any("\x00" in key or "\x00" in value for key, value in form.items()):
        return form
    log.info("removed NUL characters from a signed form")
    return {key.replace("\x00", ""): value.replace("\x00", "") for key, value in form.items()}


def required(form: Mapping[str, str], name: str) -> str:
    """The field's value, stripped; an `InvalidRequest` when Twilio would have sent one."""
    value = (form.get(name) or "").strip()
    if not value:
        raise InvalidRequest("invalid_message", f"The form has no {name}; Twilio always sends one.")
    return value


def parse_inbound(form: Mapping[str, str]) -> InboundMessage:
    """Turn Twilio's webhook form into an inbound message, or say what is missing."""
    message_sid = required(form, "MessageSid")
    from_address = required(form, "From")
    to_address = required(form, "To")
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
    kind: MessageKind
    if media:
        kind = "media"
    elif form.get("Latitude") and form.get("Longitude"):
        kind = "location"
        place = " — ".join(p for p in (form.get("Label"), form.get("Address")) if p)
        coordinates = f"{form['Latitude']}, {form['Longitude']}"
        body = f"{place} ({coordinates})" if place else coordinates
    elif form.get("ButtonPayload") or form.get("ButtonText"):
        kind = "button"
        body = body or form.get("ButtonText") or form.get("ButtonPayload") or ""
    elif body.strip():
        kind = "text"
    else:
        kind = "unsupported"
    wa_id = (form.get("WaId") or "").strip() or from_address.removeprefix("whatsapp:")
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
    )


def parse_status(form: Mapping[str, str]) -> StatusUpdate:
    """Turn Twilio's status callback form into a status update, or say what is wrong."""
    sid = (form.get("MessageSid") or "").strip()
    status = (form.get("MessageStatus") or form.get("SmsStatus") or "").strip().lower()
    if not sid:
        raise InvalidRequest("invalid_status", "The form has no MessageSid.")
    if status not in STATUSES:
        raise InvalidRequest("invalid_status", f"Unknown MessageStatus {status!r}.")
    raw_code = (form.get("ErrorCode") or "").strip()
    if raw_code and not raw_code.isdigit():
        raise InvalidRequest("invalid_status", "ErrorCode must be a number.")
    return StatusUpdate(sid, status, int(raw_code) if raw_code else None)
