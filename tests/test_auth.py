"""Bearer-JWT authentication of the management API: every bad token is a 401, never a 500."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Annotated, Any
from uuid import UUID, uuid4

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from server.api import auth_keys
from server.api.auth import (
    AuthError,
    Principal,
    PrincipalDep,
    Role,
    decode_token,
    mint_token,
    require_roles,
)
from server.api.auth_keys import DEV_JWT_SECRET, AuthConfigError, check_auth_config
from server.api.errors import install_error_handlers
from server.cli.main import main
from server.settings import Settings, get_settings

SECRET = "a-test-secret-that-is-long-enough-for-hs256-0123456789"
TENANT = UUID("5f0c3b2a-9d1e-4c7b-8a6f-2e4d1c0b9a87")
JWT_ENV = (
    "JWT_ALGORITHM", "JWT_SECRET", "JWT_PUBLIC_KEY", "JWT_PRIVATE_KEY", "JWT_ISSUER",
    "JWT_AUDIENCE", "JWT_TTL_SECONDS",
)  # fmt: skip


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "app_env": "test",
        "jwt_algorithm": "HS256",
        "jwt_secret": SECRET,
        "jwt_public_key": None,
        "jwt_private_key": None,
        "jwt_issuer": "conversa",
        "jwt_audience": "conversa-api",
        "jwt_ttl_seconds": 3600,
    }
    return Settings(_env_file=None, **{**values, **overrides})  # type: ignore[call-arg]


def _jwt(settings: Settings) -> dict[str, Any]:
    """The JWT settings of `settings`, to build a variant with `_settings` (which validates)."""
    values = settings.model_dump(include={f for f in Settings.model_fields if f.startswith("jwt_")})
    return {k: v.get_secret_value() if hasattr(v, "get_secret_value") else v
            for k, v in values.items()}  # fmt: skip


def _pem(key: rsa.RSAPrivateKey) -> tuple[str, str]:
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rs256(rsa_key: rsa.RSAPrivateKey) -> Settings:
    """RS256 with the public key given the way an env file would: newlines as `\\n`."""
    private, public = _pem(rsa_key)
    return _settings(
        jwt_algorithm="RS256",
        jwt_secret=None,
        jwt_public_key=public.replace("\n", "\\n"),
        jwt_private_key=private,
    )


def _claims(**changes: Any) -> dict[str, Any]:
    """Good claims for a tenant_admin; a change to None drops the claim."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "alice",
        "role": "tenant_admin",
        "tenant_id": str(TENANT),
        "iss": "conversa",
        "aud": "conversa-api",
        "iat": now,
        "exp": now + 600,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _hs256(claims: dict[str, Any], key: str = SECRET) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segments(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


def _forged_hs256(claims: dict[str, Any], key: bytes) -> str:
    """HS256 signed by hand, with any key (PyJWT refuses to HMAC with a PEM)."""
    signing_input = _segments({"alg": "HS256", "typ": "JWT"}, claims)
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _alg_none(claims: dict[str, Any]) -> str:
    return _segments({"alg": "none", "typ": "JWT"}, claims) + "."


def _tampered(token: str, **changes: Any) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return ".".join((header, _b64(json.dumps({**claims, **changes}).encode()), signature))


AdminDep = Annotated[Principal, Depends(require_roles(Role.platform_admin, Role.tenant_admin))]
"""Module level: with postponed annotations FastAPI resolves a route's types in its globals."""


def _client(settings: Settings) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)
    app.state.services = SimpleNamespace(settings=settings)

    @app.get("/me")
    def me(principal: PrincipalDep) -> dict[str, str | None]:
        return _as_json(principal)

    @app.get("/admin")
    def admin(principal: AdminDep) -> dict[str, str | None]:
        return _as_json(principal)

    return TestClient(app, raise_server_exceptions=False)


def _as_json(principal: Principal) -> dict[str, str | None]:
    tenant = str(principal.tenant_id) if principal.tenant_id else None
    return {"subject": principal.subject, "role": principal.role, "tenant_id": tenant}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _assert_refused(response: Any, token: str | None = None, status: int = 401) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message"}
    assert error["message"]
    if token:
        assert token not in response.text, "the token must never be echoed"
    return str(error["message"])


# --- HS256 ---------------------------------------------------------------------------------------

