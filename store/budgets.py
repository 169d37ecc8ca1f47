"""Budgets, their counters and holds, and the usage ledger.

A budget caps what the tenant (scope `tenant`) or each user (scope `user`, of one plan or of
every plan) spends per day or per month (the tenant's calendar), in model tokens, in money, or
both. Spending goes in two steps:

- `reserve` holds an estimate against every budget that applies, atomically: each counter row
  is locked while the holds on it are summed, so concurrent calls in any number of workers
  cannot all pass one check; it raises `BudgetExhausted` and holds nothing when one budget has
  no room.
- `settle` (or `charge`, for spending that had no hold) drops the hold, adds the real usage to
  the counters, writes one ledger row, and returns the alerts that usage crossed (80% and 100%,
  each once per budget, subject and period).

A hold that is never settled (its worker was killed) stops counting at `expires_at`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

Conn = psycopg.Connection[Any]

ALERT_LEVELS = (100, 80)
"""Percentages of a budget that alert the tenant, highest first."""

GROUPS = ("day", "user_id", "route", "model", "kind")
"""What the usage report can group by."""


class BudgetExhausted(Exception):
    """A budget has no room for the estimated cost: nothing was held."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        super().__init__(
            f"the {budget.scope} budget per {budget.period} "
            f"({budget.limit_text()}) has no room left"
        )


@dataclass(frozen=True)
class Budget:
    """One budget as it applies to one subject in the current period."""

    id: UUID
    scope: Literal["tenant", "user"]
    period: Literal["day", "month"]
    max_tokens: int | None
    max_cost: Decimal | None
    subject_id: UUID
    period_start: date

    def limit_text(self) -> str:
        limits = []
        if self.max_tokens is not None:
            limits.append(f"{self.max_tokens} tokens")
        if self.max_cost is not None:
            limits.append(f"{self.max_cost.normalize():f} in money")
        return " and ".join(limits)


@dataclass(frozen=True)
class Alert:
    """A budget crossed `level` percent with this usage."""

    budget: Budget
    level: int
    used_tokens: int
    used_cost: Decimal


@dataclass(frozen=True)
class Usage:
    """What one model call, transcription or send spent, for the ledger."""

    kind: Literal["model", "transcription", "send"]
    cost: Decimal = Decimal(0)
    input_tokens: int = 0
    output_tokens: int = 0
    audio_seconds: float = 0.0
    parts: int = 0
    model: str | None = None
    route: str | None = None
    degraded: bool = False
    correlation_id: str | None = None

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class Spender:
    """Whose budgets a cost counts against: a tenant, and one of its users (or none)."""

    tenant_id: UUID
    user_id: UUID | None
    timezone: str


_APPLICABLE = """
    with today as (select (now() at time zone %(tz)s)::date as d),
    plan as (select coalesce(
        (select s.plan_id from subscriptions s where s.user_id = %(user)s
           and s.status in ('active', 'past_due')
           and (s.period_end is null or s.period_end > now())),
        (select t.default_plan_id from tenants t where t.id = %(tenant)s)) as id)
    select b.id, b.scope, b.period, b.max_tokens, b.max_cost,
           case when b.scope = 'tenant' then b.tenant_id else %(user)s::uuid end as subject_id,
           case when b.period = 'day' then today.d
                else date_trunc('month', today.d)::date end as period_start
    from budgets b, today
    where b.tenant_id = %(tenant)s
      and (b.scope = 'tenant' or (%(user)s::uuid is not null
           and (b.plan_id is null or b.plan_id = (select id from plan))))
    order by b.id"""


