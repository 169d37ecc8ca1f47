"""Apply a tenant's privacy rule to everything the service traces.

Every traced run gets the tenant's tracers from `tracers_for`: a message's graph run and a resume
by staff through `server.jobs.runner`, which adds them to the run's own callbacks, and memory
extraction (or any other model call made for a tenant) through `tracing_config`, which also
names the run and tags it with the tenant. One rule holds for all:

- `trace_privacy = 'masked'`: traces keep their structure (nodes, routes, tool names, token
  counts, timings) and lose their words: every string that is not a known structural field
  becomes `[hidden]`, and personal data in structural fields is masked too;
- a tenant whose memory rule (`store.pii.effective_policy`) is `mask` or `refuse` keeps its
  words in traces, with phone numbers, e-mails, CPF, CNPJ and card numbers masked;
- either way, a run's error (an interrupt's payload, an exception's message) follows the same
  rule as its inputs and outputs;
- anyone else is traced as LangChain's environment-driven tracer does it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from typing import Any

import structlog
from langchain_core.runnables import RunnableConfig
from langchain_core.tracers.langchain import LangChainTracer, wait_for_all_tracers
from langchain_core.tracers.schemas import Run

from store.pii import effective_policy, mask_pii
from store.records import Tenant

log = structlog.get_logger(__name__)

HIDDEN = "[hidden]"

_STRUCTURAL_KEYS = frozenset({
    "type", "role", "name", "id", "tool_call_id", "route", "status", "model", "model_name",
    "language", "kind", "finish_reason", "currency", "category", "period",
})  # fmt: skip
"""Keys whose string values describe the run's shape, not what the user said."""


def _walk(value: Any, leaf: Callable[[str, str | None], str], key: str | None = None) -> Any:
    """Return `value` with `leaf(text, key)` in place of each string, the structure kept; an
    object it cannot look inside becomes `leaf(str(object), None)`."""
    if isinstance(value, dict):
        return {k: _walk(v, leaf, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_walk(item, leaf, key) for item in value]
    if isinstance(value, str):
        return leaf(value, key)
    if value is None or isinstance(value, bool | int | float):
        return value
    if hasattr(value, "model_dump"):
        return _walk(value.model_dump(), leaf, key)
    if is_dataclass(value) and not isinstance(value, type):
        return _walk({f.name: getattr(value, f.name) for f in fields(value)}, leaf, key)
    return leaf(str(value), None)


def _hide_text(text: str, key: str | None) -> str:
    if key in _STRUCTURAL_KEYS:
        return mask_pii(text)
    return HIDDEN if text else text


def _mask_text(text: str, key: str | None) -> str:
    return mask_pii(text)


def mask_trace(value: Any) -> Any:
    """Return `value` (a trace's inputs or outputs) with text hidden and personal data masked."""
    return _walk(value, _hide_text)


def mask_trace_pii(value: Any) -> Any:
    """Return `value` (a trace's inputs or outputs) with its text kept and personal data masked."""
    return _walk(value, _mask_text)


def _hidden_error(error: str) -> str:
    """Keep an error's type (`GraphInterrupt`, `ValueError`) and hide its message."""
    kind = re.match(r"[A-Za-z_][\w.]*", error)
    return f"{kind.group(0) if kind else 'Error'}: {HIDDEN}"


class _MaskedTracer(LangChainTracer):
    """A LangSmith tracer that hides runs' error texts too (the client's `hide_inputs` and
    `hide_outputs` cover only inputs and outputs; an interrupt's payload or an exception's
    message can quote the user). LangChain copies tracers by class, so the rule is the class's."""

    @staticmethod
    def _hide_error(error: str) -> str:
        return _hidden_error(error)

    def _hide(self, run: Run) -> None:
        if run.error:
            run.error = self._hide_error(run.error)

    def _on_llm_error(self, run: Run) -> None:
        self._hide(run)
        super()._on_llm_error(run)

    def _on_chain_error(self, run: Run) -> None:
        self._hide(run)
        super()._on_chain_error(run)

    def _on_tool_error(self, run: Run) -> None:
        self._hide(run)
        super()._on_tool_error(run)

    def _on_retriever_error(self, run: Run) -> None:
        self._hide(run)
        super()._on_retriever_error(run)


class _PiiTracer(_MaskedTracer):
    """A LangSmith tracer that masks personal data in runs' error texts."""

    @staticmethod
    def _hide_error(error: str) -> str:
        return mask_pii(error)


def tracers_for(tenant: Tenant) -> list[LangChainTracer]:
    """Return the LangSmith tracer that applies `tenant`'s rule, when tracing is on and the
    tenant has one; else nothing (LangChain's environment-driven tracer does the work)."""
    from langsmith import utils as ls_utils

    if not ls_utils.tracing_is_enabled():
        return []
    hide: Callable[[Any], Any]
    tracer: type[LangChainTracer]
    if tenant.trace_privacy == "masked":
        hide, tracer = mask_trace, _MaskedTracer
    elif effective_policy(tenant.pii_policy, tenant.trace_privacy) != "keep":
        hide, tracer = mask_trace_pii, _PiiTracer
    else:
        return []
    from langsmith import Client

    return [tracer(client=Client(hide_inputs=hide, hide_outputs=hide))]


def tracing_config(
    tenant: Tenant, run_name: str, metadata: dict[str, Any] | None = None
) -> tuple[RunnableConfig, list[LangChainTracer]]:
    """Return the config for a model call or run made for `tenant` (name, tenant tags and
    metadata, the tenant's tracers as callbacks) and the tracers to hand to `flush_traces`."""
    tracers = tracers_for(tenant)
    config: RunnableConfig = {
        "run_name": run_name,
        "tags": [f"tenant:{tenant.slug}"],
        "metadata": {"tenant_id": str(tenant.id), "tenant": tenant.slug, **(metadata or {})},
        "callbacks": list(tracers),
    }
    return config, tracers


def flush_traces(tracers: list[LangChainTracer]) -> None:
    """Send the run's traces now (the job's process may end right after): the tenant's own
    tracers and any LangSmith tracing the environment turned on. Tracing never fails a run."""
    try:
        for tracer in tracers:
            tracer.wait_for_futures()
            tracer.client.flush()
        wait_for_all_tracers()
    except Exception as exc:
        log.warning("could not flush traces", error=str(exc))
