"""Message resources of :mod:`channels.sandbox.twilio`: create, show, list, typing forms.

Stateless: validating a Messages create form into the sandbox's record of the message (with
Twilio's error codes and SMS segment count), the Message resource Twilio returns for a record,
the typing indicator form, Twilio's filtering and paging of message lists, and the inbound
form fields of a press on a message's button or list row (:func:`press_form`).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

from channels.sandbox._wire import API_VERSION, ApiError, first

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_BODY_CHARS = 1600

# Fields kept in the sandbox's records that Twilio's Message resource does not return.
SANDBOX_FIELDS = ("content_sid", "content_variables", "status_callback", "media_urls", "choices")

_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = frozenset("\f^{}\\[~]|€")


def _num_segments(body: str, to: str) -> int:
    """Count SMS segments the way carriers do (WhatsApp messages are always one)."""
    if not body or to.startswith("whatsapp:"):
        return 1
    if all(ch in _GSM7_BASIC or ch in _GSM7_EXTENDED for ch in body):
        units = sum(2 if ch in _GSM7_EXTENDED else 1 for ch in body)
        single, multi = 160, 153
    else:
        units = len(body.encode("utf-16-le")) // 2
        single, multi = 70, 67
    return 1 if units <= single else -(-units // multi)


def new_message(account_sid: str, form: Mapping[str, list[str]]) -> dict[str, Any]:
    """Validate a Messages create form and build the sandbox's record of the message.

    The record is Twilio's Message resource plus the :data:`SANDBOX_FIELDS`; ``choices`` (the
    buttons or list the user sees) is filled in once the content is rendered.
    """
    to = first(form, "To")
    from_ = first(form, "From")
    service_sid = first(form, "MessagingServiceSid")
    body = first(form, "Body") or ""
    media_urls = [v for v in form.get("MediaUrl", []) if v]
    content_sid = first(form, "ContentSid")
    content_variables = first(form, "ContentVariables")
    if to is None:
        raise ApiError(21604, 400)
    if from_ is None and service_sid is None:
        raise ApiError(21603, 400)
    if not body and not media_urls and content_sid is None:
        raise ApiError(21602, 400)
    if len(body) > MAX_BODY_CHARS:
        raise ApiError(21617, 400)
    if content_variables is not None:
        try:
            if not isinstance(json.loads(content_variables), dict):
                raise ValueError("not an object")
        except ValueError as exc:
            raise ApiError(21656, 400) from exc

    sid = "SM" + secrets.token_hex(16)
    now = format_datetime(datetime.now(UTC).replace(microsecond=0))
    uri = f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}"
    return {
        "sid": sid,
        "account_sid": account_sid,
        "to": to,
        "from": from_,
        "body": body,
        "status": "queued",
        "direction": "outbound-api",
        "num_segments": str(_num_segments(body, to)),
        "num_media": str(len(media_urls)),
        "date_created": now,
        "date_updated": now,
        "date_sent": now,
        "api_version": API_VERSION,
        "price": None,
        "price_unit": "USD",
        "error_code": None,
        "error_message": None,
        "messaging_service_sid": service_sid,
        "uri": f"{uri}.json",
        "subresource_uris": {
            "media": f"{uri}/Media.json",
            "feedback": f"{uri}/Feedback.json",
        },
        "content_sid": content_sid,
        "content_variables": content_variables,
        "status_callback": first(form, "StatusCallback"),
        "media_urls": media_urls,
        "choices": None,
    }


def resource(message: Mapping[str, Any]) -> dict[str, Any]:
    """Return the Twilio API representation of a stored message."""
    result = {k: v for k, v in message.items() if k not in SANDBOX_FIELDS}
    result["subresource_uris"] = dict(message["subresource_uris"])
    return result


def press_form(message: Mapping[str, Any], number: int) -> dict[str, str]:
    """Return the fields Twilio adds to the inbound form when the user presses option `number`
    (from 1) of the recorded `message`: ``ButtonText``/``ButtonPayload`` for a button,
    ``ListId``/``ListTitle`` (and ``ListDescription``) for a list row."""
    choices = message.get("choices")
    if not choices:
        raise ValueError(f"message {message.get('sid')} has no buttons or list to press")
    options = choices["options"]
    if not 1 <= number <= len(options):
        raise ValueError(f"option {number} out of 1..{len(options)}")
    option = options[number - 1]
    form = {"Body": option["title"], "OriginalRepliedMessageSid": str(message["sid"])}
    if choices["type"] == "buttons":
        return form | {"ButtonText": option["title"], "ButtonPayload": option["id"]}
    form |= {"ListId": option["id"], "ListTitle": option["title"]}
    return form | ({"ListDescription": option["description"]} if option["description"] else {})


def typing_fields(form: Mapping[str, list[str]]) -> tuple[str, str]:
    """Validate a typing indicator form and return ``(message_id, channel)``."""
    message_id, channel = first(form, "messageId"), first(form, "channel")
    if message_id is None:
        raise ApiError(20001, 400, "Missing required parameter messageId in the post body")
    if channel != "whatsapp":
        raise ApiError(20001, 400, f"Invalid channel {channel!r}: only 'whatsapp' is supported")
    if not message_id.startswith(("SM", "MM")):
        raise ApiError(20001, 400, f"Invalid messageId {message_id!r}: expected SM... or MM...")
    return message_id, channel


# -- message lists -----------------------------------------------------------------


def _parse_filter_date(value: str) -> datetime | date:
    """Parse a ``DateSent`` filter: ``YYYY-MM-DD`` or ISO 8601 with a trailing ``Z``."""
    if len(value) == 10:
        return date.fromisoformat(value)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _date_matches(sent: datetime, value: str, op: str) -> bool:
    """Compare a message's send time to a ``DateSent``/``DateSent<``/``DateSent>`` filter."""
    bound = _parse_filter_date(value)
    left: datetime | date = sent
    if not isinstance(bound, datetime):
        left = sent.date()
    elif op == "=":
        left, bound = sent.date(), bound.date()
    if op == "<":
        return left <= bound
    if op == ">":
        return left >= bound
    return left == bound


