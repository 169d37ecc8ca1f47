"""The L1 profile cache: who a user is and what they may use, in Redis for a short while.

Every turn needs the user's profile and effective entitlement (plan, tenant and user feature
overrides: four queries). They change rarely, so the worker reads them through this cache with
a TTL (`PROFILE_CACHE_SECONDS`). Writes invalidate at once:
- a change to one user (profile, enabled, opt-out) deletes that user's entry (`forget_user`);
- a change that can touch every user of a tenant (the tenant itself, a plan, a subscription,
  a feature override) bumps the tenant's generation (`forget_tenant`), which is part of every
  entry's key: all the tenant's entries become unreachable in one `INCR` and expire on their own.

The cache never holds secrets (no Twilio token) and never fails a turn: when Redis is
unreachable the profile is read from the database.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any
from uuid import UUID

import psycopg
import structlog
from redis import Redis
from redis.exceptions import RedisError

from store import identity, tenants

log = structlog.get_logger(__name__)

_PREFIX = "conversa:profile"


@dataclass(frozen=True)
class Profile:
    """What a turn needs to know about its user and tenant, without secrets."""

    tenant_id: str
    tenant_slug: str
    tenant_name: str
    persona: str
    system_prompt: str | None
    tenant_locale: str
    tenant_timezone: str
    user_id: str
    user_name: str
    user_locale: str | None
    user_timezone: str | None
    enabled: bool
    opted_out: bool
    features: tuple[str, ...]
    plan: str | None
    messages_per_day: int | None

    @property
    def locale(self) -> str:
        """The user's locale, else the tenant's default."""
        return self.user_locale or self.tenant_locale

    @property
    def timezone(self) -> str:
        """The user's IANA timezone, else the tenant's."""
        return self.user_timezone or self.tenant_timezone

    @property
    def entitlement(self) -> identity.Entitlement:
        """The user's effective entitlement, as `store.identity.entitlement` resolved it."""
        return identity.Entitlement(frozenset(self.features), self.plan, self.messages_per_day)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Profile:
        data: dict[str, Any] = json.loads(raw)
        data["features"] = tuple(data["features"])
        return cls(**data)


def load_profile(
    conn: psycopg.Connection[Any], tenant_id: UUID | str, user_id: UUID | str
) -> Profile | None:
    """Read the profile from the database (the connection scoped to the tenant); None if gone."""
    tenant = tenants.tenant_by_id(conn, UUID(str(tenant_id)))
    user = tenants.user_by_id(conn, UUID(str(user_id)))
    if tenant is None or user is None or user.tenant_id != tenant.id:
        return None
    rights = identity.entitlement(conn, tenant.id, user.id)
    return Profile(
        tenant_id=str(tenant.id), tenant_slug=tenant.slug, tenant_name=tenant.name,
        persona=tenant.persona, system_prompt=tenant.system_prompt,
        tenant_locale=tenant.default_locale, tenant_timezone=tenant.timezone,
        user_id=str(user.id), user_name=user.profile_name or "", user_locale=user.locale,
        user_timezone=user.timezone, enabled=user.enabled,
        opted_out=user.opted_out_at is not None, features=tuple(sorted(rights.features)),
        plan=rights.plan, messages_per_day=rights.messages_per_day,
    )  # fmt: skip


def _generation_key(tenant_id: UUID | str) -> str:
    return f"{_PREFIX}-gen:{tenant_id}"


def _key(tenant_id: UUID | str, generation: int, user_id: UUID | str) -> str:
    return f"{_PREFIX}:{tenant_id}:g{generation}:{user_id}"


def _generation(redis: Redis, tenant_id: UUID | str) -> int:
    raw = redis.get(_generation_key(tenant_id))
    return int(raw) if raw is not None else 0  # type: ignore[arg-type]


def cached_profile(
    redis: Redis | None,
    conn: psycopg.Connection[Any],
    tenant_id: UUID | str,
    user_id: UUID | str,
    ttl: float,
) -> Profile | None:
    """Return the user's profile from the cache, else from the database (and cache it).

    `ttl` is in seconds; 0 (or no Redis) reads the database every time. None: no such user.
    """
    if redis is None or ttl <= 0:
        return load_profile(conn, tenant_id, user_id)
    try:
        generation = _generation(redis, tenant_id)
        key = _key(tenant_id, generation, user_id)
        raw = redis.get(key)
    except RedisError as exc:
        log.warning("profile cache unreachable; reading the database", error=str(exc))
        return load_profile(conn, tenant_id, user_id)
    if raw is not None:
        try:
            return Profile.from_json(raw)  # type: ignore[arg-type]
        except (ValueError, TypeError, KeyError):
            log.warning("unreadable profile cache entry; reading the database")
    profile = load_profile(conn, tenant_id, user_id)
    if profile is not None:
        try:
            redis.set(key, profile.to_json(), px=max(1, int(ttl * 1000)))
        except RedisError as exc:
            log.warning("could not cache the profile", error=str(exc))
    return profile


def forget_user(redis: Redis, tenant_id: UUID | str, user_id: UUID | str) -> None:
    """Drop one user's cached profile (their record changed)."""
    try:
        redis.delete(_key(tenant_id, _generation(redis, tenant_id), user_id))
    except RedisError as exc:
        log.warning("could not invalidate a cached profile", error=str(exc))


def forget_user_everywhere(redis: Redis, tenant_id: UUID | str, user_id: UUID | str) -> int:
    """Drop the user's cached profile under every generation (the user was erased); Redis
    errors are the caller's to handle. Return how many entries went."""
    pattern = f"{_PREFIX}:{tenant_id}:g*:{user_id}"
    keys = list(redis.scan_iter(match=pattern, count=1000))
    return int(redis.delete(*keys)) if keys else 0  # type: ignore[arg-type]


def forget_tenant(redis: Redis, tenant_id: UUID | str) -> None:
    """Make every cached profile of the tenant stale at once (plans, flags, tenant changed)."""
    try:
        redis.incr(_generation_key(tenant_id))
    except RedisError as exc:
        log.warning("could not invalidate a tenant's cached profiles", error=str(exc))
