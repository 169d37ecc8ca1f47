"""What spending costs, whose budgets it counts against, and the alerts it raises.

Model calls are held and settled by `server.budget_guard.BudgetGuard` (a LangChain callback,
kept apart so the API process never loads LangChain); transcriptions hold their estimate in
`server.jobs.transcribe`; outbound messages are charged when they are sent and never held back:
a reply already paid for, a notice or a staff reply always goes out. Prices come from the
settings (`MODEL_PRICES`, `TRANSCRIPTION_PRICE_PER_MINUTE`, `SEND_PRICE_PER_MESSAGE`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
import structlog
from redis import RedisError

from server import metrics
from server.jobs.common import redis_for
from server.jobs.queue import enqueue_budget_alert
from server.settings import Settings
from store import budgets
from store.budgets import Alert, BudgetExhausted, Spender, Usage
from store.records import Tenant, User

log = structlog.get_logger(__name__)

MILLION = Decimal(1_000_000)

__all__ = ["BudgetExhausted", "model_cost", "raise_alerts", "record_usage", "spender_for"]


def spender_for(tenant: Tenant, user: User | None) -> Spender:
    """Whose budgets a cost counts against: the tenant's, and the user's (days in the
    tenant's time zone)."""
    return Spender(tenant.id, user.id if user is not None else None, tenant.timezone)


def model_cost(settings: Settings, model: str, input_tokens: int, output_tokens: int) -> Decimal:
    """What a call to `model` costs for these tokens, from the price table."""
    per_input, per_output = settings.price_of(model)
    cost = Decimal(str(per_input)) * input_tokens + Decimal(str(per_output)) * output_tokens
    return (cost / MILLION).quantize(Decimal("0.000001"))


def transcription_cost(settings: Settings, seconds: float) -> Decimal:
    """What transcribing `seconds` of audio costs."""
    per_minute = Decimal(str(settings.transcription_price_per_minute))
    return (per_minute * Decimal(str(seconds)) / 60).quantize(Decimal("0.000001"))


def send_cost(settings: Settings, parts: int) -> Decimal:
    """What sending `parts` WhatsApp messages costs."""
    return (Decimal(str(settings.send_price_per_message)) * parts).quantize(Decimal("0.000001"))


def record_usage(
    conn: psycopg.Connection[Any], spender: Spender, usage: Usage, hold: UUID | None = None
) -> list[Alert]:
    """Settle `hold` (if any) with `usage`: the counters and the ledger row, in one transaction
    (nested in the caller's, if it has one), and the usage metrics. Return the alerts crossed;
    raise them with `raise_alerts` once the caller's transaction has committed."""
    alerts = budgets.settle(conn, hold, spender, usage)
    metrics.observe_usage(spender.tenant_id, usage.kind, usage.model, float(usage.cost),
                          usage.input_tokens, usage.output_tokens)  # fmt: skip
    return alerts


def raise_alerts(settings: Settings, tenant: Tenant, alerts: list[Alert], cid: str) -> None:
    """Tell the tenant a budget crossed 80% or 100%: a log line, and a POST to its alert
    webhook (queued; call this after the usage that crossed it has committed)."""
    for alert in alerts:
        payload = alert_payload(alert, tenant)
        log.warning("budget alert", **payload)
        metrics.observe_budget_alert(alert.level)
        if tenant.budget_alert_url and settings.redis_url:
            try:
                enqueue_budget_alert(redis_for(settings), settings, str(tenant.id), payload, cid)
            except RedisError as exc:  # the log line stands; the webhook misses this one
                log.warning("could not queue the budget alert webhook", error=str(exc))


def alert_payload(alert: Alert, tenant: Tenant) -> dict[str, Any]:
    """What a budget alert says (ids and sums only: no names, no numbers, no text)."""
    budget = alert.budget
    return {
        "type": "budget.threshold",
        "tenant_id": str(tenant.id),
        "tenant": tenant.slug,
        "budget_id": str(budget.id),
        "scope": budget.scope,
        "subject_id": str(budget.subject_id),
        "period": budget.period,
        "period_start": budget.period_start.isoformat(),
        "level": alert.level,
        "used_tokens": alert.used_tokens,
        "used_cost": str(alert.used_cost),
        "max_tokens": budget.max_tokens,
        "max_cost": str(budget.max_cost) if budget.max_cost is not None else None,
    }
