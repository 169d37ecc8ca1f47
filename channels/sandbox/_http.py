"""HTTP side of :mod:`channels.sandbox.twilio`: wire formats, control endpoints, server.

Everything here is stateless: Twilio-shaped errors, request validation, resources and list
pages; HTTP Basic credential parsing; status callback forms, posted as webhooks signed the
way Twilio signs them; the ``/healthz`` and ``/sandbox/*`` control endpoints (built on the
sandbox's public API only); and the threaded server, whose handler routes every other
request to ``TwilioSandbox._dispatch``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from twilio.request_validator import RequestValidator

if TYPE_CHECKING:
    from channels.sandbox.twilio import TwilioSandbox

# Share the public module's logger so one logging setting covers the whole sandbox.
logger = logging.getLogger("channels.sandbox.twilio")

API_VERSION = "2010-04-01"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

MAX_BODY_CHARS = 1600
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

# What Twilio's webhook requests carry besides the form body and the signature.
WEBHOOK_HEADERS = {"User-Agent": "TwilioProxy/1.1", "Accept": "*/*"}


# -- errors and replies ----------------------------------------------------------


def error_payload(code: int, status: int, message: str | None = None) -> dict[str, Any]:
    """Build a Twilio error payload."""
    return {
        "code": code,
        "message": message or ERROR_MESSAGES.get(code, f"Twilio error {code}"),
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


TRICKLE_MAX_SECONDS = 120.0
"""An endless media stream ends after this long even if the client never gives up."""


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


# -- requests and resources --------------------------------------------------------

# Fields kept in the sandbox's records that Twilio's Message resource does not return.
SANDBOX_FIELDS = ("content_sid", "content_variables", "status_callback", "media_urls")

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


def _first(form: Mapping[str, list[str]], name: str) -> str | None:
    """Return the first non-empty value of form field ``name``."""
    return next((v for v in form.get(name, []) if v), None)


def new_message(account_sid: str, form: Mapping[str, list[str]]) -> dict[str, Any]:
    """Validate a Messages create form and build the sandbox's record of the message.

    The record is Twilio's Message resource plus the :data:`SANDBOX_FIELDS`.
    """
    to = _first(form, "To")
    from_ = _first(form, "From")
    service_sid = _first(form, "MessagingServiceSid")
    body = _first(form, "Body") or ""
    media_urls = [v for v in form.get("MediaUrl", []) if v]
    content_sid = _first(form, "ContentSid")
    content_variables = _first(form, "ContentVariables")
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
        "status_callback": _first(form, "StatusCallback"),
        "media_urls": media_urls,
    }


def resource(message: Mapping[str, Any]) -> dict[str, Any]:
    """Return the Twilio API representation of a stored message."""
    result = {k: v for k, v in message.items() if k not in SANDBOX_FIELDS}
    result["subresource_uris"] = dict(message["subresource_uris"])
    return result


def typing_fields(form: Mapping[str, list[str]]) -> tuple[str, str]:
    """Validate a typing indicator form and return ``(message_id, channel)``."""
    message_id, channel = _first(form, "messageId"), _first(form, "channel")
    if message_id is None:
        raise ApiError(20001, 400, "Missing required parameter messageId in the post body")
    if channel != "whatsapp":
        raise ApiError(20001, 400, f"Invalid channel {channel!r}: only 'whatsapp' is supported")
    if not message_id.startswith(("SM", "MM")):
        raise ApiError(20001, 400, f"Invalid messageId {message_id!r}: expected SM... or MM...")
    return message_id, channel


# -- status callbacks --------------------------------------------------------------


def status_form(message: Mapping[str, Any]) -> dict[str, str]:
    """Build the form Twilio posts to a message's StatusCallback for its current status."""
    to, status = message["to"], message["status"]
    form = {
        "MessageSid": message["sid"],
        "SmsSid": message["sid"],
        "AccountSid": message["account_sid"],
        "To": to,
        "MessageStatus": status,
        "SmsStatus": status,
        "ApiVersion": API_VERSION,
    }
    if message["from"]:
        form["From"] = message["from"]
    if message["messaging_service_sid"]:
        form["MessagingServiceSid"] = message["messaging_service_sid"]
    if to.startswith("whatsapp:"):
        form["ChannelPrefix"] = "whatsapp"
        form["ChannelToAddress"] = to.removeprefix("whatsapp:")
        form["StructuredMessage"] = "false"
    if status in FAILED_STATUSES:
        form["ErrorCode"] = str(message["error_code"])
        form["ErrorMessage"] = message["error_message"]
    return form


