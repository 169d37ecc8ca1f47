"""Shared test fakes."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Self

from graphs.offline.llm_server import last_user_text


class ScriptedModel:
    """Replay a queue of scripted assistant turns as a ``graphs.offline.llm_server`` Responder.

    Queue turns with :meth:`say`, :meth:`call_tool`, :meth:`call_tools` and
    :meth:`structured`; every request served pops the next one. When the script
    runs out the model raises ``AssertionError``, which the server turns into a
    500 error so the test fails loudly. Thread-safe.
    """

    def __init__(self) -> None:
        """Start with an empty script."""
        self._script: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []

    def _push(self, message: dict[str, Any]) -> Self:
        with self._lock:
            self._script.append(message)
        return self

    def say(
        self,
        text: str,
        *,
        delay: float = 0.0,
        during: Callable[[], object] | None = None,
        usage: tuple[int, int] | None = None,
    ) -> Self:
        """Queue a plain text answer, given after `delay` seconds (a slow model); `during` runs
        while the model is answering (the user writing again mid-turn, say); `usage` states the
        (prompt, completion) tokens the server reports for it (else it estimates them)."""
        answer: dict[str, Any] = {"content": text, "delay": delay, "during": during}
        if usage is not None:
            answer["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1]}
        return self._push(answer)

    def call_tool(
        self,
        name: str,
        args: dict[str, Any],
        id: str | None = None,
        *,
        usage: tuple[int, int] | None = None,
    ) -> Self:
        """Queue an answer that calls one tool with ``args``."""
        answer: dict[str, Any] = {"content": None, "tool_calls": [_tool_call(name, args, id)]}
        if usage is not None:
            answer["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1]}
        return self._push(answer)

    def call_tools(
        self, calls: Iterable[tuple[str, dict[str, Any]]], ids: Iterable[str] | None = None
    ) -> Self:
        """Queue one answer that calls several tools at once (with these call ids, if given)."""
        given = list(ids) if ids is not None else []
        tool_calls = [
            _tool_call(name, args, given[n] if n < len(given) else None)
            for n, (name, args) in enumerate(calls)
        ]
        if not tool_calls:
            raise ValueError("call_tools needs at least one (name, args) pair")
        return self._push({"content": None, "tool_calls": tool_calls})

    def structured(self, obj: dict[str, Any], *, usage: tuple[int, int] | None = None) -> Self:
        """Queue an answer whose content is ``obj`` as JSON (for structured output)."""
        answer: dict[str, Any] = {"content": json.dumps(obj)}
        if usage is not None:
            answer["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1]}
        return self._push(answer)

    @property
    def remaining(self) -> int:
        """Return how many scripted answers are left."""
        with self._lock:
            return len(self._script)

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer ``request`` with the next scripted turn."""
        with self._lock:
            if not self._script:
                raise AssertionError(
                    f"scripted model has no response left for: {last_user_text(request)}"
                )
            self.requests.append(request)
            answer = dict(self._script.popleft())
        time.sleep(answer.pop("delay", 0.0))
        if during := answer.pop("during", None):
            during()
        return answer


def _tool_call(name: str, args: dict[str, Any], id: str | None = None) -> dict[str, Any]:
    return {
        "id": id or f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(args)},
    }


class EchoModel:
    """A model for many processes at once: it answers "re: <the turn's user messages>".

    A user message containing `sleep=<seconds>` makes that answer slow. It records how many
    answers were being prepared at once for each user (named in the system prompt), so tests can
    check that one conversation never has two runs at the same time. `hold()` keeps every
    answer waiting until `release()`, so a test can act while turns are certainly in flight.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}
        self.max_concurrent: dict[str, int] = {}
        self.running = 0
        """Answers being prepared right now, for every user together."""
        self.peak = 0
        """The most answers ever prepared at once, for every user together."""
        self.turns: list[list[str]] = []
        self.usage: tuple[int, int] | None = None
        """The (prompt, completion) tokens every answer reports (None: the server estimates)."""
        self.started = threading.Event()
        self._open = threading.Event()
        self._open.set()

    def hold(self) -> None:
        """Keep the answers started from now on waiting until `release()`."""
        self._open.clear()

    def release(self) -> None:
        """Let every held answer go on (and the ones after it)."""
        self._open.set()

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer with the user messages since the last assistant message."""
        messages = request["messages"]
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        user = system.split("You help ", 1)[-1].split(" keep track", 1)[0]
        turn: list[str] = []
        for message in reversed(messages):
            if message["role"] != "user":
                break
            turn.insert(0, str(message["content"]))
        with self._lock:
            self._running[user] = self._running.get(user, 0) + 1
            self.max_concurrent[user] = max(self.max_concurrent.get(user, 0), self._running[user])
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.turns.append(turn)
        self.started.set()
        try:
            if not self._open.wait(timeout=120):
                raise TimeoutError("EchoModel held an answer for two minutes: release() it")
            for text in turn:
                if "sleep=" in text:
                    time.sleep(float(text.split("sleep=", 1)[1].split()[0]))
            answer: dict[str, Any] = {"content": "re: " + " | ".join(turn)}
            if self.usage is not None:
                answer["usage"] = {"prompt_tokens": self.usage[0],
                                   "completion_tokens": self.usage[1]}  # fmt: skip
            return answer
        finally:
            with self._lock:
                self._running[user] -= 1
                self.running -= 1


class FakeLangSmith:
    """A local LangSmith endpoint: run ingestion, datasets, experiments and feedback.

    It keeps every body it was sent (`bodies`, `text`) and serves `tests.langsmith_api`'s
    in-memory API (`api`). It answers `GET /info` with an empty object (no batching hints, no
    compression, no multipart examples), so the official client falls back to plain multipart
    run posts whose JSON parts can be searched, and to the JSON dataset endpoints.
    """

    def __init__(self, api_key: str | None = None) -> None:
        """Start serving on a free loopback port; with `api_key`, refuse other keys (401)."""
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs, urlsplit

        from tests.langsmith_api import LangSmithAPI

        bodies = self.bodies = []  # type: list[bytes]
        api = self.api = LangSmithAPI(api_key=api_key)

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                if body:
                    bodies.append(body)
                url = urlsplit(self.path)
                status, answer = api.handle(
                    self.command, url.path, parse_qs(url.query), self.headers, body
                )
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _answer

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def text(self) -> str:
        """Everything received, decoded, for searching."""
        return b"\n".join(self.bodies).decode("utf-8", errors="replace")

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