def applicable(conn: Conn, spender: Spender) -> list[Budget]:
    """The budgets `spender`'s spending counts against now (in a stable order: lock order)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            _APPLICABLE,
            {"tz": spender.timezone, "user": spender.user_id, "tenant": spender.tenant_id},
        ).fetchall()
    return [Budget(**row) for row in rows]


def reserve(
    conn: Conn, spender: Spender, *, tokens: int, cost: Decimal, hold_seconds: float
) -> UUID | None:
    """Hold `tokens` and `cost` against every budget that applies, or raise `BudgetExhausted`.

    Returns the hold's id to settle or release (None when no budget applies: nothing to hold).
    All or nothing, in one transaction.
    """
    with conn.transaction():
        budgets = applicable(conn, spender)
        if not budgets:
            return None
        hold = uuid.uuid4()
        for budget in budgets:
            used_tokens, used_cost = _lock_counter(conn, spender.tenant_id, budget)
            held_tokens, held_cost = _held(conn, budget)
            if _over(budget, used_tokens + held_tokens, used_cost + held_cost, tokens, cost):
                raise BudgetExhausted(budget)
            conn.execute(
                """insert into budget_holds (hold_id, tenant_id, budget_id, subject_id,
                       period_start, tokens, cost, expires_at)
                   values (%s, %s, %s, %s, %s, %s, %s,
                           now() + make_interval(secs => %s))""",
                (hold, spender.tenant_id, budget.id, budget.subject_id, budget.period_start,
                 tokens, cost, hold_seconds),
            )  # fmt: skip
    return hold


def has_room(conn: Conn, spender: Spender) -> Budget | None:
    """The first budget already spent (with what is held), or None when every one has room."""
    for budget in applicable(conn, spender):
        used_tokens, used_cost, held_tokens, held_cost = _standing(conn, spender, budget)
        if _over(budget, used_tokens + held_tokens, used_cost + held_cost, 0, Decimal(0)):
            return budget
    return None


def release(conn: Conn, hold: UUID | None) -> None:
    """Drop a hold whose spending did not happen (the call failed before it cost anything)."""
    if hold is not None:
        conn.execute("delete from budget_holds where hold_id = %s", (hold,))


def settle(conn: Conn, hold: UUID | None, spender: Spender, usage: Usage) -> list[Alert]:
    """Replace the hold with the real usage: counters, one ledger row; return new alerts."""
    with conn.transaction():
        release(conn, hold)
        return charge(conn, spender, usage)


def charge(conn: Conn, spender: Spender, usage: Usage) -> list[Alert]:
    """Count `usage` against the budgets that apply and write its ledger row (no hold)."""
    alerts: list[Alert] = []
    with conn.transaction():
        for budget in applicable(conn, spender):
            values = _seed(spender.tenant_id, budget, usage.tokens, usage.cost)
            row = (
                conn.execute(
                    """update budget_counters set used_tokens = used_tokens + %(tokens)s,
                       used_cost = used_cost + %(cost)s
                   where budget_id = %(budget)s and subject_id = %(subject)s
                     and period_start = %(start)s
                   returning used_tokens, used_cost""",
                    values,
                ).fetchone()
                or conn.execute(  # the first charge of the period: from the ledger
                    _SEED
                    + """ on conflict (budget_id, subject_id, period_start) do update
                       set used_tokens = budget_counters.used_tokens + %(tokens)s,
                           used_cost = budget_counters.used_cost + %(cost)s
                   returning used_tokens, used_cost""",
                    values,
                ).fetchone()
            )
            assert row is not None
            tokens, cost = _pair(row)
            if alert := _crossed(conn, budget, tokens, cost):
                alerts.append(alert)
        conn.execute(
            """insert into usage_ledger (tenant_id, user_id, day, kind, route, model,
                   input_tokens, output_tokens, audio_seconds, parts, cost, degraded,
                   correlation_id)
               values (%s, %s, (now() at time zone %s)::date, %s, %s, %s, %s, %s, %s, %s, %s,
                       %s, %s)""",
            (spender.tenant_id, spender.user_id, spender.timezone, usage.kind, usage.route,
             usage.model, usage.input_tokens, usage.output_tokens, usage.audio_seconds,
             usage.parts, usage.cost, usage.degraded, usage.correlation_id),
        )  # fmt: skip
    return alerts


def report(
    conn: Conn, tenant_id: UUID, *, since: date, until: date, group_by: Sequence[str]
) -> list[dict[str, Any]]:
    """Sum the ledger from `since` to `until` (inclusive, the tenant's days) by `group_by`."""
    unknown = [g for g in group_by if g not in GROUPS]
    if unknown:
        raise ValueError(f"cannot group usage by {unknown}; choose from {list(GROUPS)}")
    keys = [sql.Identifier(g) for g in dict.fromkeys(group_by)]
    columns = sql.SQL(", ").join([
        *keys,
        sql.SQL("count(*) as entries, sum(input_tokens) as input_tokens, "
                "sum(output_tokens) as output_tokens, sum(audio_seconds) as audio_seconds, "
                "sum(parts) as parts, sum(cost) as cost, "
                "count(*) filter (where degraded) as degraded"),
    ])  # fmt: skip
    query = sql.SQL(
        "select {columns} from usage_ledger where tenant_id = %s and day between %s and %s"
    ).format(columns=columns)
    if keys:
        ordering = sql.SQL(", ").join(keys)
        query += sql.SQL(" group by {k} order by {k}").format(k=ordering)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, (tenant_id, since, until)).fetchall()
    return [_plain(row) for row in rows if row["entries"]]


