"""The L1 profile cache: hits, expiry, and invalidation by the management API's writes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from server.api.auth import Role, mint_token
from server.jobs.common import connect
from server.settings import Settings
from store import tenants
from store.cache import cached_profile, forget_tenant, forget_user, load_profile
from store.records import Tenant, User

PREFIX = "/api/v1"


@pytest.fixture
def user(settings: Settings, tenant: Tenant) -> User:
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn, conn.transaction():
        return tenants.upsert_user(
            conn, tenant.id, wa_id="5511900000009", address="whatsapp:+5511900000009",
            profile_name="Ana",
        )  # fmt: skip


@pytest.fixture
def conn(settings: Settings, tenant: Tenant) -> Iterator[psycopg.Connection[Any]]:
    """A worker's connection: the app role, scoped to the tenant."""
    with connect(settings, str(tenant.id)) as connection:
        yield connection


def _sql(settings: Settings, statement: str, *params: object) -> None:
    """Change the database behind the cache's back (as the owner, no invalidation)."""
    assert settings.database_url
    with psycopg.connect(settings.database_url, autocommit=True) as owner:
        owner.execute(statement, params)  # type: ignore[arg-type]


def _admin(settings: Settings, tenant: Tenant) -> dict[str, str]:
    bearer = mint_token(settings, subject="admin", role=Role.tenant_admin, tenant_id=tenant.id)
    return {"Authorization": f"Bearer {bearer}"}


def test_a_cached_profile_is_served_without_the_database_until_it_expires(
    settings: Settings, tenant: Tenant, user: User, conn: psycopg.Connection[Any], redis: Redis
) -> None:
    first = cached_profile(redis, conn, tenant.id, user.id, ttl=60)
    assert first is not None and first.user_name == "Ana" and first.features == ()
    assert first.locale == tenant.default_locale and first.timezone == tenant.timezone
    _sql(settings, "update users set profile_name = 'Bia' where id = %s", user.id)
    assert cached_profile(redis, conn, tenant.id, user.id, ttl=60) == first  # a hit
    assert "twilio" not in str(redis.keys("conversa:profile*")) + first.to_json().lower()

    short = cached_profile(redis, conn, tenant.id, user.id, ttl=0.2)
    assert short == first
    forget_user(redis, tenant.id, user.id)
    assert cached_profile(redis, conn, tenant.id, user.id, ttl=0.2).user_name == "Bia"  # type: ignore[union-attr]
    _sql(settings, "update users set profile_name = 'Carla' where id = %s", user.id)
    time.sleep(0.3)  # past the TTL: Redis dropped the entry
    assert cached_profile(redis, conn, tenant.id, user.id, ttl=0.2).user_name == "Carla"  # type: ignore[union-attr]

    _sql(settings, "update users set profile_name = 'Dora' where id = %s", user.id)
    assert cached_profile(None, conn, tenant.id, user.id, ttl=60).user_name == "Dora"  # type: ignore[union-attr]
    assert cached_profile(redis, conn, tenant.id, user.id, ttl=0).user_name == "Dora"  # type: ignore[union-attr]


def test_forgetting_a_tenant_makes_all_its_users_stale(
    settings: Settings, tenant: Tenant, user: User, conn: psycopg.Connection[Any], redis: Redis
) -> None:
    cached_profile(redis, conn, tenant.id, user.id, ttl=60)
    _sql(settings, "update tenants set name = 'Acme 2' where id = %s", tenant.id)
    assert cached_profile(redis, conn, tenant.id, user.id, ttl=60).tenant_name == "Acme"  # type: ignore[union-attr]
    forget_tenant(redis, tenant.id)
    assert cached_profile(redis, conn, tenant.id, user.id, ttl=60).tenant_name == "Acme 2"  # type: ignore[union-attr]


def test_a_missing_user_or_an_unreachable_redis_falls_back_to_the_database(
    settings: Settings, tenant: Tenant, user: User, conn: psycopg.Connection[Any], redis: Redis
) -> None:
    import uuid

    assert cached_profile(redis, conn, tenant.id, uuid.uuid4(), ttl=60) is None
    down = Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    profile = cached_profile(down, conn, tenant.id, user.id, ttl=60)
    assert profile == load_profile(conn, tenant.id, user.id)
    forget_user(down, tenant.id, user.id)  # logged, never raised
    forget_tenant(down, tenant.id)
    redis.set(f"conversa:profile:{tenant.id}:g0:{user.id}", b"not json")
    assert cached_profile(redis, conn, tenant.id, user.id, ttl=60) == profile


def test_management_api_writes_invalidate_the_cached_profile(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    user: User,
    conn: psycopg.Connection[Any],
    redis: Redis,
) -> None:
    auth, base = _admin(settings, tenant), f"{PREFIX}/tenants/{tenant.id}"

    def read() -> Any:
        return cached_profile(redis, conn, tenant.id, user.id, ttl=300)

    assert read().user_name == "Ana"
    changed = client.patch(f"{base}/users/{user.id}", headers=auth, json={"profile_name": "Bia"})
    assert changed.status_code == 200, changed.text
    assert read().user_name == "Bia"

    override = client.post(
        f"{base}/feature-overrides", headers=auth,
        json={"feature": "long_term_memory", "enabled": True, "user_id": str(user.id)},
    )  # fmt: skip
    assert override.status_code == 201, override.text
    assert read().features == ("long_term_memory",)

    plan = client.post(
        f"{base}/plans", headers=auth,
        json={"slug": "pro", "name": "Pro", "features": ["finance"], "messages_per_day": 50},
    )  # fmt: skip
    assert plan.status_code == 201, plan.text
    subscription = client.post(
        f"{base}/subscriptions", headers=auth,
        json={"user_id": str(user.id), "plan_id": plan.json()["id"]},
    )  # fmt: skip
    assert subscription.status_code == 201, subscription.text
    assert (read().plan, read().messages_per_day) == ("pro", 50)
    assert read().features == ("finance", "long_term_memory")

    off = client.patch(
        f"{base}/feature-overrides/{override.json()['id']}", headers=auth, json={"enabled": False}
    )
    assert off.status_code == 200, off.text
    assert read().features == ("finance",)

    renamed = client.patch(f"{base}", headers=auth, json={"name": "Acme Renamed"})
    assert renamed.status_code == 200, renamed.text
    assert read().tenant_name == "Acme Renamed"

    gone = client.delete(f"{base}/users/{user.id}", headers=auth)
    assert gone.status_code == 204, gone.text
    assert read() is None

    refused = client.patch(f"{base}/users/{user.id}", headers=auth, json={"nope": 1})
    assert refused.status_code == 422
