"""The management API's resources and their rules (`/api/v1`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID
from zoneinfo import available_timezones

import psycopg
from fastapi import APIRouter, Depends, Query, Response
from psycopg.rows import dict_row
from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator

from channels.registry import PROVIDERS
from channels.templates import template_id_problem
from graphs import features
from server.api._resource import (
    ALL_ROLES,
    INT4_MAX,
    RULES,
    Change,
    Page,
    Resource,
    Strict,
    add_routes,
    db_error,
    not_found,
    scoped,
    services_of,
)  # fmt: skip
from server.api.auth import Principal, Role, current_principal, require_roles
from server.api.data_rights import erase_user
from server.api.errors import ERROR_RESPONSES, ApiError
from server.services import Services
from store import resources, tenants
from store.cache import forget_tenant
from store.identity import entitlement
from store.scoping import platform_scope

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)

ADMINS = frozenset({Role.platform_admin, Role.tenant_admin})
PLATFORM = frozenset({Role.platform_admin})
WA_ID = r"^(\d{7,15}|[a-z0-9][a-z0-9._]{2,63})$"
SENDER = r"^whatsapp:\+[1-9]\d{6,14}$"
LOCALE = r"^[a-z]{2}(-[A-Z]{2})?$"
_ZONES = frozenset(available_timezones())


def _timezone(value: str | None) -> str | None:
    if value is not None and value not in _ZONES:
        raise ValueError(f"unknown IANA timezone {value!r}")
    return value


# -- tenants ---------------------------------------------------------------------------------

TENANT_COLUMNS = (
    "id", "slug", "name", "whatsapp_sender", "twilio_account_sid", "default_locale", "timezone",
    "persona", "system_prompt", "default_plan_id", "auto_enroll", "trace_privacy",
    "typing_indicator", "closed_window_template_sid", "closed_window_template_variables",
    "handoff_message", "handoff_return_message", "handoff_auto_return_seconds",
    "data_request_message", "pii_policy", "channel", "budget_exhausted",
    "budget_cheaper_model", "budget_alert_url", "cloud_phone_number_id",
    "cloud_business_account_id", "created_at", "updated_at",
)  # fmt: skip
"""What the API shows of a tenant: never its Twilio auth token, Cloud API token or app secret."""


class TenantChange(Change):
    """Fields a tenant admin may change on its own tenant."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    whatsapp_sender: str | None = Field(default=None, pattern=SENDER)
    channel: str | None = Field(
        default=None,
        description="The WhatsApp provider: twilio (the default) or cloud (Meta's Cloud API).",
    )
    twilio_account_sid: str | None = Field(default=None, pattern=r"^AC[0-9a-fA-F]{32}$")
    twilio_auth_token: SecretStr | None = Field(
        default=None, min_length=1, description="Write-only."
    )
    default_locale: str | None = Field(default=None, pattern=LOCALE)
    timezone: str | None = None
    persona: str | None = Field(default=None, max_length=4000)
    system_prompt: str | None = Field(default=None, max_length=20000)
    default_plan_id: UUID | None = None
    auto_enroll: bool | None = None
    trace_privacy: Literal["full", "masked"] | None = None
    pii_policy: Literal["keep", "mask", "refuse"] | None = Field(
        default=None,
        description="Personal data (phones, e-mails, CPF, CNPJ, cards) in memories: keep, "
        "mask or refuse; masked traces make `keep` act as `mask`.",
    )
    typing_indicator: bool | None = None
    closed_window_template_sid: str | None = Field(
        default=None, min_length=1, max_length=512,
        description="The template sent outside the 24-hour window when no 're_engagement' one "
        "is approved: Twilio's Content SID (HX...), or for a Cloud API tenant the Meta template "
        "name. Checked against the tenant's channel.",
    )  # fmt: skip
    closed_window_template_variables: dict[str, str] | None = None
    handoff_message: str | None = Field(default=None, max_length=1000)
    handoff_return_message: str | None = Field(default=None, max_length=1000)
    handoff_auto_return_seconds: int | None = Field(
        default=None, ge=0, le=INT4_MAX,
        description="Staff silence before the assistant takes back; 0: never.",
    )  # fmt: skip
    data_request_message: str | None = Field(
        default=None, max_length=1000,
        description="Told to a user who asks for their data or its deletion (null: default).",
    )  # fmt: skip

    cloud_phone_number_id: str | None = Field(
        default=None, pattern=r"^[0-9]{1,30}$",
        description="With channel `cloud`: the number's id on Meta's Graph API.",
    )  # fmt: skip
    cloud_business_account_id: str | None = Field(default=None, pattern=r"^[0-9]{1,30}$")
    cloud_access_token: SecretStr | None = Field(
        default=None, min_length=1, max_length=4096, description="Write-only."
    )
    cloud_app_secret: SecretStr | None = Field(
        default=None, min_length=1, max_length=256, description="Write-only."
    )
    budget_exhausted: Literal["notice", "cheaper_model", "general_only"] | None = Field(
        default=None,
        description="Once a budget is spent: a polite notice once a day, a cheaper model "
        "(`budget_cheaper_model`), or the general assistant only.",
    )
    budget_cheaper_model: str | None = Field(default=None, min_length=1, max_length=200)
    budget_alert_url: str | None = Field(
        default=None, max_length=2000, pattern=r"^https?://[^\s/?#@]+(/[^\s]*)?$",
        description="Budget alerts at 80% and 100% are POSTed here as JSON.",
    )  # fmt: skip

    _tz = field_validator("timezone")(_timezone)

    @field_validator("channel")
    @classmethod
    def _known_provider(cls, value: str | None) -> str | None:
        if value is not None and value not in PROVIDERS:
            raise ValueError(f"unknown channel {value!r}; use one of {', '.join(PROVIDERS)}")
        return value


