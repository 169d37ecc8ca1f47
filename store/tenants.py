"""Reads and writes of tenants and their users.

Every function takes an open `psycopg.Connection`; the caller owns the transaction.
"""

from __future__ import annotations

from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from store.query import columns, one, value
from store.records import Tenant, User
from store.userdata import langgraph_deletes

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


def set_channel(
    conn: psycopg.Connection,
    tenant_id: UUID,
    channel: str,
    cloud_phone_number_id: str | None,
    cloud_access_token: str | None,
    cloud_app_secret: str | None,
) -> None:
    """Put the tenant on `channel`, with its Cloud API number and secrets (None for Twilio)."""
    conn.execute(
        """update tenants set channel = %s, cloud_phone_number_id = %s, cloud_access_token = %s,
               cloud_app_secret = %s, updated_at = now() where id = %s""",
        (channel, cloud_phone_number_id, cloud_access_token, cloud_app_secret, tenant_id),
    )


def tenant_id_by_slug(conn: psycopg.Connection, slug: str) -> UUID | None:
    """Return the id of the tenant `slug`, or None."""
    found: UUID | None = value(conn, "select id from tenants where slug = %s", (slug,))
    return found


def delete_tenant(conn: psycopg.Connection, tenant_id: UUID) -> bool:
    """Delete a tenant and everything it holds, LangGraph's rows too; False when not found.

    The service's tables go by foreign keys; LangGraph's (which have none) by the tenant's
    thread and namespace prefixes.
    """
    if value(conn, "delete from tenants where id = %s returning id", (tenant_id,)) is None:
        return False
    for _, statement, params in langgraph_deletes("like %s", f"{tenant_id}:%", f"{tenant_id}.%"):
        conn.execute(statement, params)
    return True


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


def has_user(conn: psycopg.Connection, tenant_id: UUID, user_id: UUID) -> bool:
    """Whether `user_id` is one of the tenant's users."""
    query = "select exists (select 1 from users where id = %s and tenant_id = %s)"
    return bool(value(conn, query, (user_id, tenant_id)))


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
