"""Test helper: a WhatsApp template the Twilio sandbox holds and the tenant has registered."""

from __future__ import annotations

import psycopg

from channels.sandbox.twilio import TwilioSandbox
from server.settings import Settings
from store import templates
from store.records import Tenant

_SANDBOX_STATUS = {"draft": "unsubmitted"}
"""Our template status -> Twilio's approval status, where the names differ."""


def register_template(
    settings: Settings,
    sandbox: TwilioSandbox,
    tenant: Tenant,
    purpose: str,
    body: str,
    variables: dict[str, str],
    *,
    language: str = "pt",
    status: str = "approved",
) -> str:
    """Create the template in the sandbox's Content API and register it for `tenant`, both with
    `status`; return its Content SID."""
    sid = sandbox.add_content(body, account_sid=tenant.twilio_account_sid, language=language,
                              status=_SANDBOX_STATUS.get(status, status))  # fmt: skip
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn, conn.transaction():
        templates.create_template(
            conn, tenant.id, purpose=purpose, language=language, content_sid=sid, body=body,
            variables=variables, status=status,
        )  # fmt: skip
    return sid
