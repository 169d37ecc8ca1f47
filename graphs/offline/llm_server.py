"""Serve a local OpenAI-compatible Chat Completions endpoint.

The application always talks to its LLM through ``langchain_openai.ChatOpenAI``.
When no real model is configured (no ``OPENAI_API_KEY``), or in tests, ChatOpenAI
is pointed at a :class:`ChatCompletionsServer` running in a daemon thread of the
current process. The server speaks just enough of the OpenAI Chat Completions
API for ChatOpenAI: plain calls, tool calls (``bind_tools``), structured output
(``response_format`` json_schema or a forced ``tool_choice``) and streaming
(Server-Sent Events with ``chat.completion.chunk`` objects). It also answers
``/v1/embeddings`` with cheap hashed vectors (:mod:`graphs.offline.embeddings`).

What the model "says" is decided by a :data:`Responder`: a callable that takes
the parsed request JSON and returns an assistant message dict. The
:class:`~graphs.offline.model.OfflineResponder` is the deterministic stand-in
used when no API key is configured; tests use a scripted responder.

Nothing is started at import time. Run ``python -m graphs.offline.model`` to serve
the offline model from the command line.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from graphs.offline._http import CompletionsHTTPServer
from graphs.offline._responses import DEFAULT_MODEL_ID
from graphs.offline.embeddings import embeddings_payload
from graphs.offline.latency import Latency

logger = logging.getLogger(__name__)

NO_LATENCY = Latency()

Responder = Callable[[dict[str, Any]], dict[str, Any]]
"""Map a parsed Chat Completions request to an assistant message dict.

The returned dict has ``content`` (``str | None``) and optionally ``tool_calls``:
``[{"id": ..., "type": "function", "function": {"name": ..., "arguments": "<json>"}}]``.
"""


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
        latency: Latency = NO_LATENCY,
        embedding_latency: Latency = NO_LATENCY,
    ) -> None:
        """Prepare (but do not start) a server answering with ``responder``.

        With ``refuse_json_schema``, a ``response_format`` of type ``json_schema`` is refused
        with a 400 error, as OpenAI-compatible servers without strict structured output do.
        Each call waits its ``latency`` before it answers, as a hosted model would; an
        embeddings request (`graphs.offline.embeddings`) waits its ``embedding_latency``.
        """
        self.responder = responder
        self.refuse_json_schema = refuse_json_schema
        self.latency = latency
        self.embedding_latency = embedding_latency
        self.host = host
        self.port = port
        self._httpd: CompletionsHTTPServer | None = None
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
            httpd = CompletionsHTTPServer((self.host, self.port), self)
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

    def record(self, request: dict[str, Any]) -> None:
        """Keep a received request body (see :attr:`requests`)."""
        with self._requests_lock:
            self._requests.append(request)

    def models_payload(self) -> dict[str, Any]:
        """Return the ``/v1/models`` list: the default model and every model asked for."""
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

    def reply_to(self, request: dict[str, Any]) -> dict[str, Any]:
        """Ask the responder for its answer to ``request``, normalized to OpenAI's shape, after
        the call's latency (on the request's own thread, so concurrent calls overlap)."""
        time.sleep(self.latency.draw())
        return _normalize_message(self.responder(request))

    def embed(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer a ``/v1/embeddings`` request with hashed vectors, after its latency."""
        payload = embeddings_payload(request)  # refuses a bad request before any wait
        time.sleep(self.embedding_latency.draw())
        return payload


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
    usage = message.get("usage")
    if usage is not None:  # a scripted answer that states what it cost
        tokens = (
            (usage.get("prompt_tokens"), usage.get("completion_tokens"))
            if isinstance(usage, dict)
            else (None, None)
        )
        if not all(isinstance(t, int) and t >= 0 for t in tokens):
            raise TypeError("responder 'usage' needs prompt_tokens and completion_tokens >= 0")
        normalized["usage"] = {"prompt_tokens": tokens[0], "completion_tokens": tokens[1]}
    return normalized


def new_tool_call_id() -> str:
    """Return a fresh OpenAI-style tool call id (``call_...``)."""
    return f"call_{uuid.uuid4().hex[:24]}"


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
