"""What users read about their dates: a notice's words, the days and times messages show, and
what the relationships specialist may promise about notices."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from graphs.context import Context
from graphs.prompts import RELATIONSHIPS_PROMPT
from graphs.state import State
from nodes.specialists import system_prompt
from server.jobs import runner
from server.jobs.date_notice_text import format_day, format_moment, notice_text, user_zone
from server.settings import Settings, get_settings
from store import identity
from store.records import Tenant
from tests.toolcontext import make_user

EVE = datetime.fromisoformat("2026-12-11T09:00:00-03:00")


def test_the_wording_names_family_by_relation_and_others_by_name() -> None:
    def body(person: str, relation: str = "", language: str = "pt") -> str:
        return notice_text(kind="birthday", label="", person=person, relation=relation,
                           occurs_on=EVE.date(), days_ahead=3, language=language).body  # type: ignore[arg-type]  # fmt: skip

    assert body("dad", language="en") == "🎂 Your dad's birthday is in 3 days (Dec 11)."
    assert body("pai") == "🎂 Em 3 dias é o aniversário do seu pai (11/12)."
    assert body("Maria", "mãe") == "🎂 Em 3 dias é o aniversário de Maria (sua mãe, 11/12)."
    assert body("Pedro", "chefe") == "🎂 Em 3 dias é o aniversário de Pedro (chefe, 11/12)."
    assert body("Maria", "mãe", "en") == "🎂 Maria's birthday is in 3 days (your mom, Dec 11)."


def test_days_and_times_read_the_same_in_every_message_whatever_the_locale() -> None:
    moment = datetime(2026, 3, 5, 9, 7, tzinfo=ZoneInfo("America/Sao_Paulo"))
    assert format_day(date(2026, 3, 5), "pt") == "05/03"
    assert format_day(date(2026, 3, 5), "en") == "Mar 5"
    assert format_moment(moment, "pt") == "05/03 às 09:07"
    assert format_moment(moment, "en") == "Mar 5 at 09:07"
    assert user_zone("Mars/Olympus", "", None, "Asia/Tokyo") == ZoneInfo("Asia/Tokyo")
    assert user_zone(None, "Not a zone") == ZoneInfo("UTC")


def _relationships_prompt(days_before: int | None) -> str:
    context = Context(model="m", date_notice_days_before=days_before)
    return system_prompt(RELATIONSHIPS_PROMPT, State(local_time="2026-12-11T09:00"), context)


def test_the_specialist_promises_date_notices_only_when_the_service_sends_them() -> None:
    off, on_the_day = _relationships_prompt(None), _relationships_prompt(0)
    day_before, three = _relationships_prompt(1), _relationships_prompt(3)

    assert "{date_notices}" not in off
    assert "do not promise" in off and "may promise" not in off
    assert "notice of each saved date on the day itself, so you may promise" in on_the_day
    assert "notice of each saved date the day before, so you may promise" in day_before
    assert "notice of each saved date 3 days before, so you may promise" in three
    assert Context(model="m").date_notice_days_before is None, "Studio: notices off by default"


@pytest.mark.parametrize(("interval", "expected"), [("0", None), ("900", 2)])
def test_the_run_context_says_whether_the_service_sends_date_notices(
    settings: Settings,
    tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
    interval: str,
    expected: int | None,
) -> None:
    monkeypatch.setenv("DATE_NOTICE_INTERVAL_SECONDS", interval)
    monkeypatch.setenv("DATE_NOTICE_DAYS_BEFORE", "2")
    get_settings.cache_clear()
    user = make_user(settings, tenant)
    rights = identity.Entitlement(features=frozenset(), plan=None, messages_per_day=None)

    assert runner.context_for(tenant, user, rights).date_notice_days_before == expected
