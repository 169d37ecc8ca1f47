"""The templates API (`/api/v1/tenants/{tenant_id}/templates`): WhatsApp templates per purpose.

Outside WhatsApp's 24-hour window a message goes out only as the tenant's approved template for
its purpose (`channels.templates`, `server.jobs.templating`). Tenant admins (and platform admins)
register each template their provider holds (its id there, in `content_sid`: Twilio's HX
Content SID, or for a tenant on Meta's Cloud API the template's name; its approved text with
{{1}}... placeholders; and which named variable fills each placeholder), and record its approval
status, by hand or, on Twilio, read from its Content API (`POST .../templates/{id}/sync`). Support
staff may read them. Bad input is a 422 and writes nothing; a second template for the same
purpose and language is a 409.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal, Self
from uuid import UUID

import psycopg
import requests
from fastapi import APIRouter, Depends, Response
from pydantic import Field, model_validator
from twilio.base.exceptions import TwilioException, TwilioRestException

from channels.templates import (
    TEMPLATE_MAX_CHARS,
    TemplatePurpose,
    definition_problems,
    template_id_problem,
)
from channels.twilio.client import twilio_for
from server.api._resource import (
    ALL_ROLES,
    RULES,
    Change,
    Strict,
    db_error,
    not_found,
    scoped,
    services_of,
)
from server.api.auth import Principal, Role, require_roles
from server.api.errors import ERROR_RESPONSES, ApiError
from server.api.routes import LOCALE
from server.services import Services
from store import templates as store
from store import tenants

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)

ADMINS = frozenset({Role.platform_admin, Role.tenant_admin})
Reader = Annotated[Principal, Depends(require_roles(*sorted(ALL_ROLES)))]
Admin = Annotated[Principal, Depends(require_roles(*sorted(ADMINS)))]
ServicesDep = Annotated[Services, Depends(services_of)]
BASE = "/tenants/{tenant_id}/templates"
ITEM = BASE + "/{item_id}"
Status = Literal["draft", "pending", "approved", "rejected", "paused", "disabled"]
_TWILIO_STATUS: dict[str, Status] = {
    "approved": "approved", "rejected": "rejected", "paused": "paused", "disabled": "disabled",
    "pending": "pending", "received": "pending", "unsubmitted": "draft",
}  # fmt: skip
"""WhatsApp approval status at Twilio -> ours."""
TemplateId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=512,
        description="The template's id at the tenant's provider: Twilio's Content SID (HX...) "
        "for a Twilio tenant; for a Cloud API tenant, the Meta template name (lowercase letters, "
        "digits and underscores). Checked against the tenant's channel.",
    ),
]
"""`content_sid`: its form depends on the tenant's channel, so the routes check it."""


def _rule(method: str, path: str, roles: frozenset[Role]) -> str:
    RULES[(method, path)] = roles
    return path


class TemplateCreate(Strict):
    """A template the tenant's provider holds (Twilio's Content API or console, or Meta's
    WhatsApp Manager), for one purpose."""

    purpose: TemplatePurpose
    language: str = Field(pattern=LOCALE, description="'pt', 'en', or a locale ('pt-BR').")
    content_sid: TemplateId
    body: str = Field(min_length=1, max_length=TEMPLATE_MAX_CHARS,
                      description="The approved text, {{1}}...")  # fmt: skip
    variables: dict[str, str] = Field(
        description='Placeholder number -> named variable, e.g. {"1": "text", "2": "when"}.'
    )
    status: Status = "pending"
    rejection_reason: str | None = Field(default=None, max_length=1000)

    @model_validator(mode="after")
    def _fits(self) -> Self:
        problems = definition_problems(self.purpose, self.body, self.variables)
        if problems:
            raise ValueError(" ".join(problems))
        return self


