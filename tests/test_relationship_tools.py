"""People and important dates against real PostgreSQL, through a ToolNode, under RLS.

Reminders have their own module (tests/test_reminders.py).
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from graphs.context import Context
from server.settings import Settings
from store.records import Tenant
from tests.conftest import rows
from tests.toolcontext import context_for, failed, make_tenant, make_user, ok
from tests.tooling import replay_tool, run_tool
from tools.dates import local_now
from tools.relationships import (
    RELATIONSHIP_TOOLS,
    add_important_date,
    remember_person,
    upcoming_dates,
)
from tools.reminders import cancel_reminder, list_reminders, propose_reminder, schedule_reminder


@pytest.fixture
def ana(settings: Settings, tenant: Tenant) -> Context:
    return context_for(tenant, make_user(settings, tenant))


def test_the_tools_and_their_schemas() -> None:
    assert [t.name for t in RELATIONSHIP_TOOLS] == [
        "remember_person",
        "add_important_date",
        "upcoming_dates",
        "schedule_reminder",
        "propose_reminder",
        "list_reminders",
        "cancel_reminder",
    ]
    for tool in RELATIONSHIP_TOOLS:
        schema = tool.tool_call_schema.model_json_schema()
        assert "runtime" not in schema.get("properties", {}), tool.name


def test_a_run_without_tenant_and_user_cannot_use_the_tools(settings: Settings) -> None:
    nobody = Context(tenant_id="", user_id="")
    calls = [
        (remember_person, {"name": "Ana"}),
        (add_important_date, {"person_name": "Ana", "kind": "birthday", "date": "12/03"}),
        (upcoming_dates, {}),
        (schedule_reminder, {"text": "x", "when": "em 5 minutos"}),
        (propose_reminder, {"text": "x", "when": "em 5 minutos"}),
        (list_reminders, {}),
        (cancel_reminder, {"reminder_id": 1}),
    ]
    for tool, args in calls:
        assert "no tenant and user" in failed(run_tool(tool, args, nobody)), tool.name


def test_remember_person_creates_then_updates_by_name(settings: Settings, ana: Context) -> None:
    args = {"name": "  Maria   Silva ", "relation": "irmã", "notes": "gosta de chocolate"}
    first = ok(run_tool(remember_person, args, ana, call_id="p1"))
    assert first == "Remembered Maria Silva (irmã) as person #1. Notes: gosta de chocolate"
    second = ok(run_tool(remember_person, {"name": "maria silva", "notes": "alérgica a nozes"},
                         ana, call_id="p2"))  # fmt: skip
    assert second == (
        "Remembered Maria Silva (irmã) as person #1. Notes: gosta de chocolate\nalérgica a nozes"
    )
    ok(run_tool(remember_person, {"name": "MARIA SILVA", "relation": "sister",
                                  "notes": "Gosta de chocolate"}, ana, call_id="p3"))  # fmt: skip
    assert rows(settings, "select name, relation, notes from people") == [
        ("Maria Silva", "sister", "gosta de chocolate\nalérgica a nozes")
    ]


def test_a_replayed_remember_person_writes_nothing(settings: Settings, ana: Context) -> None:
    first, again = replay_tool(remember_person, {"name": "João", "notes": "vizinho"}, ana)
    assert ok(again) == ok(first)
    assert rows(settings, "select notes from people") == [("vizinho",)]


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name is empty"),
        ({"name": "x" * 101}, "name"),
        ({"name": "Ana", "age": 3}, "age"),
        ({"relation": "irmã"}, "name"),
    ],
)
def test_remember_person_refuses_bad_arguments(
    settings: Settings, ana: Context, args: dict[str, object], complaint: str
) -> None:
    assert complaint in failed(run_tool(remember_person, args, ana))
    assert rows(settings, "select count(*) from people") == [(0,)]


@pytest.mark.parametrize(
    ("date", "stored", "said"),
    [
        ("12/03", (3, 12, None), "12 March (every year)"),
        ("12 de março", (3, 12, None), "12 March (every year)"),
        ("March 12", (3, 12, None), "12 March (every year)"),
        ("1990-03-12", (3, 12, 1990), "12 March 1990 (every year)"),
        ("12/03/1990", (3, 12, 1990), "12 March 1990 (every year)"),
    ],
)
def test_add_important_date_creates_the_person_when_new(
    settings: Settings,
    ana: Context,
    date: str,
    stored: tuple[int, int, int | None],
    said: str,
) -> None:
    answer = ok(run_tool(add_important_date, {"person_name": "Maria", "kind": "birthday",
                                              "date": date}, ana))  # fmt: skip
    assert answer == f"Saved Maria's birthday on {said}, date #1."
    assert rows(settings, "select name from people") == [("Maria",)]
    assert rows(settings, "select month, day, year, yearly, kind from important_dates") == [
        (*stored, True, "birthday")
    ]


def test_dates_attach_to_a_known_person_whatever_the_case(settings: Settings, ana: Context) -> None:
    ok(run_tool(remember_person, {"name": "Maria", "relation": "irmã"}, ana))
    ok(run_tool(add_important_date, {"person_name": "MARIA", "kind": "anniversary",
                                     "date": "05/06/2015", "label": "casamento"}, ana,
                call_id="d1"))  # fmt: skip
    assert rows(settings, "select count(*) from people") == [(1,)]
    assert rows(
        settings,
        "select p.name, d.kind, d.label from important_dates d join people p on p.id = d.person_id",
    ) == [("Maria", "anniversary", "casamento")]


def test_a_one_off_date_without_a_year_gets_the_next_one(settings: Settings, ana: Context) -> None:
    today = local_now(ana.timezone).date()
    tomorrow = today + timedelta(days=1)
    args = {"person_name": "Léo", "kind": "other", "label": "formatura", "yearly": False,
            "date": tomorrow.strftime("%d/%m")}  # fmt: skip
    ok(run_tool(add_important_date, args, ana))
    assert rows(settings, "select year, yearly from important_dates") == [(tomorrow.year, False)]


def test_the_same_date_told_twice_is_kept_once(settings: Settings, ana: Context) -> None:
    args = {"person_name": "Maria", "kind": "birthday", "date": "12/03"}
    ok(run_tool(add_important_date, args, ana, call_id="d1"))
    ok(run_tool(add_important_date, args | {"date": "1990-03-12"}, ana, call_id="d2"))
    assert rows(settings, "select month, day, year from important_dates") == [(3, 12, 1990)]


def test_a_replayed_add_important_date_writes_nothing(settings: Settings, ana: Context) -> None:
    args = {"person_name": "Maria", "kind": "birthday", "date": "12/03"}
    first, again = replay_tool(add_important_date, args, ana)
    assert ok(again) == ok(first)
    assert rows(settings, "select month, day from important_dates") == [(3, 12)]


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        ({"date": "31/02"}, "not a real day"),
        ({"date": "someday"}, "Could not understand the date"),
        ({"date": "amanhã"}, "Could not understand the date"),
        ({"kind": "wedding"}, "kind"),
        ({"person_name": "  "}, "name is empty"),
        ({"yearly": "sometimes"}, "yearly"),
        ({"user_id": "x"}, "user_id"),
    ],
)
def test_add_important_date_refuses_bad_arguments(
    settings: Settings, ana: Context, args: dict[str, object], complaint: str
) -> None:
    base = {"person_name": "Maria", "kind": "birthday", "date": "12/03"}
    assert complaint in failed(run_tool(add_important_date, base | args, ana))
    assert rows(settings, "select count(*) from important_dates") == [(0,)]
    assert rows(settings, "select count(*) from people") == [(0,)]


def test_upcoming_dates_soonest_first_within_the_window(
    settings: Settings, tenant: Tenant, ana: Context
) -> None:
    today = local_now(ana.timezone).date()

    def add(person: str, days: int, **extra: object) -> None:
        day = today + timedelta(days=days)
        args = {"person_name": person, "kind": "birthday", "date": day.isoformat()} | extra
        ok(run_tool(add_important_date, args, ana, call_id=f"call_{person}"))

    ok(run_tool(remember_person, {"name": "Maria", "relation": "irmã"}, ana))
    add("Maria", 10)
    add("Pedro", 0, kind="anniversary", yearly=False)
    add("Zé", 3, kind="other", label="cirurgia", yearly=False)
    add("Bia", 40)  # outside 30 days
    add("Caio", -1)  # yesterday: next year, outside
    add("Davi", -5, kind="other", yearly=False)  # once, already past
    bruno = context_for(tenant, make_user(settings, tenant, phone="5511977776666"))
    args = {"person_name": "Maria", "kind": "birthday", "date": today.isoformat()}
    ok(run_tool(add_important_date, args, bruno, call_id="call_b"))

    listed = json.loads(ok(run_tool(upcoming_dates, {}, ana)))
    assert listed["today"] == today.isoformat()
    assert [(d["person"], d["in_days"], d["kind"], d["label"]) for d in listed["dates"]] == [
        ("Pedro", 0, "anniversary", ""),
        ("Zé", 3, "other", "cirurgia"),
        ("Maria", 10, "birthday", ""),
    ]
    maria = listed["dates"][2]
    assert maria["relation"] == "irmã"
    assert maria["date"] == (today + timedelta(days=10)).isoformat()
    assert maria["years"] == 0, "its year was given: this is the day itself"
    assert "years" not in listed["dates"][0], "a one-off date has no count of years"

    wider = json.loads(ok(run_tool(upcoming_dates, {"days": 366}, ana)))
    assert [d["person"] for d in wider["dates"]] == ["Pedro", "Zé", "Maria", "Bia", "Caio"]
    assert wider["dates"][-1]["years"] == 1


@pytest.mark.parametrize("days", [0, 367, -3, 2.5, "soon"])
def test_upcoming_dates_refuses_bad_windows(settings: Settings, ana: Context, days: object) -> None:
    assert "days" in failed(run_tool(upcoming_dates, {"days": days}, ana))


def test_people_and_dates_stay_within_their_tenant(
    settings: Settings, tenant: Tenant, ana: Context
) -> None:
    other_tenant = make_tenant(settings)
    twin = context_for(other_tenant, make_user(settings, other_tenant))
    today = local_now(ana.timezone).date().isoformat()
    ok(run_tool(add_important_date, {"person_name": "Maria", "kind": "birthday", "date": today},
                twin, call_id="same"))  # fmt: skip
    mine = ok(run_tool(add_important_date, {"person_name": "Maria", "kind": "birthday",
                                            "date": today}, ana, call_id="same"))  # fmt: skip
    assert mine.startswith("Saved Maria's birthday")
    assert rows(settings, "select count(*) from important_dates") == [(2,)]
    assert len(json.loads(ok(run_tool(upcoming_dates, {}, ana)))["dates"]) == 1
