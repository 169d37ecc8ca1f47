"""The LangChain callback that holds each chat model call's cost against the budgets.

Added by the worker to every graph run and memory extraction (`server.jobs.runner.budget_guard`):
before each call it estimates the call (the prompt's size, and the answer's `max_tokens` or
`BUDGET_COMPLETION_TOKENS`) and holds that against every budget that applies
(`store.budgets.reserve`, atomic across workers), stopping the call with `BudgetExhausted` when
one has no room; after the call it settles the hold with the tokens the provider reported, or
releases it when the call failed. Kept apart from `server.budgets` so the API process, which
charges nothing to a model, never loads LangChain.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any
from uuid import UUID

import psycopg
import structlog
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from server import metrics
from server.budgets import model_cost, record_usage
from server.settings import Settings
from store import budgets
from store.budgets import Alert, BudgetExhausted, Spender, Usage

log = structlog.get_logger(__name__)

Conn = psycopg.Connection[Any]

CHARS_PER_TOKEN = 4
"""A rough tokenizer: about four characters per token in Portuguese and English text."""


def estimate_input_tokens(messages: Sequence[BaseMessage], params: dict[str, Any]) -> int:
    """Estimate a call's prompt in tokens: its messages, and the tool and schema definitions."""
    chars = sum(len(str(m.content)) + len(str(getattr(m, "tool_calls", ""))) for m in messages)
    for key in ("tools", "response_format", "functions"):
        if params.get(key):
            chars += len(str(params[key]))
    return chars // CHARS_PER_TOKEN + 4 * len(messages) + 1


class BudgetGuard(BaseCallbackHandler):
    """Hold each chat model call's estimated cost before it runs; settle it after.

    `lock` serialises use of `conn` with the run's tools (they share the job's connection).
    With `enforce` off (a degraded run) calls are recorded and never stopped.
    """

    raise_error = True
    """A spent budget stops the call: the exception leaves the model call, then the run."""

    def __init__(
        self,
        conn: Conn,
        settings: Settings,
        spender: Spender,
        *,
        enforce: bool = True,
        correlation_id: str | None = None,
        lock: threading.Lock | None = None,
        on_alerts: Callable[[list[Alert]], None] | None = None,
    ) -> None:
        self._conn, self._settings, self._spender = conn, settings, spender
        self._enforce, self._cid = enforce, correlation_id
        self._lock: AbstractContextManager[Any] = lock if lock is not None else nullcontext()
        self._on_alerts = on_alerts
        self._calls: dict[UUID, tuple[UUID | None, str, str | None, int, int]] = {}
        self.refused: BudgetExhausted | None = None
        """The refusal that stopped the run, if one did."""

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        **kwargs: Any,
    ) -> None:
        """Estimate the call and hold it against the budgets (or stop it)."""
        params = kwargs.get("invocation_params") or {}
        metadata = kwargs.get("metadata") or {}
        model = str(params.get("model") or params.get("model_name") or "unknown")
        route = metadata.get("langgraph_node")
        estimate_in = sum(estimate_input_tokens(batch, params) for batch in messages)
        estimate_out = int(
            params.get("max_tokens")
            or params.get("max_completion_tokens")
            or self._settings.budget_completion_tokens
        )
        hold = None
        if self._enforce:
            cost = model_cost(self._settings, model, estimate_in, estimate_out)
            try:
                with self._lock:
                    hold = budgets.reserve(
                        self._conn, self._spender, tokens=estimate_in + estimate_out, cost=cost,
                        hold_seconds=self._settings.budget_hold_seconds,
                    )  # fmt: skip
            except BudgetExhausted as exc:
                self.refused = exc
                metrics.observe_budget_refusal(exc.budget.scope, exc.budget.period)
                log.info("model call refused: budget spent", model=model, route=route,
                         budget=str(exc.budget.id), scope=exc.budget.scope,
                         period=exc.budget.period)  # fmt: skip
                raise
        self._calls[run_id] = (hold, model, route, estimate_in, estimate_out)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        """Settle the call's hold with the tokens the provider reported."""
        call = self._calls.pop(run_id, None)
        if call is None:
            return
        hold, model, route, estimate_in, _ = call
        prompt = completion = 0
        reported = False
        for generations in response.generations:
            for generation in generations:
                usage = getattr(getattr(generation, "message", None), "usage_metadata", None)
                if usage:
                    reported = True
                    prompt += int(usage.get("input_tokens", 0))
                    completion += int(usage.get("output_tokens", 0))
                elif not reported:
                    completion += len(generation.text) // CHARS_PER_TOKEN + 1
        if not reported:  # the server said nothing of usage: count our estimate
            prompt = estimate_in
        usage = Usage(
            kind="model", model=model, route=route, input_tokens=prompt,
            output_tokens=completion, cost=model_cost(self._settings, model, prompt, completion),
            degraded=not self._enforce, correlation_id=self._cid,
        )  # fmt: skip
        self._settle(hold, usage)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Release the hold of a call that failed (a failed call is not billed)."""
        call = self._calls.pop(run_id, None)
        if call is None or call[0] is None:
            return
        try:
            with self._lock:
                budgets.release(self._conn, call[0])
        except psycopg.Error as exc:  # the hold expires by itself
            log.warning("could not release a budget hold", error=str(exc))

    def _settle(self, hold: UUID | None, usage: Usage) -> None:
        try:
            with self._lock:
                alerts = record_usage(self._conn, self._spender, usage, hold)
        except psycopg.Error as exc:  # the answer is there; losing its bill must not lose it
            log.error("could not record a model call's usage", error=str(exc),
                      model=usage.model, tokens=usage.tokens)  # fmt: skip
            return
        if alerts and self._on_alerts is not None:
            try:
                self._on_alerts(alerts)
            except Exception as exc:  # raise_error is on: an alert must not fail the run
                log.error("could not raise a budget alert", error=f"{type(exc).__name__}: {exc}")