BAD_HS256_TOKENS = {
    "malformed": lambda: "not-a-jwt",
    "three garbage segments": lambda: "abc.def.ghi",
    "alg none": lambda: _alg_none(_claims()),
    "alg none, empty signature with trailing data": lambda: _alg_none(_claims()) + "x",
    "signed with another secret": lambda: _hs256(_claims(), key="another-secret-" + "y" * 40),
    "RS256 token when HS256 is pinned": lambda: jwt.encode(
        _claims(), rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"
    ),
    "HS512 token when HS256 is pinned": lambda: jwt.encode(_claims(), SECRET + SECRET, "HS512"),
    "expired": lambda: _hs256(_claims(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)),
    "issued in the future": lambda: _hs256(
        _claims(iat=int(time.time()) + 3600, exp=int(time.time()) + 7200)
    ),
    "wrong audience": lambda: _hs256(_claims(aud="someone-else")),
    "wrong issuer": lambda: _hs256(_claims(iss="evil")),
    "no exp": lambda: _hs256(_claims(exp=None)),
    "no iat": lambda: _hs256(_claims(iat=None)),
    "no iss": lambda: _hs256(_claims(iss=None)),
    "no aud": lambda: _hs256(_claims(aud=None)),
    "no sub": lambda: _hs256(_claims(sub=None)),
    "empty sub": lambda: _hs256(_claims(sub="  ")),
    "non-string sub": lambda: _hs256(_claims(sub=42)),
    "unknown role": lambda: _hs256(_claims(role="superuser")),
    "no role": lambda: _hs256(_claims(role=None)),
    "role is a list": lambda: _hs256(_claims(role=["platform_admin"])),
    "tenant role without tenant_id": lambda: _hs256(_claims(tenant_id=None)),
    "support_agent without tenant_id": lambda: _hs256(
        _claims(role="support_agent", tenant_id=None)
    ),
    "tenant_id not a UUID": lambda: _hs256(_claims(tenant_id="tenant-1")),
    "tenant_id a number": lambda: _hs256(_claims(tenant_id=12345)),
    "platform_admin with a tenant_id": lambda: _hs256(_claims(role="platform_admin")),
    "tampered payload": lambda: _tampered(
        _hs256(_claims(role="support_agent")), role="platform_admin"
    ),
    "payload not an object": lambda: jwt.api_jws.encode(b"[1, 2]", SECRET, "HS256"),
}


@pytest.mark.parametrize("make", BAD_HS256_TOKENS.values(), ids=BAD_HS256_TOKENS.keys())
def test_bad_tokens_are_refused_with_401(make: Any) -> None:
    token = make()
    client = _client(_settings())

    for path in ("/me", "/admin"):
        _assert_refused(client.get(path, headers=_bearer(token)), token)
    with pytest.raises(AuthError) as refused:
        decode_token(token, _settings())
    assert refused.value.status == 401


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_token"),
        ({"Authorization": ""}, "missing_token"),
        ({"Authorization": "Bearer"}, "invalid_token"),
        ({"Authorization": "Bearer    "}, "invalid_token"),
        ({"Authorization": "Basic YWxpY2U6c2VjcmV0"}, "invalid_token"),
        ({"Authorization": "Bearer a b c"}, "invalid_token"),
    ],
)
def test_missing_or_non_bearer_authorization_is_401(headers: dict[str, str], code: str) -> None:
    response = _client(_settings()).get("/me", headers=headers)

    message = _assert_refused(response)
    assert response.json()["error"]["code"] == code
    assert "Bearer" in message, "the message says how to send the token"


def test_expired_token_says_to_get_a_new_one() -> None:
    token = _hs256(_claims(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600))

    response = _client(_settings()).get("/me", headers=_bearer(token))

    assert _assert_refused(response, token) == "The token has expired; get a new one."
    assert response.json()["error"]["code"] == "token_expired"


@pytest.mark.parametrize(
    ("role", "tenant"),
    [(Role.platform_admin, None), (Role.tenant_admin, TENANT), (Role.support_agent, TENANT)],
)
def test_a_good_token_identifies_each_role(role: Role, tenant: UUID | None) -> None:
    settings = _settings()
    token = mint_token(settings, subject="alice", role=role, tenant_id=tenant)

    response = _client(settings).get("/me", headers=_bearer(token))

    assert response.status_code == 200, response.text
    assert response.json() == {
        "subject": "alice",
        "role": str(role),
        "tenant_id": str(tenant) if tenant else None,
    }
    assert decode_token(token, settings) == Principal("alice", role, tenant)


def test_a_valid_token_without_the_role_is_403_and_says_what_is_needed() -> None:
    settings = _settings()
    client = _client(settings)
    agent = mint_token(settings, subject="bob", role=Role.support_agent, tenant_id=TENANT)
    admin = mint_token(settings, subject="carol", role=Role.tenant_admin, tenant_id=TENANT)
    platform = mint_token(settings, subject="root", role=Role.platform_admin)

    response = client.get("/admin", headers=_bearer(agent))

    message = _assert_refused(response, agent, status=403)
    assert response.json()["error"]["code"] == "forbidden"
    assert "support_agent" in message and "platform_admin, tenant_admin" in message
    assert client.get("/admin", headers=_bearer(admin)).status_code == 200
    assert client.get("/admin", headers=_bearer(platform)).status_code == 200


