"""The management, support and data-rights APIs fuzzed from their own OpenAPI schema.

Schemathesis generates requests for every `/api/v1` operation, valid and invalid alike, and each
example is sent with the token of a role hypothesis draws (platform admin, tenant admin, support
agent, or none), at the seeded tenant, another tenant or an unknown id, naming seeded rows or
unknown ones. Whatever comes back:

- no 5xx;
- the response matches the schema: its status is one the operation documents, and its body the
  documented shape (the checks left out are listed in `EXCLUDED_CHECKS`, with why);
- a 4xx wrote nothing: every table has as many rows after as before.

`FUZZ_EXAMPLES` sets the examples per operation (default 10, derandomised, so CI's run is the
same every time); `make fuzz` runs many more on a random seed.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import hypothesis
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import strategies as st
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import positive_data_acceptance
from starlette_testclient import TestClient

from channels.sandbox.twilio import TwilioSandbox
from server.api.auth import Role, mint_token
from server.app import create_app
from server.settings import Settings
from store import conversations, tenants
from tests.conftest import inbound_form, post_inbound

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
"""Examples per operation; `make fuzz` raises it."""

hypothesis.settings.register_profile(
    "fuzz",
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize="FUZZ_EXAMPLES" not in os.environ,
    database=None,  # nothing written under the work tree; a failure prints its reproduction
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
FUZZ = hypothesis.settings.get_profile("fuzz")

SCHEMA = schemathesis.openapi.from_dict(
    create_app(Settings(), relay=False).openapi()  # the schema only: nothing is connected
).include(path_regex=r"^/api/v1/")

EXCLUDED_CHECKS = [positive_data_acceptance]
"""Schemathesis checks not run, and why:

- `positive_data_acceptance` wants every body the schema allows accepted (2xx, or 401/403/404/409).
  A schema cannot say which ids exist (a subscription naming an unknown `user_id` is rightly a 422
  `invalid_reference`) nor rules across fields (a template's placeholders must match its
  `variables`), so valid-looking bodies are refused with 422 by design. The rules a schema can
  carry, it now does (a PATCH needs a field; a cursor is an id; a token is not empty).