class TemplateChange(Change):
    """Fields of a template that may change (its purpose may not: create another one)."""

    language: str | None = Field(default=None, pattern=LOCALE)
    content_sid: TemplateId | None = None
    body: str | None = Field(default=None, min_length=1, max_length=TEMPLATE_MAX_CHARS)
    variables: dict[str, str] | None = None
    status: Status | None = None
    rejection_reason: str | None = Field(default=None, max_length=1000)


def _shown(template: store.MessageTemplate) -> dict[str, Any]:
    return asdict(template)


def _new_content(current: store.MessageTemplate, changes: dict[str, Any]) -> bool:
    """Whether `changes` give the template other words or another Twilio content."""
    return any(k in changes and changes[k] != getattr(current, k) for k in ("content_sid", "body"))


def _check_template_id(conn: psycopg.Connection[Any], tenant_id: UUID, content_sid: str) -> None:
    """Refuse a `content_sid` that is not how the tenant's provider names a template."""
    tenant = tenants.tenant_by_id(conn, tenant_id)
    if tenant is None:
        raise not_found("tenant")
    if problem := template_id_problem(tenant.channel, content_sid):
        raise ApiError(422, "invalid_content_sid", f"content_sid {problem}")


@router.get(_rule("GET", BASE, ALL_ROLES), tags=["templates"], summary="List templates")
def list_templates(tenant_id: UUID, principal: Reader, services: ServicesDep) -> dict[str, Any]:
    """The tenant's templates, by purpose and language, with their approval status."""
    with scoped(services, principal, tenant_id, "list templates") as conn:
        return {"items": [_shown(t) for t in store.list_templates(conn, tenant_id)]}


@router.get(_rule("GET", ITEM, ALL_ROLES), tags=["templates"], summary="Read a template")
def get_template(
    tenant_id: UUID, item_id: UUID, principal: Reader, services: ServicesDep
) -> dict[str, Any]:
    """One template."""
    with scoped(services, principal, tenant_id, "read template") as conn:
        template = store.get_template(conn, tenant_id, item_id)
    if template is None:
        raise not_found("template")
    return _shown(template)


@router.post(
    _rule("POST", BASE, ADMINS), tags=["templates"], status_code=201, summary="Add a template"
)
def create_template(
    tenant_id: UUID, body: TemplateCreate, principal: Admin, services: ServicesDep
) -> dict[str, Any]:
    """Register a template for a purpose and language (409 if that pair has one already)."""
    try:
        with scoped(services, principal, tenant_id, "create template") as conn:
            _check_template_id(conn, tenant_id, body.content_sid)
            template = store.create_template(conn, tenant_id, **body.model_dump())
    except psycopg.Error as exc:
        raise db_error(exc, "template for this purpose and language") from exc
    return _shown(template)


@router.patch(_rule("PATCH", ITEM, ADMINS), tags=["templates"], summary="Change a template")
def update_template(
    tenant_id: UUID, item_id: UUID, body: TemplateChange, principal: Admin, services: ServicesDep
) -> dict[str, Any]:
    """Change a template: its text and variables (checked together), SID, or approval status.

    New words or a new content_sid without a status send the template back to 'pending': what
    WhatsApp approved was the old one. Sync it, or set the status, once it is approved again."""
    changes = body.model_dump(exclude_unset=True)
    if not changes:
        raise ApiError(422, "empty_update", "Send at least one field to change.")
    if any(changes.get(k, "") is None for k in ("language", "content_sid", "body", "variables")):
        raise ApiError(422, "invalid_value", "language, content_sid, body and variables "
                       "cannot be null.")  # fmt: skip
    if "status" in changes and changes["status"] != "rejected":
        changes.setdefault("rejection_reason", None)
    try:
        with scoped(services, principal, tenant_id, "update template") as conn:
            current = store.get_template(conn, tenant_id, item_id, lock=True)
            if current is None:
                raise not_found("template")
            if "content_sid" in changes:
                _check_template_id(conn, tenant_id, changes["content_sid"])
            merged = {**asdict(current), **changes}
            problems = definition_problems(current.purpose, merged["body"], merged["variables"])
            if problems:
                raise ApiError(422, "invalid_template", " ".join(problems))
            if "status" not in changes and _new_content(current, changes):
                # WhatsApp approved the old words (or SID), not these: review them again.
                changes |= {"status": "pending", "rejection_reason": None,
                            "status_checked_at": None}  # fmt: skip
            template = store.update_template(conn, tenant_id, item_id, changes)
    except psycopg.Error as exc:
        raise db_error(exc, "template for this purpose and language") from exc
    assert template is not None
    return _shown(template)


