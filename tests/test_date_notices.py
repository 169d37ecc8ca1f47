"""Date notices: a saved birthday brings one WhatsApp message the day before, at the set hour.

Real PostgreSQL, Redis, RQ and the Twilio sandbox; the sweep runs with an injected `now`.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue, SimpleWorker

from channels.sandbox.twilio import TwilioSandbox
from graphs.context import Context
from server.api.auth import Role, mint_token
from server.cli.main import main
from server.jobs.date_notices import schedule_date_notices, send_date_notices, sweep_date_notices
from server.settings import QUEUE_PROCESS, QUEUES, Settings
from store import date_notices as store
from store.records import Tenant, User
from tests.conftest import rows
from tests.templating import register_template
from tests.toolcontext import context_for, make_tenant, make_user, make_user_with_conversation, ok
from tests.tooling import run_tool
from tools.relationships import add_important_date

SP = "America/Sao_Paulo"
EVE = datetime.fromisoformat("2026-12-11T09:00:00-03:00")
"""The morning before a 12 December birthday, at the default notice hour, in São Paulo."""


def give_plan(settings: Settings, tenant: Tenant, features: list[str]) -> None:
    """Put every user of `tenant` on a plan with `features`."""
    plan = rows(
        settings,
        "insert into plans (tenant_id, slug, name, features) values (%s, 'p', 'P', %s) "
        "returning id",
        tenant.id, features,
    )  # fmt: skip
    rows(settings, "update tenants set default_plan_id = %s where id = %s returning id",
         plan[0][0], tenant.id)  # fmt: skip


@pytest.fixture
def user(settings: Settings, tenant: Tenant) -> User:
    give_plan(settings, tenant, ["relationships"])
    return make_user_with_conversation(settings, tenant)


@pytest.fixture
def ana(tenant: Tenant, user: User) -> Context:
    return context_for(tenant, user)


def save(context: Context, person: str, day: str, call_id: str = "d1", **extra: Any) -> int:
    """Save a date through the tool, as the relationships specialist does; return its id."""
    args = {"person_name": person, "kind": "birthday", "date": day} | extra
    answer = ok(run_tool(add_important_date, args, context, call_id=call_id))
    return int(answer.rsplit("#", 1)[1].rstrip("."))


def notices(settings: Settings) -> list[tuple[Any, ...]]:
    return rows(
        settings,
        "select m.body, m.purpose, m.template_variables, n.occurs_on from date_notices n "
        "join messages m on m.id = n.message_id order by n.id",
    )


def work(settings: Settings) -> None:
    """Run every queued job with a real RQ worker (the users' own "Oi" stays unanswered: the
    relay, which would queue its turn, is not run)."""
    assert settings.redis_url
    connection = Redis.from_url(settings.redis_url)
    queues = [Queue(name, connection=connection) for name in QUEUES]
    SimpleWorker(queues, connection=connection).work(burst=True)


def outbound(settings: Settings) -> int:
    return int(rows(settings, "select count(*) from messages where direction = 'outbound'")[0][0])


# -- the notice ------------------------------------------------------------------------------


def test_a_birthday_tomorrow_is_noticed_once_at_the_hour_and_reaches_whatsapp(
    settings: Settings, tenant: Tenant, user: User, ana: Context, sandbox: TwilioSandbox
) -> None:
    save(ana, "mãe", "12/12")
    early = datetime.fromisoformat("2026-12-11T08:59:00-03:00")
    assert sweep_date_notices(early) == 0, "not before the notice hour"
    assert sweep_date_notices(datetime.fromisoformat("2026-12-10T10:00:00-03:00")) == 0

    assert sweep_date_notices(EVE) == 1
    body = "🎂 Amanhã é o aniversário da sua mãe (12/12)."
    variables = {"person": "mãe", "label": "o aniversário", "date": "12/12", "when": "amanhã"}
    assert notices(settings) == [(body, "date_notice", variables, EVE.date().replace(day=12))]
    work(settings)
    assert [(m["body"], m["to"]) for m in sandbox.messages] == [(body, user.address)]

    # Later sweeps that day, and a worker racing, send nothing more.
    assert sweep_date_notices(EVE.replace(hour=15)) == 0
    assert send_date_notices(str(tenant.id), EVE.replace(hour=23, minute=59)) == 0
    work(settings)
    assert len(sandbox.messages) == 1
    assert outbound(settings) == 1


def test_the_hour_is_the_users_own_time_zone(
    settings: Settings, tenant: Tenant, user: User, ana: Context
) -> None:
    rows(settings, "update users set timezone = 'Asia/Tokyo' where id = %s returning id", user.id)
    save(ana, "Kenji", "12/12")
    # 23:59 UTC on the 10th is 08:59 on the 11th in Tokyo: too early there.
    assert sweep_date_notices(datetime(2026, 12, 10, 23, 59, tzinfo=UTC)) == 0
    # 00:30 UTC on the 11th is 09:30 in Tokyo (and still the 10th in São Paulo, the tenant's).
    assert sweep_date_notices(datetime(2026, 12, 11, 0, 30, tzinfo=UTC)) == 1
    assert notices(settings)[0][0] == "🎂 Amanhã é o aniversário de Kenji (12/12)."


def test_the_notice_speaks_english_to_an_english_user(
    settings: Settings, user: User, ana: Context
) -> None:
    rows(settings, "update users set locale = 'en-US' where id = %s returning id", user.id)
    save(ana, "mom", "12/12")
    save(ana, "Bob", "12/12", call_id="d2", kind="other", label="graduation")
    assert sweep_date_notices(EVE) == 2
    assert [n[0] for n in notices(settings)] == [
        "🎂 Tomorrow is your mom's birthday (Dec 12).",
        "📅 Tomorrow is Bob's graduation (Dec 12).",
    ]


def test_days_before_and_hour_come_from_the_settings(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, ana: Context
) -> None:
    monkeypatch.setenv("DATE_NOTICE_DAYS_BEFORE", "0")
    monkeypatch.setenv("DATE_NOTICE_HOUR", "7")
    from server.settings import get_settings

    get_settings.cache_clear()
    save(ana, "Maria", "12/12")
    assert sweep_date_notices(EVE) == 0, "the day before is not the day"
    assert sweep_date_notices(datetime.fromisoformat("2026-12-12T06:59:00-03:00")) == 0
    assert sweep_date_notices(datetime.fromisoformat("2026-12-12T07:00:00-03:00")) == 1
    assert notices(settings)[0][0] == "🎂 Hoje é o aniversário de Maria (12/12)."


def test_a_29_february_birthday_is_noticed_for_the_28th_in_other_years(
    settings: Settings, ana: Context
) -> None:
    save(ana, "Leo", "29/02")
    assert sweep_date_notices(datetime.fromisoformat("2027-02-27T09:00:00-03:00")) == 1
    ((body, _, _, occurs_on),) = notices(settings)
    assert (body, occurs_on.isoformat()) == (
        "🎂 Amanhã é o aniversário de Leo (28/02).",
        "2027-02-28",
    )
    # In a leap year it is the 29th: nothing on the 27th, the notice on the 28th.
    assert sweep_date_notices(datetime.fromisoformat("2028-02-27T09:00:00-03:00")) == 0
    assert sweep_date_notices(datetime.fromisoformat("2028-02-28T09:00:00-03:00")) == 1
    assert notices(settings)[1][0] == "🎂 Amanhã é o aniversário de Leo (29/02)."


def test_a_one_off_date_is_noticed_only_in_its_year(settings: Settings, ana: Context) -> None:
    save(ana, "Ana", "12/12/2026", kind="other", label="formatura", yearly=False)
    assert sweep_date_notices(EVE.replace(year=2027)) == 0
    assert sweep_date_notices(EVE) == 1
    assert notices(settings)[0][0] == "📅 Amanhã é formatura de Ana (12/12)."


# -- who gets nothing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        "update users set opted_out_at = now() where id = %s returning id",
        "update users set enabled = false where id = %s returning id",
        "insert into feature_overrides (tenant_id, user_id, feature, enabled) "
        "select tenant_id, id, 'relationships', false from users where id = %s returning id",
    ],
    ids=["opted-out", "disabled", "without-the-feature"],
)
def test_users_who_should_not_hear_from_us_get_nothing(
    settings: Settings, user: User, ana: Context, sandbox: TwilioSandbox, change: str
) -> None:
    save(ana, "mãe", "12/12")
    rows(settings, change, user.id)
    assert sweep_date_notices(EVE) == 0
    work(settings)
    assert sandbox.messages == []
    assert outbound(settings) == 0
    assert rows(settings, "select count(*) from date_notices") == [(0,)]


def test_a_tenant_without_a_plan_with_relationships_sends_nothing(
    settings: Settings, tenant: Tenant
) -> None:
    bia = make_user_with_conversation(settings, tenant, phone="5511977776666")
    save(context_for(tenant, bia), "mãe", "12/12")
    rows(settings, "update tenants set default_plan_id = null where id = %s returning id",
         tenant.id)  # fmt: skip
    assert sweep_date_notices(EVE) == 0
    assert outbound(settings) == 0


def test_a_date_deleted_before_the_sweep_sends_nothing(settings: Settings, ana: Context) -> None:
    date_id = save(ana, "mãe", "12/12")
    rows(settings, "delete from important_dates where id = %s returning id", date_id)
    assert sweep_date_notices(EVE) == 0
    assert outbound(settings) == 0


def test_a_notice_goes_with_its_date_and_outlives_its_message(
    settings: Settings, ana: Context
) -> None:
    date_id = save(ana, "mãe", "12/12")
    assert sweep_date_notices(EVE) == 1
    rows(settings, "delete from messages where purpose = 'date_notice' returning id")
    assert rows(settings, "select message_id from date_notices") == [(None,)]
    # Erasure deletes messages; the notices that point at them are found by index.
    ((index,),) = rows(settings, "select indexdef from pg_indexes where tablename = "
                       "'date_notices' and indexname = 'date_notices_message_id_idx'")  # fmt: skip
    assert index.endswith("(message_id) WHERE (message_id IS NOT NULL)")
    assert sweep_date_notices(EVE.replace(hour=10)) == 0, "still noticed once"
    rows(settings, "delete from important_dates where id = %s returning id", date_id)
    assert rows(settings, "select count(*) from date_notices") == [(0,)]


def test_a_user_without_a_conversation_is_skipped_and_noticed_once_they_write(
    settings: Settings, tenant: Tenant
) -> None:
    give_plan(settings, tenant, ["relationships"])
    lonely = make_user(settings, tenant, phone="5511955554444")
    save(context_for(tenant, lonely), "mãe", "12/12")
    assert sweep_date_notices(EVE) == 0
    assert rows(settings, "select count(*) from date_notices") == [(0,)], "nothing claimed"
    make_user_with_conversation(settings, tenant, phone="5511955554444")
    assert sweep_date_notices(EVE.replace(hour=10)) == 1


def test_each_tenant_notices_only_its_own_users(
    settings: Settings, tenant: Tenant, ana: Context
) -> None:
    other = make_tenant(settings)
    give_plan(settings, other, ["relationships"])
    carla = make_user_with_conversation(settings, other, phone="5511933332222")
    save(context_for(other, carla), "pai", "12/12", call_id="o1")
    save(ana, "mãe", "12/12")
    assert send_date_notices(str(tenant.id), EVE) == 1
    assert [n[0] for n in notices(settings)] == ["🎂 Amanhã é o aniversário da sua mãe (12/12)."]
    assert sweep_date_notices(EVE) == 1, "the other tenant's, only now"


# -- once, even when racing ------------------------------------------------------------------


def test_two_sweeps_racing_send_one_notice(
    settings: Settings, tenant: Tenant, ana: Context
) -> None:
    save(ana, "mãe", "12/12")
    start = threading.Barrier(2)
    counts: list[int] = []

    def sweep() -> None:
        start.wait()
        counts.append(send_date_notices(str(tenant.id), EVE))

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(counts) == [0, 1]
    assert outbound(settings) == 1


def test_a_second_claim_of_the_same_occurrence_is_refused(
    settings: Settings, tenant: Tenant, ana: Context
) -> None:
    date_id = save(ana, "mãe", "12/12")
    assert settings.database_url
    with psycopg.connect(settings.database_url, row_factory=psycopg.rows.dict_row) as conn:
        day = EVE.date().replace(day=12)
        assert store.claim_notice(conn, tenant.id, date_id, day) is not None
        assert store.claim_notice(conn, tenant.id, date_id, day) is None
        assert store.claim_notice(conn, tenant.id, date_id, day.replace(year=2027)) is not None
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute(
                "insert into date_notices (tenant_id, important_date_id, occurs_on) "
                "values (%s, %s, %s)",
                (make_tenant(settings, "third").id, date_id, day.replace(year=2030)),
            )


# -- outside the 24-hour window --------------------------------------------------------------


def test_outside_the_window_the_notice_goes_out_as_the_date_notice_template(
    settings: Settings, tenant: Tenant, user: User, ana: Context, sandbox: TwilioSandbox
) -> None:
    rows(settings, "update conversations set last_inbound_at = now() - interval '3 days' "
                   "where user_id = %s returning id", user.id)  # fmt: skip
    sid = register_template(
        settings, sandbox, tenant, "date_notice",
        "Oi! {{1}}: {{2}} de {{3}} ({{4}}).",
        {"1": "when", "2": "label", "3": "person", "4": "date"},
    )  # fmt: skip
    save(ana, "Maria", "12/12")
    assert sweep_date_notices(EVE) == 1
    work(settings)
    ((sent,),) = [sandbox.messages]
    assert sent["body"] == "Oi! amanhã: o aniversário de Maria (12/12)."
    assert rows(settings, "select provider_message_id, template_sid from messages where purpose = "
                          "'date_notice'") == [(sent["sid"], sid)]  # fmt: skip


def test_outside_the_window_without_a_template_the_reason_is_kept(
    settings: Settings, user: User, ana: Context, sandbox: TwilioSandbox
) -> None:
    rows(settings, "update conversations set last_inbound_at = now() - interval '3 days' "
                   "where user_id = %s returning id", user.id)  # fmt: skip
    save(ana, "Maria", "12/12")
    assert sweep_date_notices(EVE) == 1
    work(settings)
    assert sandbox.messages == []
    ((status, code, error),) = rows(settings, "select status, error_code, error from messages "
                                              "where purpose = 'date_notice'")  # fmt: skip
    assert (status, code) == ("failed", 63016)
    assert "no approved template for purpose 'date_notice'" in error


def test_admins_may_register_a_date_notice_template_with_its_variables(
    client: TestClient, settings: Settings, tenant: Tenant
) -> None:
    bearer = mint_token(settings, subject="admin@acme", role=Role.tenant_admin, tenant_id=tenant.id)
    url, headers = f"/api/v1/tenants/{tenant.id}/templates", {"Authorization": f"Bearer {bearer}"}
    template = {
        "purpose": "date_notice", "language": "pt", "content_sid": "HX" + "d" * 32,
        "body": "{{1}} é {{2}} de {{3}} ({{4}}).",
        "variables": {"1": "when", "2": "label", "3": "person", "4": "date"},
    }  # fmt: skip
    created = client.post(url, headers=headers, json=template)
    assert created.status_code == 201, created.text
    # A date's variables are a date notice's only.
    reminder = template | {"purpose": "reminder", "content_sid": "HX" + "e" * 32}
    refused = client.post(url, headers=headers, json=reminder)
    assert refused.status_code == 422 and "Unknown variable" in refused.text
    assert rows(settings, "select purpose from message_templates") == [("date_notice",)]


# -- scheduling and bad input ----------------------------------------------------------------


def test_the_sweep_is_queued_once_per_interval_across_api_processes(
    settings: Settings, redis: Redis, ana: Context
) -> None:
    assert schedule_date_notices(redis, settings) is False, "0 turns date notices off"
    every = settings.model_copy(update={"date_notice_interval_seconds": 900})
    assert schedule_date_notices(redis, every) is True
    assert schedule_date_notices(redis, every) is False, "another process queued it already"
    (job,) = Queue(QUEUE_PROCESS, connection=redis).jobs
    assert job.func_name == "server.jobs.date_notices.sweep_date_notices"
    work(settings)
    assert job.get_status(refresh=True) == "finished"


def test_conversa_sweep_runs_the_date_notices(
    settings: Settings,
    ana: Context,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `conversa sweep` runs at the real time: notices on the day, from midnight, for today.
    monkeypatch.setenv("DATE_NOTICE_DAYS_BEFORE", "0")
    monkeypatch.setenv("DATE_NOTICE_HOUR", "0")
    from server.settings import get_settings

    get_settings.cache_clear()
    save(ana, "mãe", datetime.now(ZoneInfo(SP)).strftime("%d/%m"))
    assert main(["sweep"]) == 0
    assert "queued 1 date notice(s)" in capsys.readouterr().out
    assert len(notices(settings)) == 1


@pytest.mark.parametrize("now", ["2026-12-11T09:00:00", datetime(2026, 12, 11, 9), "noon"])
def test_a_now_without_a_time_zone_is_refused(
    settings: Settings, tenant: Tenant, ana: Context, now: Any
) -> None:
    save(ana, "mãe", "12/12")
    with pytest.raises(ValueError, match=r"`now` must .* with its offset, e\.g\. 2026-12-11T09"):
        send_date_notices(str(tenant.id), now)
    with pytest.raises(ValueError, match=r"`now` must .* with its offset"):
        sweep_date_notices(now)  # not logged per tenant and swallowed
    assert outbound(settings) == 0
    assert rows(settings, "select count(*) from date_notices") == [(0,)]
