"""Tenant scope for database work: row-level security reads it from the transaction.

Every connection the service uses for tenant data switches to the application role
(`conversa_app`: owns nothing, cannot bypass row-level security), and every transaction says
whose data it touches with `SET LOCAL app.tenant_id`. Without a scope, tables look empty.
Platform admins take the one explicit, audited way across tenants: `platform_scope`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

APP_ROLE = "conversa_app"


def use_role(conn: psycopg.Connection[Any], role: str | None) -> None:
    """Act as `role` for the rest of this session (no-op for None or an empty name)."""
    if role:
        conn.execute(sql.SQL("set role {}").format(sql.Identifier(role)))
        if not conn.autocommit:
            conn.commit()


async def use_role_async(conn: psycopg.AsyncConnection[Any], role: str | None) -> None:
    """`use_role` for an async connection in autocommit mode (the webhook's pool)."""
    if role:
        await conn.execute(sql.SQL("set role {}").format(sql.Identifier(role)))


class AppRoleError(RuntimeError):
    """The database user cannot act as the application role; the message says what to grant."""


def check_app_role(database_url: str, role: str | None) -> None:
    """Fail early, and plainly, when the service could not `SET ROLE` to `role`."""
    if not role:
        return
    with psycopg.connect(database_url, autocommit=True) as conn:
        try:
            use_role(conn, role)
        except psycopg.errors.InsufficientPrivilege as exc:
            user = conn.info.user
            raise AppRoleError(
                f"The database user {user!r} may not act as {role!r}, the role the service uses "
                f"for tenant data. Run `GRANT {role} TO {user}` as the database owner, or set "
                "DATABASE_APP_ROLE to a role it may use."
            ) from exc
        except psycopg.errors.InvalidParameterValue as exc:
            raise AppRoleError(
                f"The role {role!r} does not exist: run `conversa migrate` first, or set "
                "DATABASE_APP_ROLE."
            ) from exc


@contextmanager
def tenant_scope(conn: psycopg.Connection[Any], tenant_id: UUID | str) -> Iterator[None]:
    """Run a transaction that sees and writes only `tenant_id`'s rows."""
    with conn.transaction():
        conn.execute("select set_config('app.tenant_id', %s, true)", (str(tenant_id),))
        yield


def open_connection(database_url: str, role: str | None) -> psycopg.Connection[dict[str, Any]]:
    """Open a connection as the app role, not yet scoped (`scope_connection`).

    Autocommit with dict rows, as LangGraph's Postgres saver wants.
    """
    conn = psycopg.connect(database_url, autocommit=True, prepare_threshold=0, row_factory=dict_row)
    try:
        use_role(conn, role)
    except BaseException:
        conn.close()
        raise
    return conn


def scope_connection(
    conn: psycopg.Connection[Any], *, tenant_id: UUID | str | None = None, platform: bool = False
) -> None:
    """Scope a whole connection, until `unscope_connection`: to `tenant_id`, or, for system jobs
    that work across tenants (`platform`), to the platform (one round trip)."""
    conn.execute(
        "select set_config('app.tenant_id', %s, false), set_config('app.platform', %s, false)",
        ("" if tenant_id is None else str(tenant_id), "on" if platform else ""),
    )


def unscope_connection(conn: psycopg.Connection[Any]) -> None:
    """Leave a connection as a new one: no scope, no session advisory lock (one round trip)."""
    conn.execute(
        "select pg_advisory_unlock_all(), set_config('app.tenant_id', '', false), "
        "set_config('app.platform', '', false)"
    )


@contextmanager
def dedicated_connection(
    database_url: str,
    role: str | None,
    *,
    tenant_id: UUID | str | None = None,
    platform: bool = False,
) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """Open a connection of one's own as the app role, scoped for its whole life (to
    `tenant_id`, or to the platform), and close it at the end."""
    with open_connection(database_url, role) as conn:
        scope_connection(conn, tenant_id=tenant_id, platform=platform)
        yield conn


@contextmanager
def platform_scope(
    conn: psycopg.Connection[Any],
    *,
    actor: str,
    action: str,
    tenant_id: UUID | None = None,
    detail: dict[str, Any] | None = None,
) -> Iterator[None]:
    """Run a transaction across tenants, for a platform admin, leaving an audit record."""
    with conn.transaction():
        conn.execute("select set_config('app.platform', 'on', true)")
        conn.execute(
            "insert into admin_audit (actor, action, tenant_id, detail) values (%s, %s, %s, %s)",
            (actor, action, tenant_id, Jsonb(detail or {})),
        )
        yield
