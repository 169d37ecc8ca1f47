"""Reads and writes of tenants and their users.

Every function takes an open `psycopg.Connection`; the caller owns the transaction.
"""

from __future__ import annotations

from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from store.query import columns, one
from store.records import Tenant, User

_TENANT = columns(Tenant)
_USER = columns(User)


def upsert_tenant(
    conn: psycopg.Connection,
    *,
    slug: str,
    name: str,
    whatsapp_sender: str,
    twilio_account_sid: str,
    twilio_auth_token: str,
    default_locale: str = "pt-BR",
    timezone: str = "America/Sao_Paulo",
    persona: str = "",
    typing_indicator: bool = True,
    closed_window_template_sid: str | None = None,
    closed_window_template_variables: dict[str, str] | None = None,
) -> Tenant:
    """Create the tenant `slug`, or update it in place."""
    tenant = one(
        conn,
        Tenant,
        f"""insert into tenants (slug, name, whatsapp_sender, twilio_account_sid,
                twilio_auth_token, default_locale, timezone, persona, typing_indicator,
                closed_window_template_sid, closed_window_template_variables)
            values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            on conflict (slug) do update set name = excluded.name,
                whatsapp_sender = excluded.whatsapp_sender,
                twilio_account_sid = excluded.twilio_account_sid,
                twilio_auth_token = excluded.twilio_auth_token,
                default_locale = excluded.default_locale, timezone = excluded.timezone,
                persona = excluded.persona, typing_indicator = excluded.typing_indicator,
                closed_window_template_sid = excluded.closed_window_template_sid,
                closed_window_template_variables = excluded.closed_window_template_variables,
                updated_at = now()
            returning {_TENANT}""",
        (slug, name, whatsapp_sender, twilio_account_sid, twilio_auth_token,
         default_locale, timezone, persona, typing_indicator, closed_window_template_sid,
         Jsonb(closed_window_template_variables or {})),
    )  # fmt: skip
    assert tenant is not None
    return tenant


def tenant_by_sender(conn: psycopg.Connection, sender: str) -> Tenant | None:
    """Return the tenant whose WhatsApp sender is `sender` (Twilio's `To`)."""
    # body: store/migrations/0003_identity.sql
    return one(conn, Tenant, f"select {_TENANT} from tenant_by_sender(%s)", (sender,))


def tenant_by_id(conn: psycopg.Connection, tenant_id: UUID) -> Tenant | None:
    """Return one tenant by id."""
    return one(conn, Tenant, f"select {_TENANT} from tenants where id = %s", (tenant_id,))


def upsert_user(
    conn: psycopg.Connection, tenant_id: UUID, *, wa_id: str, address: str, profile_name: str | None
) -> User:
    """Find the tenant's user with this WhatsApp id, creating it on first contact."""
    user = one(
        conn,
        User,
        f"""insert into users (tenant_id, wa_id, address, profile_name) values (%s, %s, %s, %s)
            on conflict (tenant_id, wa_id) do update
               set profile_name = coalesce(excluded.profile_name, users.profile_name),
                   address = excluded.address,
                   updated_at = case when users.profile_name is distinct from
                       coalesce(excluded.profile_name, users.profile_name)
                       or users.address <> excluded.address then now() else users.updated_at end
            returning {_USER}""",
        (tenant_id, wa_id, address, profile_name),
    )
    assert user is not None
    return user


def user_by_id(conn: psycopg.Connection, user_id: UUID) -> User | None:
    """Return one user by id."""
    return one(conn, User, f"select {_USER} from users where id = %s", (user_id,))


def set_opted_out(conn: psycopg.Connection, user_id: UUID, opted_out: bool) -> None:
    """Record the user's opt-out (STOP) or opt-in (START) choice."""
    conn.execute(
        """update users set opted_out_at = case when %s then coalesce(opted_out_at, now()) end,
               updated_at = now()
           where id = %s""",
        (opted_out, user_id),
    )
