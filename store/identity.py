"""Plans, subscriptions and feature flags: what one user may use, resolved in one place.

Feature names are stored as given; the one list of them is `graphs.features`, which the
management API validates against before a name reaches a plan or an override.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row


@dataclass(frozen=True)
class Entitlement:
    """What a user may use now: features, and messages per day (None: no limit)."""

    features: frozenset[str]
    plan: str | None
    messages_per_day: int | None


def resolve_features(
    plan: Iterable[str] | None,
    tenant_overrides: Mapping[str, bool],
    user_overrides: Mapping[str, bool],
) -> frozenset[str]:
    """Combine the plan's features with the tenant's, then the user's, overrides.

    The plan gives the defaults; a tenant override switches a feature on or off for every
    user of the tenant; a user override wins over both, for that user only.
    """
    enabled = set(plan or ())
    for overrides in (tenant_overrides, user_overrides):
        for feature, on in overrides.items():
            (enabled.add if on else enabled.discard)(feature)
    return frozenset(enabled)


def entitlement(conn: psycopg.Connection[Any], tenant_id: UUID, user_id: UUID) -> Entitlement:
    """Load and resolve a user's entitlement (the connection must be scoped to the tenant).

    The plan is the user's subscription's while it is active or past due (a grace period);
    a cancelled or missing subscription falls back to the tenant's default plan, if any.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        plan = cur.execute(
            """select p.slug, p.features, p.messages_per_day from plans p
               where p.tenant_id = %(tenant)s and p.id = coalesce(
                   (select s.plan_id from subscriptions s where s.user_id = %(user)s
                      and s.status in ('active', 'past_due')
                      and (s.period_end is null or s.period_end > now())),
                   (select t.default_plan_id from tenants t where t.id = %(tenant)s))""",
            {"tenant": tenant_id, "user": user_id},
        ).fetchone()
        overrides = cur.execute(
            """select user_id, feature, enabled from feature_overrides
               where tenant_id = %s and (user_id is null or user_id = %s)""",
            (tenant_id, user_id),
        ).fetchall()
    tenant_level = {o["feature"]: o["enabled"] for o in overrides if o["user_id"] is None}
    user_level = {o["feature"]: o["enabled"] for o in overrides if o["user_id"] is not None}
    return Entitlement(
        features=resolve_features(plan["features"] if plan else None, tenant_level, user_level),
        plan=plan["slug"] if plan else None,
        messages_per_day=plan["messages_per_day"] if plan else None,
    )


def count_message(
    conn: psycopg.Connection[Any], tenant_id: UUID, user_id: UUID, count: int, timezone: str
) -> tuple[int, bool]:
    """Add `count` messages to today's usage (the tenant's day); return the total and whether
    today's over-quota notice has been sent already (and mark it sent)."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            """insert into usage_days (tenant_id, user_id, day, messages)
               values (%s, %s, (now() at time zone %s)::date, %s)
               on conflict (user_id, day) do update set messages = usage_days.messages + %s
               returning messages, notice_sent""",
            (tenant_id, user_id, timezone, count, count),
        ).fetchone()
    assert row is not None
    return int(row["messages"]), bool(row["notice_sent"])


def note_notice(conn: psycopg.Connection[Any], user_id: UUID, timezone: str) -> None:
    """Remember that today's once-a-day notice went to this user."""
    conn.execute(
        "update usage_days set notice_sent = true where user_id = %s "
        "and day = (now() at time zone %s)::date",
        (user_id, timezone),
    )


def upsert_plan(
    conn: psycopg.Connection[Any], tenant_id: UUID, *, slug: str, name: str, features: list[str]
) -> UUID:
    """Create the tenant's plan `slug`, or set its name and features."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            """insert into plans (tenant_id, slug, name, features) values (%s, %s, %s, %s)
               on conflict (tenant_id, slug) do update
                   set name = excluded.name, features = excluded.features
               returning id""",
            (tenant_id, slug, name, features),
        ).fetchone()
    assert row is not None
    return UUID(str(row["id"]))


def default_plan_if_unset(conn: psycopg.Connection[Any], tenant_id: UUID, plan_id: UUID) -> None:
    """Make `plan_id` the tenant's default plan, unless it already has one."""
    conn.execute(
        "update tenants set default_plan_id = coalesce(default_plan_id, %s) where id = %s",
        (plan_id, tenant_id),
    )