def test_minted_tokens_carry_the_configured_claims_and_ttl() -> None:
    settings = _settings(jwt_issuer="me", jwt_audience="them", jwt_ttl_seconds=120)
    tenant = uuid4()

    default = mint_token(settings, subject="alice", role=Role.tenant_admin, tenant_id=tenant)
    longer = mint_token(
        settings, subject="alice", role=Role.tenant_admin, tenant_id=tenant, ttl=900
    )

    claims = jwt.decode(default, SECRET, algorithms=["HS256"], audience="them", issuer="me")
    assert claims["exp"] - claims["iat"] == 120
    assert claims["tenant_id"] == str(tenant) and claims["role"] == "tenant_admin"
    claims = jwt.decode(longer, SECRET, algorithms=["HS256"], audience="them", issuer="me")
    assert claims["exp"] - claims["iat"] == 900
    assert decode_token(default, settings).tenant_id == tenant


@pytest.mark.parametrize(
    ("role", "tenant", "ttl"),
    [
        (Role.tenant_admin, None, None),
        (Role.support_agent, None, None),
        (Role.platform_admin, TENANT, None),
        (Role.platform_admin, None, 0),
    ],
)
def test_mint_token_refuses_inconsistent_requests(
    role: Role, tenant: UUID | None, ttl: int | None
) -> None:
    with pytest.raises(ValueError):
        mint_token(_settings(), subject="alice", role=role, tenant_id=tenant, ttl=ttl)


def test_require_roles_needs_a_role() -> None:
    with pytest.raises(ValueError):
        require_roles()


# --- RS256 ---------------------------------------------------------------------------------------


def test_rs256_accepts_its_own_tokens(rs256: Settings) -> None:
    token = mint_token(rs256, subject="root", role=Role.platform_admin)

    response = _client(rs256).get("/admin", headers=_bearer(token))

    assert response.status_code == 200, response.text
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    check_auth_config(rs256)


def test_rs256_refuses_algorithm_confusion(rs256: Settings, rsa_key: rsa.RSAPrivateKey) -> None:
    """An HS256 token whose HMAC key is the (public) RS256 public key PEM."""
    _, public = _pem(rsa_key)
    claims = _claims(role="platform_admin", tenant_id=None)
    forged = [
        _forged_hs256(claims, public.encode()),
        _forged_hs256(claims, public.strip().encode()),
        _forged_hs256(claims, rs256.jwt_public_key.encode()),  # type: ignore[union-attr]
    ]
    client = _client(rs256)

    for token in forged:
        message = _assert_refused(client.get("/admin", headers=_bearer(token)), token)
        assert "RS256" in message


@pytest.mark.parametrize(
    "make",
    [
        lambda key: _alg_none(_claims()),
        lambda key: _hs256(_claims()),
        lambda key: jwt.encode(
            _claims(), rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"
        ),
        lambda key: jwt.encode(_claims(), key, "RS512"),
        lambda key: jwt.encode(_claims(exp=int(time.time()) - 3600), key, "RS256"),
        lambda key: jwt.encode(_claims(aud="other"), key, "RS256"),
        lambda key: jwt.encode(_claims(role="superuser"), key, "RS256"),
        lambda key: _tampered(jwt.encode(_claims(), key, "RS256"), tenant_id=str(uuid4())),
    ],
    ids=[
        "alg none", "HS256 with a secret", "another RSA key", "RS512", "expired",
        "wrong audience", "unknown role", "tampered payload",
    ],
)  # fmt: skip
def test_rs256_refuses_bad_tokens(rs256: Settings, rsa_key: rsa.RSAPrivateKey, make: Any) -> None:
    token = make(rsa_key)

    _assert_refused(_client(rs256).get("/me", headers=_bearer(token)), token)


# --- Configuration -------------------------------------------------------------------------------