"""

UNCOUNTED = ("admin_audit",)
"""Tables a refused request may still write: a platform admin's look at a tenant is audited
whether or not the thing looked for was there."""


# -- the world the examples act on -------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_settings(
    pg_url: str, redis_server: str, sandbox: TwilioSandbox, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """Settings for an API that lives through a whole module of examples (the `settings` fixture
    is per test, and starting the API and seeding per operation would cost most of the run).
    Only the API runs here: nothing reads these from the environment."""
    return Settings(
        app_env="test", database_url=pg_url, redis_url=redis_server,
        data_dir=tmp_path_factory.mktemp("fuzz"), public_base_url="https://bot.example.com",
        twilio_api_base_url=sandbox.url, twilio_status_callbacks=False, db_pool_timeout=2,
        llm_check_at_start=False,
    )  # fmt: skip


SEEDED_TABLES = {
    "users": "users", "plans": "plans", "subscriptions": "subscriptions",
    "feature-overrides": "feature_overrides", "conversations": "conversations",
    "messages": "messages", "templates": "message_templates",
}  # fmt: skip
"""Path segment before `{item_id}` -> the table its seeded row is in."""


@dataclass
class World:
    """A tenant with a row of every kind (its conversation with a person), another tenant to
    try to reach, and a token per role."""

    settings: Settings
    sandbox: TwilioSandbox
    client: TestClient
    conn: psycopg.Connection[Any]
    tables: list[str] = field(default_factory=list)
    tenant_id: UUID = field(default_factory=uuid4)
    other_id: UUID = field(default_factory=uuid4)
    items: dict[str, str] = field(default_factory=dict)
    """Path segment before `{item_id}` -> the id of the seeded row there."""
    tokens: dict[str, dict[str, str]] = field(default_factory=dict)

    def seed(self) -> None:
        """Create the tenants, a row of every kind, and the tokens."""
        account_sid, token = "AC" + secrets.token_hex(16), secrets.token_hex(16)
        self.sandbox.add_account(account_sid, token)
        with self.conn.transaction():
            tenant = tenants.upsert_tenant(
                self.conn, slug="fuzz-acme", name="Acme", whatsapp_sender="whatsapp:+14155550170",
                twilio_account_sid=account_sid, twilio_auth_token=token,
            )  # fmt: skip
            other = tenants.upsert_tenant(
                self.conn, slug="fuzz-globex", name="Globex",
                whatsapp_sender="whatsapp:+14155550171",
                twilio_account_sid="AC" + secrets.token_hex(16), twilio_auth_token="t" * 32,
            )  # fmt: skip
        self.tenant_id, self.other_id = tenant.id, other.id
        self.tokens = {
            "platform_admin": _bearer(self.settings, Role.platform_admin, None),
            "tenant_admin": _bearer(self.settings, Role.tenant_admin, tenant.id),
            "support_agent": _bearer(self.settings, Role.support_agent, tenant.id),
            "none": {},
        }
        # The user, conversation and message a WhatsApp message makes; the conversation handed
        # to a person, so the support actions have one to act on.
        response = post_inbound(self.client, self.settings, tenant, inbound_form(tenant, "Oi"))
        assert response.status_code == 200, response.text
        with self.conn.transaction():
            user, conversation, message = self.conn.execute(
                "select c.user_id, c.id, m.id from conversations c join messages m "
                "on m.conversation_id = c.id where c.tenant_id = %s",
                (tenant.id,),
            ).fetchone()  # type: ignore[misc]
            conversations.transition(self.conn, conversation, "HANDOFF", actor_kind="system",
                                     actor="fuzz", reason="seeded")  # fmt: skip
        base = f"/api/v1/tenants/{tenant.id}"
        admin = self.tokens["tenant_admin"]
        plan = self._create(f"{base}/plans", {"slug": "pro", "name": "Pro"}, admin)
        sub = self._create(f"{base}/subscriptions", {"user_id": str(user), "plan_id": plan}, admin)
        override = self._create(
            f"{base}/feature-overrides", {"feature": "finance", "enabled": False}, admin
        )
        sid = self.sandbox.add_content(
            "Olá {{1}}", account_sid=account_sid, language="pt", status="approved"
        )
        template = self._create(
            f"{base}/templates",
            {"purpose": "staff_followup", "language": "pt", "content_sid": sid,
             "body": "Olá {{1}}", "variables": {"1": "text"}, "status": "approved"},
            admin,
        )  # fmt: skip
        self.items = {
            "users": str(user), "plans": plan, "subscriptions": sub, "feature-overrides": override,
            "conversations": str(conversation), "messages": str(message), "templates": template,
        }  # fmt: skip

    def _create(self, path: str, body: dict[str, Any], auth: dict[str, str]) -> str:
        response = self.client.post(path, json=body, headers=auth)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def restore(self) -> None:
        """Seed again if a fuzzed request deleted a seeded row or closed the conversation; hand
        it back to a person if staff replied (the support actions want it with a person)."""
        checks = " and ".join(
            f"exists (select 1 from {SEEDED_TABLES[name]} where id = %s)" for name in self.items
        )
        (whole, state) = self.conn.execute(
            f"select {checks}, (select state from conversations where id = %s)",
            (*self.items.values(), self.items["conversations"]),
        ).fetchone()  # type: ignore[misc]
        if not whole or state == "CLOSED":
            with self.conn.transaction():
                tenants.delete_tenant(self.conn, self.tenant_id)
            self.client.app.state.services.tenants.forget()  # as the API's own delete does
            self.seed()
        elif state != "HANDOFF":
            with self.conn.transaction():
                conversations.transition(self.conn, UUID(self.items["conversations"]), "HANDOFF",
                                         actor_kind="system", actor="fuzz")  # fmt: skip

    def counts(self) -> dict[str, int]:
        """Rows in each counted table, in one statement."""
        query = "select " + ", ".join(f"(select count(*) from {t})" for t in self.tables)
        return dict(zip(self.tables, self.conn.execute(query).fetchone() or (), strict=True))


def _bearer(settings: Settings, role: Role, tenant_id: UUID | None) -> dict[str, str]:
    token = mint_token(settings, subject=f"fuzz-{role}", role=role, tenant_id=tenant_id)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def world(fuzz_settings: Settings, sandbox: TwilioSandbox) -> Iterator[World]:
    """The API (its lifespan run once for the module) and what the examples act on."""
    assert fuzz_settings.database_url
    with (
        TestClient(create_app(fuzz_settings, relay=False)) as client,
        psycopg.connect(fuzz_settings.database_url, autocommit=True) as conn,
    ):
        tables = [
            name
            for (name,) in conn.execute(
                "select tablename from pg_tables where schemaname = 'public' "
                "and tablename not like '%%migrations' order by tablename"
            )
            if name not in UNCOUNTED
        ]
        world = World(fuzz_settings, sandbox, client, conn, tables)
        world.seed()
        yield world


# -- the fuzzing -------------------------------------------------------------------------------


CALLERS = ("platform_admin", "tenant_admin", "support_agent", "none")
TENANTS = ("own", "own", "other", "generated")
"""Which tenant a path names: the caller's own (twice as likely), another, or the generated id."""


@SCHEMA.parametrize()
@SCHEMA.given(
    caller=st.sampled_from(CALLERS), at=st.sampled_from(TENANTS), seeded_item=st.booleans()
)
@FUZZ
def test_api_operations_hold_their_invariants(
    case: schemathesis.Case, caller: str, at: str, seeded_item: bool, world: World
) -> None:
    world.restore()
    path = case.path_parameters or {}
    if not _negative_path(case):
        if "tenant_id" in path and at != "generated":
            path["tenant_id"] = str(world.tenant_id if at == "own" else world.other_id)
        segment = case.path.split("/{item_id}")[0].rsplit("/", 1)[-1]
        if "item_id" in path and seeded_item and segment in world.items:
            path["item_id"] = world.items[segment]
    before = world.counts()

    response = case.call(session=world.client, headers=world.tokens[caller])

    assert response.status_code < 500, response.text
    case.validate_response(response, excluded_checks=EXCLUDED_CHECKS)
    if 400 <= response.status_code < 500:
        assert world.counts() == before, f"a {response.status_code} wrote rows: {response.text}"


def _negative_path(case: schemathesis.Case) -> bool:
    """Whether schemathesis generated the path's parameters to violate the schema.

    Such a case keeps its generated ids: the invalid id is what it tests. Putting a seeded id in
    its place would send a valid request that is still marked negative, and the
    `negative_data_rejection` check would then fail the API for accepting it. (Schemathesis
    revalidates a changed component, but without checking `format`, so it cannot be relied on
    to clear the mark either way.)
    """
    meta = case.meta
    component = None if meta is None else meta.components.get(ParameterLocation.PATH)
    return component is not None and component.mode.is_negative
