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
Quick-reply and list-picker content (session content, no approval) is listed at
``GET /v1/Content``; a message sent with it also records ``choices`` (``{"type": "buttons" or
"list", "button", "options": [{"id", "title", "description"}]}``, None for any other message),
and :func:`press_form` gives the inbound form fields of a press on one of its options.

Run it standalone with ``python -m channels.sandbox.twilio --port 5050``.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self

from channels.sandbox._api import TwilioApi
from channels.sandbox._callbacks import StatusUpdate, StatusWorker, attempt
from channels.sandbox._cli import parse_args, serve_until_signalled
from channels.sandbox._content import ContentStore
from channels.sandbox._control import control
from channels.sandbox._media import Media, MediaStore
from channels.sandbox._messages import press_form
from channels.sandbox._server import SandboxServer
from channels.sandbox._store import Records
from channels.sandbox._wire import API_VERSION, MESSAGE_STATUSES, RawReply, Reply

__all__ = ["API_VERSION", "TwilioSandbox", "main", "press_form"]

logger = logging.getLogger(__name__)

CALLBACK_TIMEOUT = 5.0


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
        self.callback_timeout = callback_timeout
        self._records = Records(accounts)
        self._media = MediaStore()
        self.contents = ContentStore()
        """The Content API's templates (``add_content``, ``contents.set_approval``)."""
        self._api = TwilioApi(self._records, self._media, self.contents, self._follow_up)
        self._worker = StatusWorker(self._progress, status_delay)
        self._server: SandboxServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> Self:
        """Bind the server; serve requests and status callbacks from daemon threads."""
        if self._server is not None:
            raise RuntimeError("TwilioSandbox is already running")
        server = SandboxServer((self.host, self.port), self._answer)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="twilio-sandbox",
            daemon=True,
        )
        self._thread.start()
        self._worker.start()
        logger.debug("Twilio sandbox listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Shut the server down, dropping automatic status callbacks not yet posted.

        A callback already in flight gets a second to finish; after that its daemon
        thread is abandoned rather than waited for.
        """
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        self._worker.stop()
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
        self._records.add_account(sid, token)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Return copies of all created messages, oldest first."""
        return self._records.all("messages")

    def wait_for_messages(
        self, count: int, timeout: float = 10.0, **filters: Any
    ) -> list[dict[str, Any]]:
        """Block until ``count`` messages match ``filters`` (e.g. ``to=``) and return them.

        ``from_`` is accepted as an alias for the ``from`` field.
        """
        fields = {("from" if k == "from_" else k): v for k, v in filters.items()}
        summary = ("to", "from", "body")
        return self._records.wait_for("messages", "Twilio message", count, timeout, fields, summary)

    @property
    def typing_indicators(self) -> list[dict[str, Any]]:
        """Return accepted typing indicators: account_sid, message_id, channel, at (epoch s)."""
        return self._records.all("typing")

    def wait_for_typing(
        self, count: int, timeout: float = 10.0, **filters: Any
    ) -> list[dict[str, Any]]:
        """Block until ``count`` typing indicators match ``filters`` and return them."""
        return self._records.wait_for("typing", "typing indicator", count, timeout, filters)

    @property
    def status_callbacks(self) -> list[dict[str, Any]]:
        """Return every status callback attempt, oldest first.

        Each has ``sid``, ``status``, ``url``, ``params`` (the posted form), ``at``, and
        ``http_status`` (the receiver's answer) or ``error`` (why none came); the other
        one is ``None``.
        """
        return self._records.all("callbacks")

    def wait_for_status_callbacks(
        self, count: int, timeout: float = 10.0, **filters: Any
    ) -> list[dict[str, Any]]:
        """Block until ``count`` callback attempts match ``filters`` (e.g. ``sid=``)."""
        return self._records.wait_for("callbacks", "status callback", count, timeout, filters)

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
        update = self._records.apply_status(sid, status, error_code, url)
        assert update is not None  # only None when an expected status is given
        result = self._post(update)
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
        self._records.inject_error(code, status, message, times, to, endpoint)

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

    def add_media(self, data: bytes, content_type: str, *, account_sid: str) -> str:
        """Store a file as inbound media of `account_sid`; return its media URL.

        The URL answers ``GET`` with the bytes and ``content_type``, only with the account's
        credentials (HTTP Basic), as Twilio does once media auth is enforced.
        """
        return self.url + self._media.add(Media(account_sid, content_type, body=bytes(data)))

    def add_media_redirect(self, location: str, *, account_sid: str, status: int = 307) -> str:
        """Serve a media URL that redirects to `location` (Twilio redirects to its CDN)."""
        if status not in (301, 302, 303, 307, 308):
            raise ValueError("status must be a redirect status")
        media = Media(account_sid, "", location=location, body=str(status).encode())
        return self.url + self._media.add(media)

    def add_slow_media(
        self,
        content_type: str,
        *,
        account_sid: str,
        chunk: bytes = b"OggS\x00\x02" + bytes(10),
        pause: float = 0.05,
    ) -> str:
        """Serve a media URL whose body never ends: `chunk` every `pause` seconds."""
        media = Media(account_sid, content_type, trickle=(chunk, pause))
        return self.url + self._media.add(media)

    @property
    def media_fetches(self) -> list[dict[str, Any]]:
        """Return every request for a media URL: ``sid``, ``account_sid``, ``authorized``."""
        return self._media.fetches

    def reset(self) -> None:
        """Forget messages, typing indicators, callbacks, injected errors and templates (not
        accounts).

        Automatic status callbacks still pending for the forgotten messages are dropped.
        """
        self._records.clear()
        self._media.clear()
        self.contents.clear()

    # -- serving -----------------------------------------------------------------

    def _answer(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        authorization: str | None,
        body: bytes,
    ) -> Reply | RawReply:
        """Answer a control request, else a Twilio REST API request."""
        reply = control(self, method, path, query, body)
        if reply is not None:
            return reply
        return self._api.answer(method, path, query, authorization, body)

    def _follow_up(self, message: dict[str, Any]) -> Callable[[], None] | None:
        """Queue a created message's automatic status progression, if it asked for callbacks."""
        if message["status_callback"] and self.auto_status:
            return self._worker.schedule(message["sid"], self.auto_status)
        return None

    def _progress(self, sid: str, status: str, previous: str) -> bool:
        """Move message ``sid`` from ``previous`` to ``status`` and post its callback.

        Returns ``False`` when the message is gone (reset away) or no longer ``previous``
        (``send_status()`` moved it on: the rest is left to the caller).
        """
        try:
            update = self._records.apply_status(sid, status, expected=previous)
        except (KeyError, ValueError):
            return False
        if update is None:
            return False
        self._post(update)
        return True

    def _post(self, update: StatusUpdate) -> int | Exception:
        """Post one status callback and record the attempt; return the answer or the error."""
        record, result = attempt(update, self.callback_timeout)
        self._records.add("callbacks", record)
        return result


def main(argv: list[str] | None = None) -> int:
    """Run the sandbox until SIGINT or SIGTERM."""
    args = parse_args(argv)
    sandbox = TwilioSandbox(
        args.host,
        args.port,
        dict(args.account) if args.account else None,
        auto_status=() if args.no_auto_status else ("sent", "delivered"),
        status_delay=args.status_delay,
    )
    serve_until_signalled(sandbox)
    return 0


if __name__ == "__main__":
    sys.exit(main())