class TenantCreate(TenantChange):
    """A new tenant (platform admins only)."""

    slug: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")
    name: str = Field(min_length=1, max_length=200)  # type: ignore[assignment]
    whatsapp_sender: str = Field(pattern=SENDER)  # type: ignore[assignment]

    @model_validator(mode="after")
    def _provider_credentials(self) -> TenantCreate:
        """A tenant is created with the credentials of the provider it speaks through: Twilio's
        account SID and auth token, or the Cloud API's number id, access token and app secret."""
        needed = {
            "twilio": ("twilio_account_sid", "twilio_auth_token"),
            "cloud": ("cloud_phone_number_id", "cloud_access_token", "cloud_app_secret"),
        }.get(self.channel or "twilio", ())
        missing = [name for name in needed if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a tenant on {self.channel or 'twilio'} needs {', '.join(missing)}")
        return self


def _tenant_values(body: TenantChange, *, exclude_unset: bool) -> dict[str, Any]:
    values = body.model_dump(exclude_unset=exclude_unset, exclude_none=not exclude_unset)
    for name, value in values.items():
        if isinstance(value, SecretStr):
            values[name] = value.get_secret_value()
    return values


def _check_closed_window_template(values: dict[str, Any], channel: str) -> None:
    """Refuse a closed-window template id that is not how `channel` names a template."""
    template_id = values.get("closed_window_template_sid")
    if template_id is not None and (problem := template_id_problem(channel, template_id)):
        raise ApiError(422, "invalid_closed_window_template_sid",
                       f"closed_window_template_sid {problem}")  # fmt: skip


TENANTS = resources.Table("tenants", TENANT_COLUMNS)


PrincipalDep = Annotated[Principal, Depends(current_principal)]
PlatformAdmin = Annotated[Principal, Depends(require_roles(Role.platform_admin))]
Admin = Annotated[Principal, Depends(require_roles(Role.platform_admin, Role.tenant_admin))]
ServicesDep = Annotated[Services, Depends(services_of)]


@router.get("/me", tags=["auth"], summary="Who the token says you are")
def whoami(principal: PrincipalDep) -> dict[str, Any]:
    """The token's subject, role and tenant (the `tenant_id` of every route below it; null for
    a platform admin)."""
    return {"subject": principal.subject, "role": principal.role, "tenant_id": principal.tenant_id}


RULES[("GET", "/me")] = ALL_ROLES


@router.get("/tenants", tags=["tenants"], response_model=Page, summary="List tenants")
def list_tenants(
    principal: PlatformAdmin,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: UUID | None = None,
) -> Page:
    """Every tenant (platform admins only; audited)."""
    with services.pool.connection() as conn:
        conn.row_factory = dict_row  # type: ignore[assignment]
        with platform_scope(conn, actor=principal.subject, action="list tenants"):
            rows = resources.list_rows(conn, TENANTS, tenant_id=None, after=after, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(items=rows, next=str(rows[-1]["id"]) if more else None)


@router.post("/tenants", tags=["tenants"], status_code=201, summary="Create a tenant")
def create_tenant(
    body: TenantCreate, principal: PlatformAdmin, services: ServicesDep
) -> dict[str, Any]:
    """A new tenant (platform admins only; audited)."""
    values = _tenant_values(body, exclude_unset=False)
    _check_closed_window_template(values, values.get("channel") or "twilio")
    try:
        with services.pool.connection() as conn:
            conn.row_factory = dict_row  # type: ignore[assignment]
            with platform_scope(conn, actor=principal.subject, action="create tenant",
                                detail={"slug": body.slug}):  # fmt: skip
                return resources.insert_row(conn, TENANTS, values)
    except psycopg.Error as exc:
        raise db_error(exc, "tenant") from exc


@router.get("/tenants/{tenant_id}", tags=["tenants"], summary="Read a tenant")
def get_tenant(tenant_id: UUID, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    """One tenant: platform admins any, tenant roles their own."""
    with scoped(services, principal, tenant_id, "read tenant") as conn:
        row = resources.get_row(conn, TENANTS, tenant_id, tenant_id)
    if row is None:
        raise not_found("tenant")
    return row


@router.patch("/tenants/{tenant_id}", tags=["tenants"], summary="Change a tenant")
def update_tenant(
    tenant_id: UUID, body: TenantChange, principal: Admin, services: ServicesDep
) -> dict[str, Any]:
    """Change a tenant's settings, prompts or WhatsApp sender (admins)."""
    values = _tenant_values(body, exclude_unset=True)
    if not values:
        raise ApiError(422, "empty_update", "Send at least one field to change.")
    try:
        with scoped(services, principal, tenant_id, "update tenant") as conn:
            if "closed_window_template_sid" in values:
                current = resources.get_row(conn, TENANTS, tenant_id, tenant_id)
                if current is None:
                    raise not_found("tenant")
                _check_closed_window_template(values, values.get("channel") or current["channel"])
            row = resources.update_row(conn, TENANTS, tenant_id, tenant_id, values)
    except psycopg.Error as exc:
        raise db_error(exc, "tenant") from exc
    if row is None:
        raise not_found("tenant")
    services.tenants.forget()
    forget_tenant(services.redis, tenant_id)
    return row


@router.delete("/tenants/{tenant_id}", tags=["tenants"], status_code=204, summary="Delete a tenant")
def delete_tenant(tenant_id: UUID, principal: PlatformAdmin, services: ServicesDep) -> Response:
    """Delete a tenant and everything it holds (platform admins only; audited)."""
    with scoped(services, principal, tenant_id, "delete tenant") as conn:
        gone = tenants.delete_tenant(conn, tenant_id)
    if not gone:
        raise not_found("tenant")
    services.tenants.forget()
    forget_tenant(services.redis, tenant_id)
    return Response(status_code=204)


RULES.update({
    ("GET", "/tenants"): PLATFORM, ("POST", "/tenants"): PLATFORM,
    ("GET", "/tenants/{tenant_id}"): ALL_ROLES, ("PATCH", "/tenants/{tenant_id}"): ADMINS,
    ("DELETE", "/tenants/{tenant_id}"): PLATFORM,
})  # fmt: skip


# -- users, plans, subscriptions, flags --------------------------------------------------------


class UserCreate(Strict):
    wa_id: str = Field(pattern=WA_ID, description="Twilio's WaId: digits, or a WhatsApp username")
    profile_name: str | None = Field(default=None, max_length=200)
    locale: str | None = Field(default=None, pattern=LOCALE)
    timezone: str | None = None
    enabled: bool = True

    _tz = field_validator("timezone")(_timezone)


class UserChange(Change):
    profile_name: str | None = Field(default=None, max_length=200)
    locale: str | None = Field(default=None, pattern=LOCALE)
    timezone: str | None = None
    enabled: bool | None = None

    _tz = field_validator("timezone")(_timezone)


def _user_values(values: dict[str, Any]) -> dict[str, Any]:
    if wa_id := values.get("wa_id"):
        values["address"] = f"whatsapp:+{wa_id}" if wa_id.isdigit() else f"whatsapp:{wa_id}"
    return values


FeatureName = Annotated[
    str,
    AfterValidator(features.known),
    Field(json_schema_extra={"enum": list(features.FEATURES)}),
]
"""A feature's name, checked against the one list (`graphs.features`)."""


class PlanCreate(Strict):
    slug: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    name: str = Field(min_length=1, max_length=200)
    features: list[FeatureName] = Field(default_factory=list)
    messages_per_day: int | None = Field(default=None, ge=0, le=INT4_MAX)


class PlanChange(Change):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    features: list[FeatureName] | None = None
    messages_per_day: int | None = Field(default=None, ge=0, le=INT4_MAX)


class SubscriptionCreate(Strict):
    user_id: UUID
    plan_id: UUID
    status: Literal["active", "past_due", "cancelled"] = "active"
    period_end: datetime | None = None


class SubscriptionChange(Change):
    plan_id: UUID | None = None
    status: Literal["active", "past_due", "cancelled"] | None = None
    period_end: datetime | None = None


class OverrideCreate(Strict):
    feature: FeatureName
    enabled: bool
    user_id: UUID | None = Field(default=None, description="Omit for a tenant-wide override")


class OverrideChange(Change):
    enabled: bool


def _unique_features(values: dict[str, Any]) -> dict[str, Any]:
    if "features" in values and values["features"] is not None:
        values["features"] = sorted(set(values["features"]))
    return values


READERS = ALL_ROLES
RESOURCES = [
    Resource("users", "user", "users",
             ("id", "wa_id", "address", "profile_name", "locale", "timezone", "enabled",
              "opted_out_at", "created_at", "updated_at"),
             UserCreate, UserChange, filters={"wa_id": "wa_id", "enabled": "enabled"},
             read_roles=READERS, prepare=_user_values, profile_cache="user",
             remove=lambda *args: erase_user(*args) is not None),
    Resource("plans", "plan", "plans",
             ("id", "slug", "name", "features", "messages_per_day", "created_at", "updated_at"),
             PlanCreate, PlanChange, filters={"slug": "slug"}, read_roles=ADMINS,
             prepare=_unique_features, profile_cache="tenant"),
    Resource("subscriptions", "subscription", "subscriptions",
             ("id", "user_id", "plan_id", "status", "period_start", "period_end", "created_at",
              "updated_at"),
             SubscriptionCreate, SubscriptionChange,
             filters={"user_id": "user_id", "status": "status"}, read_roles=ADMINS,
             profile_cache="tenant"),
    Resource("feature-overrides", "feature override", "feature_overrides",
             ("id", "user_id", "feature", "enabled", "created_at", "updated_at"),
             OverrideCreate, OverrideChange, filters={"user_id": "user_id", "feature": "feature"},
             read_roles=ADMINS, profile_cache="tenant"),
    Resource("conversations", "conversation", "conversations",
             ("id", "user_id", "state", "thread_id", "last_inbound_at", "created_at",
              "updated_at"),
             filters={"user_id": "user_id", "state": "state"}, read_roles=READERS),
    Resource("messages", "message", "messages",
             ("id", "conversation_id", "direction", "provider_message_id", "kind", "body",
              "from_address", "to_address", "media", "status", "error", "error_code", "purpose",
              "correlation_id", "created_at", "processed_at", "transcription_status",
              "transcript", "transcript_language", "transcript_confidence", "transcript_unsure",
              "transcription_error", "audio_seconds"),
             filters={"conversation_id": "conversation_id", "direction": "direction",
                      "status": "status"},
             read_roles=READERS, key_type=int),
    Resource("ai-results", "AI result", "ai_results",
             ("id", "conversation_id", "thread_id", "correlation_id", "inbound_message_ids",
              "route", "route_reason", "tool_calls", "reply", "model", "prompt_tokens",
              "completion_tokens", "interrupted", "error", "duration_ms", "created_at"),
             filters={"conversation_id": "conversation_id", "route": "route"},
             read_roles=READERS, key_type=int),
]  # fmt: skip
for _resource in RESOURCES:
    add_routes(router, _resource)


@router.get("/tenants/{tenant_id}/users/{item_id}/features", tags=["users"],
            summary="A user's effective features")  # fmt: skip
def user_features(
    tenant_id: UUID, item_id: UUID, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """The features and daily quota this user has now: plan, then tenant and user overrides."""
    with scoped(services, principal, tenant_id, "read user features") as conn:
        if not tenants.has_user(conn, tenant_id, item_id):
            raise not_found("user")
        result = entitlement(conn, tenant_id, item_id)
    return {
        "features": sorted(result.features),
        "plan": result.plan,
        "messages_per_day": result.messages_per_day,
    }


RULES[("GET", "/tenants/{tenant_id}/users/{item_id}/features")] = READERS