def test_production_without_a_secret_refuses_every_token_and_fails_the_start_up_check() -> None:
    settings = _settings(app_env="production", jwt_secret=None)
    token = _hs256(_claims(), key=DEV_JWT_SECRET)

    with pytest.raises(AuthConfigError, match="JWT_SECRET is not set"):
        check_auth_config(settings)
    with pytest.raises(AuthConfigError, match="JWT_SECRET"):
        decode_token(token, settings)
    with pytest.raises(AuthConfigError):
        mint_token(settings, subject="root", role=Role.platform_admin)
    response = _client(settings).get("/me", headers=_bearer(token))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "auth_not_configured"


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"jwt_secret": ""}, "JWT_SECRET is not set"),
        ({"jwt_secret": "short"}, "shorter than 32 bytes"),
        ({"jwt_secret": DEV_JWT_SECRET}, "development secret"),
        ({"jwt_algorithm": "RS256"}, "JWT_PUBLIC_KEY is not set"),
        ({"jwt_algorithm": "RS256", "jwt_public_key": "not a pem"}, "not a PEM public key"),
    ],
)
def test_production_refuses_weak_or_missing_keys(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(AuthConfigError, match=match):
        check_auth_config(_settings(app_env="production", **overrides))


def test_production_with_a_secret_passes_the_check_and_its_tokens_work() -> None:
    production = _settings(app_env="production")
    check_auth_config(production)

    token = mint_token(production, subject="root@platform", role=Role.platform_admin)

    assert decode_token(token, production) == Principal("root@platform", Role.platform_admin, None)
    other = _settings(app_env="production", jwt_secret="another-secret-of-enough-length-0123456789")
    with pytest.raises(AuthError):  # signed with this deployment's secret only
        decode_token(token, other)


def test_rs256_refuses_a_private_key_of_another_pair(rs256: Settings) -> None:
    other, _ = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))

    with pytest.raises(AuthConfigError, match="does not belong"):
        check_auth_config(_settings(**{**_jwt(rs256), "jwt_private_key": other}))


def test_rs256_without_a_private_key_cannot_mint(rs256: Settings) -> None:
    with pytest.raises(AuthConfigError, match="JWT_PRIVATE_KEY is not set"):
        mint_token(
            _settings(**{**_jwt(rs256), "jwt_private_key": None}),
            subject="root",
            role=Role.platform_admin,
        )


class _Recorder:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, event: str, **_: Any) -> None:
        self.warnings.append(event)


@pytest.mark.parametrize("app_env", ["development", "test"])
def test_development_falls_back_to_the_public_secret_and_says_so(
    monkeypatch: pytest.MonkeyPatch, app_env: str
) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(auth_keys, "log", recorder)
    monkeypatch.setattr(auth_keys, "_dev_secret_warned", False)
    settings = _settings(app_env=app_env, jwt_secret=None)

    check_auth_config(settings)
    token = mint_token(settings, subject="dev", role=Role.platform_admin)

    assert decode_token(token, settings) == Principal("dev", Role.platform_admin, None)
    jwt.decode(token, DEV_JWT_SECRET, algorithms=["HS256"], audience="conversa-api")
    assert len(recorder.warnings) == 1, "warned once per process"
    assert "JWT_SECRET is not set" in recorder.warnings[0]
    assert "forge" in recorder.warnings[0]
    with pytest.raises(AuthError):  # once a real secret is set, development tokens are refused
        decode_token(token, _settings(app_env=app_env))


# --- CLI -----------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[Settings]:
    """The CLI's settings from the environment, without reconfiguring the suite's logging."""
    import server.logs

    monkeypatch.chdir(tmp_path)
    for name in JWT_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("APP_ENV", "test")
    monkeypatch.setenv("JWT_SECRET", SECRET)
    monkeypatch.setattr(server.logs, "configure_logging", lambda *_, **__: None)
    get_settings.cache_clear()
    yield _settings()
    get_settings.cache_clear()


def test_cli_token_prints_a_token_that_decodes(
    cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["token", "--role", "support_agent", "--tenant", str(TENANT), "--subject", "dana"]
    assert main([*args, "--ttl", "300"]) == 0

    token = capsys.readouterr().out.strip()
    assert decode_token(token, cli_env) == Principal("dana", Role.support_agent, TENANT)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="conversa-api")
    assert claims["exp"] - claims["iat"] == 300

    assert main(["token", "--role", "platform_admin"]) == 0
    principal = decode_token(capsys.readouterr().out.strip(), cli_env)
    assert principal.role is Role.platform_admin and principal.tenant_id is None


def test_cli_token_errors_are_plain_and_exit_2(
    cli_env: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["token", "--role", "tenant_admin"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "tenant_id" in captured.err and "Traceback" not in captured.err

    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.delenv("JWT_SECRET")
    get_settings.cache_clear()
    assert main(["token", "--role", "platform_admin"]) == 2
    assert "JWT_SECRET is not set" in capsys.readouterr().err

    for bad in (["--role", "root"],):
        with pytest.raises(SystemExit) as exited:
            main(["token", *bad])
        assert exited.value.code == 2


def test_cli_token_takes_a_tenant_slug(
    settings: Settings, tenant: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "--role", "tenant_admin", "--tenant", tenant.slug]) == 0
    principal = decode_token(capsys.readouterr().out.strip(), get_settings())
    assert principal.tenant_id == tenant.id

    assert main(["token", "--role", "tenant_admin", "--tenant", "no-such-tenant"]) == 2
    assert "no tenant with slug" in capsys.readouterr().err
