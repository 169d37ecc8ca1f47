"""A LangChain callback that records each chat model call's latency and token usage.

It also counts the routing fallbacks the router reports as a custom event (the graph itself
knows nothing of Prometheus)."""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult

from nodes.router import ROUTING_FALLBACK_EVENT
from server.metrics import LLM_DURATION, LLM_TOKENS, ROUTING_FALLBACKS, record


class LLMMetrics(BaseCallbackHandler):
    """Time every chat model call of a run and count the tokens the model reported.

    The model label is the configured model name (`gpt-4o-mini`, ...), never anything from the
    conversation.
    """

    def __init__(self) -> None:
        self._started: dict[UUID, tuple[float, str]] = {}

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: Any, *, run_id: UUID, **kwargs: Any
    ) -> None:
        """Note when the call started and which model it asked."""
        params = kwargs.get("invocation_params") or {}
        metadata = kwargs.get("metadata") or {}
        model = params.get("model") or params.get("model_name") or metadata.get("ls_model_name")
        self._started[run_id] = (time.monotonic(), str(model or "unknown"))

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        """Record the call's latency and its tokens."""
        started = self._started.pop(run_id, None)
        if started is None:
            return
        at, model = started
        record(LLM_DURATION, (model, "ok"), time.monotonic() - at)
        prompt = completion = 0
        for generations in response.generations:
            for generation in generations:
                usage = getattr(getattr(generation, "message", None), "usage_metadata", None)
                if usage:
                    prompt += int(usage.get("input_tokens", 0))
                    completion += int(usage.get("output_tokens", 0))
        if prompt:
            record(LLM_TOKENS, (model, "prompt"), prompt)
        if completion:
            record(LLM_TOKENS, (model, "completion"), completion)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Record a failed call's latency."""
        started = self._started.pop(run_id, None)
        if started is not None:
            record(LLM_DURATION, (started[1], "error"), time.monotonic() - started[0])

    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Count a routing fallback, by the reason the router gave."""
        if name == ROUTING_FALLBACK_EVENT and isinstance(data, dict):
            record(ROUTING_FALLBACKS, (str(data.get("reason") or "error"),), 1)
