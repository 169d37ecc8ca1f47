"""Twilio's WhatsApp webhook: signature check and parsing into a typed inbound message."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from twilio.request_validator import RequestValidator, compare

MessageKind = Literal["text", "media", "location", "button", "unsupported"]


class InvalidInboundError(ValueError):
    """The webhook form is not a WhatsApp message we can accept; the text says why."""


@dataclass(frozen=True)
class Media:
    """One attachment Twilio hosts for us (fetched later with the tenant's credentials)."""

    url: str
    content_type: str


@dataclass(frozen=True)
class InboundMessage:
    """A WhatsApp message as Twilio delivered it, normalised."""

    message_sid: str
    account_sid: str
    from_address: str
    to_address: str
    wa_id: str
    body: str
    profile_name: str | None
    kind: MessageKind
    media: list[Media] = field(default_factory=list)
    raw: dict[str, str] = field(default_factory=dict, repr=False)


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


def _required(form: Mapping[str, str], name: str) -> str:
    value = (form.get(name) or "").strip()
    if not value:
        raise InvalidInboundError(f"The form has no {name}; Twilio always sends one.")
    return value


def parse_inbound(form: Mapping[str, str]) -> InboundMessage:
    """Turn Twilio's webhook form into an `InboundMessage`, or say what is missing."""
    message_sid = _required(form, "MessageSid")
    from_address = _required(form, "From")
    to_address = _required(form, "To")
    if not from_address.startswith("whatsapp:") or not to_address.startswith("whatsapp:"):
        raise InvalidInboundError("From and To must be WhatsApp addresses ('whatsapp:...').")
    try:
        num_media = int(form.get("NumMedia") or 0)
    except ValueError as exc:
        raise InvalidInboundError("NumMedia must be a whole number.") from exc
    if not 0 <= num_media <= 10:
        raise InvalidInboundError("NumMedia must be between 0 and 10.")
    media = [
        Media(
            url=_required(form, f"MediaUrl{i}"), content_type=form.get(f"MediaContentType{i}", "")
        )
        for i in range(num_media)
    ]
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
        message_sid=message_sid,
        account_sid=(form.get("AccountSid") or "").strip(),
        from_address=from_address,
        to_address=to_address,
        wa_id=wa_id,
        body=body,
        profile_name=(form.get("ProfileName") or "").strip() or None,
        kind=kind,
        media=media,
        raw=dict(form),
    )