@router.delete(
    _rule("DELETE", ITEM, ADMINS), tags=["templates"], status_code=204,
    summary="Delete a template",
)  # fmt: skip
def delete_template(
    tenant_id: UUID, item_id: UUID, principal: Admin, services: ServicesDep
) -> Response:
    """Remove a template; messages of its purpose then fail outside the window until another
    is approved."""
    with scoped(services, principal, tenant_id, "delete template") as conn:
        if not store.delete_template(conn, tenant_id, item_id):
            raise not_found("template")
    return Response(status_code=204)


@router.post(
    _rule("POST", ITEM + "/sync", ADMINS), tags=["templates"],
    summary="Read a template's approval status from Twilio",
)  # fmt: skip
def sync_template(
    tenant_id: UUID, item_id: UUID, principal: Admin, services: ServicesDep
) -> dict[str, Any]:
    """Set the template's status (and rejection reason) to WhatsApp's verdict, as Twilio's
    Content API reports it."""
    with scoped(services, principal, tenant_id, "read template") as conn:
        template = store.get_template(conn, tenant_id, item_id)
        tenant = tenants.tenant_by_id(conn, tenant_id)
    if template is None or tenant is None:
        raise not_found("template")
    if tenant.channel != "twilio":
        raise ApiError(
            422,
            "sync_unsupported",
            "Only Twilio's Content API reports a template's approval here; this tenant is on "
            f"the {tenant.channel} channel. Set the status by hand (PATCH the template with "
            '{"status": "approved"}).',
        )
    client = twilio_for(services.settings, tenant)
    try:
        approval = client.content.v1.contents(template.content_sid).approval_fetch().fetch()
    except TwilioRestException as exc:
        if exc.status == 404:
            raise ApiError(
                422,
                "unknown_content",
                f"Twilio has no content {template.content_sid} "
                "in this tenant's account: check the template's content_sid.",
            ) from exc
        message = f"Twilio refused the approval check: {exc.msg}"
        raise ApiError(502, "twilio_error", message) from exc
    except (TwilioException, requests.RequestException) as exc:
        raise ApiError(502, "twilio_unreachable", "Twilio could not be reached; try again.",
                       retry=30) from exc  # fmt: skip
    verdict = approval.whatsapp or {}
    status = _TWILIO_STATUS.get(str(verdict.get("status", "")).lower())
    if status is None:
        raise ApiError(502, "twilio_error", f"Twilio reported an approval status we do not know "
                       f"({verdict.get('status')!r}); set the status by hand.")  # fmt: skip
    reason = (str(verdict.get("rejection_reason") or "") or None) if status == "rejected" else None
    with scoped(services, principal, tenant_id, "sync template") as conn:
        verdict_of = {"status": status, "rejection_reason": reason}
        updated = store.update_template(conn, tenant_id, item_id, verdict_of, checked=True,
                                        if_content_sid=template.content_sid)  # fmt: skip
        if updated is None and store.get_template(conn, tenant_id, item_id) is not None:
            raise ApiError(409, "template_changed", f"The template's content_sid changed from "
                           f"{template.content_sid} while Twilio was asked about it; nothing "
                           "was written. Sync again to read the new content's status.")  # fmt: skip
    if updated is None:
        raise not_found("template")
    return _shown(updated)
