"""Bearer-JWT authentication for the management API (`/api/v1`).

Every request carries `Authorization: Bearer <jwt>`. A token is accepted only when:

- it is signed with `JWT_ALGORITHM` (HS256 or RS256) and nothing else: the algorithm is pinned,
  so `alg: none`, and an HS256 token whose HMAC key is the RS256 public key (algorithm confusion),
  are refused;
- it carries `exp`, `iat`, `iss` (= `JWT_ISSUER`), `aud` (= `JWT_AUDIENCE`) and a non-empty `sub`,
  and has not expired (30 s of leeway for clock skew);
- its `role` claim is a `Role`, and a tenant role (tenant_admin, support_agent) carries the tenant's
  id as a UUID `tenant_id` claim, while a platform_admin token carries none.

Anything else is an `AuthError` (401; 403 for a valid token whose role may not do the thing). Its
message says what is wrong and what to do, and never repeats the token or its claims.

Keys, and what happens when they are missing or weak, are in :mod:`server.api.auth_keys`.

Errors over HTTP. `current_principal` and `require_roles` raise the project's `ApiError`, so the
body is the common `{"error": {"code", "message"}}`. `server.api.errors` renders no headers but
`Retry-After`, so 401 answers carry no `WWW-Authenticate: Bearer` header (adding one needs a
`headers` field on `ApiError`, in `server/api/errors.py`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

import jwt
import structlog
from fastapi import Depends, Request
from jwt import exceptions as jwt_errors

from server.api.auth_keys import AuthConfigError, signing_key, verification_key
from server.api.errors import ApiError
from server.settings import Settings

log = structlog.get_logger(__name__)

LEEWAY_SECONDS = 30
"""Clock skew tolerated on `exp` and `iat`."""

_REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]
_USE_ISSUED = "use a token issued for this API"


class Role(StrEnum):
    """Who a token speaks for."""

    platform_admin = "platform_admin"
    tenant_admin = "tenant_admin"
    support_agent = "support_agent"


TENANT_ROLES = frozenset({Role.tenant_admin, Role.support_agent})
"""Roles bound to one tenant: their tokens must carry `tenant_id`."""


@dataclass(frozen=True)
class Principal:
    """The caller a valid token identifies; `tenant_id` is None only for a platform_admin."""

    subject: str
    role: Role
    tenant_id: UUID | None


class AuthError(Exception):
    """A refused token (401) or a role that may not do the thing (403)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def as_api_error(self) -> ApiError:
        """The same error as the API answers it."""
        return ApiError(self.status, self.code, self.message)


def _refused(message: str, code: str = "invalid_token") -> AuthError:
    return AuthError(401, code, message)


# --- Tokens --------------------------------------------------------------------------------------


def mint_token(
    settings: Settings,
    *,
    subject: str,
    role: Role,
    tenant_id: UUID | None = None,
    ttl: int | None = None,
) -> str:
    """Sign a token for `subject` with the configured key, valid for `ttl` (JWT_TTL_SECONDS) s.

    Raises ValueError for a tenant role without `tenant_id`, a platform_admin with one, an empty
    subject or a non-positive ttl; `AuthConfigError` when no signing key is configured.
    """
    role = Role(role)
    if not subject or not subject.strip():
        raise ValueError("the subject must be a non-empty name")
    if role in TENANT_ROLES and tenant_id is None:
        raise ValueError(f"a {role} token needs the tenant's id (tenant_id, --tenant)")
    if role not in TENANT_ROLES and tenant_id is not None:
        raise ValueError(f"a {role} token is not bound to a tenant; leave tenant_id out")
    ttl = settings.jwt_ttl_seconds if ttl is None else ttl
    if ttl <= 0:
        raise ValueError("the ttl must be a positive number of seconds")
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        "role": str(role),
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
    }
    if tenant_id is not None:
        claims["tenant_id"] = str(UUID(str(tenant_id)))
    return jwt.encode(claims, signing_key(settings), algorithm=settings.jwt_algorithm)


