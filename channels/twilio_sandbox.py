"""Serve a local stand-in for the slice of Twilio's REST API that conversa uses.

The sandbox answers ``/2010-04-01/Accounts/{AccountSid}/Messages`` requests with
Twilio-shaped JSON, so the official ``twilio`` client (see
:func:`channels.twilio_client.make_twilio_client`) works against it unchanged. Tests
drive it in-process; other processes use the ``/sandbox/*`` control endpoints.

Run it standalone with ``python -m channels.twilio_sandbox --port 5050``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import json
import logging
import re
import secrets
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self, cast
from urllib.parse import parse_qs, urlencode, urlsplit

__all__ = ["API_VERSION", "TwilioSandbox", "main"]

logger = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
MAX_BODY_CHARS = 1600
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

_ERROR_MESSAGES: dict[int, str] = {
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
    63016: (
        "Failed to send freeform message because you are outside the allowed window. "
        "If you are using WhatsApp, please use a Message Template."
    ),
}

# Fields kept in the sandbox's records that Twilio's Message resource does not return.
_SANDBOX_FIELDS = ("content_sid", "content_variables", "status_callback", "media_urls")

_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = frozenset("\f^{}\\[~]|€")

_MESSAGES_RE = re.compile(rf"^/{API_VERSION}/Accounts/(?P<account>[^/]+)/Messages\.json$")
_MESSAGE_RE = re.compile(
    rf"^/{API_VERSION}/Accounts/(?P<account>[^/]+)/Messages/(?P<sid>[^/]+)\.json$"
)


def _error(code: int, status: int, message: str | None = None) -> dict[str, Any]:
    """Build a Twilio error payload."""
    return {
        "code": code,
        "message": message or _ERROR_MESSAGES.get(code, f"Twilio error {code}"),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


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


@dataclass
class _ErrorRule:
    """An injected failure for upcoming create calls."""

    code: int
    status: int
    message: str | None
    times: int
    to: str | None


class _HTTPError(Exception):
    """Abort request handling with a Twilio error response."""

    def __init__(self, code: int, status: int, message: str | None = None) -> None:
        super().__init__(code, status, message)
        self.status = status
        self.payload = _error(code, status, message)


class TwilioSandbox:
    """Fake Twilio Messages API on a local ``ThreadingHTTPServer``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        accounts: dict[str, str] | None = None,
    ) -> None:
        """Configure the sandbox; ``accounts`` maps SIDs to tokens (``None`` accepts any)."""
        self.host = host
        self.port = port
        self._accounts = dict(accounts) if accounts is not None else None
        self._cond = threading.Condition()
        self._messages: list[dict[str, Any]] = []
        self._errors: list[_ErrorRule] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> Self:
        """Bind the server and serve requests from a daemon thread."""
        if self._server is not None:
            raise RuntimeError("TwilioSandbox is already running")
        server = _Server((self.host, self.port), self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="twilio-sandbox",
            daemon=True,
        )
        self._thread.start()
        logger.debug("Twilio sandbox listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Shut the server down and wait for its thread to finish."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self) -> Self:
        """Start the sandbox unless it is already running."""
        return self if self._server is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the sandbox."""
        self.stop()

    @property
    def url(self) -> str:
        """Return the base URL, e.g. ``http://127.0.0.1:5050``."""
        if self._server is None:
            raise RuntimeError("TwilioSandbox is not running; call start() first")
        host, port = self._server.server_address[:2]
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        return f"http://{host}:{port}"

    # -- state -------------------------------------------------------------------

    def add_account(self, sid: str, token: str) -> None:
        """Accept ``sid``/``token`` credentials (switches on credential checking)."""
        with self._cond:
            if self._accounts is None:
                self._accounts = {}
            self._accounts[sid] = token

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Return copies of all created messages, oldest first."""
        with self._cond:
            return [self._copy(m) for m in self._messages]

    def wait_for_messages(
        self, count: int, timeout: float = 10.0, **filters: Any
    ) -> list[dict[str, Any]]:
        """Block until ``count`` messages match ``filters`` (e.g. ``to=``) and return them.

        ``from_`` is accepted as an alias for the ``from`` field.
        """
        fields = {("from" if k == "from_" else k): v for k, v in filters.items()}
        with self._cond:
            matched = self._cond.wait_for(
                lambda: len(self._filter(fields)) >= count, timeout=timeout
            )
            found = [self._copy(m) for m in self._filter(fields)]
            if matched:
                return found
            recent = [{k: m.get(k) for k in ("to", "from", "body")} for m in self._messages[-5:]]
        raise TimeoutError(
            f"expected at least {count} Twilio message(s) matching {fields or 'anything'} "
            f"within {timeout}s, but found {len(found)} "
            f"({len(recent)} most recent of all messages: {recent})"
        )

    def inject_error(
        self,
        code: int,
        status: int = 400,
        message: str | None = None,
        times: int = 1,
        to: str | None = None,
    ) -> None:
        """Fail the next ``times`` message creations (only those to ``to``, if given)."""
        if times < 1:
            raise ValueError("times must be >= 1")
        if not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        with self._cond:
            self._errors.append(_ErrorRule(code, status, message, times, to))

    def reset(self) -> None:
        """Forget all messages and pending injected errors (accounts are kept)."""
        with self._cond:
            self._messages.clear()
            self._errors.clear()
            self._cond.notify_all()

    @staticmethod
    def _copy(message: dict[str, Any]) -> dict[str, Any]:
        """Return a deep-enough copy of a stored message."""
        copied = dict(message)
        copied["media_urls"] = list(message["media_urls"])
        copied["subresource_uris"] = dict(message["subresource_uris"])
        return copied

    def _filter(self, fields: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Return stored messages whose fields equal ``fields``; caller holds the lock."""
        return [m for m in self._messages if all(m.get(k) == v for k, v in fields.items())]

    # -- request handling (called from server threads) ---------------------------

    def _authenticate(self, authorization: str | None, account_sid: str) -> None:
        """Check HTTP Basic credentials against the path's account."""
        username = password = None
        if authorization and authorization[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            if ":" in decoded:
                username, password = decoded.split(":", 1)
        if username is None or password is None or username != account_sid:
            raise _HTTPError(20003, 401)
        with self._cond:
            accounts = None if self._accounts is None else dict(self._accounts)
        if accounts is not None:
            expected = accounts.get(username)
            if expected is None or not hmac.compare_digest(expected, password):
                raise _HTTPError(20003, 401)

    def _create_message(self, account_sid: str, form: dict[str, list[str]]) -> dict[str, Any]:
        """Validate a create request, store the message and return its resource."""

        def field(name: str) -> str | None:
            values = [v for v in form.get(name, []) if v]
            return values[0] if values else None

        to = field("To")
        with self._cond:
            for rule in self._errors:
                if rule.to is None or rule.to == to:
                    rule.times -= 1
                    if rule.times <= 0:
                        self._errors.remove(rule)
                    raise _HTTPError(rule.code, rule.status, rule.message)

        from_ = field("From")
        service_sid = field("MessagingServiceSid")
        body = field("Body") or ""
        media_urls = [v for v in form.get("MediaUrl", []) if v]
        content_sid = field("ContentSid")
        content_variables = field("ContentVariables")
        if to is None:
            raise _HTTPError(21604, 400)
        if from_ is None and service_sid is None:
            raise _HTTPError(21603, 400)
        if not body and not media_urls and content_sid is None:
            raise _HTTPError(21602, 400)
        if len(body) > MAX_BODY_CHARS:
            raise _HTTPError(21617, 400)
        if content_variables is not None:
            try:
                if not isinstance(json.loads(content_variables), dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                raise _HTTPError(21656, 400) from exc

        sid = "SM" + secrets.token_hex(16)
        now = format_datetime(datetime.now(UTC).replace(microsecond=0))
        uri = f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}"
        message: dict[str, Any] = {
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
            "status_callback": field("StatusCallback"),
            "media_urls": media_urls,
        }
        with self._cond:
            self._messages.append(message)
            self._cond.notify_all()
        logger.debug("Twilio sandbox stored %s to %s", sid, to)
        return self._resource(message)

    @staticmethod
    def _resource(message: Mapping[str, Any]) -> dict[str, Any]:
        """Return the Twilio API representation of a stored message."""
        resource = {k: v for k, v in message.items() if k not in _SANDBOX_FIELDS}
        resource["subresource_uris"] = dict(message["subresource_uris"])
        return resource

    def _fetch_message(self, account_sid: str, sid: str, path: str) -> dict[str, Any]:
        """Return one message resource or raise a 404."""
        with self._cond:
            for message in self._messages:
                if message["sid"] == sid and message["account_sid"] == account_sid:
                    return self._resource(message)
        raise _HTTPError(20404, 404, f"The requested resource {path} was not found")

    def _list_messages(self, account_sid: str, query: dict[str, list[str]]) -> dict[str, Any]:
        """Return one page of messages, newest first, in Twilio's list shape."""
        params = {k: v[-1] for k, v in query.items() if v}
        try:
            page_size = int(params.get("PageSize", DEFAULT_PAGE_SIZE))
            page = int(params.get("Page", 0))
        except ValueError as exc:
            raise _HTTPError(20001, 400, "Page and PageSize must be integers") from exc
        if not 1 <= page_size <= MAX_PAGE_SIZE or page < 0:
            raise _HTTPError(20001, 400, f"PageSize must be 1-{MAX_PAGE_SIZE}, Page >= 0")

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
                    raise _HTTPError(20001, 400, f"Invalid {key}: {value}") from exc
                checks.append(
                    lambda m, v=value, o=op: _date_matches(
                        parsedate_to_datetime(m["date_sent"]), v, o
                    )
                )
        with self._cond:
            records = [
                self._resource(m)
                for m in reversed(self._messages)
                if m["account_sid"] == account_sid and all(check(m) for check in checks)
            ]

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

    def _control_messages(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        """Return stored messages for ``GET /sandbox/messages``."""
        fields = {k: v[-1] for k, v in query.items() if k in ("to", "from", "account_sid") and v}
        with self._cond:
            return [self._copy(m) for m in self._filter(fields)]

    def _control_error(self, raw: bytes) -> dict[str, Any]:
        """Register an injected error from a ``POST /sandbox/errors`` JSON body."""
        try:
            spec = json.loads(raw or b"{}")
            rule = _ErrorRule(
                code=int(spec["code"]),
                status=int(spec.get("status", 400)),
                message=spec.get("message"),
                times=int(spec.get("times", 1)),
                to=spec.get("to"),
            )
            self.inject_error(rule.code, rule.status, rule.message, rule.times, rule.to)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise _HTTPError(20001, 400, f"Invalid error spec: {exc}") from exc
        return asdict(rule)

    def _dispatch(
        self, method: str, target: str, authorization: str | None, body: bytes
    ) -> tuple[int, Any]:
        """Route one request and return ``(status, json_payload)``."""
        parts = urlsplit(target)
        path, query = parts.path, parse_qs(parts.query, keep_blank_values=True)

        if path == "/healthz" and method == "GET":
            return 200, {"status": "ok"}
        if path == "/sandbox/messages" and method == "GET":
            return 200, self._control_messages(query)
        if path == "/sandbox/errors" and method == "POST":
            return 201, self._control_error(body)
        if path == "/sandbox/reset" and method == "POST":
            self.reset()
            return 200, {"status": "ok"}

        if match := _MESSAGES_RE.match(path):
            account = match["account"]
            self._authenticate(authorization, account)
            if method == "POST":
                form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
                return 201, self._create_message(account, form)
            if method == "GET":
                return 200, self._list_messages(account, query)
            raise _HTTPError(20004, 405)
        if match := _MESSAGE_RE.match(path):
            account = match["account"]
            self._authenticate(authorization, account)
            if method == "GET":
                return 200, self._fetch_message(account, match["sid"], path)
            raise _HTTPError(20004, 405)
        raise _HTTPError(20404, 404, f"The requested resource {path} was not found")


class _Server(ThreadingHTTPServer):
    """HTTP server that knows its sandbox and never blocks on lingering connections."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], sandbox: TwilioSandbox) -> None:
        self.sandbox = sandbox
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    """Translate HTTP requests into :meth:`TwilioSandbox._dispatch` calls."""

    server_version = "TwilioSandbox/1.0"
    # Headers and body leave in separate writes; without this, Nagle's algorithm and delayed
    # ACKs add ~40 ms to every keep-alive request.
    disable_nagle_algorithm = True

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        sandbox = cast(_Server, self.server).sandbox
        extra: dict[str, str] = {}
        try:
            status, payload = sandbox._dispatch(
                self.command, self.path, self.headers.get("Authorization"), body
            )
        except _HTTPError as exc:
            status, payload = exc.status, exc.payload
            if status == 401:
                extra["WWW-Authenticate"] = 'Basic realm="Twilio API"'
        except Exception:
            logger.exception("Twilio sandbox failed on %s %s", self.command, self.path)
            status, payload = 500, _error(20500, 500)
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def log_message(self, format: str, *args: Any) -> None:
        """Log requests at debug level instead of writing to stderr."""
        logger.debug("%s - " + format, self.address_string(), *args)


def _account_arg(value: str) -> tuple[str, str]:
    """Parse a ``SID:TOKEN`` command-line value."""
    sid, sep, token = value.partition(":")
    if not sep or not sid or not token:
        raise argparse.ArgumentTypeError(f"expected SID:TOKEN, got {value!r}")
    return sid, token


def main(argv: list[str] | None = None) -> int:
    """Run the sandbox until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m channels.twilio_sandbox",
        description="Serve a local fake of Twilio's Messages REST API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--port", type=int, default=5050, help="port to bind (0 = any free)")
    parser.add_argument(
        "--account",
        action="append",
        type=_account_arg,
        default=[],
        metavar="SID:TOKEN",
        help="accepted credentials (repeatable); without any, all credentials are accepted",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    accounts = dict(args.account) if args.account else None
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with TwilioSandbox(args.host, args.port, accounts) as sandbox:
            print(f"Twilio sandbox listening on {sandbox.url}", flush=True)
            stop.wait()
            logger.info("Twilio sandbox shutting down")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
