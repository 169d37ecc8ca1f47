"""One place that turns a resource description into list/create/read/update/delete routes.

(No `from __future__ import annotations` here: the routes' annotations are built at run time.)

Every route runs in one database transaction scoped to the tenant in its path: a tenant role
may only name its own tenant (any other id is a 404, as if it did not exist), and a platform
admin goes through the audited platform scope. Row-level security enforces the same again.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from uuid import UUID

import psycopg
from fastapi import APIRouter, Depends, Query, Request, Response
from psycopg import errors
from psycopg.rows import dict_row
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, ConfigDict

from server.api.auth import Principal, Role, require_roles
from server.api.errors import ApiError
from server.services import Services
from store import resources
from store.cache import forget_tenant, forget_user
from store.scoping import platform_scope, tenant_scope

ALL_ROLES = frozenset(Role)
Row = dict[str, Any]


INT4_MAX = 2**31 - 1
"""The largest value of a PostgreSQL `integer` column: the bound of every integer field."""


class Strict(BaseModel):
    """A request body: unknown fields (a `tenant_id`, a `role`...) are refused with 422."""

    model_config = ConfigDict(extra="forbid")


class Change(Strict):
    """A PATCH body: at least one field, or it is a 422 `empty_update` (the schema says so too)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})


class Page(BaseModel):
    """One page of a list; pass `next` back as `after` for the following page."""

    items: list[dict[str, Any]]
    next: str | None


def services_of(request: Request) -> Services:
    """Return the app's shared services."""
    return request.app.state.services  # type: ignore[no-any-return]


def not_found(what: str) -> ApiError:
    """The answer for anything the caller may not see, too: it does not exist for them."""
    return ApiError(404, "not_found", f"No such {what}.")


@contextmanager
def scoped(
    services: Services, principal: Principal, tenant_id: UUID, action: str
) -> Iterator[psycopg.Connection[Row]]:
    """Open a transaction that can see `tenant_id`'s rows, if `principal` may."""
    if principal.role is not Role.platform_admin and principal.tenant_id != tenant_id:
        raise not_found("tenant")
    try:
        with services.pool.connection() as conn:
            conn.row_factory = dict_row  # type: ignore[assignment]
            if principal.role is Role.platform_admin:
                scope = platform_scope(
                    conn, actor=principal.subject, action=action, tenant_id=tenant_id
                )
            else:
                scope = tenant_scope(conn, tenant_id)
            with scope:
                yield conn  # type: ignore[misc]
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise ApiError(
            503, "database_unavailable", "The database is unavailable.", retry=5
        ) from exc


def db_error(exc: psycopg.Error, what: str) -> ApiError:
    """Turn a constraint the database enforced into a 409 or 422 that names the problem."""
    diag = exc.diag
    if isinstance(exc, errors.UniqueViolation):
        return ApiError(
            409, "conflict", f"A {what} with these values exists ({diag.constraint_name})."
        )
    if isinstance(exc, errors.ForeignKeyViolation):
        return ApiError(
            422,
            "invalid_reference",
            f"A referenced record does not exist in this tenant ({diag.constraint_name}).",
        )
    if isinstance(exc, errors.CheckViolation | errors.NotNullViolation | psycopg.DataError):
        # DataError: a value the column cannot hold (out of range, NUL in text, bad syntax).
        reason = diag.constraint_name or diag.message_primary or str(exc)
        return ApiError(422, "invalid_value", f"Invalid value ({reason}).")
    raise exc


@dataclass
class Resource:
    """A table exposed under `/tenants/{tenant_id}/<name>`."""

    name: str
    singular: str
    table: str
    columns: tuple[str, ...]
    """What reads return (never a secret)."""
    create: type[Strict] | None = None
    update: type[Strict] | None = None
    filters: dict[str, str] = field(default_factory=dict)
    """Query parameter -> column, for equality filters on lists."""
    read_roles: frozenset[Role] = ALL_ROLES
    write_roles: frozenset[Role] = frozenset({Role.platform_admin, Role.tenant_admin})
    key_type: type = UUID
    prepare: Callable[[dict[str, Any]], dict[str, Any]] = lambda values: values
    """Turn validated body values into column values (derive, rename)."""
    profile_cache: Literal["user", "tenant"] | None = None
    """Which cached profiles a write makes stale: the row's user's, or the whole tenant's."""
    remove: Callable[[Services, Principal, UUID, Any], bool] | None = None
    """Delete a row by more than one DELETE (users: the full erasure); False when not found."""

    @property
    def stored(self) -> resources.Table:
        """The table as the store reads and writes it."""
        return resources.Table(self.table, self.columns)


RULES: dict[tuple[str, str], frozenset[Role]] = {}
"""Which roles each route admits, by (method, path); the authorization matrix test reads it."""


