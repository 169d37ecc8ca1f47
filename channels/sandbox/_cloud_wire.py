"""Wire vocabulary of :mod:`channels.sandbox.cloud`: Graph API errors and the webhook documents
Meta posts, signed as Meta signs them.

The sandbox signs with its own few lines of HMAC rather than the product's, so a test that
posts what the sandbox built checks the product's verification against an independent one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

ERROR_TITLES: dict[int, str] = {
    2: "Service temporarily unavailable",
    4: "Application request limit reached",
    100: "Invalid parameter",
    190: "Invalid OAuth access token - Cannot parse access token",
    80007: "Rate limit issues",
    130429: "Rate limit hit",
    131000: "Something went wrong",
    131008: "Required parameter is missing",
    131009: "Parameter value is not valid",
    131026: "Message undeliverable",
    131047: "Re-engagement message",
    131048: "Spam rate limit hit",
    131050: "Unable to deliver the message. This recipient has chosen to stop receiving "
    "marketing messages on WhatsApp from your business",
    131056: "(Business Account, Consumer Account) pair rate limit hit",
    132000: "Number of parameters does not match the expected number of params",
    132001: "Template name does not exist in the translation",
}

STATUSES = ("sent", "delivered", "read", "failed")
"""The statuses Meta's webhooks report for a business's message, in the order they happen."""

WEBHOOK_HEADERS = {"User-Agent": "facebookexternalua", "Content-Type": "application/json"}


class GraphError(Exception):
    """Abort a request with the error body the Graph API sends."""

    def __init__(
        self, code: int, status: int = 400, message: str | None = None, details: str | None = None
    ) -> None:
        super().__init__(code, status, message)
        self.code, self.status = code, status
        title = message or ERROR_TITLES.get(code, f"Graph API error {code}")
        error: dict[str, Any] = {
            "message": f"(#{code}) {title}",
            "type": "OAuthException",
            "code": code,
            "fbtrace_id": secrets.token_urlsafe(12),
        }
        if details is not None or code >= 130000:
            error["error_data"] = {"messaging_product": "whatsapp", "details": details or title}
        self.payload = {"error": error}


def new_wamid() -> str:
    """A WhatsApp message id shaped like Meta's (`wamid.` and base64)."""
    return "wamid." + base64.b64encode(secrets.token_bytes(30)).decode()


def signature(app_secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` header Meta sends with `body`."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_document(
    phone_number_id: str,
    display_phone_number: str,
    *,
    messages: Iterable[Mapping[str, Any]] = (),
    statuses: Iterable[Mapping[str, Any]] = (),
    contacts: Iterable[Mapping[str, Any]] = (),
    business_account_id: str = "102290129340398",
) -> dict[str, Any]:
    """The `messages` webhook Meta posts for one business number: one entry, one change."""
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {
            "display_phone_number": display_phone_number,
            "phone_number_id": phone_number_id,
        },
    }
    for name, items in (("contacts", contacts), ("messages", messages), ("statuses", statuses)):
        if listed := [dict(item) for item in items]:
            value[name] = listed
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": business_account_id, "changes": [{"value": value, "field": "messages"}]}],
    }


def signed(document: Mapping[str, Any], app_secret: str) -> tuple[bytes, dict[str, str]]:
    """The body and headers of Meta's POST of `document` (Meta escapes non-ASCII as `\\uXXXX`,
    which is why a signature must be checked over the raw body, never a re-encoding)."""
    body = json.dumps(document, separators=(",", ":")).encode()
    return body, {**WEBHOOK_HEADERS, "X-Hub-Signature-256": signature(app_secret, body)}


def user_message(
    from_wa_id: str,
    *,
    text: str | None = None,
    wamid: str | None = None,
    kind: str | None = None,
    content: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One of a user's `messages[]`: a text, or `kind` with its `content` object (an `audio`,
    a `location`, an `interactive` reply...)."""
    message: dict[str, Any] = {
        "from": from_wa_id,
        "id": wamid or new_wamid(),
        "timestamp": str(int(time.time())),
    }
    if kind is None:
        message |= {"type": "text", "text": {"body": text or ""}}
    else:
        message |= {"type": kind, kind: dict(content or {})}
    if context is not None:
        message["context"] = dict(context)
    return message


def press_content(choices: Mapping[str, Any], number: int) -> dict[str, Any]:
    """The `interactive` object of a user's message pressing option `number` (from 1) of our
    normalised `choices`: a `button_reply`, or a `list_reply` (with the row's description)."""
    options = choices["options"]
    if not 1 <= number <= len(options):
        raise ValueError(f"option {number} out of 1..{len(options)}")
    option = options[number - 1]
    if choices["type"] == "buttons":
        return {"type": "button_reply",
                "button_reply": {"id": option["id"], "title": option["title"]}}  # fmt: skip
    reply = {"id": option["id"], "title": option["title"]}
    if option.get("description"):
        reply["description"] = option["description"]
    return {"type": "list_reply", "list_reply": reply}


def status_item(
    wamid: str,
    status: str,
    recipient: str,
    *,
    error_code: int | None = None,
    opaque: str | None = None,
) -> dict[str, Any]:
    """One of `statuses[]`: a business message's new status (`failed` with its error)."""
    item: dict[str, Any] = {
        "id": wamid,
        "status": status,
        "timestamp": str(int(time.time())),
        "recipient_id": recipient,
    }
    if opaque:
        item["biz_opaque_callback_data"] = opaque
    if status == "failed":
        code = 131026 if error_code is None else error_code
        title = ERROR_TITLES.get(code, f"Error {code}")
        item["errors"] = [{"code": code, "title": title, "message": title,
                           "error_data": {"details": title}}]  # fmt: skip
    return item
