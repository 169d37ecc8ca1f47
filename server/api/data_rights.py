"""Users' data rights (LGPD, GDPR): export everything held about a user, or erase it.

`GET /tenants/{tenant_id}/users/{item_id}/export` answers one JSON document (see
`store.userdata.export`). `DELETE /tenants/{tenant_id}/users/{item_id}/data` erases the user in
one database transaction (every row, memory, vector and checkpoint), then removes the user's
queued jobs and cached profile from Redis, and answers the erasure record, which holds no
personal data. `DELETE /tenants/{tenant_id}/users/{item_id}` does the same erasure. Tenant and
platform admins only; a platform admin's request is also in `admin_audit`.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import structlog
from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from redis import RedisError

from server.api._resource import RULES, not_found, scoped, services_of
from server.api.auth import Principal, Role, require_roles
from server.api.errors import ERROR_RESPONSES, ApiError
from server.jobs.erasure import clean_redis
from server.services import Services
from store import userdata
from store.scoping import tenant_scope

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)

ADMINS = frozenset({Role.platform_admin, Role.tenant_admin})
Admin = Annotated[Principal, Depends(require_roles(Role.platform_admin, Role.tenant_admin))]
ServicesDep = Annotated[Services, Depends(services_of)]
USER = "/tenants/{tenant_id}/users/{item_id}"
REFERENCE = r"^[A-Za-z0-9._:/#-]{1,100}$"


@router.get(USER + "/export", tags=["data rights"], summary="Export everything about a user")
def export_user(
    tenant_id: UUID, item_id: UUID, principal: Admin, services: ServicesDep
) -> JSONResponse:
    """One JSON document with the user's profile, plan, conversations with every message
    (transcripts and delivery statuses included), handoff history, the assistant's runs,
    memories, finance entries, people and dates, and reminders."""
    with scoped(services, principal, tenant_id, "export user data") as conn:
        document = userdata.export(conn, tenant_id, item_id)
    if document is None:
        raise not_found("user")
    log.info("user data exported", tenant_id=str(tenant_id), actor=principal.subject)
    filename = f"user-{item_id}.json"
    return JSONResponse(
        document, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )


@router.delete(USER + "/data", tags=["data rights"], summary="Erase a user and all their data")
def erase_user_data(
    tenant_id: UUID,
    item_id: UUID,
    principal: Admin,
    services: ServicesDep,
    reference: Annotated[
        str | None,
        Query(pattern=REFERENCE, description="Your ticket number for the request (no names)."),
    ] = None,
) -> dict[str, Any]:
    """Erase the user: every row, memory, vector, checkpoint and queued job. Answers the
    erasure record (who, when, rows per table), which names nothing about the user."""
    record = erase_user(services, principal, tenant_id, item_id, reference=reference)
    if record is None:
        raise not_found("user")
    return record


def erase_user(
    services: Services,
    principal: Principal,
    tenant_id: UUID,
    user_id: UUID,
    *,
    reference: str | None = None,
) -> dict[str, Any] | None:
    """Erase `user_id` of `tenant_id` for `principal`; the erasure record, or None if no user."""
    try:
        with scoped(services, principal, tenant_id, "erase user") as conn:
            erased = userdata.erase(
                conn, tenant_id, user_id, actor=principal.subject, role=str(principal.role),
                reference=reference,
            )  # fmt: skip
    except userdata.UserBusy as exc:
        raise ApiError(409, "user_busy", str(exc), retry=30) from exc
    if erased is None:
        return None
    jobs: int | None = None
    try:
        jobs = clean_redis(services.redis, str(tenant_id), erased)
    except RedisError as exc:  # committed already: the jobs will find nothing and stop
        log.warning("could not remove the erased user's jobs from redis", error=str(exc),
                    erasure_id=erased.erasure_id)  # fmt: skip
    else:
        with services.pool.connection() as conn, tenant_scope(conn, tenant_id):
            userdata.mark_redis_cleaned(conn, erased.erasure_id, jobs)
    log.info("user erased", erasure_id=erased.erasure_id, actor=principal.subject,
             tenant_id=str(tenant_id), counts=erased.counts)  # fmt: skip
    return {
        "id": erased.erasure_id,
        "erased_at": erased.erased_at,
        "erased_by": principal.subject,
        "reference": reference,
        "counts": erased.counts,
        "jobs_removed": jobs,
        "redis_cleaned": jobs is not None,
    }


RULES[("GET", USER + "/export")] = ADMINS
RULES[("DELETE", USER + "/data")] = ADMINS


@router.get("/tenants/{tenant_id}/erasures", tags=["data rights"], summary="Erasure records")
def list_erasures(
    tenant_id: UUID,
    principal: Admin,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: Annotated[int | None, Query(description="`next` from the previous page")] = None,
) -> dict[str, Any]:
    """The tenant's erasures, oldest first: who, when, rows per table; nothing about the user."""
    with scoped(services, principal, tenant_id, "list erasures") as conn:
        rows = userdata.erasures(conn, tenant_id, after or 0, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": rows, "next": str(rows[-1]["id"]) if more else None}


RULES[("GET", "/tenants/{tenant_id}/erasures")] = ADMINS