def status(conn: Conn, spender: Spender) -> list[dict[str, Any]]:
    """Every budget that applies to `spender` now, with what is used and held of it."""
    result = []
    for budget in applicable(conn, spender):
        used_tokens, used_cost, held_tokens, held_cost = _standing(conn, spender, budget)
        result.append({
            "budget_id": str(budget.id), "scope": budget.scope, "period": budget.period,
            "period_start": budget.period_start.isoformat(),
            "max_tokens": budget.max_tokens,
            "max_cost": str(budget.max_cost) if budget.max_cost is not None else None,
            "used_tokens": used_tokens, "used_cost": str(used_cost),
            "held_tokens": held_tokens, "held_cost": str(held_cost),
        })  # fmt: skip
    return result


def _standing(conn: Conn, spender: Spender, budget: Budget) -> tuple[int, Decimal, int, Decimal]:
    """What the budget's subject has used this period, and what running calls hold of it."""
    _ensure_counter(conn, spender.tenant_id, budget)
    row = conn.execute(
        """select c.used_tokens, c.used_cost,
                  coalesce(sum(h.tokens), 0) as held_tokens, coalesce(sum(h.cost), 0) as held_cost
           from budget_counters c
           left join budget_holds h on h.budget_id = c.budget_id
                and h.subject_id = c.subject_id and h.period_start = c.period_start
                and h.expires_at > now()
           where c.budget_id = %s and c.subject_id = %s and c.period_start = %s
           group by c.used_tokens, c.used_cost""",
        (budget.id, budget.subject_id, budget.period_start),
    ).fetchone()
    assert row is not None  # _ensure_counter made it
    values = list(row.values()) if isinstance(row, dict) else list(row)
    return int(values[0]), Decimal(values[1]), int(values[2]), Decimal(values[3])


_SEED = """
    insert into budget_counters (tenant_id, budget_id, subject_id, period_start, used_tokens,
                                 used_cost)
    select %(tenant)s, %(budget)s, %(subject)s, %(start)s,
           coalesce(sum(input_tokens + output_tokens), 0) + %(tokens)s,
           coalesce(sum(cost), 0) + %(cost)s
    from usage_ledger
    where tenant_id = %(tenant)s and day >= %(start)s
      and (%(scope)s = 'tenant' or user_id = %(subject)s)"""
"""A counter starts from what the ledger holds for its period and subject: a budget set up
mid-month counts the month's spending so far."""