def list_page(
    resources: list[dict[str, Any]], account_sid: str, query: Mapping[str, list[str]]
) -> dict[str, Any]:
    """Filter and page an account's message ``resources`` (newest first) like Twilio."""
    params = {k: v[-1] for k, v in query.items() if v}
    try:
        page_size = int(params.get("PageSize", DEFAULT_PAGE_SIZE))
        page = int(params.get("Page", 0))
    except ValueError as exc:
        raise ApiError(20001, 400, "Page and PageSize must be integers") from exc
    if not 1 <= page_size <= MAX_PAGE_SIZE or page < 0:
        raise ApiError(20001, 400, f"PageSize must be 1-{MAX_PAGE_SIZE}, Page >= 0")

    checks: list[Callable[[dict[str, Any]], bool]] = []
    if "To" in params:
        checks.append(lambda m: m["to"] == params["To"])
    if "From" in params:
        checks.append(lambda m: m["from"] == params["From"])
    for key, op in (("DateSent", "="), ("DateSent<", "<"), ("DateSent>", ">")):
        if key in params:
            value = params[key]
            try:
                _parse_filter_date(value)
            except ValueError as exc:
                raise ApiError(20001, 400, f"Invalid {key}: {value}") from exc
            checks.append(
                lambda m, v=value, o=op: _date_matches(parsedate_to_datetime(m["date_sent"]), v, o)
            )
    records = [m for m in resources if all(check(m) for check in checks)]

    start = page * page_size
    token = params.get("PageToken", "")
    if token.startswith("PA"):
        after = [i for i, m in enumerate(records) if m["sid"] == token[2:]]
        if after:
            start = after[0] + 1
    items = records[start : start + page_size]

    base = f"/{API_VERSION}/Accounts/{account_sid}/Messages.json"
    filters = {k: v for k, v in params.items() if k not in ("Page", "PageSize", "PageToken")}

    def page_uri(number: int, **extra: str) -> str:
        query = {**filters, "PageSize": page_size, "Page": number, **extra}
        return f"{base}?{urlencode(query)}"

    next_uri = None
    if start + page_size < len(records) and items:
        next_uri = page_uri(page + 1, PageToken="PA" + items[-1]["sid"])
    return {
        "messages": items,
        "uri": page_uri(page, **({"PageToken": token} if token else {})),
        "first_page_uri": page_uri(0),
        "next_page_uri": next_uri,
        "previous_page_uri": page_uri(page - 1) if page > 0 else None,
        "page": page,
        "page_size": page_size,
        "start": start,
        "end": start + max(len(items) - 1, 0),
    }
