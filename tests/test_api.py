"""The management API: JWT roles, tenant isolation enforced by PostgreSQL, validation."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from graphs.features import FEATURES
from server.api._resource import RULES
from server.api.auth import Role, mint_token
from server.settings import Settings
from store import tenants
from store.records import Tenant
from store.scoping import APP_ROLE, tenant_scope, use_role
from tests.conftest import rows

PREFIX = "/api/v1"


def token(settings: Settings, role: Role, tenant: Tenant | None = None) -> dict[str, str]:
    bearer = mint_token(
        settings,
        subject=f"{role}-tester",
        role=role,
        tenant_id=tenant.id if tenant and role is not Role.platform_admin else None,
    )
    return {"Authorization": f"Bearer {bearer}"}


@pytest.fixture
def other(settings: Settings) -> Tenant:
    """A second tenant, to try to reach."""
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn, conn.transaction():
        other = tenants.upsert_tenant(
            conn,
            slug="globex",
            name="Globex",
            whatsapp_sender="whatsapp:+14155550999",
            twilio_account_sid="AC" + secrets.token_hex(16),
            twilio_auth_token="t" * 32,
        )
        tenants.upsert_user(
            conn,
            other.id,
            wa_id="5511911112222",
            address="whatsapp:+5511911112222",
            profile_name="Secret Globex User",
        )
    return other


def _admin(client: TestClient, settings: Settings, tenant: Tenant) -> dict[str, str]:
    return token(settings, Role.tenant_admin, tenant)


def test_a_tenant_admin_runs_plans_subscriptions_and_flags(
    client: TestClient, settings: Settings, tenant: Tenant
) -> None:
    auth = _admin(client, settings, tenant)
    base = f"{PREFIX}/tenants/{tenant.id}"
    plan = client.post(
        f"{base}/plans",
        headers=auth,
        json={
            "slug": "pro",
            "name": "Pro",
            "features": ["finance", "relationships", "finance"],
            "messages_per_day": 100,
        },
    )
    assert plan.status_code == 201, plan.text
    assert plan.json()["features"] == ["finance", "relationships"]
    user = client.post(f"{base}/users", headers=auth, json={"wa_id": "5511999990001"})
    assert user.status_code == 201 and user.json()["address"] == "whatsapp:+5511999990001"
    user_id, plan_id = user.json()["id"], plan.json()["id"]

    sub = client.post(
        f"{base}/subscriptions", headers=auth, json={"user_id": user_id, "plan_id": plan_id}
    )
    assert sub.status_code == 201, sub.text
    features = client.get(f"{base}/users/{user_id}/features", headers=auth).json()
    assert features == {
        "features": ["finance", "relationships"],
        "plan": "pro",
        "messages_per_day": 100,
    }

    off = client.post(
        f"{base}/feature-overrides", headers=auth, json={"feature": "finance", "enabled": False}
    )
    assert off.status_code == 201, off.text
    on_for_user = client.post(
        f"{base}/feature-overrides",
        headers=auth,
        json={"feature": "reminders", "enabled": True, "user_id": user_id},
    )
    assert on_for_user.status_code == 201
    features = client.get(f"{base}/users/{user_id}/features", headers=auth).json()
    assert features["features"] == ["relationships", "reminders"]

    listing = client.get(f"{base}/users?limit=1", headers=auth).json()
    assert len(listing["items"]) == 1 and listing["next"] is None
    assert (
        client.delete(f"{base}/subscriptions/{sub.json()['id']}", headers=auth).status_code == 204
    )
    assert client.get(f"{base}/users/{user_id}/features", headers=auth).json()["plan"] is None


def test_secrets_never_leave_the_api(
    client: TestClient, settings: Settings, tenant: Tenant
) -> None:
    response = client.get(f"{PREFIX}/tenants/{tenant.id}", headers=_admin(client, settings, tenant))
    assert response.status_code == 200
    assert "twilio_auth_token" not in response.json()
    assert tenant.twilio_auth_token not in response.text


def test_platform_admin_creates_tenants_through_the_audited_path(
    client: TestClient, settings: Settings
) -> None:
    body = {
        "slug": "initech",
        "name": "Initech",
        "whatsapp_sender": "whatsapp:+14155550777",
        "twilio_account_sid": "AC" + "a" * 32,
        "twilio_auth_token": "secret-token-value",
    }
    created = client.post(
        f"{PREFIX}/tenants", headers=token(settings, Role.platform_admin), json=body
    )

    assert created.status_code == 201, created.text
    assert "secret-token-value" not in created.text
    audit = rows(settings, "select actor, action from admin_audit order by id")
    assert ("platform_admin-tester", "create tenant") in audit
    again = client.post(
        f"{PREFIX}/tenants", headers=token(settings, Role.platform_admin), json=body
    )
    assert again.status_code == 409


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("users", {"wa_id": "not a number!"}, "wa_id"),
        ("users", {"wa_id": "5511999990001", "tenant_id": "x"}, "tenant_id"),
        ("users", {"wa_id": "5511999990001", "role": "platform_admin"}, "role"),
        ("users", {"wa_id": "5511999990001", "timezone": "Mars/Olympus"}, "timezone"),
        ("plans", {"slug": "x", "name": "X", "messages_per_day": -1}, "messages_per_day"),
        ("plans", {"slug": "x", "name": "X", "features": ["teleport"]}, "features"),
        ("feature-overrides", {"feature": "finance"}, "enabled"),
    ],
)
def test_bad_bodies_are_422_naming_the_field(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    path: str,
    body: dict[str, Any],
    field: str,
) -> None:
    response = client.post(
        f"{PREFIX}/tenants/{tenant.id}/{path}", headers=_admin(client, settings, tenant), json=body
    )

    assert response.status_code == 422
    assert field in response.text
    assert rows(settings, "select count(*) from users") == [(0,)]


def test_an_unknown_feature_is_a_422_that_lists_the_known_ones(
    client: TestClient, settings: Settings, tenant: Tenant
) -> None:
    base, auth = f"{PREFIX}/tenants/{tenant.id}", _admin(client, settings, tenant)

    plan = client.post(
        f"{base}/plans", headers=auth, json={"slug": "x", "name": "X", "features": ["teleport"]}
    )
    override = client.post(
        f"{base}/feature-overrides", headers=auth, json={"feature": "teleport", "enabled": True}
    )

    for response in (plan, override):
        assert response.status_code == 422
        message = response.json()["error"]["message"]
        assert "unknown feature 'teleport'" in message
        assert all(name in message for name in FEATURES)
    assert rows(settings, "select count(*) from plans") == [(0,)]
    assert rows(settings, "select count(*) from feature_overrides") == [(0,)]


def test_a_subscription_to_another_tenants_plan_is_refused(
    client: TestClient, settings: Settings, tenant: Tenant, other: Tenant
) -> None:
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        other_plan = conn.execute(
            "insert into plans (tenant_id, slug, name) values (%s, 'x', 'X') returning id",
            (other.id,),
        ).fetchone()[0]  # type: ignore[index]
    auth = _admin(client, settings, tenant)
    user = client.post(
        f"{PREFIX}/tenants/{tenant.id}/users", headers=auth, json={"wa_id": "5511999990002"}
    ).json()
    response = client.post(
        f"{PREFIX}/tenants/{tenant.id}/subscriptions",
        headers=auth,
        json={"user_id": user["id"], "plan_id": str(other_plan)},
    )
    assert response.status_code == 422
    assert rows(settings, "select count(*) from subscriptions") == [(0,)]


# -- the authorization matrix ------------------------------------------------------------------

SAMPLE_BODIES = {
    "/tenants": {
        "slug": "matrix",
        "name": "M",
        "whatsapp_sender": "whatsapp:+14155550555",
        "twilio_account_sid": "AC" + "b" * 32,
        "twilio_auth_token": "t",
    },
    "/tenants/{tenant_id}": {"persona": "Friendly."},
    "/tenants/{tenant_id}/users": {"wa_id": "5511999990003"},
    "/tenants/{tenant_id}/users/{item_id}": {"profile_name": "X"},
    "/tenants/{tenant_id}/plans": {"slug": "m", "name": "M"},
    "/tenants/{tenant_id}/plans/{item_id}": {"name": "M2"},
    "/tenants/{tenant_id}/subscriptions": {
        "user_id": str(uuid.uuid4()),
        "plan_id": str(uuid.uuid4()),
    },
    "/tenants/{tenant_id}/subscriptions/{item_id}": {"status": "cancelled"},
    "/tenants/{tenant_id}/feature-overrides": {"feature": "finance", "enabled": True},
    "/tenants/{tenant_id}/feature-overrides/{item_id}": {"enabled": False},
    "/tenants/{tenant_id}/templates": {
        "purpose": "reminder",
        "language": "pt",
        "content_sid": "HX" + "c" * 32,
        "body": "⏰ {{1}}",
        "variables": {"1": "text"},
    },
    "/tenants/{tenant_id}/templates/{item_id}": {"status": "approved"},
    "/tenants/{tenant_id}/budgets": {"scope": "tenant", "period": "day", "max_tokens": 1000},
    "/tenants/{tenant_id}/budgets/{item_id}": {"max_tokens": 2000},
    "/tenants/{tenant_id}/support/conversations/{item_id}/reply": {"text": "Olá"},
    "/tenants/{tenant_id}/support/conversations/{item_id}/take-over": {"reason": "VIP client"},
    "/tenants/{tenant_id}/support/conversations/{item_id}/hand-back": {},
    "/tenants/{tenant_id}/support/conversations/{item_id}/close": {},
}


def _api_routes(client: TestClient) -> list[tuple[str, str]]:
    """Every (method, path) of the management API, as the app itself publishes them."""
    paths = client.app.openapi()["paths"]  # type: ignore[attr-defined]
    return sorted(
        (method.upper(), path.removeprefix(PREFIX))
        for path, operations in paths.items()
        if path.startswith(PREFIX)
        for method in operations
    )


def test_every_api_route_has_an_authorization_rule(client: TestClient) -> None:
    routes = _api_routes(client)
    assert routes, "the API has routes"
    missing = [r for r in routes if r not in RULES]
    assert not missing, f"routes without a rule: {missing}"


def test_authorization_matrix(
    client: TestClient, settings: Settings, tenant: Tenant, other: Tenant
) -> None:
    """Every route x every role x own/other tenant: 403 for a wrong role, 404 across tenants."""
    other_user = rows(settings, "select id from users where tenant_id = %s", other.id)[0][0]
    for method, path in _api_routes(client):
        allowed = RULES[(method, path)]
        scoped = "{tenant_id}" in path  # else the route names no tenant: only roles apply
        for role in Role:
            for target in (tenant, other):
                url = PREFIX + path.format(
                    tenant_id=target.id,
                    item_id=other_user
                    if "users" in path
                    else 1
                    if "messages" in path or "ai-results" in path
                    else uuid.uuid4(),
                )
                body = SAMPLE_BODIES.get(path) if method in {"POST", "PATCH"} else None
                response = client.request(
                    method, url, headers=token(settings, role, tenant), json=body
                )
                where = (
                    f"{method} {path} as {role} on {'own' if target is tenant else 'other'} tenant"
                )
                assert response.status_code < 500, f"{where}: {response.text}"
                if role not in allowed:
                    assert response.status_code == 403, where
                elif role is not Role.platform_admin and target is other and scoped:
                    assert response.status_code == 404, f"{where}: {response.text}"
                    assert "Secret Globex" not in response.text
                else:
                    assert response.status_code not in {401, 403}, f"{where}: {response.text}"


@pytest.mark.parametrize("role", list(Role))
def test_me_names_the_tokens_tenant(
    client: TestClient, settings: Settings, tenant: Tenant, role: Role
) -> None:
    response = client.get(f"{PREFIX}/me", headers=token(settings, role, tenant))

    assert response.status_code == 200
    expected = None if role is Role.platform_admin else str(tenant.id)
    assert response.json() == {"subject": f"{role}-tester", "role": role, "tenant_id": expected}


def test_no_token_is_401_everywhere(client: TestClient, tenant: Tenant) -> None:
    for method, path in _api_routes(client):
        url = PREFIX + path.format(tenant_id=tenant.id, item_id=uuid.uuid4())
        assert client.request(method, url).status_code == 401, f"{method} {path}"


# -- isolation in the database itself ----------------------------------------------------------


def test_every_table_with_tenant_data_is_under_row_level_security(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        tables = conn.execute(
            """select c.relname, c.relrowsecurity, c.relforcerowsecurity,
                      pg_get_userbyid(c.relowner)
               from pg_class c join pg_namespace n on n.oid = c.relnamespace
               where n.nspname = 'public' and c.relkind = 'r' and exists (
                   select 1 from information_schema.columns k where k.table_schema = 'public'
                     and k.table_name = c.relname
                     and k.column_name in ('tenant_id', 'thread_id', 'prefix'))"""
        ).fetchall()
        role = conn.execute(
            "select rolsuper, rolbypassrls from pg_roles where rolname = %s", (APP_ROLE,)
        ).fetchone()
        owned = conn.execute(
            "select count(*) from pg_class where relowner = "
            "(select oid from pg_roles where rolname = %s)",
            (APP_ROLE,),
        ).fetchone()
    names = {t[0] for t in tables}
    assert {"users", "messages", "checkpoints", "checkpoint_writes", "store", "plans"} <= names
    unprotected = [t[0] for t in tables if not (t[1] and t[2])]
    assert not unprotected, f"tables without forced row-level security: {unprotected}"
    assert role == (False, False)
    assert owned == (0,)


def test_pooled_connections_never_leak_another_tenants_rows(
    settings: Settings, tenant: Tenant, other: Tenant
) -> None:
    from server.services import Services

    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn, conn.transaction():
        tenants.upsert_user(
            conn,
            tenant.id,
            wa_id="5511900000001",
            address="whatsapp:+5511900000001",
            profile_name="Acme User",
        )
    services = Services.build(settings.model_copy(update={"db_pool_max_size": 3}))
    try:
        for i in range(2000):
            target = tenant if i % 2 else other
            try:
                with services.pool.connection() as conn, tenant_scope(conn, target.id):
                    seen = {r[0] for r in conn.execute("select tenant_id from users")}
                    assert seen == {target.id}, f"iteration {i}"
                    if i % 7 == 0:
                        raise RuntimeError("roll back mid-transaction")
            except RuntimeError:
                pass
            if i % 97 == 0:
                with services.pool.connection() as conn:
                    assert conn.execute("select count(*) from users").fetchone() == (0,), (
                        "no scope, no rows"
                    )
    finally:
        services.close()


def test_the_app_role_cannot_switch_off_isolation(
    settings: Settings, tenant: Tenant, other: Tenant
) -> None:
    assert settings.database_url
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        use_role(conn, APP_ROLE)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("alter table users disable row level security")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("drop policy tenant_isolation on users")
        assert conn.execute("select count(*) from users").fetchone() == (0,), "no scope, no rows"


def test_a_body_cannot_point_into_another_tenant(
    client: TestClient, settings: Settings, tenant: Tenant, other: Tenant
) -> None:
    (other_user,) = rows(settings, "select id from users where tenant_id = %s", other.id)[0]
    auth = token(settings, Role.tenant_admin, tenant)
    base = f"{PREFIX}/tenants/{tenant.id}"
    plan = client.post(f"{base}/plans", headers=auth, json={"slug": "p", "name": "P"}).json()

    subscription = client.post(
        f"{base}/subscriptions", headers=auth,
        json={"user_id": str(other_user), "plan_id": plan["id"]},
    )  # fmt: skip
    override = client.post(
        f"{base}/feature-overrides", headers=auth,
        json={"feature": "finance", "enabled": True, "user_id": str(other_user)},
    )  # fmt: skip
    listing = client.get(f"{base}/users/{other_user}", headers=auth)

    assert (subscription.status_code, override.status_code, listing.status_code) == (422, 422, 404)
    assert rows(settings, "select count(*) from subscriptions") == [(0,)]
    assert rows(settings, "select count(*) from feature_overrides") == [(0,)]


def test_a_database_user_that_cannot_act_as_the_app_role_is_told_what_to_grant(
    pg_url: str,
) -> None:
    from store.scoping import AppRoleError, check_app_role

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("drop role if exists conversa_outsider")
        conn.execute("create role conversa_outsider login")
    info = psycopg.conninfo.conninfo_to_dict(pg_url)
    outsider = psycopg.conninfo.make_conninfo(**{**info, "user": "conversa_outsider"})
    try:
        with pytest.raises(AppRoleError, match="GRANT conversa_app TO conversa_outsider"):
            check_app_role(outsider, APP_ROLE)
        with pytest.raises(AppRoleError, match="does not exist"):
            check_app_role(pg_url, "no_such_role")
        check_app_role(pg_url, APP_ROLE)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("drop role if exists conversa_outsider")
