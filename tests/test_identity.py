"""Plans, flags, quotas and enrolment as the assistant lives them."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from channels.policy import NOTICES
from channels.sandbox.twilio import TwilioSandbox
from graphs.prompts import USER_DATA_RULE, render
from server.api.auth import Role, mint_token
from server.settings import Settings
from store.identity import resolve_features
from store.records import Tenant
from tests.conftest import rows, say
from tests.fakes import ScriptedModel


@pytest.mark.parametrize(
    ("plan", "tenant", "user", "expected"),
    [
        (["finance", "reminders"], {}, {}, {"finance", "reminders"}),
        (["finance"], {"finance": False}, {}, set()),
        (["finance"], {"finance": False}, {"finance": True}, {"finance"}),
        (None, {"relationships": True}, {}, {"relationships"}),
        (
            ["finance", "relationships"],
            {"reminders": True},
            {"relationships": False},
            {"finance", "reminders"},
        ),
        (None, {}, {}, set()),
    ],
)
def test_plan_then_tenant_then_user(
    plan: list[str] | None, tenant: dict[str, bool], user: dict[str, bool], expected: set[str]
) -> None:
    assert resolve_features(plan, tenant, user) == expected


def test_render_fills_known_placeholders_only() -> None:
    assert (
        render('Hi {user_name}, {"json": 1} {unknown}', user_name="Ana")
        == 'Hi Ana, {"json": 1} {unknown}'
    )


def _api(client: TestClient, settings: Settings, tenant: Tenant) -> dict[str, str]:
    bearer = mint_token(settings, subject="admin", role=Role.tenant_admin, tenant_id=tenant.id)
    return {"Authorization": f"Bearer {bearer}"}


def _plan(client: TestClient, settings: Settings, tenant: Tenant, **body: Any) -> str:
    auth = _api(client, settings, tenant)
    plan = client.post(
        f"/api/v1/tenants/{tenant.id}/plans",
        headers=auth,
        json={"slug": "basic", "name": "Basic", **body},
    )
    assert plan.status_code == 201, plan.text
    done = client.patch(
        f"/api/v1/tenants/{tenant.id}", headers=auth, json={"default_plan_id": plan.json()["id"]}
    )
    assert done.status_code == 200, done.text
    return str(plan.json()["id"])


def test_the_assistant_offers_only_what_the_plan_and_flags_allow(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    _plan(client, settings, tenant, features=["finance", "relationships"])
    general = {"route": "general", "reason": "a greeting"}
    llm.structured(general).say("a").structured(general).say("b")
    say(client, settings, tenant, "Oi")
    first = llm.requests[1]["messages"][0]["content"]
    assert "controlar seus gastos" in first and "lembrar pessoas" in first
    assert "mandar lembretes" not in first

    off = client.post(
        f"/api/v1/tenants/{tenant.id}/feature-overrides",
        headers=_api(client, settings, tenant),
        json={"feature": "finance", "enabled": False},
    )
    assert off.status_code == 201
    say(client, settings, tenant, "Oi de novo")
    second = llm.requests[3]["messages"][0]["content"]
    assert "controlar seus gastos" not in second and "lembrar pessoas" in second


def test_over_quota_gets_one_notice_a_day_and_no_model(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    _plan(client, settings, tenant, messages_per_day=2)
    llm.say("um").say("dois")
    for text in ("1", "2", "3", "4"):
        say(client, settings, tenant, text)

    assert [m["body"] for m in sandbox.messages] == ["um", "dois", NOTICES["over_quota"]["pt"]]
    assert len(llm.requests) == 2
    statuses = rows(settings, "select status from messages where direction = 'inbound' order by id")
    assert statuses == [("answered",), ("answered",), ("answered",), ("suppressed",)]
    assert rows(settings, "select messages, notice_sent from usage_days") == [(4, True)]


def test_without_auto_enrol_a_stranger_is_told_once_then_enabled_by_the_admin(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    auth = _api(client, settings, tenant)
    assert (
        client.patch(
            f"/api/v1/tenants/{tenant.id}", headers=auth, json={"auto_enroll": False}
        ).status_code
        == 200
    )
    with TestClient(client.app) as fresh:
        say(fresh, settings, tenant, "Oi")
        say(fresh, settings, tenant, "Alô?")
        assert [m["body"] for m in sandbox.messages] == [NOTICES["not_enabled"]["pt"]]
        assert llm.requests == []
        ((user_id, enabled),) = rows(settings, "select id, enabled from users")
        assert enabled is False

        assert (
            fresh.patch(
                f"/api/v1/tenants/{tenant.id}/users/{user_id}", headers=auth, json={"enabled": True}
            ).status_code
            == 200
        )
        llm.say("Bem-vindo!")
        say(fresh, settings, tenant, "E agora?")
    assert [m["body"] for m in sandbox.messages][-1] == "Bem-vindo!"


def test_a_tenant_prompt_override_reaches_the_model(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    prompt = 'You are {tenant_name}\'s pirate. Answer as JSON like {"reply": "..."}.'
    auth = _api(client, settings, tenant)
    assert (
        client.patch(
            f"/api/v1/tenants/{tenant.id}", headers=auth, json={"system_prompt": prompt}
        ).status_code
        == 200
    )
    llm.say("Arr!")
    say(client, settings, tenant, "Oi")

    assert llm.requests[0]["messages"][0]["content"] == (
        'You are Acme\'s pirate. Answer as JSON like {"reply": "..."}.\n' + USER_DATA_RULE
    ), "the tenant's prompt, and the rule that the user's words are data (appended)"
