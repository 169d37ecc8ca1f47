"""Budgets and the usage ledger through the management API (tenant and platform admins).

- `/tenants/{tenant_id}/budgets`: create, list, read, change and delete budgets. A budget caps
  tokens, money or both, per day or per month, for the whole tenant (`scope: tenant`) or for
  each user (`scope: user`, of one plan with `plan_id`, or of every plan).
- `GET /tenants/{tenant_id}/usage`: the ledger summed between two days, grouped by day, user,
  route, model or kind (model call, transcription, send).
- `GET /tenants/{tenant_id}/users/{item_id}/budget`: every budget that applies to the user
  now, with what is used and held of it.

What a turn does once a budget is spent, and where alerts go, are tenant settings
(`budget_exhausted`, `budget_cheaper_model`, `budget_alert_url`).
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from pydantic import Field, model_validator

from server.api._resource import (
    RULES,
    Change,
    Resource,
    Strict,
    add_routes,
    not_found,
    scoped,
    services_of,
)  # fmt: skip
from server.api.auth import Principal, Role, require_roles
from server.api.errors import ERROR_RESPONSES, ApiError
from server.services import Services
from store import budgets, tenants
from store.budgets import Spender

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)

ADMINS = frozenset({Role.platform_admin, Role.tenant_admin})
Admin = Annotated[Principal, Depends(require_roles(Role.platform_admin, Role.tenant_admin))]
ServicesDep = Annotated[Services, Depends(services_of)]

INT8_MAX = 2**63 - 1
MAX_COST = Decimal("99999999")
"""The largest money cap the ledger's columns hold (numeric(14, 6))."""
MAX_REPORT_DAYS = 400

Money = Annotated[Decimal, Field(ge=0, le=MAX_COST, decimal_places=6, allow_inf_nan=False)]


class BudgetCreate(Strict):
    scope: Literal["tenant", "user"]
    period: Literal["day", "month"]
    plan_id: UUID | None = Field(
        default=None,
        description="With scope `user`: the plan whose users it caps (null: every user).",
    )
    max_tokens: int | None = Field(default=None, ge=0, le=INT8_MAX)
    max_cost: Money | None = Field(default=None, description="In the price table's currency.")

    @model_validator(mode="after")
    def _coherent(self) -> BudgetCreate:
        if self.max_tokens is None and self.max_cost is None:
            raise ValueError("a budget needs max_tokens, max_cost or both")
        if self.scope == "tenant" and self.plan_id is not None:
            raise ValueError("plan_id belongs to user budgets; a tenant budget has none")
        return self


class BudgetChange(Change):
    max_tokens: int | None = Field(default=None, ge=0, le=INT8_MAX)
    max_cost: Money | None = None


BUDGETS = Resource(
    "budgets", "budget", "budgets",
    ("id", "scope", "plan_id", "period", "max_tokens", "max_cost", "created_at", "updated_at"),
    BudgetCreate, BudgetChange, filters={"scope": "scope", "period": "period"},
    read_roles=ADMINS,
)  # fmt: skip
add_routes(router, BUDGETS)


@router.get("/tenants/{tenant_id}/usage", tags=["budgets"], summary="What the tenant spent")
def usage(
    tenant_id: UUID,
    principal: Admin,
    services: ServicesDep,
    since: Annotated[date | None, Query(description="First day (default: 30 days ago)")] = None,
    until: Annotated[date | None, Query(description="Last day, included (default: today)")] = None,
    group_by: Annotated[
        list[Literal["day", "user_id", "route", "model", "kind"]] | None,
        Query(description="Sum by these; repeat the parameter for several"),
    ] = None,
) -> dict[str, Any]:
    """The usage ledger summed from `since` to `until` (the tenant's days), by `group_by`:
    entries, input and output tokens, audio seconds, message parts, cost, degraded calls."""
    until = until or date.today()
    since = since or until - timedelta(days=30)
    if since > until:
        raise ApiError(422, "bad_period", "`since` is after `until`.")
    if (until - since).days > MAX_REPORT_DAYS:
        raise ApiError(422, "bad_period", f"Ask for {MAX_REPORT_DAYS} days or fewer at once.")
    keys = list(dict.fromkeys(group_by or []))
    with scoped(services, principal, tenant_id, "read usage") as conn:
        rows = budgets.report(conn, tenant_id, since=since, until=until, group_by=keys)
    return {"since": since.isoformat(), "until": until.isoformat(), "group_by": keys,
            "rows": rows}  # fmt: skip


@router.get("/tenants/{tenant_id}/users/{item_id}/budget", tags=["budgets"],
            summary="A user's budgets now")  # fmt: skip
def user_budget(
    tenant_id: UUID, item_id: UUID, principal: Admin, services: ServicesDep
) -> dict[str, Any]:
    """Every budget that counts this user's spending now (theirs and the tenant's), with what
    is used and what running calls hold of it in the current period."""
    with scoped(services, principal, tenant_id, "read user budget") as conn:
        tenant = tenants.tenant_by_id(conn, tenant_id)
        if tenant is None or not tenants.has_user(conn, tenant_id, item_id):
            raise not_found("user")
        found = budgets.status(conn, Spender(tenant_id, item_id, tenant.timezone))
    return {"budgets": found}


RULES[("GET", "/tenants/{tenant_id}/usage")] = ADMINS
RULES[("GET", "/tenants/{tenant_id}/users/{item_id}/budget")] = ADMINS
