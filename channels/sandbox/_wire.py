"""Wire vocabulary of :mod:`channels.sandbox.twilio`: Twilio's statuses, errors and replies.

Every other sandbox module speaks in these terms: a request either returns a :class:`Reply`
(JSON) or :class:`RawReply` (media bytes, a redirect, an endless stream), or raises
:class:`ApiError`, which the server turns into the error body Twilio sends.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

API_VERSION = "2010-04-01"

_STATUSES = "accepted scheduled canceled queued sending sent failed delivered undelivered read"
MESSAGE_STATUSES = frozenset(_STATUSES.split(" "))
FAILED_STATUSES = frozenset({"failed", "undelivered"})

ERROR_MESSAGES: dict[int, str] = {
    11200: "HTTP retrieval failure",
    20001: "Invalid parameter",
    20003: "Authenticate",
    20004: "Method not allowed",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "Internal Server Error",
    21211: "Invalid 'To' Phone Number",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21610: "Attempt to send to unsubscribed recipient",
    21617: "The concatenated message body exceeds the 1600 character limit.",
    21656: "The ContentVariables Parameter is invalid.",
    30001: "Queue overflow",
    30002: "Account suspended",
    30003: "Unreachable destination handset",
    30004: "Message blocked",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
    30008: "Unknown error",
    63003: "Channel could not find To address",
    63016: (
        "Failed to send freeform message because you are outside the allowed window. "
        "If you are using WhatsApp, please use a Message Template."
    ),
    63024: "Invalid message recipient",
}


def error_message(code: int) -> str:
    """Return Twilio's text for error ``code`` (a generic one for codes the sandbox lacks)."""
    return ERROR_MESSAGES.get(code, f"Twilio error {code}")


def error_payload(code: int, status: int, message: str | None = None) -> dict[str, Any]:
    """Build a Twilio error payload."""
    return {
        "code": code,
        "message": message or error_message(code),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


class ApiError(Exception):
    """Abort request handling with a Twilio error response."""

    def __init__(self, code: int, status: int, message: str | None = None) -> None:
        super().__init__(code, status, message)
        self.status = status
        self.payload = error_payload(code, status, message)


@dataclass(frozen=True)
class Reply:
    """A JSON response, plus work to run once it has been written to the client."""

    status: int
    payload: Any
    after: Callable[[], None] | None = None


@dataclass(frozen=True)
class RawReply:
    """A response that is not JSON: media bytes, a redirect, or an endless trickle of bytes."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    trickle: tuple[bytes, float] | None = None
    """(chunk, pause): send `chunk` every `pause` seconds until the client goes away."""


def basic_credentials(authorization: str | None) -> tuple[str, str]:
    """Return ``(username, password)`` from a Basic ``Authorization`` header, or raise 401."""
    if authorization and authorization[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        username, sep, password = decoded.partition(":")
        if sep:
            return username, password
    raise ApiError(20003, 401)


def parse_form(body: bytes) -> dict[str, list[str]]:
    """Parse a form-encoded request body."""
    return parse_qs(body.decode("utf-8"), keep_blank_values=True)


def first(form: Mapping[str, list[str]], name: str) -> str | None:
    """Return the first non-empty value of form (or query) field ``name``."""
    return next((v for v in form.get(name, []) if v), None)