def add_routes(router: APIRouter, resource: Resource, prefix: str = "/tenants/{tenant_id}") -> None:
    """Register the list/create/read/update/delete routes of `resource` on `router`."""
    base = f"{prefix}/{resource.name}"
    item = f"{base}/{{item_id}}"
    Reader = Annotated[Principal, Depends(require_roles(*sorted(resource.read_roles)))]
    Writer = Annotated[Principal, Depends(require_roles(*sorted(resource.write_roles)))]
    ServicesDep = Annotated[Services, Depends(services_of)]
    key = resource.key_type
    tag = [resource.name]

    def list_rows(
        tenant_id: UUID,
        principal: Reader,
        services: ServicesDep,
        request: Request,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        after: Annotated[key | None, Query(description="`next` from the previous page")] = None,
    ) -> Page:
        unknown = set(request.query_params) - {"limit", "after", *resource.filters}
        if unknown:
            known = ", ".join(resource.filters) or "none"
            message = f"Unknown query parameter(s) {', '.join(sorted(unknown))}; filters: {known}."
            raise ApiError(422, "invalid_filter", message)
        filters = {
            column: value
            for name, column in resource.filters.items()
            if (value := request.query_params.get(name)) is not None
        }
        with scoped(services, principal, tenant_id, f"list {resource.name}") as conn:
            rows = resources.list_rows(
                conn, resource.stored, tenant_id=tenant_id, filters=filters, after=after,
                limit=limit + 1,
            )  # fmt: skip
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(items=rows, next=str(rows[-1]["id"]) if more else None)

    def get_row(
        tenant_id: UUID, item_id: key, principal: Reader, services: ServicesDep
    ) -> dict[str, Any]:  # type: ignore[valid-type]
        with scoped(services, principal, tenant_id, f"read {resource.singular}") as conn:
            row = resources.get_row(conn, resource.stored, tenant_id, item_id)
        if row is None:
            raise not_found(resource.singular)
        return row

    def route(
        method: str,
        path: str,
        endpoint: Callable[..., Any],
        roles: frozenset[Role],
        summary: str,
        **options: Any,
    ) -> None:
        """Register one route, and the roles it admits for the authorization matrix."""
        router.add_api_route(path, endpoint, methods=[method], tags=tag, summary=summary, **options)
        RULES[(method, path)] = roles

    route("GET", base, list_rows, resource.read_roles, f"List {resource.name}", response_model=Page)
    route("GET", item, get_row, resource.read_roles, f"Read one {resource.singular}")

    if resource.create is not None:
        Body = resource.create

        def create_row(
            tenant_id: UUID,
            body: Body,
            principal: Writer,
            services: ServicesDep,
        ) -> dict[str, Any]:  # type: ignore[valid-type]
            values = resource.prepare(body.model_dump())  # type: ignore[attr-defined]
            values["tenant_id"] = tenant_id
            try:
                with scoped(services, principal, tenant_id, f"create {resource.singular}") as conn:
                    row = resources.insert_row(conn, resource.stored, values)
            except psycopg.Error as exc:
                raise db_error(exc, resource.singular) from exc
            _forget_profiles(services, resource, tenant_id, row["id"])
            return row

        route(
            "POST",
            base,
            create_row,
            resource.write_roles,
            f"Create a {resource.singular}",
            status_code=201,
        )

    if resource.update is not None:
        Patch = resource.update

        def update_row(
            tenant_id: UUID, item_id: key, body: Patch, principal: Writer, services: ServicesDep
        ) -> dict[str, Any]:  # type: ignore[valid-type]
            values = resource.prepare(body.model_dump(exclude_unset=True))  # type: ignore[attr-defined]
            if not values:
                raise ApiError(422, "empty_update", "Send at least one field to change.")
            try:
                with scoped(services, principal, tenant_id, f"update {resource.singular}") as conn:
                    row = resources.update_row(conn, resource.stored, tenant_id, item_id, values)
            except psycopg.Error as exc:
                raise db_error(exc, resource.singular) from exc
            if row is None:
                raise not_found(resource.singular)
            _forget_profiles(services, resource, tenant_id, item_id)
            return row

        route("PATCH", item, update_row, resource.write_roles, f"Change a {resource.singular}")

    if resource.create is not None:

        def delete_row(
            tenant_id: UUID, item_id: key, principal: Writer, services: ServicesDep
        ) -> Response:  # type: ignore[valid-type]
            if resource.remove is not None:
                if not resource.remove(services, principal, tenant_id, item_id):
                    raise not_found(resource.singular)
                return Response(status_code=204)
            try:
                with scoped(services, principal, tenant_id, f"delete {resource.singular}") as conn:
                    gone = resources.delete_row(conn, resource.stored, tenant_id, item_id)
            except errors.ForeignKeyViolation as exc:
                raise ApiError(
                    409, "in_use", f"The {resource.singular} is still in use "
                    f"({exc.diag.constraint_name}); remove what refers to it first.",
                ) from exc  # fmt: skip
            except psycopg.Error as exc:
                raise db_error(exc, resource.singular) from exc
            if not gone:
                raise not_found(resource.singular)
            _forget_profiles(services, resource, tenant_id, item_id)
            return Response(status_code=204)

        route(
            "DELETE",
            item,
            delete_row,
            resource.write_roles,
            f"Delete a {resource.singular}",
            status_code=204,
        )


def _forget_profiles(services: Services, resource: Resource, tenant_id: UUID, item_id: Any) -> None:
    """After a committed write, drop the cached profiles it may have changed."""
    if resource.profile_cache == "user":
        forget_user(services.redis, tenant_id, item_id)
    elif resource.profile_cache == "tenant":
        forget_tenant(services.redis, tenant_id)
