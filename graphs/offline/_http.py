"""HTTP side of :mod:`graphs.offline.llm_server`: the threaded server and its handler.

The handler reads and checks a request, asks its :class:`Owner` (the
:class:`~graphs.offline.llm_server.ChatCompletionsServer`) for the assistant message, and
writes it as one JSON completion or as Server-Sent Events over a chunked response. The server
tracks open connections so stopping it also closes keep-alive ones.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from graphs.offline._requests import (
    MAX_BODY_BYTES,
    RequestError,
    not_found,
    refuse_json_schema,
    validate_request,
)
from graphs.offline._responses import completion, completion_chunks

# Share the public module's logger so one logging setting covers the whole server.
logger = logging.getLogger("graphs.offline.llm_server")


class Owner(Protocol):
    """What the handler needs from the server object it serves for."""

    refuse_json_schema: bool

    def record(self, request: dict[str, Any]) -> None:
        """Keep a received request body."""
        ...

    def models_payload(self) -> dict[str, Any]:
        """Return the ``/v1/models`` list."""
        ...

    def reply_to(self, request: dict[str, Any]) -> dict[str, Any]:
        """Return the assistant message answering ``request`` (may raise anything)."""
        ...

    def embed(self, request: dict[str, Any]) -> dict[str, Any]:
        """Return the ``/v1/embeddings`` answer to ``request`` (or raise `RequestError`)."""
        ...


class CompletionsHTTPServer(ThreadingHTTPServer):
    """Track open connections so that stopping the server closes them too."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], owner: Owner) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.owner = owner
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Remember the connection, then handle it in a new thread."""
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Forget the connection and close it."""
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down every open (e.g. keep-alive) connection."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    """Handle one HTTP connection for a :class:`ChatCompletionsServer`."""

    protocol_version = "HTTP/1.1"
    server_version = "conversa-llm-server/1"
    # Headers and body leave in separate writes; without this, Nagle's algorithm and delayed
    # ACKs add ~40 ms to every keep-alive request.
    disable_nagle_algorithm = True
    timeout = 300
    server: CompletionsHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Log quietly at debug level instead of writing to stderr."""
        logger.debug("%s - " + format, self.address_string(), *args)

    # -- routing ----------------------------------------------------------- #

    @property
    def _route(self) -> str:
        path = self.path.split("?", 1)[0].rstrip("/")
        return path.removeprefix("/v1") or "/"

    def do_GET(self) -> None:
        """Serve the health check and the model list."""
        route = self._route
        if route == "/healthz":
            self._send_json(HTTPStatus.OK, {"status": "ok"})
        elif route == "/models":
            self._send_json(HTTPStatus.OK, self.server.owner.models_payload())
        else:
            self._send_error(not_found(self.path))

    def do_POST(self) -> None:
        """Serve ``/v1/chat/completions`` and ``/v1/embeddings``."""
        if self._route == "/embeddings":
            try:
                self._send_json(HTTPStatus.OK, self.server.owner.embed(self._read_json_body()))
            except RequestError as exc:
                self._send_error(exc)
            return
        if self._route != "/chat/completions":
            self._discard_body()
            self._send_error(not_found(self.path))
            return
        try:
            request = self._read_json_body()
            self.server.owner.record(request)
            validate_request(request)
            if self.server.owner.refuse_json_schema:
                refuse_json_schema(request)
        except RequestError as exc:
            self._send_error(exc)
            return

        try:
            message = self.server.owner.reply_to(request)
        except Exception as exc:
            logger.warning("LLM responder failed: %s: %s", type(exc).__name__, exc, exc_info=True)
            self._send_error(
                RequestError(
                    HTTPStatus.INTERNAL_SERVER_ERROR,
                    f"{type(exc).__name__}: {exc}",
                    code="responder_error",
                ),
                error_type="server_error",
            )
            return

        if request.get("stream"):
            self._send_stream(request, message)
        else:
            self._send_json(HTTPStatus.OK, completion(request, message))

    # -- reading ----------------------------------------------------------- #

    def _content_length(self) -> int:
        try:
            return max(0, int(self.headers.get("Content-Length") or 0))
        except ValueError:
            return 0

    def _discard_body(self) -> None:
        length = self._content_length()
        if 0 < length <= MAX_BODY_BYTES:
            self.rfile.read(length)
        elif length:
            self.close_connection = True

    def _read_json_body(self) -> dict[str, Any]:
        length = self._content_length()
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request body is too large.")
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                f"We could not parse the JSON body of your request. ({exc})",
            ) from exc
        if not isinstance(body, dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, "The request body must be a JSON object.")
        return body

    # -- writing ----------------------------------------------------------- #

    def _send_json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_error(
        self, error: RequestError, *, error_type: str = "invalid_request_error"
    ) -> None:
        self._send_json(
            error.status,
            {
                "error": {
                    "message": error.message,
                    "type": error_type,
                    "param": error.param,
                    "code": error.code,
                }
            },
        )

    def _send_stream(self, request: dict[str, Any], message: dict[str, Any]) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in completion_chunks(request, message):
                self._write_chunk(f"data: {json.dumps(chunk)}\n\n".encode())
            self._write_chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            logger.debug("client went away during a streamed completion")
            self.close_connection = True

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()
