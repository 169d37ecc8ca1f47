"""Keys for the management API's bearer JWTs (see :mod:`server.api.auth`): which, and whether
the configuration is safe to run with.

HS256 verifies and signs with `JWT_SECRET`; RS256 verifies with `JWT_PUBLIC_KEY` (a PEM,
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
"""

from __future__ import annotations

from functools import lru_cache

import structlog
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

from server.settings import Settings

log = structlog.get_logger(__name__)

DEV_JWT_SECRET = "conversa-development-only-jwt-secret-anyone-can-forge-these"
"""The HS256 secret used in development and test when `JWT_SECRET` is unset. It is public."""

MIN_SECRET_BYTES = 32
MIN_RSA_BITS = 2048
_dev_secret_warned = False


class AuthConfigError(RuntimeError):
    """The server cannot verify (or mint) tokens: its JWT settings are missing or wrong."""


def _pem(value: str) -> bytes:
    """A PEM from the environment, where newlines may have been written as `\\n`."""
    return value.strip().replace("\\n", "\n").encode()


@lru_cache(maxsize=4)
def _public_key(pem: str) -> RSAPublicKey:
    """Load and check the RS256 public key (cached: settings hold the same PEM all along)."""
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
    """Load and check the RS256 private key (cached, as the public one)."""
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
    """Return the HS256 secret, falling back (outside production only) to the public one."""
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


def verification_key(settings: Settings) -> bytes | RSAPublicKey:
    """Return the key that verifies tokens, or raise `AuthConfigError` saying what to set."""
    if settings.jwt_algorithm == "HS256":
        return _hmac_secret(settings)
    if not settings.jwt_public_key or not settings.jwt_public_key.strip():
        raise AuthConfigError(
            "JWT_ALGORITHM is RS256 but JWT_PUBLIC_KEY is not set, so no token can be verified; "
            "set JWT_PUBLIC_KEY to the RS256 public key PEM."
        )
    return _public_key(settings.jwt_public_key)


def signing_key(settings: Settings) -> bytes | RSAPrivateKey:
    """Return the key that mints tokens, or raise `AuthConfigError` saying what to set."""
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
    key = verification_key(settings)
    if isinstance(key, RSAPublicKey) and settings.jwt_private_key:
        private = signing_key(settings)
        assert isinstance(private, RSAPrivateKey)
        if private.public_key().public_numbers() != key.public_numbers():
            raise AuthConfigError(
                "JWT_PRIVATE_KEY does not belong to JWT_PUBLIC_KEY; tokens it mints would be "
                "refused. Set the matching pair."
            )
