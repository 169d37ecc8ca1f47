"""Users, tenants and run contexts for tool tests, written straight to the test database."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import psycopg
from langchain_core.messages import ToolMessage

from graphs.context import Context
from server.settings import Settings
from store import conversations, inbox, tenants
from store.records import Tenant, User

ALL_FEATURES = ["finance", "relationships", "long_term_memory", "reminders"]


def make_user(settings: Settings, tenant: Tenant, phone: str = "5511988887777") -> User:
    """Create (or find) a WhatsApp user of `tenant`, without a conversation."""
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn, conn.transaction():
        return tenants.upsert_user(
            conn, tenant.id, wa_id=phone, address=f"whatsapp:+{phone}", profile_name="Ana"
        )


def make_user_with_conversation(
    settings: Settings, tenant: Tenant, phone: str = "5511988887777", body: str = "Oi"
) -> User:
    """Store an inbound message from `phone`, which creates the user and an open conversation."""
    assert settings.database_url
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        message = inbox.store_inbound(
            conn, tenant_id=tenant.id, wa_id=phone, profile_name="Ana",
            provider_message_id="SM" + secrets.token_hex(16), kind="text", body=body,
            from_address=f"whatsapp:+{phone}", to_address=tenant.whatsapp_sender, media=[],
            payload={}, correlation_id=uuid.uuid4().hex,
        )  # fmt: skip
        assert message is not None
        conversation = conversations.conversation_by_id(conn, message.conversation_id)
        assert conversation is not None
        user = tenants.user_by_id(conn, conversation.user_id)
        assert user is not None
        return user


def make_tenant(settings: Settings, slug: str = "other") -> Tenant:
    """Create a second tenant (its Twilio account is not in the sandbox)."""
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn, conn.transaction():
        return tenants.upsert_tenant(
            conn, slug=slug, name=slug.title(), whatsapp_sender="whatsapp:+14155550199",
            twilio_account_sid="AC" + secrets.token_hex(16),
            twilio_auth_token=secrets.token_hex(16),
        )  # fmt: skip


def context_for(
    tenant: Tenant,
    user: User,
    *,
    timezone: str = "America/Sao_Paulo",
    features: list[str] | None = None,
    **extra: Any,
) -> Context:
    """The run context the worker would build for `user`."""
    return Context(
        tenant_id=str(tenant.id),
        tenant_name=tenant.name,
        user_id=str(user.id),
        user_name=user.profile_name or "",
        timezone=timezone,
        features=list(ALL_FEATURES if features is None else features),
        **extra,
    )


def failed(message: ToolMessage) -> str:
    """Return the error text the model got back, failing the test if the call succeeded."""
    assert message.status == "error", f"expected an error, got: {message.content}"
    return str(message.content)


def ok(message: ToolMessage) -> str:
    """Return the tool's answer, failing the test if the call was an error."""
    assert message.status != "error", f"unexpected error: {message.content}"
    return str(message.content)
