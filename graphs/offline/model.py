"""The offline stand-in model, served over the OpenAI Chat Completions protocol.

When no real model is configured (no ``OPENAI_API_KEY`` nor ``OPENAI_BASE_URL``),
the application's ``ChatOpenAI`` talks to a
:class:`~graphs.offline.llm_server.ChatCompletionsServer` answering with the
:class:`OfflineResponder`: a deterministic, rule-based responder that understands the
demo's common cases well enough to drive the router, memory extraction and every
specialist (:mod:`graphs.offline.nlu`), confirms tool results in the user's language
(:mod:`graphs.offline.replies`), and otherwise says plainly that it is an offline
model. Other structured output requests get a minimal valid instance of the
requested JSON schema (:func:`graphs.offline.schema.instance_from_schema`).

Nothing is started at import time: :func:`serve` starts a new server and
:func:`ensure_offline_server` lazily starts (once) the process-wide one.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import threading
from datetime import date
from types import FrameType
from typing import Any

from graphs.features import ROUTES
from graphs.language import Language, detect_language
from graphs.offline.latency import Latency
from graphs.offline.llm_server import (
    ChatCompletionsServer,
    _text_of,
    last_user_text,
    new_tool_call_id,
)
from graphs.offline.nlu import choose_route, extract_facts
from graphs.offline.replies import ToolOutcome, offline_line, tool_results_reply
from graphs.offline.schema import enum_of, instance_from_schema
from graphs.offline.tool_calls import choose_tool_call
from graphs.prompts import CAPABILITIES_MARKER
from graphs.settings import LLMSettings

# --------------------------------------------------------------------------- #
# Offline replies
# --------------------------------------------------------------------------- #

_LANGUAGE_MARKERS: dict[str, Language] = {
    "Answer in Brazilian Portuguese": "pt",
    "Answer in English": "en",
}
_LOCAL_DATE = re.compile(r"local time is (\d{4})-(\d{2})-(\d{2})")


def _system_text(request: dict[str, Any]) -> str:
    return "\n".join(
        _text_of(m.get("content"))
        for m in request.get("messages") or []
        if isinstance(m, dict) and m.get("role") in ("system", "developer")
    )


def _offer(request: dict[str, Any]) -> str:
    """Return what the system prompt says this user may be offered, if it says so."""
    for line in _system_text(request).splitlines():
        if line.startswith(CAPABILITIES_MARKER):
            return line.removeprefix(CAPABILITIES_MARKER).strip().rstrip(".")
    return ""


def _language(request: dict[str, Any]) -> Language:
    """The language the system prompt asks for, else the one the user writes in."""
    system = _system_text(request)
    for marker, language in _LANGUAGE_MARKERS.items():
        if marker in system:
            return language
    return detect_language(last_user_text(request))


def _today(request: dict[str, Any]) -> date | None:
    found = _LOCAL_DATE.search(_system_text(request))
    if not found:
        return None
    try:
        return date(int(found.group(1)), int(found.group(2)), int(found.group(3)))
    except ValueError:
        return None


def _turn_text(request: dict[str, Any]) -> str:
    """The user messages since the last assistant message, one per line."""
    texts: list[str] = []
    for message in reversed(request.get("messages") or []):
        if not isinstance(message, dict) or message.get("role") not in ("user", "system"):
            break
        if message.get("role") == "user":
            texts.insert(0, _text_of(message.get("content")))
    return "\n".join(t for t in texts if t.strip())


def _tool_names(request: dict[str, Any]) -> set[str]:
    return {
        str(t["function"].get("name"))
        for t in request.get("tools") or []
        if isinstance(t, dict) and isinstance(t.get("function"), dict)
    }


def _tool_outcomes(request: dict[str, Any]) -> list[ToolOutcome]:
    """The tool results that end the request, with the calls that asked for them."""
    messages = [m for m in request.get("messages") or [] if isinstance(m, dict)]
    results: list[dict[str, Any]] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        results.insert(0, message)
    calls: dict[str, tuple[str, dict[str, Any]]] = {}
    for message in messages:
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            try:
                args = json.loads(function.get("arguments") or "{}")
            except ValueError:
                args = {}
            calls[str(call.get("id"))] = (
                str(function.get("name") or ""),
                args if isinstance(args, dict) else {},
            )
    outcomes = []
    for result in results:
        name, args = calls.get(str(result.get("tool_call_id")), (str(result.get("name", "")), {}))
        outcomes.append(ToolOutcome(name, args, _text_of(result.get("content"))))
    return outcomes


def _forced_function(request: dict[str, Any]) -> dict[str, Any] | None:
    """Return the function definition that ``tool_choice`` forces, if any."""
    tools = [
        t["function"]
        for t in request.get("tools") or []
        if isinstance(t, dict) and t.get("type", "function") == "function" and "function" in t
    ]
    choice = request.get("tool_choice")
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        return next((f for f in tools if f.get("name") == name), {"name": name} if name else None)
    if choice == "required" and tools:
        return tools[0]
    return None


class OfflineResponder:
    """Answer deterministically, without any real model, when no API key is set.

    It reads the demo's common cases with the rules of :mod:`graphs.offline.nlu`:
    the router's ``RouteDecision`` gets a route among the schema's allowed ones, memory
    extraction's ``MemoryFacts`` gets the facts simple patterns find, and a specialist
    (a request with ``tools``) gets one tool call that fits the user's message, then a
    confirmation of the tool's result in the language its system prompt asks for. Anything
    else gets a text that says plainly this is an offline model, quotes the user and lists
    what it could do (:func:`graphs.offline.replies.offline_line`). Other structured output
    requests (``response_format`` json_schema, or a forced ``tool_choice``) get a minimal
    valid instance of the requested schema.
    """

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        """Return the assistant message answering ``request``."""
        function = _forced_function(request)
        if function is not None:
            parameters = function.get("parameters") or {"type": "object"}
            arguments = self.structured(str(function.get("name")), parameters, request)
            return {"content": None, "tool_calls": [_call(str(function["name"]), arguments)]}

        response_format = request.get("response_format")
        if isinstance(response_format, dict):
            if response_format.get("type") == "json_schema":
                spec = response_format.get("json_schema") or {}
                schema = spec.get("schema") or {}
                return {
                    "content": json.dumps(self.structured(spec.get("name", ""), schema, request))
                }
            if response_format.get("type") == "json_object":
                return {"content": json.dumps({"message": self.reply(request)})}

        messages = request.get("messages") or []
        last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
        if last.get("role") == "tool":
            outcomes = _tool_outcomes(request)
            if outcomes:
                return {"content": tool_results_reply(outcomes, _language(request))}
        tools = _tool_names(request)
        if tools and last.get("role") == "user":
            guess = choose_tool_call(_turn_text(request), tools, _today(request))
            if guess is not None:
                return {"content": None, "tool_calls": [_call(guess.name, guess.args)]}
        return {"content": self.reply(request)}

    def structured(self, name: str, schema: dict[str, Any], request: dict[str, Any]) -> Any:
        """Answer a structured output request for the schema called ``name``."""
        if name == "RouteDecision":
            allowed = enum_of(schema, "route") or list(ROUTES)
            guess = choose_route(_turn_text(request) or last_user_text(request), allowed)
            return {"route": guess.route, "reason": guess.reason}
        if name == "MemoryFacts":
            return {"facts": extract_facts(_turn_text(request) or last_user_text(request))}
        return instance_from_schema(schema)

    def reply(self, request: dict[str, Any]) -> str:
        """Return the offline text reply to the last user message of ``request``."""
        return offline_line(
            last_user_text(request), _language(request), _offer(request), _tool_names(request)
        )


def _call(name: str, arguments: Any) -> dict[str, Any]:
    return {
        "id": new_tool_call_id(),
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)},
    }


# --------------------------------------------------------------------------- #
# Entry points
# --------------------------------------------------------------------------- #

_offline_server: ChatCompletionsServer | None = None
_offline_lock = threading.Lock()


def serve(host: str = "127.0.0.1", port: int = 0) -> ChatCompletionsServer:
    """Start and return a server answering with the :class:`OfflineResponder`, each call taking
    `OFFLINE_LLM_LATENCY` (see `graphs.offline.latency`; a bad value raises `LatencyError`)."""
    latency = Latency.parse(LLMSettings().offline_llm_latency)
    return ChatCompletionsServer(OfflineResponder(), host=host, port=port, latency=latency).start()


def ensure_offline_server() -> str:
    """Start the process-wide offline server if needed and return its base URL.

    Thread-safe and idempotent: every call returns the same URL for as long as
    that server runs.
    """
    global _offline_server
    with _offline_lock:
        if _offline_server is None or not _offline_server.running:
            _offline_server = serve()
        return _offline_server.base_url


def main(argv: list[str] | None = None) -> int:
    """Serve the offline model until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m graphs.offline.model",
        description="Serve the offline stand-in model over the OpenAI Chat Completions API.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, default=0, help="port to bind (default: any free port)")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    server = serve(args.host, args.port)
    try:
        print(server.base_url, flush=True)
        while not stop.wait(0.25):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
