"""Serve a local OpenAI-compatible Chat Completions endpoint.

The application always talks to its LLM through ``langchain_openai.ChatOpenAI``.
When no real model is configured (no ``OPENAI_API_KEY``), or in tests, ChatOpenAI
is pointed at a :class:`ChatCompletionsServer` running in a daemon thread of the
current process. The server speaks just enough of the OpenAI Chat Completions
API for ChatOpenAI: plain calls, tool calls (``bind_tools``), structured output
(``response_format`` json_schema or a forced ``tool_choice``) and streaming
(Server-Sent Events with ``chat.completion.chunk`` objects).

What the model "says" is decided by a :data:`Responder`: a callable that takes
the parsed request JSON and returns an assistant message dict. The
:class:`~graphs.offline.model.OfflineResponder` is the deterministic stand-in
used when no API key is configured; tests use a scripted responder.

Nothing is started at import time. Run ``python -m graphs.offline.llm_server`` to serve
the offline model from the command line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

logger = logging.getLogger(__name__)

Responder = Callable[[dict[str, Any]], dict[str, Any]]
"""Map a parsed Chat Completions request to an assistant message dict.

The returned dict has ``content`` (``str | None``) and optionally ``tool_calls``:
``[{"id": ..., "type": "function", "function": {"name": ..., "arguments": "<json>"}}]``.
"""

DEFAULT_MODEL_ID = "local"
MAX_BODY_BYTES = 32 * 1024 * 1024
_CONTENT_PIECE = re.compile(r"\S+\s*|\s+")
_ARGUMENT_PIECE_CHARS = 16


# --------------------------------------------------------------------------- #
# HTTP server
# --------------------------------------------------------------------------- #


class _RequestError(Exception):
    """Signal a client error to be answered with OpenAI's error shape."""

    def __init__(
        self,
        status: HTTPStatus,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


class _HTTPServer(ThreadingHTTPServer):
    """Track open connections so that stopping the server closes them too."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], owner: ChatCompletionsServer) -> None:
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
    server: _HTTPServer

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
            self._send_json(HTTPStatus.OK, self.server.owner._models_payload())
        else:
            self._send_error(_not_found(self.path))

    def do_POST(self) -> None:
        """Serve ``/v1/chat/completions``."""
        if self._route != "/chat/completions":
            self._discard_body()
            self._send_error(_not_found(self.path))
            return
        try:
            request = self._read_json_body()
            self.server.owner._record(request)
            _validate_request(request)
            if self.server.owner.refuse_json_schema:
                _refuse_json_schema(request)
        except _RequestError as exc:
            self._send_error(exc)
            return

        try:
            message = _normalize_message(self.server.owner.responder(request))
        except Exception as exc:
            logger.warning("LLM responder failed: %s: %s", type(exc).__name__, exc, exc_info=True)
            self._send_error(
                _RequestError(
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
            self._send_json(HTTPStatus.OK, _completion(request, message))

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
            raise _RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request body is too large.")
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _RequestError(
                HTTPStatus.BAD_REQUEST,
                f"We could not parse the JSON body of your request. ({exc})",
            ) from exc
        if not isinstance(body, dict):
            raise _RequestError(HTTPStatus.BAD_REQUEST, "The request body must be a JSON object.")
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
        self, error: _RequestError, *, error_type: str = "invalid_request_error"
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
            for chunk in _completion_chunks(request, message):
                self._write_chunk(f"data: {json.dumps(chunk)}\n\n".encode())
            self._write_chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            logger.debug("client went away during a streamed completion")
            self.close_connection = True

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


class ChatCompletionsServer:
    """Serve the OpenAI Chat Completions API from a daemon thread.

    Example::

        with ChatCompletionsServer(OfflineResponder()) as server:
            llm = ChatOpenAI(base_url=server.base_url, api_key="x", model="offline")
    """

    def __init__(
        self,
        responder: Responder,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        refuse_json_schema: bool = False,
    ) -> None:
        """Prepare (but do not start) a server answering with ``responder``.

        With ``refuse_json_schema``, a ``response_format`` of type ``json_schema`` is refused
        with a 400 error, as OpenAI-compatible servers without strict structured output do.
        """
        self.responder = responder
        self.refuse_json_schema = refuse_json_schema
        self.host = host
        self.port = port
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._bound_port: int | None = None
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._requests_lock = threading.Lock()

    # -- lifecycle --------------------------------------------------------- #

    def start(self) -> Self:
        """Bind the socket and start serving in a daemon thread (idempotent)."""
        with self._lock:
            if self._httpd is not None:
                return self
            httpd = _HTTPServer((self.host, self.port), self)
            self._bound_port = httpd.server_address[1]
            thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": 0.1},
                name=f"llm-server-{self._bound_port}",
                daemon=True,
            )
            thread.start()
            self._httpd, self._thread = httpd, thread
        logger.debug("LLM server listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket and open connections (idempotent)."""
        with self._lock:
            httpd, thread = self._httpd, self._thread
            self._httpd = self._thread = None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)
        logger.debug("LLM server on port %s stopped", self._bound_port)

    @property
    def running(self) -> bool:
        """Tell whether the server is currently serving."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def __enter__(self) -> Self:
        """Start the server."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    # -- introspection ------------------------------------------------------ #

    @property
    def base_url(self) -> str:
        """Return the OpenAI base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        if self._bound_port is None:
            raise RuntimeError("ChatCompletionsServer has not been started")
        host = self.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._bound_port}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Return a copy of the chat completion request bodies received so far."""
        with self._requests_lock:
            return list(self._requests)

    def _record(self, request: dict[str, Any]) -> None:
        with self._requests_lock:
            self._requests.append(request)

    def _models_payload(self) -> dict[str, Any]:
        with self._requests_lock:
            seen = [r.get("model") for r in self._requests]
        ids = dict.fromkeys([DEFAULT_MODEL_ID, *(m for m in seen if isinstance(m, str) and m)])
        return {
            "object": "list",
            "data": [
                {"id": model_id, "object": "model", "created": 0, "owned_by": "conversa"}
                for model_id in ids
            ],
        }


