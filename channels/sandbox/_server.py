"""HTTP server of :mod:`channels.sandbox.twilio`: a threaded server writing Twilio's replies.

The server knows nothing of Twilio: it hands each request to an :data:`Answer` and writes what
comes back, a JSON :class:`Reply` (running its follow-up once the client has it), a
:class:`RawReply`, or the error an :class:`ApiError` (or any crash) stands for.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from channels.sandbox._wire import ApiError, RawReply, Reply, error_payload

# Share the public module's logger so one logging setting covers the whole sandbox.
logger = logging.getLogger("channels.sandbox.twilio")

TRICKLE_MAX_SECONDS = 120.0
"""An endless media stream ends after this long even if the client never gives up."""

Answer = Callable[[str, str, dict[str, list[str]], str | None, bytes], Reply | RawReply]
"""``(method, path, query, authorization, body)`` to the reply."""


class SandboxServer(ThreadingHTTPServer):
    """HTTP server that knows its answer and never blocks on lingering connections."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], answer: Answer) -> None:
        self.answer = answer
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    """Write the server's answer to each request."""

    server_version = "TwilioSandbox/1.0"
    # Headers and body leave in separate writes; without this, Nagle's algorithm and delayed
    # ACKs add ~40 ms to every keep-alive request.
    disable_nagle_algorithm = True

    def _reply(self, body: bytes) -> Reply | RawReply:
        answer = cast(SandboxServer, self.server).answer
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        return answer(self.command, parts.path, query, self.headers.get("Authorization"), body)

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
