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

Keys. HS256 verifies and signs with `JWT_SECRET`; RS256 verifies with `JWT_PUBLIC_KEY` (a PEM,
whose newlines may be written as `\\n`) and signs with `JWT_PRIVATE_KEY` (only `conversa token`
needs it). With HS256 and no `JWT_SECRET`:

- in development and test, the fixed, public `DEV_JWT_SECRET` is used, and a warning is logged
  (once per process) saying that anyone can forge such tokens;
- in production there is no fallback: every token is refused with `AuthConfigError`, which the
  API answers with 503 `auth_not_configured` (the server, not the caller, is at fault; the log says
  what to set), and `check_auth_config(settings)`, called at start-up, raises it. Production also
  refuses a `JWT_SECRET` shorter than 32 bytes, or equal to the development secret.

RS256 has no fallback in any environment: without a valid (2048-bit or larger) RSA public key
every token is refused with `AuthConfigError`.

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
from functools import lru_cache
from typing import Annotated, Any
from uuid import UUID

import jwt
import structlog
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from fastapi import Depends, Request
from jwt import exceptions as jwt_errors

from server.api.errors import ApiError
from server.settings import Settings

log = structlog.get_logger(__name__)

DEV_JWT_SECRET = "conversa-development-only-jwt-secret-anyone-can-forge-these"
"""The HS256 secret used in development and test when `JWT_SECRET` is unset. It is public."""

LEEWAY_SECONDS = 30
"""Clock skew tolerated on `exp` and `iat`."""

MIN_SECRET_BYTES = 32
MIN_RSA_BITS = 2048
_REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]
_USE_ISSUED = "use a token issued for this API"
_dev_secret_warned = False


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


class AuthConfigError(RuntimeError):
    """The server cannot verify (or mint) tokens: its JWT settings are missing or wrong."""


def _refused(message: str, code: str = "invalid_token") -> AuthError:
    return AuthError(401, code, message)


# --- Keys ----------------------------------------------------------------------------------------


def _pem(value: str) -> bytes:
    """A PEM from the environment, where newlines may have been written as `\\n`."""
    return value.strip().replace("\\n", "\n").encode()


@lru_cache(maxsize=4)
def _public_key(pem: str) -> RSAPublicKey:
    try:
        key = load_pem_public_key(_pem(pem))
    except (ValueError, TypeError) as exc:
        raise AuthConfigError(
            "JWT_PUBLIC_KEY is not a PEM public key; set it to the RS256 public key itself "
            "('-----BEGIN PUBLIC KEY-----...'), newlines as real newlines or '\\n'."
        ) from exc
    if not isinstance(key, RSAPublicKey):
        raise AuthConfigError("JWT_PUBLIC_KEY is not an RSA key; RS256 needs an RSA public key.")
    if key.key_size < MIN_RSA_BITS:
        raise AuthConfigError(
            f"JWT_PUBLIC_KEY is a {key.key_size}-bit RSA key; use at least {MIN_RSA_BITS} bits."
        )
    return key


@lru_cache(maxsize=4)
def _private_key(pem: str) -> RSAPrivateKey:
    try:
        key = load_pem_private_key(_pem(pem), password=None)
    except (ValueError, TypeError) as exc:
        raise AuthConfigError(
            "JWT_PRIVATE_KEY is not an unencrypted PEM private key; set it to the RS256 private "
            "key itself, newlines as real newlines or '\\n'."
        ) from exc
    if not isinstance(key, RSAPrivateKey):
        raise AuthConfigError("JWT_PRIVATE_KEY is not an RSA key; RS256 needs an RSA private key.")
    return key


def _hmac_secret(settings: Settings) -> bytes:
    global _dev_secret_warned
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else ""
    production = settings.app_env == "production"
    if not secret:
        if production:
            raise AuthConfigError(
                "JWT_SECRET is not set, so no management API token can be verified. Set it to a "
                f"random string of at least {MIN_SECRET_BYTES} bytes (python -c 'import secrets; "
                "print(secrets.token_urlsafe(48))'), or use JWT_ALGORITHM=RS256 with "
                "JWT_PUBLIC_KEY."
            )
        if not _dev_secret_warned:
            _dev_secret_warned = True
            log.warning(
                "JWT_SECRET is not set: management API tokens use the fixed, public development "
                "secret and anyone can forge them; set JWT_SECRET (production refuses every token "
                "without it)",
                app_env=settings.app_env,
            )
        secret = DEV_JWT_SECRET
    elif production:
        if secret == DEV_JWT_SECRET:
            raise AuthConfigError(
                "JWT_SECRET is the public development secret; set a random secret of your own."
            )
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise AuthConfigError(
                f"JWT_SECRET is shorter than {MIN_SECRET_BYTES} bytes; set a longer random secret "
                "(python -c 'import secrets; print(secrets.token_urlsafe(48))')."
            )
    return secret.encode()


def _verification_key(settings: Settings) -> bytes | RSAPublicKey:
    if settings.jwt_algorithm == "HS256":
        return _hmac_secret(settings)
    if not settings.jwt_public_key or not settings.jwt_public_key.strip():
        raise AuthConfigError(
            "JWT_ALGORITHM is RS256 but JWT_PUBLIC_KEY is not set, so no token can be verified; "
            "set JWT_PUBLIC_KEY to the RS256 public key PEM."
        )
    return _public_key(settings.jwt_public_key)


def _signing_key(settings: Settings) -> bytes | RSAPrivateKey:
    if settings.jwt_algorithm == "HS256":
        return _hmac_secret(settings)
    private = settings.jwt_private_key.get_secret_value() if settings.jwt_private_key else ""
    if not private.strip():
        raise AuthConfigError(
            "JWT_ALGORITHM is RS256 but JWT_PRIVATE_KEY is not set, so tokens cannot be minted "
            "here; set JWT_PRIVATE_KEY to the RS256 private key PEM (or get tokens from the "
            "issuer)."
        )
    return _private_key(private)


def check_auth_config(settings: Settings) -> None:
    """Raise `AuthConfigError` saying what to set when tokens could not be verified.

    Call it at start-up: in production a missing or weak key stops the service instead of
    refusing every request. In development and test it allows (and warns about) the fallback.
    """
    key = _verification_key(settings)
    if isinstance(key, RSAPublicKey) and settings.jwt_private_key:
        private = _signing_key(settings)
        assert isinstance(private, RSAPrivateKey)
        if private.public_key().public_numbers() != key.public_numbers():
            raise AuthConfigError(
                "JWT_PRIVATE_KEY does not belong to JWT_PUBLIC_KEY; tokens it mints would be "
                "refused. Set the matching pair."
            )


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
    return jwt.encode(claims, _signing_key(settings), algorithm=settings.jwt_algorithm)


def _claims(token: str, settings: Settings) -> dict[str, Any]:
    """Verify the signature and the registered claims; every PyJWT error becomes a 401."""
    key = _verification_key(settings)
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