# --------------------------------------------------------------------------- #
# Request / response shaping
# --------------------------------------------------------------------------- #


def _not_found(path: str) -> _RequestError:
    return _RequestError(HTTPStatus.NOT_FOUND, f"Unknown path: {path}", code="unknown_url")


def _validate_request(request: dict[str, Any]) -> None:
    if "messages" not in request:
        raise _RequestError(
            HTTPStatus.BAD_REQUEST,
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    messages = request["messages"]
    if not isinstance(messages, list) or not messages:
        raise _RequestError(
            HTTPStatus.BAD_REQUEST,
            "Invalid 'messages': expected a non-empty array of messages.",
            param="messages",
            code="invalid_value",
        )
    if not all(isinstance(m, dict) for m in messages):
        raise _RequestError(
            HTTPStatus.BAD_REQUEST,
            "Invalid 'messages': every message must be an object.",
            param="messages",
            code="invalid_type",
        )


def _refuse_json_schema(request: dict[str, Any]) -> None:
    response_format = request.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        raise _RequestError(
            HTTPStatus.BAD_REQUEST,
            "response_format type 'json_schema' is not supported by this server; "
            "use 'text' or 'json_object'.",
            param="response_format",
            code="unsupported_value",
        )


def _normalize_message(message: Any) -> dict[str, Any]:
    """Validate a responder's answer and fill in ids and types."""
    if not isinstance(message, dict):
        raise TypeError(f"responder must return a dict, got {type(message).__name__}")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise TypeError("responder message 'content' must be a string or None")
    tool_calls: list[dict[str, Any]] = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise TypeError(f"responder tool call without a function name: {call!r}")
        arguments = function.get("arguments", "{}")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        tool_calls.append(
            {
                "id": call.get("id") or new_tool_call_id(),
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
        )
    normalized: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        normalized["tool_calls"] = tool_calls
    normalized["annotations"] = []
    return normalized


def new_tool_call_id() -> str:
    """Return a fresh OpenAI-style tool call id (``call_...``)."""
    return f"call_{uuid.uuid4().hex[:24]}"


def _estimate_tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4) if text else 0


def _usage(request: dict[str, Any], message: dict[str, Any]) -> dict[str, int]:
    prompt_text = json.dumps(request.get("messages", []), ensure_ascii=False)
    if request.get("tools"):
        prompt_text += json.dumps(request["tools"], ensure_ascii=False)
    completion_text = message.get("content") or ""
    for call in message.get("tool_calls", []):
        completion_text += call["function"]["name"] + call["function"]["arguments"]
    prompt = _estimate_tokens(prompt_text)
    completion = _estimate_tokens(completion_text)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _finish_reason(message: dict[str, Any]) -> str:
    return "tool_calls" if message.get("tool_calls") else "stop"


def _model(request: dict[str, Any]) -> str:
    model = request.get("model")
    return model if isinstance(model, str) and model else DEFAULT_MODEL_ID


def _completion(request: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": _model(request),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _finish_reason(message),
            }
        ],
        "usage": _usage(request, message),
        "system_fingerprint": None,
    }


def _completion_chunks(
    request: dict[str, Any], message: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """Yield ``chat.completion.chunk`` objects that add up to ``message``."""
    options = request.get("stream_options")
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    base: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": _model(request),
        "system_fingerprint": None,
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        out = {
            **base,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if include_usage:
            out["usage"] = None
        return out

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    for piece in _CONTENT_PIECE.findall(message.get("content") or ""):
        yield chunk({"content": piece})
    for index, call in enumerate(message.get("tool_calls", [])):
        function = call["function"]
        yield chunk(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": function["name"], "arguments": ""},
                    }
                ]
            }
        )
        arguments = function["arguments"]
        for start in range(0, len(arguments), _ARGUMENT_PIECE_CHARS):
            piece = arguments[start : start + _ARGUMENT_PIECE_CHARS]
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, _finish_reason(message))
    if include_usage:
        yield {**base, "choices": [], "usage": _usage(request, message)}


def _text_of(content: Any) -> str:
    """Return the text of a message ``content`` (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
        return " ".join(texts)
    return ""


def last_user_text(request: dict[str, Any]) -> str:
    """Return the text of the last ``user`` message of a request ("" if none)."""
    for message in reversed(request.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


# --------------------------------------------------------------------------- #
# Entry points
# --------------------------------------------------------------------------- #
