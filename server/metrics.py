"""Prometheus metrics of the API and the workers (`GET /metrics`; `WORKER_METRICS_PORT`).

Labels are low-cardinality by construction: webhook names, outcomes, job names, routes, model
names, queue names and Twilio error codes, never a phone number, a tenant's user or a message.

Two kinds of process need care:

- Several API processes (`conversa serve --workers N`): each counts in its own memory, so the
  API runs prometheus-client's multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, which `serve`
  prepares) and `/metrics` adds up every process's files.
- A worker process runs its jobs in its own threads (`server.jobs.worker`), counts in memory and
  serves its registry on its own port (`WORKER_METRICS_PORT`).

Gauges that describe shared state (queue depth and age, the handoff queue) are read at scrape
time by the API (`server.metrics_scrape`); the chat model's latency and tokens come from a
LangChain callback (`server.metrics_llm`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Histogram,
    disable_created_metrics,
)

from server.metrics_env import MULTIPROC_ENV

log = structlog.get_logger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST

disable_created_metrics()  # no `_created` series: they double the output and nobody graphs them

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_SLOW = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)

WEBHOOK_REQUESTS = Counter(
    "conversa_webhook_requests",
    "Twilio webhook requests, by webhook (inbound, status) and outcome (accepted, duplicate, "
    "recorded, or the error code answered).",
    ["webhook", "outcome"],
)
WEBHOOK_DURATION = Histogram(
    "conversa_webhook_duration_seconds",
    "Time to answer a Twilio webhook, by webhook and outcome.",
    ["webhook", "outcome"],
    buckets=_FAST,
)
DELIVERY_STATUSES = Counter(
    "conversa_delivery_status_callbacks",
    "Delivery statuses Twilio reported for our messages, by status and Twilio error code.",
    ["status", "error_code"],
)
JOBS = Counter(
    "conversa_jobs",
    "RQ jobs a worker ran, by job and outcome (finished, failed, retried).",
    ["job", "outcome"],
)
JOB_DURATION = Histogram(
    "conversa_job_duration_seconds",
    "Time an RQ job took in the worker, by job.",
    ["job"],
    buckets=_SLOW,
)
GRAPH_RUN_DURATION = Histogram(
    "conversa_graph_run_duration_seconds",
    "Time one run (or resume) of the assistant graph took, by route and outcome (ok, error).",
    ["route", "outcome"],
    buckets=_SLOW,
)
LLM_DURATION = Histogram(
    "conversa_llm_request_duration_seconds",
    "Time one chat model call took, by model and outcome (ok, error).",
    ["model", "outcome"],
    buckets=_SLOW,
)
LLM_TOKENS = Counter(
    "conversa_llm_tokens",
    "Tokens the chat models reported, by model and kind (prompt, completion).",
    ["model", "kind"],
)
TRANSCRIPTION_DURATION = Histogram(
    "conversa_transcription_duration_seconds",
    "Time one voice note's transcription took, by provider and outcome (ok, error).",
    ["provider", "outcome"],
    buckets=_SLOW,
)
OUTBOUND_SENDS = Counter(
    "conversa_outbound_sends",
    "Outbound WhatsApp sends, by outcome (sent, retrying, failed, suppressed) and Twilio error "
    "code (empty when there was none).",
    ["outcome", "error_code"],
)
SUPERSEDED_TURNS = Counter(
    "conversa_superseded_turns",
    "Turns overtaken by newer messages before their reply went out, by outcome: folded (the "
    "reply was dropped and the turn folded into the next) or sent (the user had waited past "
    "TURN_SUPERSEDE_MAX_SECONDS, so the reply went out anyway).",
    ["outcome"],
)
TEMPLATE_SENDS = Counter(
    "conversa_template_sends",
    "Messages due outside WhatsApp's 24-hour window, by template purpose (reminder, "
    "staff_followup, date_notice, re_engagement) and outcome (sent; no_template: the tenant has "
    "no approved template for the purpose; missing_variables: the message lacked a value).",
    ["purpose", "outcome"],
)
ROUTING_FALLBACKS = Counter(
    "conversa_routing_fallbacks",
    "Routing calls that failed, so the turn kept the last specialist or went to the general "
    "assistant, by reason (unreachable, refused, server_error, invalid_output, error).",
    ["reason"],
)
ACK_BATCH_SIZE = Histogram(
    "conversa_webhook_ack_batch_size",
    "Inbound messages stored and committed together by one API process's group commit, by "
    "outcome (committed; split: a bad row made each row go alone; failed: the batch did not "
    "commit and every request in it was answered 503).",
    ["outcome"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
USAGE_COST = Counter(
    "conversa_usage_cost",
    "Money spent, as the usage ledger records it (price table's currency), by tenant id, kind "
    "(model, transcription, send) and model (empty for sends).",
    ["tenant", "kind", "model"],
)
USAGE_TOKENS = Counter(
    "conversa_usage_tokens",
    "Model tokens the usage ledger recorded, by tenant id, model and direction (input, output).",
    ["tenant", "model", "direction"],
)
BUDGET_REFUSALS = Counter(
    "conversa_budget_refusals",
    "Model calls and transcriptions stopped before they ran because a budget was spent, by "
    "the budget's scope (tenant, user) and period (day, month).",
    ["scope", "period"],
)
BUDGET_ALERTS = Counter(
    "conversa_budget_alerts",
    "Budget alerts raised (each budget, subject and period alerts once per level), by level "
    "(80, 100).",
    ["level"],
)

# --- recording ------------------------------------------------------------------------------


def record(metric: Counter | Histogram, labels: Iterable[str], value: float) -> None:
    """Add `value` to a counter or observe it on a histogram."""
    child = metric.labels(*[str(label) for label in labels])
    if isinstance(child, Histogram):
        child.observe(value)
    else:
        child.inc(value)


def observe_webhook(webhook: str, outcome: str, seconds: float) -> None:
    """Count one webhook request and its latency."""
    record(WEBHOOK_REQUESTS, (webhook, outcome), 1)
    record(WEBHOOK_DURATION, (webhook, outcome), seconds)


def observe_ack_batch(size: int, outcome: str) -> None:
    """Record one group commit of the inbound webhook: how many messages, and how it ended."""
    record(ACK_BATCH_SIZE, (outcome,), size)


def observe_delivery_status(status: str, error_code: int | None) -> None:
    """Count one delivery status callback."""
    record(DELIVERY_STATUSES, (status, _code(error_code)), 1)


def observe_job(job: str, outcome: str, seconds: float) -> None:
    """Count one job the worker ran, with its duration."""
    record(JOBS, (job, outcome), 1)
    record(JOB_DURATION, (job,), seconds)


def observe_graph_run(route: str, outcome: str, seconds: float) -> None:
    """Record one run of the assistant graph."""
    record(GRAPH_RUN_DURATION, (route, outcome), seconds)


def observe_send(outcome: str, error_code: int | None = None) -> None:
    """Count one outbound send attempt's outcome."""
    record(OUTBOUND_SENDS, (outcome, _code(error_code)), 1)


