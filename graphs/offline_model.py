"""The offline stand-in model, served over the OpenAI Chat Completions protocol.

When no real model is configured (no ``OPENAI_API_KEY`` nor ``OPENAI_BASE_URL``),
the application's ``ChatOpenAI`` talks to a
:class:`~graphs.llm_server.ChatCompletionsServer` answering with the
:class:`OfflineResponder`: a deterministic responder that says, in the user's
language, that it cannot really think, and answers structured output requests
with a minimal valid instance of the requested JSON schema
(:func:`instance_from_schema`).

Nothing is started at import time: :func:`serve` starts a new server and
:func:`ensure_offline_server` lazily starts (once) the process-wide one.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from types import FrameType
from typing import Any

from graphs.language import detect_language
from graphs.llm_server import ChatCompletionsServer, last_user_text, new_tool_call_id
from graphs.prompts import CAPABILITIES_MARKER
from graphs.state import Language

# --------------------------------------------------------------------------- #
# JSON schema instances
# --------------------------------------------------------------------------- #

_FORMAT_EXAMPLES = {
    "date-time": "1970-01-01T00:00:00Z",
    "date": "1970-01-01",
    "time": "00:00:00",
    "email": "offline@example.com",
    "uri": "https://example.com",
    "url": "https://example.com",
    "uuid": "00000000-0000-0000-0000-000000000000",
    "duration": "PT0S",
}
_MAX_SCHEMA_DEPTH = 16


def instance_from_schema(schema: dict[str, Any]) -> Any:
    """Build a minimal JSON value that validates against ``schema``.

    Objects get their required properties, enums their first value, strings
    ``""``, numbers ``0``, booleans ``False`` and arrays ``[]``; ``$ref`` (into
    ``$defs``/``definitions``) is resolved and ``anyOf``/``oneOf`` take the first
    option. Good enough for the schemas pydantic and OpenAI's strict mode produce.
    """
    return _instance(schema, schema, 0)


def _resolve_ref(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    if not ref.startswith("#"):
        return {}
    node: Any = root
    for part in ref.lstrip("#").strip("/").split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return {}
        node = node[part]
    return node if isinstance(node, dict) else {}


def _instance(schema: Any, root: dict[str, Any], depth: int) -> Any:
    if not isinstance(schema, dict):
        return None
    too_deep = depth > _MAX_SCHEMA_DEPTH
    if "$ref" in schema:
        resolved = _resolve_ref(schema["$ref"], root)
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        return _instance({**resolved, **siblings}, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            option = options[0]
            if too_deep:
                option = next(
                    (o for o in options if isinstance(o, dict) and o.get("type") == "null"),
                    option,
                )
            return _instance(option, root, depth + 1)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            if isinstance(part, dict) and "$ref" in part:
                part = _resolve_ref(part["$ref"], root)
            if isinstance(part, dict):
                merged = {**part, **merged}
        return _instance(merged, root, depth + 1)

    schema_type = schema.get("type")
    if isinstance(schema_type, list):
        schema_type = next((t for t in schema_type if t != "null"), "null")
    if schema_type is None and "properties" in schema:
        schema_type = "object"

    if schema_type == "object":
        properties = schema.get("properties") or {}
        return {
            name: _instance(properties.get(name, {}), root, depth + 1)
            for name in schema.get("required") or []
        }
    if schema_type == "array":
        count = int(schema.get("minItems") or 0)
        if count and not too_deep:
            prefix = schema.get("prefixItems") or []
            items = [
                _instance(
                    prefix[i] if i < len(prefix) else schema.get("items", {}), root, depth + 1
                )
                for i in range(count)
            ]
            return items
        return []
    if schema_type == "string":
        example = _FORMAT_EXAMPLES.get(schema.get("format", ""), "")
        min_length = int(schema.get("minLength") or 0)
        return example if len(example) >= min_length else example + "x" * min_length
    if schema_type in ("integer", "number"):
        value: float = 0
        for bound, step in (("minimum", 0), ("exclusiveMinimum", 1)):
            if isinstance(schema.get(bound), int | float) and schema[bound] + step > value:
                value = schema[bound] + step
        for bound, step in (("maximum", 0), ("exclusiveMaximum", 1)):
            if isinstance(schema.get(bound), int | float) and schema[bound] - step < value:
                value = schema[bound] - step
        return int(value) if schema_type == "integer" else value
    if schema_type == "boolean":
        return False
    return None


# --------------------------------------------------------------------------- #
# Offline replies
# --------------------------------------------------------------------------- #

_OFFLINE_REPLIES: dict[Language, dict[str, str]] = {
    "pt": {
        "intro": (
            "Olá! Sou um modelo offline (nenhuma chave de API configurada), "
            "então não consigo pensar de verdade."
        ),
        "quote": 'Você disse: "{text}".',
        "no_text": "Recebi sua mensagem.",
        "hint": "Configure OPENAI_API_KEY (ou OPENAI_BASE_URL) para usar um modelo real.",
        "offer": "Com um modelo real eu poderia: {offer}.",
    },
    "en": {
        "intro": "Hi! I'm an offline model (no API key configured), so I can't really think.",
        "quote": 'You said: "{text}".',
        "no_text": "I got your message.",
        "hint": "Set OPENAI_API_KEY (or OPENAI_BASE_URL) to use a real model.",
        "offer": "With a real model I could: {offer}.",
    },
}


def _offer(request: dict[str, Any]) -> str:
    """Return what the system prompt says this user may be offered, if it says so."""
    for message in request.get("messages") or []:
        if isinstance(message, dict) and message.get("role") == "system":
            for line in str(message.get("content") or "").splitlines():
                if line.startswith(CAPABILITIES_MARKER):
                    return line.removeprefix(CAPABILITIES_MARKER).strip().rstrip(".")
    return ""


def _shorten(text: str, limit: int = 80) -> str:
    """Collapse whitespace in ``text`` and cut it to ``limit`` characters with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + "…"


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

    Text replies say, in the user's language (Portuguese or English), that this
    is an offline model that cannot really think, quote what the user said and
    point at ``OPENAI_API_KEY``. Structured output requests (``response_format``
    json_schema, or a forced ``tool_choice``) get a minimal valid instance of the
    requested schema. Offered-but-not-forced tools are never called.
    """

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        """Return the assistant message answering ``request``."""
        function = _forced_function(request)
        if function is not None:
            arguments = instance_from_schema(function.get("parameters") or {"type": "object"})
            return {
                "content": None,
                "tool_calls": [
                    {
                        "id": new_tool_call_id(),
                        "type": "function",
                        "function": {"name": function["name"], "arguments": json.dumps(arguments)},
                    }
                ],
            }

        response_format = request.get("response_format")
        if isinstance(response_format, dict):
            if response_format.get("type") == "json_schema":
                schema = (response_format.get("json_schema") or {}).get("schema") or {}
                return {"content": json.dumps(instance_from_schema(schema))}
            if response_format.get("type") == "json_object":
                return {"content": json.dumps({"message": self.reply(request)})}

        return {"content": self.reply(request)}

    def reply(self, request: dict[str, Any]) -> str:
        """Return the offline text reply to the last user message of ``request``."""
        text = last_user_text(request)
        strings = _OFFLINE_REPLIES[detect_language(text)]
        shortened = _shorten(text)
        middle = strings["quote"].format(text=shortened) if shortened else strings["no_text"]
        offer = _offer(request)
        offer = " " + strings["offer"].format(offer=offer) if offer else ""
        return f"{strings['intro']} {middle}{offer} {strings['hint']}"


# --------------------------------------------------------------------------- #
# Entry points
# --------------------------------------------------------------------------- #

_offline_server: ChatCompletionsServer | None = None
_offline_lock = threading.Lock()


def serve(host: str = "127.0.0.1", port: int = 0) -> ChatCompletionsServer:
    """Start and return a server answering with the :class:`OfflineResponder`."""
    return ChatCompletionsServer(OfflineResponder(), host=host, port=port).start()


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
        prog="python -m graphs.offline_model",
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


if __name__ == "__main__":
    raise SystemExit(main())
