"""Responses of :mod:`graphs.offline.llm_server`: completions and their streamed chunks.

Given the request and the (normalized) assistant message a responder chose, build what OpenAI
would return: a ``chat.completion`` object, or the ``chat.completion.chunk`` objects of a
stream (content word by word, tool call arguments a few characters at a time), with a token
usage estimated from the text's length.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

DEFAULT_MODEL_ID = "local"
_CONTENT_PIECE = re.compile(r"\S+\s*|\s+")
_ARGUMENT_PIECE_CHARS = 16


def _estimate_tokens(text: str) -> int:
    """Guess a text's token count as OpenAI's rule of thumb does: four characters a token."""
    return max(1, (len(text) + 3) // 4) if text else 0


def _usage(request: dict[str, Any], message: dict[str, Any]) -> dict[str, int]:
    """Estimate the prompt and completion tokens of one exchange (or take what the responder
    stated, under the message's `usage`)."""
    if stated := message.get("usage"):
        prompt, completion = stated["prompt_tokens"], stated["completion_tokens"]
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
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
    """Return why the model stopped: to call tools, or because it was done."""
    return "tool_calls" if message.get("tool_calls") else "stop"


def _model(request: dict[str, Any]) -> str:
    """Return the model the request names (echoed back, as OpenAI does), else the default."""
    model = request.get("model")
    return model if isinstance(model, str) and model else DEFAULT_MODEL_ID


def completion(request: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """Return the ``chat.completion`` object answering ``request`` with ``message``."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": _model(request),
        "choices": [
            {
                "index": 0,
                "message": {k: v for k, v in message.items() if k != "usage"},
                "logprobs": None,
                "finish_reason": _finish_reason(message),
            }
        ],
        "usage": _usage(request, message),
        "system_fingerprint": None,
    }


def completion_chunks(request: dict[str, Any], message: dict[str, Any]) -> Iterator[dict[str, Any]]:
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