def _seed(
    tenant_id: UUID, budget: Budget, tokens: int = 0, cost: Decimal = Decimal(0)
) -> dict[str, Any]:
    return {
        "tenant": tenant_id, "budget": budget.id, "subject": budget.subject_id,
        "start": budget.period_start, "scope": budget.scope, "tokens": tokens, "cost": cost,
    }  # fmt: skip


def _ensure_counter(conn: Conn, tenant_id: UUID, budget: Budget) -> None:
    """Start the budget's counter for this period from the ledger, unless it has one (the
    ledger is summed once per counter, not on every call)."""
    found = conn.execute(
        "select 1 from budget_counters where budget_id = %s and subject_id = %s "
        "and period_start = %s",
        (budget.id, budget.subject_id, budget.period_start),
    ).fetchone()
    if found is None:
        conn.execute(_SEED + " on conflict do nothing", _seed(tenant_id, budget))


def _lock_counter(conn: Conn, tenant_id: UUID, budget: Budget) -> tuple[int, Decimal]:
    """Create the budget's counter for this period if needed, lock it, and read it."""
    _ensure_counter(conn, tenant_id, budget)
    row = conn.execute(
        """select used_tokens, used_cost from budget_counters
           where budget_id = %s and subject_id = %s and period_start = %s for update""",
        (budget.id, budget.subject_id, budget.period_start),
    ).fetchone()
    assert row is not None
    return _pair(row)


def _held(conn: Conn, budget: Budget) -> tuple[int, Decimal]:
    """Sum the live holds on the budget's counter (the expired ones are dropped)."""
    keys = (budget.id, budget.subject_id, budget.period_start)
    conn.execute(
        """delete from budget_holds where budget_id = %s and subject_id = %s
           and period_start = %s and expires_at <= now()""",
        keys,
    )
    row = conn.execute(
        """select coalesce(sum(tokens), 0) as tokens, coalesce(sum(cost), 0) as cost
           from budget_holds
           where budget_id = %s and subject_id = %s and period_start = %s""",
        keys,
    ).fetchone()
    assert row is not None
    return _pair(row)


def _over(budget: Budget, tokens: int, cost: Decimal, more_tokens: int, more: Decimal) -> bool:
    """Whether spending `more` on top of `tokens`/`cost` would not fit the budget.

    A budget already at its limit has no room even for a call estimated at nothing."""
    if budget.max_tokens is not None and (
        tokens >= budget.max_tokens or tokens + more_tokens > budget.max_tokens
    ):
        return True
    return budget.max_cost is not None and (
        cost >= budget.max_cost or cost + more > budget.max_cost
    )


def _crossed(conn: Conn, budget: Budget, tokens: int, cost: Decimal) -> Alert | None:
    """Mark and return the highest alert level the usage reached, if not alerted yet."""
    share = max(_share(tokens, budget.max_tokens), _share(cost, budget.max_cost))
    for level in ALERT_LEVELS:
        if share * 100 >= level:
            marked = conn.execute(
                """update budget_counters set alerted = %s where budget_id = %s
                   and subject_id = %s and period_start = %s and alerted < %s returning 1""",
                (level, budget.id, budget.subject_id, budget.period_start, level),
            ).fetchone()
            return Alert(budget, level, tokens, cost) if marked else None
    return None


def _share(used: float | Decimal, limit: float | Decimal | None) -> float:
    if limit is None:
        return 0.0
    return float(used / limit) if limit else (1.0 if used else 0.0)


def _pair(row: Any) -> tuple[int, Decimal]:
    values = list(row.values()) if isinstance(row, dict) else list(row)
    return int(values[0]), Decimal(values[1])


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready values: ids and days as text, sums as numbers (money as text, exact)."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, UUID | date):
            out[key] = str(value) if isinstance(value, UUID) else value.isoformat()
        elif key == "cost":
            out[key] = str(value)
        elif key == "audio_seconds":
            out[key] = float(value)
        elif isinstance(value, Decimal):
            out[key] = int(value)
        else:
            out[key] = value
    return out
