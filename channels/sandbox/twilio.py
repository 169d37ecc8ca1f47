"""Serve a local stand-in for the slice of Twilio's REST API that conversa uses.

The sandbox answers ``/2010-04-01/Accounts/{AccountSid}/Messages`` requests and WhatsApp
typing indicators (``POST /v2/Indicators/Typing.json``) with Twilio-shaped JSON, so the
official ``twilio`` client (see :func:`channels.twilio.client.make_twilio_client`) works
against it unchanged. Messages created with a ``StatusCallback`` get status callbacks
(``sent`` then ``delivered`` by default), signed like Twilio's, from a background thread.
Tests drive it in-process; other processes use the ``/sandbox/*`` control endpoints:

* ``GET /sandbox/messages`` (``?to=``, ``from``, ``account_sid``), ``POST /sandbox/reset``
* ``POST /sandbox/errors`` ``{"code", "status"?, "message"?, "times"?, "to"?, "endpoint"?}``
* ``POST /sandbox/status`` ``{"sid", "status", "error_code"?, "url"?}``;
  ``GET /sandbox/status`` lists callback attempts (``?sid=``, ``status``)
* ``GET /sandbox/typing`` lists typing indicators (``?message_id=``, ``account_sid``)
* ``POST /sandbox/media?account_sid=AC...&content_type=audio/ogg`` with the file as the body
  stores inbound media and answers ``{"url": ...}``: the URL Twilio would put in ``MediaUrl0``,
  served like Twilio's (``/2010-04-01/Accounts/{sid}/Messages/{MM}/Media/{ME}``) behind HTTP
  Basic auth with the account's SID and token. Tests also serve redirects and endless streams
  (:meth:`TwilioSandbox.add_media_redirect`, :meth:`TwilioSandbox.add_slow_media`).

WhatsApp templates live in the Content API (``POST /v1/Content``, approval status at
``GET /v1/Content/{sid}/ApprovalRequests``; :meth:`TwilioSandbox.add_content` registers one
directly). A message created with ``ContentSid`` + ``ContentVariables`` is stored with the
template's text, placeholders filled, as its ``body``: tests assert the words the user reads.

Run it standalone with ``python -m channels.sandbox.twilio --port 5050``.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import queue
import re
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs

from channels.sandbox._content import ContentStore
from channels.sandbox._http import (
    API_VERSION,
    ERROR_MESSAGES,
    FAILED_STATUSES,
    MESSAGE_STATUSES,
    ApiError,
    RawReply,
    Reply,
    SandboxServer,
    basic_credentials,
    list_page,
    new_message,
    post_webhook,
    resource,
    status_form,
    typing_fields,
)

__all__ = ["API_VERSION", "TwilioSandbox", "main"]

logger = logging.getLogger(__name__)

DEFAULT_FAILURE_CODE = 30008  # "Unknown error"
CALLBACK_TIMEOUT = 5.0
_ENDPOINTS = ("messages", "typing")

_MESSAGES_RE = re.compile(rf"^/{API_VERSION}/Accounts/(?P<account>[^/]+)/Messages\.json$")
_MESSAGE_RE = re.compile(
    rf"^/{API_VERSION}/Accounts/(?P<account>[^/]+)/Messages/(?P<sid>[^/]+)\.json$"
)
_MEDIA_RE = re.compile(
    rf"^/{API_VERSION}/Accounts/(?P<account>[^/]+)/Messages/(?P<message>[^/]+)/Media/(?P<sid>ME[0-9a-f]+)$"
)
_TYPING_PATH = "/v2/Indicators/Typing.json"

_Job = tuple[str, tuple[str, ...]]  # (message SID, statuses to post in order)


@dataclass
class _ErrorRule:
    """An injected failure for upcoming requests to one endpoint."""

    code: int
    status: int
    message: str | None
    times: int
    to: str | None
    endpoint: str


@dataclass(frozen=True)
class _Media:
    """A file the sandbox serves at a media URL (or a redirect, or an endless stream)."""

    account_sid: str
    content_type: str
    body: bytes = b""
    location: str | None = None
    trickle: tuple[bytes, float] | None = None


@dataclass(frozen=True)
class _StatusUpdate:
    """A status change applied to a stored message, with the callback to post for it."""

    sid: str
    status: str
    url: str
    form: dict[str, str]
    token: str


class TwilioSandbox:
    """Fake Twilio Messages API on a local ``ThreadingHTTPServer``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        accounts: dict[str, str] | None = None,
        *,
        auto_status: Sequence[str] = ("sent", "delivered"),
        status_delay: float = 0.0,
        callback_timeout: float = CALLBACK_TIMEOUT,
    ) -> None:
        """Configure the sandbox.

        ``accounts`` maps SIDs to auth tokens (``None`` accepts any credentials).
        ``auto_status`` lists the statuses posted, in order, to the ``StatusCallback`` of
        each created message (``()`` disables them); ``status_delay`` is the pause before
        each one, ``callback_timeout`` bounds every callback request.
        """
        unknown = [s for s in auto_status if s not in MESSAGE_STATUSES]
        if unknown:
            raise ValueError(f"unknown message status(es) in auto_status: {unknown}")
        self.host = host
        self.port = port
        self.auto_status = tuple(auto_status)
        self.status_delay = status_delay
        self.callback_timeout = callback_timeout
        self._accounts = dict(accounts) if accounts is not None else None
        self._cond = threading.Condition()
        self._messages: list[dict[str, Any]] = []
        self._errors: list[_ErrorRule] = []
        self._typing: list[dict[str, Any]] = []
        self._callbacks: list[dict[str, Any]] = []
        self._tokens: dict[str, str] = {}  # message SID -> password its create call used
        self._media: dict[str, _Media] = {}
        self._media_fetches: list[dict[str, Any]] = []
        self.contents = ContentStore()
        """The Content API's templates (``add_content``, ``contents.set_approval``)."""
        self._server: SandboxServer | None = None
        self._thread: threading.Thread | None = None
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> Self:
        """Bind the server; serve requests and status callbacks from daemon threads."""
        if self._server is not None:
            raise RuntimeError("TwilioSandbox is already running")
        server = SandboxServer((self.host, self.port), self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="twilio-sandbox",
            daemon=True,
        )
        self._thread.start()
        self._jobs, self._stopping = queue.SimpleQueue(), threading.Event()
        self._worker = threading.Thread(
            target=self._run_status_jobs,
            args=(self._jobs, self._stopping),
            name="twilio-sandbox-callbacks",
            daemon=True,
        )
        self._worker.start()
        logger.debug("Twilio sandbox listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Shut the server down, dropping automatic status callbacks not yet posted.

        A callback already in flight gets a second to finish; after that its daemon
        thread is abandoned rather than waited for.
        """
        server, thread, worker = self._server, self._thread, self._worker
        self._server = self._thread = self._worker = None
        if server is None:
            return
        self._stopping.set()
        self._jobs.put(None)
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()
        if worker is not None:
            worker.join(timeout=1.0)

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
        summary = ("to", "from", "body")
        return self._wait_for(self._messages, "Twilio message", count, timeout, fields, summary)

    @property
    def typing_indicators(self) -> list[dict[str, Any]]:
        """Return accepted typing indicators: account_sid, message_id, channel, at (epoch s)."""
        with self._cond:
            return [dict(t) for t in self._typing]

    def wait_for_typing(
        self, count: int, timeout: float = 10.0, **filters: Any
    ) -> list[dict[str, Any]]:
        """Block until ``count`` typing indicators match ``filters`` and return them."""
        return self._wait_for(self._typing, "typing indicator", count, timeout, filters)

    @property
    def status_callbacks(self) -> list[dict[str, Any]]:
        """Return every status callback attempt, oldest first.

        Each has ``sid``, ``status``, ``url``, ``params`` (the posted form), ``at``, and
        ``http_status`` (the receiver's answer) or ``error`` (why none came); the other
        one is ``None``.
        """
        with self._cond:
            return [self._copy(c) for c in self._callbacks]

    def wait_for_status_callbacks(
        self, count: int, timeout: float = 10.0, **filters: Any
    ) -> list[dict[str, Any]]:
        """Block until ``count`` callback attempts match ``filters`` (e.g. ``sid=``)."""
        return self._wait_for(self._callbacks, "status callback", count, timeout, filters)

    def send_status(
        self, sid: str, status: str, error_code: int | None = None, url: str | None = None
    ) -> int:
        """Set message ``sid`` to ``status`` and post its status callback synchronously.

        The callback goes to ``url``, else to the message's ``StatusCallback``. ``failed``
        and ``undelivered`` carry ``error_code`` (default 30008, "Unknown error"). Returns
        the HTTP status the receiver answered. Raises ``KeyError`` for an unknown message,
        ``ValueError`` for a bad status or no URL, and the transport error (e.g.
        :class:`httpx.ConnectError`) if the receiver didn't answer; the stored status
        changes regardless, as it does at Twilio.
        """
        update = self._apply_status(sid, status, error_code, url)
        assert update is not None  # only None when an expected status is given
        result = self._post_status(update)
        if isinstance(result, Exception):
            raise result
        return result

    def inject_error(
        self,
        code: int,
        status: int = 400,
        message: str | None = None,
        times: int = 1,
        to: str | None = None,
        endpoint: str = "messages",
    ) -> None:
        """Fail the next ``times`` requests to ``endpoint`` ("messages" or "typing").

        For "messages", only creations addressed to ``to`` fail if it is given.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        if not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        if endpoint not in _ENDPOINTS:
            raise ValueError(f"endpoint must be one of {_ENDPOINTS}, got {endpoint!r}")
        if to is not None and endpoint != "messages":
            raise ValueError("to= only applies to the messages endpoint")
        with self._cond:
            self._errors.append(_ErrorRule(code, status, message, times, to, endpoint))

    def add_content(
        self,
        body: str,
        *,
        account_sid: str,
        language: str = "pt",
        status: str = "approved",
        sid: str | None = None,
    ) -> str:
        """Register a WhatsApp template (text with {{1}}...) of `account_sid`; return its SID."""
        return self.contents.add(account_sid, body, language=language, status=status, sid=sid)

    # -- inbound media ------------------------------------------------------------

    def _store_media(self, media: _Media) -> str:
        sid, message = "ME" + secrets.token_hex(16), "MM" + secrets.token_hex(16)
        with self._cond:
            self._media[sid] = media
        path = f"/{API_VERSION}/Accounts/{media.account_sid}/Messages/{message}/Media/{sid}"
        return self.url + path

    def add_media(self, data: bytes, content_type: str, *, account_sid: str) -> str:
        """Store a file as inbound media of `account_sid`; return its media URL.

        The URL answers ``GET`` with the bytes and ``content_type``, only with the account's
        credentials (HTTP Basic), as Twilio does once media auth is enforced.
        """
        return self._store_media(_Media(account_sid, content_type, body=bytes(data)))

    def add_media_redirect(self, location: str, *, account_sid: str, status: int = 307) -> str:
        """Serve a media URL that redirects to `location` (Twilio redirects to its CDN)."""
        if status not in (301, 302, 303, 307, 308):
            raise ValueError("status must be a redirect status")
        return self._store_media(
            _Media(account_sid, "", location=location, body=str(status).encode())
        )

    def add_slow_media(
        self,
        content_type: str,
        *,
        account_sid: str,
        chunk: bytes = b"OggS\x00\x02" + bytes(10),
        pause: float = 0.05,
    ) -> str:
        """Serve a media URL whose body never ends: `chunk` every `pause` seconds."""
        return self._store_media(_Media(account_sid, content_type, trickle=(chunk, pause)))

    @property
    def media_fetches(self) -> list[dict[str, Any]]:
        """Return every request for a media URL: ``sid``, ``account_sid``, ``authorized``."""
        with self._cond:
            return [dict(f) for f in self._media_fetches]

    def _serve_media(self, account: str, sid: str, authorization: str | None) -> RawReply:
        record = {"sid": sid, "account_sid": account, "authorized": False}
        with self._cond:
            self._media_fetches.append(record)
            media = self._media.get(sid)
        self._authenticate(authorization, account)
        record["authorized"] = True
        if media is None or media.account_sid != account:
            raise ApiError(20404, 404, f"No media {sid}")
        if media.location is not None:
            return RawReply(int(media.body), {"Location": media.location})
        headers = {"Content-Type": media.content_type}
        return RawReply(200, headers, media.body, trickle=media.trickle)

    def reset(self) -> None:
        """Forget messages, typing indicators, callbacks, injected errors and templates (not
        accounts).

        Automatic status callbacks still pending for the forgotten messages are dropped.
        """
        with self._cond:
            self._messages.clear()
            self._errors.clear()
            self._typing.clear()
            self._callbacks.clear()
            self._tokens.clear()
            self._media.clear()
            self._media_fetches.clear()
            self.contents.clear()
            self._cond.notify_all()

    @staticmethod
    def _copy(record: Mapping[str, Any]) -> dict[str, Any]:
        """Return a deep-enough copy of a stored record (its lists and dicts are copied)."""
        return {
            k: list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v
            for k, v in record.items()
        }

    def _wait_for(
        self,
        records: list[dict[str, Any]],
        what: str,
        count: int,
        timeout: float,
        fields: Mapping[str, Any],
        summary: tuple[str, ...] | None = None,
    ) -> list[dict[str, Any]]:
        """Wait until ``count`` of ``records`` (guarded by the lock) match ``fields``."""

        def matching() -> list[dict[str, Any]]:
            return [r for r in records if all(r.get(k) == v for k, v in fields.items())]

        with self._cond:
            matched = self._cond.wait_for(lambda: len(matching()) >= count, timeout=timeout)
            found = [self._copy(r) for r in matching()]
            if matched:
                return found
            recent = [{k: r.get(k) for k in summary or r} for r in records[-5:]]
        raise TimeoutError(
            f"expected at least {count} {what}(s) matching {dict(fields) or 'anything'} "
            f"within {timeout}s, but found {len(found)} "
            f"({len(recent)} most recent of all {what}s: {recent})"
        )

    # -- Twilio API requests (called from server threads) ------------------------

    def _dispatch(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        authorization: str | None,
        body: bytes,
    ) -> Reply | RawReply:
        """Answer one Twilio REST API request (control endpoints are handled earlier)."""
        if match := _MEDIA_RE.match(path):
            if method != "GET":
                raise ApiError(20004, 405)
            return self._serve_media(match["account"], match["sid"], authorization)
        if path.startswith("/v1/Content"):
            account, _ = self._authenticate(authorization, None)
            return self.contents.dispatch(method, path, account, body)
        if path == _TYPING_PATH:
            account, _ = self._authenticate(authorization, None)
            if method == "POST":
                return Reply(200, self._create_typing(account, self._form(body)))
            raise ApiError(20004, 405)
        if match := _MESSAGES_RE.match(path):
            account = match["account"]
            _, token = self._authenticate(authorization, account)
            if method == "POST":
                return self._create_message(account, token, self._form(body))
            if method == "GET":
                with self._cond:
                    resources = [
                        resource(m) for m in reversed(self._messages) if m["account_sid"] == account
                    ]
                return Reply(200, list_page(resources, account, query))
            raise ApiError(20004, 405)
        if match := _MESSAGE_RE.match(path):
            account = match["account"]
            self._authenticate(authorization, account)
            if method == "GET":
                return Reply(200, self._fetch_message(account, match["sid"], path))
            raise ApiError(20004, 405)
        raise ApiError(20404, 404, f"The requested resource {path} was not found")

    @staticmethod
    def _form(body: bytes) -> dict[str, list[str]]:
        """Parse a form-encoded request body."""
        return parse_qs(body.decode("utf-8"), keep_blank_values=True)

    def _authenticate(self, authorization: str | None, account_sid: str | None) -> tuple[str, str]:
        """Check HTTP Basic credentials and return them.

        With ``account_sid`` (from the URL) the username must be that account; without,
        any known account will do. Without ``accounts``, any credentials are accepted.
        """
        username, password = basic_credentials(authorization)
        if account_sid is not None and username != account_sid:
            raise ApiError(20003, 401)
        with self._cond:
            accounts = None if self._accounts is None else dict(self._accounts)
        if accounts is not None:
            expected = accounts.get(username)
            if expected is None or not hmac.compare_digest(expected, password):
                raise ApiError(20003, 401)
        return username, password

    def _take_error(self, endpoint: str, to: str | None = None) -> None:
        """Raise the first injected error that applies to this request, if any."""
        with self._cond:
            for rule in self._errors:
                if rule.endpoint == endpoint and (rule.to is None or rule.to == to):
                    rule.times -= 1
                    if rule.times <= 0:
                        self._errors.remove(rule)
                    raise ApiError(rule.code, rule.status, rule.message)

    def _create_message(self, account_sid: str, token: str, form: dict[str, list[str]]) -> Reply:
        """Validate a create request, store the message and reply with its resource."""
        to = next((v for v in form.get("To", []) if v), None)
        self._take_error("messages", to)
        message = new_message(account_sid, form)
        if message["content_sid"]:
            message["body"] = self.contents.render(
                account_sid, message["content_sid"], message["content_variables"]
            )
        sid = message["sid"]
        with self._cond:
            self._messages.append(message)
            self._tokens[sid] = token
            self._cond.notify_all()
        logger.debug("Twilio sandbox stored %s to %s", sid, message["to"])
        after: Callable[[], None] | None = None
        if message["status_callback"] and self.auto_status:
            # Queued once the response is out, so the client learns the SID first.
            jobs, job = self._jobs, (sid, self.auto_status)
            after = lambda: jobs.put(job)  # noqa: E731
        return Reply(201, resource(message), after)

    def _create_typing(self, account_sid: str, form: dict[str, list[str]]) -> dict[str, Any]:
        """Validate and record a WhatsApp typing indicator."""
        self._take_error("typing")
        message_id, channel = typing_fields(form)
        indicator = {
            "account_sid": account_sid,
            "message_id": message_id,
            "channel": channel,
            "at": time.time(),
        }
        with self._cond:
            self._typing.append(indicator)
            self._cond.notify_all()
        logger.debug("Twilio sandbox stored typing indicator for %s", message_id)
        return {"success": True}

    def _fetch_message(self, account_sid: str, sid: str, path: str) -> dict[str, Any]:
        """Return one message resource or raise a 404."""
        with self._cond:
            for message in self._messages:
                if message["sid"] == sid and message["account_sid"] == account_sid:
                    return resource(message)
        raise ApiError(20404, 404, f"The requested resource {path} was not found")

    # -- status callbacks --------------------------------------------------------

    def _apply_status(
        self,
        sid: str,
        status: str,
        error_code: int | None = None,
        url: str | None = None,
        expected: str | None = None,
    ) -> _StatusUpdate | None:
        """Update the stored message's status and build the callback to post for it.

        Returns ``None``, changing nothing, if ``expected`` is given and the message's
        status is no longer that (someone else moved it on).
        """
        if status not in MESSAGE_STATUSES:
            raise ValueError(f"unknown message status {status!r}")
        if error_code is not None and status not in FAILED_STATUSES:
            raise ValueError("error_code only applies to failed or undelivered messages")
        with self._cond:
            message = next((m for m in self._messages if m["sid"] == sid), None)
            if message is None:
                raise KeyError(f"no Twilio sandbox message {sid!r}")
            if expected is not None and message["status"] != expected:
                return None
            target = url or message["status_callback"]
            if not target:
                raise ValueError(f"message {sid} has no StatusCallback; pass url=")
            message["status"] = status
            message["date_updated"] = format_datetime(datetime.now(UTC).replace(microsecond=0))
            if status in FAILED_STATUSES:
                code = DEFAULT_FAILURE_CODE if error_code is None else error_code
                message["error_code"] = code
                message["error_message"] = ERROR_MESSAGES.get(code, f"Twilio error {code}")
            # Sign with the account's current token, else the one the create call used.
            token = (self._accounts or {}).get(message["account_sid"]) or self._tokens.get(sid)
            form = status_form(message)
            self._cond.notify_all()
        return _StatusUpdate(sid, status, target, form, token or "")

    def _post_status(self, update: _StatusUpdate) -> int | Exception:
        """Post one status callback, record the attempt, return the answer or the error."""
        record: dict[str, Any] = {
            "sid": update.sid,
            "status": update.status,
            "url": update.url,
            "params": update.form,
            "at": time.time(),
            "http_status": None,
            "error": None,
        }
        result: int | Exception
        try:
            result = post_webhook(update.url, update.form, update.token, self.callback_timeout)
            record["http_status"] = result
        except Exception as exc:  # a broken receiver must not take the sandbox down
            result = exc
            record["error"] = f"{type(exc).__name__}: {exc}"
            logger.debug("Twilio sandbox status callback to %s failed: %r", update.url, exc)
        with self._cond:
            self._callbacks.append(record)
            self._cond.notify_all()
        return result

    def _run_status_jobs(self, jobs: queue.SimpleQueue[_Job | None], stop: threading.Event) -> None:
        """Post automatic status progressions, one message after another, until stopped."""
        while (job := jobs.get()) is not None:
            sid, statuses = job
            previous = "queued"
            for status in statuses:
                if self.status_delay > 0:
                    stop.wait(self.status_delay)
                if stop.is_set():
                    return
                try:
                    update = self._apply_status(sid, status, expected=previous)
                except (KeyError, ValueError):
                    break  # the message was reset away
                if update is None:
                    break  # send_status() moved it on; leave the rest to the caller
                self._post_status(update)
                previous = status


def _account_arg(value: str) -> tuple[str, str]:
    """Parse a ``SID:TOKEN`` command-line value."""
    sid, sep, token = value.partition(":")
    if not sep or not sid or not token:
        raise argparse.ArgumentTypeError(f"expected SID:TOKEN, got {value!r}")
    return sid, token


def main(argv: list[str] | None = None) -> int:
    """Run the sandbox until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m channels.sandbox.twilio",
        description="Serve a local fake of Twilio's Messages and typing indicator REST APIs.",
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
    parser.add_argument(
        "--no-auto-status",
        action="store_true",
        help="don't post 'sent' and 'delivered' to each message's StatusCallback",
    )
    parser.add_argument(
        "--status-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="pause before each automatic status callback (default: 0)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    sandbox = TwilioSandbox(
        args.host,
        args.port,
        dict(args.account) if args.account else None,
        auto_status=() if args.no_auto_status else ("sent", "delivered"),
        status_delay=args.status_delay,
    )
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with sandbox:
            print(f"Twilio sandbox listening on {sandbox.url}", flush=True)
            stop.wait()
            logger.info("Twilio sandbox shutting down")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