def sign_webhook(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """Return the ``X-Twilio-Signature`` Twilio would send for a form POST to ``url``."""
    return RequestValidator(auth_token).compute_signature(url, dict(params))


def post_webhook(url: str, params: Mapping[str, str], auth_token: str, timeout: float) -> int:
    """POST ``params`` as a signed Twilio webhook and return the receiver's HTTP status.

    Raises :class:`httpx.HTTPError` (or :class:`httpx.InvalidURL`) if no answer arrives.
    """
    headers = {**WEBHOOK_HEADERS, "X-Twilio-Signature": sign_webhook(auth_token, url, params)}
    # trust_env=False: go straight to the receiver, as Twilio would, whatever proxy is set.
    response = httpx.post(url, data=dict(params), headers=headers, timeout=timeout, trust_env=False)
    return response.status_code


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


# -- control endpoints ---------------------------------------------------------------


def _matching(
    records: list[dict[str, Any]], query: Mapping[str, list[str]], keys: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Keep ``records`` whose fields equal the query parameters named in ``keys``."""
    fields = {k: v[-1] for k, v in query.items() if k in keys and v}
    return [r for r in records if all(r.get(k) == v for k, v in fields.items())]


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    """Parse a control request's JSON object body."""
    try:
        spec = json.loads(raw or b"{}")
    except ValueError as exc:
        raise ApiError(20001, 400, f"Invalid {what} spec: {exc}") from exc
    if not isinstance(spec, dict):
        raise ApiError(20001, 400, f"Invalid {what} spec: expected a JSON object")
    return spec


def _inject_error(sandbox: TwilioSandbox, raw: bytes) -> dict[str, Any]:
    """Handle ``POST /sandbox/errors``: register an injected error."""
    spec = _json_object(raw, "error")
    try:
        rule = {
            "code": int(spec["code"]),
            "status": int(spec.get("status", 400)),
            "message": spec.get("message"),
            "times": int(spec.get("times", 1)),
            "to": spec.get("to"),
            "endpoint": str(spec.get("endpoint", "messages")),
        }
        sandbox.inject_error(**rule)
    except (ValueError, KeyError, TypeError) as exc:
        raise ApiError(20001, 400, f"Invalid error spec: {exc!r}") from exc
    return rule


def _send_status(sandbox: TwilioSandbox, raw: bytes) -> dict[str, Any]:
    """Handle ``POST /sandbox/status``: post one status callback synchronously."""
    spec = _json_object(raw, "status")
    try:
        sid, status = str(spec["sid"]), str(spec["status"])
        code, url = spec.get("error_code"), spec.get("url")
        error_code = None if code is None else int(code)
        url = None if url is None else str(url)
    except (ValueError, KeyError, TypeError) as exc:
        raise ApiError(20001, 400, f"Invalid status spec: {exc!r}") from exc
    try:
        http_status = sandbox.send_status(sid, status, error_code, url)
    except KeyError as exc:
        raise ApiError(20404, 404, f"No sandbox message {sid!r}") from exc
    except ValueError as exc:
        raise ApiError(20001, 400, str(exc)) from exc
    except Exception as exc:  # the receiver failed; the status was still updated
        raise ApiError(11200, 502, f"Status callback for {sid} failed: {exc!r}") from exc
    return {"sid": sid, "status": status, "http_status": http_status}


def _add_media(sandbox: TwilioSandbox, query: Mapping[str, list[str]], body: bytes) -> Reply:
    """Handle ``POST /sandbox/media?account_sid=AC...&content_type=audio/ogg``: store a file."""
    account = _first(query, "account_sid")
    content_type = _first(query, "content_type")
    if not account or not content_type:
        raise ApiError(20001, 400, "account_sid and content_type query parameters are required")
    if not body:
        raise ApiError(20001, 400, "The request body (the file) is empty")
    url = sandbox.add_media(body, content_type, account_sid=account)
    return Reply(201, {"url": url, "content_type": content_type, "size": len(body)})


def control(
    sandbox: TwilioSandbox, method: str, path: str, query: Mapping[str, list[str]], body: bytes
) -> Reply | None:
    """Answer a ``/healthz`` or ``/sandbox/*`` request, or return ``None`` for other paths."""
    route = (method, path)
    if route == ("GET", "/healthz"):
        return Reply(200, {"status": "ok"})
    if route == ("GET", "/sandbox/messages"):
        return Reply(200, _matching(sandbox.messages, query, ("to", "from", "account_sid")))
    if route == ("POST", "/sandbox/errors"):
        return Reply(201, _inject_error(sandbox, body))
    if route == ("POST", "/sandbox/reset"):
        sandbox.reset()
        return Reply(200, {"status": "ok"})
    if route == ("POST", "/sandbox/status"):
        return Reply(200, _send_status(sandbox, body))
    if route == ("GET", "/sandbox/status"):
        return Reply(200, _matching(sandbox.status_callbacks, query, ("sid", "status")))
    if route == ("POST", "/sandbox/media"):
        return _add_media(sandbox, query, body)
    if route == ("GET", "/sandbox/typing"):
        keys = ("message_id", "account_sid")
        return Reply(200, _matching(sandbox.typing_indicators, query, keys))
    return None


# -- server ----------------------------------------------------------------------


class SandboxServer(ThreadingHTTPServer):
    """HTTP server that knows its sandbox and never blocks on lingering connections."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], sandbox: TwilioSandbox) -> None:
        self.sandbox = sandbox
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    """Answer control requests here and hand Twilio API requests to the sandbox."""

    server_version = "TwilioSandbox/1.0"
    # Headers and body leave in separate writes; without this, Nagle's algorithm and delayed
    # ACKs add ~40 ms to every keep-alive request.
    disable_nagle_algorithm = True

    def _reply(self, body: bytes) -> Reply | RawReply:
        sandbox = cast(SandboxServer, self.server).sandbox
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        reply = control(sandbox, self.command, parts.path, query, body)
        if reply is None:
            authorization = self.headers.get("Authorization")
            reply = sandbox._dispatch(self.command, parts.path, query, authorization, body)
        return reply

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        extra: dict[str, str] = {}
        after: Callable[[], None] | None = None
        try:
            reply = self._reply(body)
            if isinstance(reply, RawReply):
                self._write_raw(reply)
                return
            status, payload, after = reply.status, reply.payload, reply.after
        except ApiError as exc:
            status, payload = exc.status, exc.payload
            if status == 401:
                extra["WWW-Authenticate"] = 'Basic realm="Twilio API"'
        except Exception:
            logger.exception("Twilio sandbox failed on %s %s", self.command, self.path)
            status, payload = 500, error_payload(20500, 500)
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()
        if after is not None:
            try:
                after()
            except Exception:
                logger.exception(
                    "Twilio sandbox follow-up failed on %s %s", self.command, self.path
                )

    def _write_raw(self, reply: RawReply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.trickle is None:
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
            self.wfile.flush()
            return
        # No length: the body runs until the connection closes, which we never do first.
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        chunk, pause = reply.trickle
        stop = time.monotonic() + TRICKLE_MAX_SECONDS
        try:
            while time.monotonic() < stop:
                self.wfile.write(chunk)
                self.wfile.flush()
                time.sleep(pause)
        except OSError:  # the client gave up: that is the point
            return

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def log_message(self, format: str, *args: Any) -> None:
        """Log requests at debug level instead of writing to stderr."""
        logger.debug("%s - " + format, self.address_string(), *args)
