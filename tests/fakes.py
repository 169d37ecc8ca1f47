"""Shared test fakes."""

from __future__ import annotations

import json
import threading
import uuid
from collections import deque
from collections.abc import Iterable
from typing import Any, Self

from graphs.llm_server import last_user_text


class ScriptedModel:
    """Replay a queue of scripted assistant turns as a ``graphs.llm_server`` Responder.

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

    def say(self, text: str) -> Self:
        """Queue a plain text answer."""
        return self._push({"content": text})

    def call_tool(self, name: str, args: dict[str, Any], id: str | None = None) -> Self:
        """Queue an answer that calls one tool with ``args``."""
        return self._push({"content": None, "tool_calls": [_tool_call(name, args, id)]})

    def call_tools(self, calls: Iterable[tuple[str, dict[str, Any]]]) -> Self:
        """Queue one answer that calls several tools at once."""
        tool_calls = [_tool_call(name, args) for name, args in calls]
        if not tool_calls:
            raise ValueError("call_tools needs at least one (name, args) pair")
        return self._push({"content": None, "tool_calls": tool_calls})

    def structured(self, obj: dict[str, Any]) -> Self:
        """Queue an answer whose content is ``obj`` as JSON (for structured output)."""
        return self._push({"content": json.dumps(obj)})

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
            return self._script.popleft()


def _tool_call(name: str, args: dict[str, Any], id: str | None = None) -> dict[str, Any]:
    return {
        "id": id or f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(args)},
    }
