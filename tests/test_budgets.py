"""Budgets: each model call holds its estimate before it runs, settles with the real usage after,
and a spent budget degrades the turn the way the tenant chose. Real Postgres, Redis, RQ
workers and LangGraph; the model is the scripted one, over the OpenAI protocol, reporting the
token usage each test scripts."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import UUID

import psycopg
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from channels.policy import NOTICES
from channels.sandbox.twilio import TwilioSandbox
from graphs.prompts import HANDOFF_REPLY
from server.api.auth import Role, mint_token
from server.settings import Settings, get_settings
from store import budgets
from store.budgets import BudgetExhausted, Spender
from store.records import Tenant
from tests.conftest import inbound_form, post_inbound, rows, run_jobs, say, wait_until
from tests.fakes import EchoModel, ScriptedModel
from tests.test_traffic import Stack, _answered, echo, live_sandbox, stack

__all__ = ["echo", "live_sandbox", "stack"]  # fixtures shared with tests/test_traffic.py


def _auth(settings: Settings, tenant: Tenant) -> dict[str, str]:
    bearer = mint_token(settings, subject="admin", role=Role.tenant_admin, tenant_id=tenant.id)
    return {"Authorization": f"Bearer {bearer}"}


def _budget(client: TestClient, settings: Settings, tenant: Tenant, **body: Any) -> dict[str, Any]:
    response = client.post(
        f"/api/v1/tenants/{tenant.id}/budgets", headers=_auth(settings, tenant), json=body
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def _tenant(client: TestClient, settings: Settings, tenant: Tenant, **body: Any) -> None:
    response = client.patch(
        f"/api/v1/tenants/{tenant.id}", headers=_auth(settings, tenant), json=body
    )
    assert response.status_code == 200, response.text


def _plan(client: TestClient, settings: Settings, tenant: Tenant, features: list[str]) -> None:
    auth = _auth(settings, tenant)
    plan = client.post(f"/api/v1/tenants/{tenant.id}/plans", headers=auth,
                       json={"slug": "pro", "name": "Pro", "features": features})  # fmt: skip
    assert plan.status_code == 201, plan.text
    _tenant(client, settings, tenant, default_plan_id=plan.json()["id"])


def _env(monkeypatch: pytest.MonkeyPatch, **values: str) -> Settings:
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    return get_settings()


def _ledger(settings: Settings, kind: str = "model") -> list[tuple[Any, ...]]:
    return rows(
        settings,
        "select route, model, input_tokens, output_tokens, degraded from usage_ledger "
        "where kind = %s order by id",
        kind,
    )


def _bodies(sandbox: TwilioSandbox) -> list[str]:
    return [m["body"] for m in sandbox.messages]


# -- the ledger is what the model reported --------------------------------------------------


def test_the_ledger_holds_exactly_the_usage_the_model_reported(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    _plan(client, settings, tenant, ["finance"])
    _budget(client, settings, tenant, scope="tenant", period="month", max_tokens=1_000_000)
    cost_before = REGISTRY.get_sample_value(
        "conversa_usage_tokens_total",
        {"tenant": str(tenant.id), "model": "scripted", "direction": "input"},
    )
    llm.structured({"route": "finance", "reason": "an expense"}, usage=(311, 17))
    llm.call_tool("record_transaction",
                  {"kind": "expense", "amount": "30", "category": "alimentação",
                   "description": "almoço"}, usage=(523, 41))  # fmt: skip
    llm.say("Anotei R$ 30,00 de almoço.", usage=(702, 12))
    say(client, settings, tenant, "gastei 30 no almoço")

    assert _bodies(sandbox) == ["Anotei R$ 30,00 de almoço."]
    assert _ledger(settings) == [
        ("router", "scripted", 311, 17, False),
        ("finance", "scripted", 523, 41, False),
        ("finance", "scripted", 702, 12, False),
    ]
    assert rows(settings, "select kind, parts, route from usage_ledger where kind = 'send'") == [
        ("send", 1, "reply")
    ]
    assert rows(settings, "select used_tokens from budget_counters") == [
        (311 + 17 + 523 + 41 + 702 + 12,)
    ]
    assert rows(settings, "select count(*) from budget_holds") == [(0,)], "every hold settled"
    # ai_results counts the same tokens the ledger does
    assert rows(settings, "select prompt_tokens, completion_tokens from ai_results") == [
        (311 + 523 + 702, 17 + 41 + 12)
    ]
    after = REGISTRY.get_sample_value(
        "conversa_usage_tokens_total",
        {"tenant": str(tenant.id), "model": "scripted", "direction": "input"},
    )
    assert (after or 0) - (cost_before or 0) == 311 + 523 + 702

    report = client.get(
        f"/api/v1/tenants/{tenant.id}/usage",
        params={"group_by": ["kind", "route"]},
        headers=_auth(settings, tenant),
    )
    assert report.status_code == 200, report.text
    by = {(r["kind"], r["route"]): r for r in report.json()["rows"]}
    assert (by["model", "finance"]["input_tokens"], by["model", "finance"]["entries"]) == (1225, 2)
    assert by["model", "router"]["output_tokens"] == 17
    assert by["send", "reply"]["parts"] == 1


def test_money_follows_the_price_table(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _env(monkeypatch, MODEL_PRICES=json.dumps({"scripted": [2.0, 8.0]}),
         SEND_PRICE_PER_MESSAGE="0.01")  # fmt: skip
    llm.say("Oi!", usage=(1000, 250))
    say(client, settings, tenant, "Oi")

    costs = rows(settings, "select kind, cost from usage_ledger order by id")
    # 1000 × $2/M + 250 × $8/M = $0.004; one message part at $0.01
    assert costs == [("model", Decimal("0.004000")), ("send", Decimal("0.010000"))]


# -- holding before the call -----------------------------------------------------------------


@pytest.mark.stack_env(INBOUND_DEBOUNCE_SECONDS="0", WORKER_CONCURRENCY="10",
                       BUDGET_COMPLETION_TOKENS="5000")  # fmt: skip
def test_twenty_concurrent_turns_against_a_budget_of_five_run_at_most_six(
    stack: Stack, settings: Settings, tenant: Tenant, live_sandbox: TwilioSandbox, echo: EchoModel
) -> None:
    """Each call holds at least 5,000 tokens (its answer's allowance) plus its prompt; the
    budget is five such calls with a 1,000-token prompt allowance each. Every model answer is
    held back until all twenty turns have tried, so the holds must be what stops the rest."""
    turn_tokens = 5000
    with psycopg.connect(str(settings.database_url)) as conn:
        conn.execute(
            "insert into budgets (tenant_id, scope, period, max_tokens) values (%s, 'tenant', "
            "'day', %s)",
            (tenant.id, 5 * (turn_tokens + 1000)),
        )
    stack.start_api()
    stack.start_worker()
    stack.start_worker()
    echo.hold()
    echo.usage = (turn_tokens - 100, 100)  # what each answer reports it cost
    for n in range(20):
        form = inbound_form(tenant, f"pergunta {n}", user=f"whatsapp:+5511960000{n:03d}")
        assert stack.post(tenant, form) == 200
    refused = (
        "select count(*) from messages where direction = 'inbound' and processed_at is not null"
    )
    wait_until(lambda: rows(settings, refused)[0][0] + echo.running == 20, timeout=120,
               what="every turn to have run or been refused")  # fmt: skip
    in_model = echo.running
    echo.release()
    wait_until(_answered(settings, 20), timeout=120, what="all twenty answered")
    wait_until(lambda: len(live_sandbox.messages) == 20, timeout=60, what="twenty replies")

    ran = len(echo.turns)
    assert 1 <= ran <= 6, f"{ran} turns reached the model against a budget of five"
    assert in_model == ran, "the turns that ran all held their share at the same time"
    replies = [m["body"] for m in live_sandbox.messages]
    assert replies.count(NOTICES["over_budget"]["pt"]) == 20 - ran
    assert len({m["to"] for m in live_sandbox.messages}) == 20, "one reply per user"
    used = rows(settings, "select sum(input_tokens + output_tokens) from usage_ledger")[0][0]
    assert used == ran * turn_tokens, "the ledger holds what the model reported"
    assert rows(settings, "select count(*) from budget_holds") == [(0,)]


def test_holds_are_atomic_across_connections(settings: Settings, tenant: Tenant) -> None:
    """Twenty threads, each on its own connection, hold 10 tokens against a 50-token budget."""
    with psycopg.connect(str(settings.database_url)) as conn:
        conn.execute(
            "insert into budgets (tenant_id, scope, period, max_tokens) "
            "values (%s, 'tenant', 'day', 50)",
            (tenant.id,),
        )
    spender = Spender(tenant.id, None, tenant.timezone)
    start = threading.Barrier(20)
    held: list[UUID | None] = []
    refused: list[BudgetExhausted] = []

    def hold() -> None:
        with psycopg.connect(str(settings.database_url), autocommit=True) as conn:
            start.wait()
            try:
                held.append(budgets.reserve(conn, spender, tokens=10, cost=Decimal(0),
                                            hold_seconds=60))  # fmt: skip
            except BudgetExhausted as exc:
                refused.append(exc)

    threads = [threading.Thread(target=hold) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (len(held), len(refused)) == (5, 15)
    assert rows(settings, "select sum(tokens) from budget_holds") == [(50,)]


def test_a_failed_call_releases_its_hold(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    _budget(client, settings, tenant, scope="tenant", period="day", max_tokens=100_000)
    say(client, settings, tenant, "Oi")  # nothing scripted: the model server answers 500

    status = rows(settings, "select status from messages where direction = 'inbound'")
    assert status == [("failed",)]
    assert rows(settings, "select count(*) from budget_holds") == [(0,)], "the hold is released"
    assert rows(settings, "select count(*) from usage_ledger where kind = 'model'") == [(0,)]
    assert rows(settings, "select coalesce(sum(used_tokens), 0) from budget_counters") == [(0,)]


def test_an_expired_hold_stops_counting(settings: Settings, tenant: Tenant) -> None:
    """A worker killed between the hold and the settle leaves a hold that expires."""
    with psycopg.connect(str(settings.database_url), autocommit=True) as conn:
        conn.execute(
            "insert into budgets (tenant_id, scope, period, max_tokens) "
            "values (%s, 'tenant', 'day', 10)",
            (tenant.id,),
        )
        spender = Spender(tenant.id, None, tenant.timezone)
        budgets.reserve(conn, spender, tokens=10, cost=Decimal(0), hold_seconds=60)
        with pytest.raises(BudgetExhausted):
            budgets.reserve(conn, spender, tokens=1, cost=Decimal(0), hold_seconds=60)
        conn.execute("update budget_holds set expires_at = now() - interval '1 second'")
        assert budgets.reserve(conn, spender, tokens=10, cost=Decimal(0), hold_seconds=60)
        assert conn.execute("select count(*) from budget_holds").fetchone() == (1,)


# -- a spent budget degrades the turn ----------------------------------------------------------


def test_a_spent_budget_answers_a_polite_notice_once_a_day_and_handoff_still_works(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    _plan(client, settings, tenant, ["human_handoff"])
    _budget(client, settings, tenant, scope="user", period="day", max_tokens=0)
    say(client, settings, tenant, "Oi")
    say(client, settings, tenant, "Tem alguém aí?")
    assert llm.requests == [], "no model call once the budget is spent"
    assert _bodies(sandbox) == [NOTICES["over_budget"]["pt"]]
    statuses = rows(settings, "select status from messages where direction = 'inbound' order by id")
    assert statuses == [("answered",), ("suppressed",)]

    say(client, settings, tenant, "quero falar com um atendente")
    assert llm.requests == []
    assert _bodies(sandbox)[-1] == HANDOFF_REPLY["pt"]
    ((conversation,),) = rows(settings, "select id from conversations where state = 'HANDOFF'")

    staff = {"Authorization": "Bearer " + mint_token(
        settings, subject="ana@support", role=Role.support_agent, tenant_id=tenant.id
    )}  # fmt: skip
    base = f"/api/v1/tenants/{tenant.id}/support/conversations/{conversation}"
    assert client.post(f"{base}/reply", headers=staff, json={"text": "Oi, sou a Ana."}).is_success
    run_jobs(settings)
    assert _bodies(sandbox)[-1] == "Oi, sou a Ana.", "a staff reply goes out over budget"
    assert rows(settings, "select count(*) from usage_ledger where kind = 'send'") == [(3,)]


def test_a_spent_budget_can_switch_to_a_cheaper_model(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _env(monkeypatch, BUDGET_COMPLETION_TOKENS="1")
    _tenant(client, settings, tenant, budget_exhausted="cheaper_model",
            budget_cheaper_model="scripted-mini")  # fmt: skip
    _budget(client, settings, tenant, scope="tenant", period="month", max_tokens=5000)
    llm.say("Primeira.", usage=(4500, 500))
    say(client, settings, tenant, "Oi")
    llm.say("Segunda, mais barata.", usage=(400, 20))
    say(client, settings, tenant, "Oi de novo")

    assert [r["model"] for r in llm.requests] == ["scripted", "scripted-mini"]
    assert _bodies(sandbox) == ["Primeira.", "Segunda, mais barata."]
    assert _ledger(settings) == [
        ("general", "scripted", 4500, 500, False),
        ("general", "scripted-mini", 400, 20, True),
    ]


def test_a_spent_budget_can_keep_only_the_general_assistant(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    _plan(client, settings, tenant, ["finance", "relationships"])
    _tenant(client, settings, tenant, budget_exhausted="general_only")
    _budget(client, settings, tenant, scope="tenant", period="day", max_cost="0")
    llm.say("Posso conversar, mas as finanças ficam para depois.")
    say(client, settings, tenant, "gastei 30 no almoço")

    assert len(llm.requests) == 1, "no routing call: only the general assistant is left"
    system = llm.requests[0]["messages"][0]["content"]
    assert "controlar seus gastos" not in system
    tools = [t["function"]["name"] for t in llm.requests[0].get("tools") or []]
    assert "record_transaction" not in tools and "get_balance" not in tools
    assert [degraded for *_, degraded in _ledger(settings)] == [True], "one degraded call"


def test_a_user_budget_counts_only_that_users_spending(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _env(monkeypatch, BUDGET_COMPLETION_TOKENS="1")
    _budget(client, settings, tenant, scope="user", period="day", max_tokens=10_000)
    llm.say("Para Ana.", usage=(9_000, 1_000))
    say(client, settings, tenant, "Oi", ProfileName="Ana")
    llm.say("Para Bia.", usage=(500, 50))
    other = inbound_form(tenant, "Oi", user="whatsapp:+5511955554444", ProfileName="Bia")
    assert post_inbound(client, settings, tenant, other).status_code == 200
    run_jobs(settings)
    say(client, settings, tenant, "Oi de novo", ProfileName="Ana")  # Ana's 10,000 are spent

    assert _bodies(sandbox) == ["Para Ana.", "Para Bia.", NOTICES["over_budget"]["pt"]]
    user_ids = rows(settings, "select id from users order by created_at")
    status = client.get(
        f"/api/v1/tenants/{tenant.id}/users/{user_ids[1][0]}/budget",
        headers=_auth(settings, tenant),
    )
    assert status.status_code == 200, status.text
    assert [(b["scope"], b["used_tokens"]) for b in status.json()["budgets"]] == [("user", 550)]


def test_a_plan_budget_caps_that_plans_users_only(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    auth = _auth(settings, tenant)
    plans = f"/api/v1/tenants/{tenant.id}/plans"
    free = client.post(plans, headers=auth, json={"slug": "free", "name": "Free"}).json()["id"]
    _tenant(client, settings, tenant, default_plan_id=free)
    _budget(client, settings, tenant, scope="user", period="month", max_tokens=0, plan_id=free)
    pro = client.post(plans, headers=auth, json={"slug": "pro", "name": "Pro"}).json()["id"]
    llm.say("Para quem assina.")

    say(client, settings, tenant, "Oi")  # on the free plan: its budget is spent
    ((user_id,),) = rows(settings, "select id from users")
    subscribed = client.post(f"/api/v1/tenants/{tenant.id}/subscriptions", headers=auth,
                             json={"user_id": str(user_id), "plan_id": pro})  # fmt: skip
    assert subscribed.status_code == 201, subscribed.text
    say(client, settings, tenant, "Oi, agora sou pro")

    assert _bodies(sandbox) == [NOTICES["over_budget"]["pt"], "Para quem assina."]


def test_a_budget_set_up_mid_day_counts_the_days_spending_so_far(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    llm.say("Antes do limite.", usage=(900, 100))
    say(client, settings, tenant, "Oi")
    _budget(client, settings, tenant, scope="user", period="day", max_tokens=1000)
    say(client, settings, tenant, "Oi de novo")

    assert _bodies(sandbox) == ["Antes do limite.", NOTICES["over_budget"]["pt"]]
    assert rows(settings, "select used_tokens from budget_counters") == [(1000,)]


# -- alerts --------------------------------------------------------------------------------


@pytest.fixture
def alert_receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts", received
    finally:
        server.shutdown()
        server.server_close()


def test_alerts_at_eighty_and_a_hundred_percent_once_each(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
    monkeypatch: pytest.MonkeyPatch,
    alert_receiver: tuple[str, list[dict[str, Any]]],
) -> None:
    url, received = alert_receiver
    _env(monkeypatch, BUDGET_ALERT_ALLOW_PRIVATE="true", BUDGET_COMPLETION_TOKENS="1")
    _tenant(client, settings, tenant, budget_alert_url=url)
    budget = _budget(client, settings, tenant, scope="tenant", period="day", max_tokens=100_000)
    for text, usage in (("a", (70_000, 5_000)), ("b", (4_000, 1_000)), ("c", (15_000, 5_000))):
        llm.say(text, usage=usage)
        say(client, settings, tenant, text)
    assert _bodies(sandbox) == ["a", "b", "c"]
    wait_until(lambda: len(received) == 2, timeout=30, what="two alerts")
    assert [(a["level"], a["used_tokens"], a["budget_id"]) for a in received] == [
        (80, 80_000, budget["id"]),
        (100, 100_000, budget["id"]),
    ]
    assert all(a["tenant_id"] == str(tenant.id) and a["max_tokens"] == 100_000 for a in received)
    say(client, settings, tenant, "d")  # spent: a notice, and no third alert
    assert _bodies(sandbox)[-1] == NOTICES["over_budget"]["pt"]
    assert len(received) == 2


def test_an_alert_url_on_a_private_address_is_refused_by_default(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
) -> None:
    from server.jobs.budget_alert import AlertRefused, post_budget_alert

    _tenant(client, settings, tenant, budget_alert_url="http://169.254.169.254/latest")
    with pytest.raises(AlertRefused, match="non-public"):
        post_budget_alert(str(tenant.id), {"level": 80}, "cid-1")


# -- the management API --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scope": "tenant", "period": "day"}, "max_tokens"),
        ({"scope": "tenant", "period": "day", "max_tokens": -1}, "max_tokens"),
        ({"scope": "tenant", "period": "week", "max_tokens": 1}, "period"),
        ({"scope": "team", "period": "day", "max_tokens": 1}, "scope"),
        ({"scope": "tenant", "period": "day", "max_cost": "NaN"}, "max_cost"),
        ({"scope": "tenant", "period": "day", "max_cost": "1e20"}, "max_cost"),
        ({"scope": "tenant", "period": "day", "max_cost": "0.0000001"}, "max_cost"),
        (
            {
                "scope": "tenant",
                "period": "day",
                "max_tokens": 1,
                "plan_id": "00000000-0000-0000-0000-000000000001",
            },
            "plan_id",
        ),
        ({"scope": "tenant", "period": "day", "max_tokens": 1, "tenant_id": "x"}, "tenant_id"),
    ],
)
def test_bad_budgets_get_a_clear_422_and_store_nothing(
    client: TestClient, settings: Settings, tenant: Tenant, body: dict[str, Any], field: str
) -> None:
    response = client.post(
        f"/api/v1/tenants/{tenant.id}/budgets", headers=_auth(settings, tenant), json=body
    )
    assert response.status_code == 422, response.text
    assert field in response.text
    assert rows(settings, "select count(*) from budgets") == [(0,)]


def test_budget_conflicts_and_reports_are_checked(
    client: TestClient, settings: Settings, tenant: Tenant
) -> None:
    auth = _auth(settings, tenant)
    _budget(client, settings, tenant, scope="tenant", period="day", max_tokens=10)
    again = client.post(f"/api/v1/tenants/{tenant.id}/budgets", headers=auth,
                        json={"scope": "tenant", "period": "day", "max_cost": "5"})  # fmt: skip
    assert again.status_code == 409, again.text
    unknown_plan = client.post(
        f"/api/v1/tenants/{tenant.id}/budgets", headers=auth,
        json={"scope": "user", "period": "day", "max_tokens": 1,
              "plan_id": "00000000-0000-0000-0000-000000000001"},
    )  # fmt: skip
    assert unknown_plan.status_code in (409, 422), unknown_plan.text
    usage = f"/api/v1/tenants/{tenant.id}/usage"
    backwards = client.get(
        usage, headers=auth, params={"since": "2026-02-01", "until": "2026-01-01"}
    )
    assert backwards.status_code == 422
    assert client.get(usage, headers=auth, params={"group_by": "phone"}).status_code == 422
    too_long = client.get(
        usage, headers=auth, params={"since": "2020-01-01", "until": "2026-01-01"}
    )
    assert too_long.status_code == 422
    bad_url = client.patch(f"/api/v1/tenants/{tenant.id}", headers=auth,
                           json={"budget_alert_url": "ftp://example.com/x"})  # fmt: skip
    assert bad_url.status_code == 422
    bad_mode = client.patch(f"/api/v1/tenants/{tenant.id}", headers=auth,
                            json={"budget_exhausted": "shout"})  # fmt: skip
    assert bad_mode.status_code == 422
    assert rows(settings, "select count(*) from budgets") == [(1,)]
