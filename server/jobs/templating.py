"""Choose and fill the template a message goes out as when WhatsApp's 24-hour window is closed.

The message's outbox purpose names the template purpose (`channels.templates.template_purpose`);
the tenant's approved template for it is taken in the user's language, else the tenant's, else
any approved language. Its placeholders are filled from the message's named variables
(`messages.template_variables`, over `text` = the body and `name` = the user's profile name).
A purpose with no approved template, or a message lacking a variable, is not sent: the reason
says what an admin must do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg

from channels.templates import MissingVariables, content_variables, template_purpose
from store import templates as store
from store.records import Message, Tenant, User
from store.templates import MessageTemplate

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class TemplateSend:
    """What to send instead of a free-form body: Twilio's ContentSid and ContentVariables."""

    content_sid: str
    content_variables: dict[str, str]
    purpose: str
    language: str | None
    """The template's language (None: the tenant's legacy closed-window template)."""


class TemplateUnavailable(Exception):
    """The message cannot go out as a template; `reason` says what an admin must do."""

    def __init__(self, reason: str, outcome: str) -> None:
        super().__init__(reason)
        self.reason, self.outcome = reason, outcome


def _base(locale: str) -> str:
    return locale.split("-")[0].lower()


def choose(
    templates: Sequence[MessageTemplate], user_locale: str | None, tenant_locale: str | None
) -> MessageTemplate | None:
    """Pick the template in the user's language, else the tenant's default, else any."""
    for locale in (user_locale, tenant_locale):
        if not locale:
            continue
        exact = [t for t in templates if t.language == locale]  # "pt-BR" first, then "pt"
        same = [t for t in templates if _base(t.language) == _base(locale)]
        if exact or same:
            return (exact or same)[0]
    return templates[0] if templates else None


def message_values(message: Message, user: User) -> dict[str, str]:
    """Return the named values a message offers its template."""
    values = {"text": message.body}
    if user.profile_name:
        values["name"] = user.profile_name
    values |= {str(k): str(v) for k, v in message.template_variables.items() if v is not None}
    return values


def _no_template(conn: Conn, tenant_id: UUID, purpose: str) -> str:
    others = [t for t in store.list_templates(conn, tenant_id) if t.purpose == purpose]
    found = "; ".join(f"{t.language} is {t.status}" for t in others)
    have = f" (its templates for it: {found})" if found else ""
    return (
        "Not sent: the user's last message is more than 24 hours old (WhatsApp's window is "
        f"closed) and the tenant has no approved template for purpose '{purpose}'{have}. "
        f"A tenant admin must create a template for purpose '{purpose}' "
        f"(POST /api/v1/tenants/{tenant_id}/templates) and mark it approved once WhatsApp "
        "approves it."
    )


def closed_window_send(conn: Conn, tenant: Tenant, user: User, message: Message) -> TemplateSend:
    """Return the template send for `message`, or raise `TemplateUnavailable` with the reason."""
    purpose = template_purpose(message.purpose)
    approved = store.approved_for(conn, tenant.id, purpose)
    chosen = choose(approved, user.locale, tenant.default_locale)
    if chosen is None:
        if purpose == "re_engagement" and tenant.closed_window_template_sid:
            # Legacy: the tenant's one fixed template, with its fixed variables.
            variables = {str(k): str(v) for k, v in tenant.closed_window_template_variables.items()}
            return TemplateSend(tenant.closed_window_template_sid, variables, purpose, None)
        raise TemplateUnavailable(_no_template(conn, tenant.id, purpose), "no_template")
    try:
        filled = content_variables(chosen.variables, message_values(message, user))
    except MissingVariables as exc:
        reason = (
            f"Not sent: the approved '{purpose}' template ({chosen.language}, "
            f"{chosen.content_sid}) needs {', '.join(exc.missing)}, which this message does "
            "not carry. Change the template's variables to ones the message has "
            f"(PATCH /api/v1/tenants/{tenant.id}/templates/{chosen.id})."
        )
        raise TemplateUnavailable(reason, "missing_variables") from exc
    return TemplateSend(chosen.content_sid, filled, purpose, chosen.language)


def has_approved(conn: Conn, tenant: Tenant, outbox_purpose: str) -> bool:
    """Whether a message of `outbox_purpose` could go out as a template now."""
    purpose = template_purpose(outbox_purpose)
    if store.approved_for(conn, tenant.id, purpose):
        return True
    return purpose == "re_engagement" and bool(tenant.closed_window_template_sid)