def observe_template_send(purpose: str, outcome: str) -> None:
    """Count one message due outside the 24-hour window, by template purpose and outcome."""
    record(TEMPLATE_SENDS, (purpose, outcome), 1)


def observe_usage(
    tenant_id: object,
    kind: str,
    model: str | None,
    cost: float,
    input_tokens: int = 0,
    output_tokens: int = 0,
) -> None:
    """Count what one ledger entry spent."""
    tenant = str(tenant_id)
    record(USAGE_COST, (tenant, kind, model or ""), cost)
    if input_tokens:
        record(USAGE_TOKENS, (tenant, model or "", "input"), input_tokens)
    if output_tokens:
        record(USAGE_TOKENS, (tenant, model or "", "output"), output_tokens)


def observe_budget_refusal(scope: str, period: str) -> None:
    """Count one call a spent budget stopped."""
    record(BUDGET_REFUSALS, (scope, period), 1)


def observe_budget_alert(level: int) -> None:
    """Count one budget alert."""
    record(BUDGET_ALERTS, (str(level),), 1)


def observe_superseded_turn(outcome: str) -> None:
    """Count one turn that newer messages overtook (folded, or sent past the bound)."""
    record(SUPERSEDED_TURNS, (outcome,), 1)


@contextmanager
def transcription_timer(provider: str) -> Iterator[None]:
    """Time one transcription, labelled ok or error."""
    started, outcome = time.monotonic(), "error"
    try:
        yield
        outcome = "ok"
    finally:
        record(TRANSCRIPTION_DURATION, (provider, outcome), time.monotonic() - started)


def _code(error_code: int | None) -> str:
    return str(error_code) if error_code else ""


# --- process set-up --------------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    """The multiprocess directory this process counts in, if any."""
    return os.environ.get(MULTIPROC_ENV) or None


def serve_worker_metrics(host: str, port: int) -> Any:
    """Serve this process's registry over HTTP on a daemon thread; return the server."""
    from prometheus_client import start_http_server

    server, _ = start_http_server(port, addr=host, registry=REGISTRY)
    return server