def _claims(token: str, settings: Settings) -> dict[str, Any]:
    """Verify the signature and the registered claims; every PyJWT error becomes a 401."""
    key = verification_key(settings)
    try:
        return jwt.decode(
            token,
            key,
            algorithms=[settings.jwt_algorithm],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": _REQUIRED_CLAIMS},
        )
    except jwt_errors.ExpiredSignatureError:
        raise _refused("The token has expired; get a new one.", "token_expired") from None
    except jwt_errors.InvalidAlgorithmError:
        raise _refused(
            f"The token is not signed with {settings.jwt_algorithm}, the only algorithm this API "
            f"accepts; {_USE_ISSUED}."
        ) from None
    except jwt_errors.InvalidSignatureError:
        raise _refused(
            "The token's signature does not verify (it was altered or signed with another key); "
            f"{_USE_ISSUED}."
        ) from None
    except jwt_errors.MissingRequiredClaimError as exc:
        raise _refused(f"The token has no '{exc.claim}' claim; {_USE_ISSUED}.") from None
    except jwt_errors.InvalidAudienceError:
        raise _refused(
            f"The token is not meant for this API (its audience must be "
            f"'{settings.jwt_audience}'); {_USE_ISSUED}."
        ) from None
    except jwt_errors.InvalidIssuerError:
        raise _refused(
            f"The token was not issued by '{settings.jwt_issuer}'; {_USE_ISSUED}."
        ) from None
    except jwt_errors.ImmatureSignatureError:
        raise _refused(
            "The token is not valid yet (issued in the future); check the issuer's clock."
        ) from None
    except jwt_errors.InvalidSubjectError:
        raise _refused(f"The token's 'sub' claim must be a string; {_USE_ISSUED}.") from None
    except jwt_errors.DecodeError:
        raise _refused(
            "The token is not a well-formed JWT; send it exactly as it was issued."
        ) from None
    except jwt_errors.PyJWTError:
        raise _refused(f"The token is invalid; {_USE_ISSUED}.") from None


def decode_token(token: str, settings: Settings) -> Principal:
    """Return who a token speaks for, or raise `AuthError` (401) saying why it is refused.

    Raises `AuthConfigError` when the server has no usable key (see the module docstring).
    """
    if not isinstance(token, str) or not token.strip():
        raise _refused(
            "No token: send the management API token as 'Authorization: Bearer <token>'.",
            "missing_token",
        )
    claims = _claims(token.strip(), settings)

    subject = claims["sub"]
    if not subject.strip():
        raise _refused(f"The token's 'sub' claim is empty; {_USE_ISSUED}.")
    try:
        role = Role(claims.get("role"))
    except (ValueError, TypeError):
        raise _refused(
            f"The token's 'role' claim must be one of {', '.join(Role)}; get a token with one "
            "of these roles."
        ) from None

    raw_tenant = claims.get("tenant_id")
    if role not in TENANT_ROLES:
        if raw_tenant is not None:
            raise _refused(f"A {role} token must not carry a 'tenant_id' claim; {_USE_ISSUED}.")
        return Principal(subject=subject, role=role, tenant_id=None)
    try:
        tenant_id = UUID(raw_tenant) if isinstance(raw_tenant, str) else None
    except ValueError:
        tenant_id = None
    if tenant_id is None:
        raise _refused(
            f"A {role} token must carry the tenant's id as a UUID 'tenant_id' claim; get a token "
            "for your tenant."
        )
    return Principal(subject=subject, role=role, tenant_id=tenant_id)


# --- FastAPI dependencies ------------------------------------------------------------------------


def _settings_of(request: Request) -> Settings:
    return request.app.state.services.settings  # type: ignore[no-any-return]


def _bearer_token(header: str | None) -> str:
    if not header or not header.strip():
        raise _refused(
            "No token: send the management API token as 'Authorization: Bearer <token>'.",
            "missing_token",
        )
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
        raise _refused(
            "The Authorization header is not a bearer token; send 'Authorization: Bearer <token>'."
        )
    return token


def current_principal(request: Request) -> Principal:
    """The caller of this request, from `Authorization: Bearer <token>`; 401 otherwise.

    Answers 503 `auth_not_configured` when the server has no usable key (the log says why).
    """
    settings = _settings_of(request)
    try:
        return decode_token(_bearer_token(request.headers.get("authorization")), settings)
    except AuthError as exc:
        raise exc.as_api_error() from None
    except AuthConfigError as exc:
        log.error("management API authentication is not configured", error=str(exc))
        raise ApiError(
            503,
            "auth_not_configured",
            "The server cannot verify tokens because its authentication is not configured; "
            "tell its operator (the server's log says what to set).",
        ) from None


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def require_roles(*roles: Role) -> Callable[..., Principal]:
    """A dependency that lets through a caller with one of `roles`, and answers 403 to others."""
    if not roles:
        raise ValueError("require_roles() needs at least one role")
    allowed = frozenset(Role(role) for role in roles)
    needed = ", ".join(str(role) for role in roles)

    def _require(principal: PrincipalDep) -> Principal:
        if principal.role not in allowed:
            raise AuthError(
                403,
                "forbidden",
                f"Your role {principal.role} cannot do this; it needs one of: {needed}.",
            ).as_api_error()
        return principal

    return _require
