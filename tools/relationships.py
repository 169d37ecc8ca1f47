"""The relationships specialist's tools: people, the dates that matter to them, reminders.

People are kept per user by name (case-insensitive). Important dates are month and day, with a
year when known; yearly ones recur. The reminder tools live in `tools/reminders.py` and are
part of this specialist's list. Writes are idempotent per run step and tool call
(`tools._runtime.call_key`).
"""

from __future__ import annotations

import json
from datetime import date as Date
from datetime import timedelta
from typing import Any, Literal

from langchain_core.tools import tool
from langgraph.prebuilt import ToolRuntime
from pydantic import Field

from store import relationships as people
from store.relationships import SavedDate
from tools._args import ToolArgs
from tools._runtime import ToolError, call_key, scope_of, tool_db
from tools.dates import local_now, next_occurrence, resolve_date, resolve_month_day
from tools.reminders import cancel_reminder, list_reminders, propose_reminder, schedule_reminder

_MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August",
                "September", "October", "November", "December")  # fmt: skip


def _name(text: str) -> str:
    name = " ".join(text.split())
    if not name:
        raise ToolError("The person's name is empty.")
    return name


# -- people ----------------------------------------------------------------------------------


class RememberPersonArgs(ToolArgs):
    """Arguments of `remember_person`."""

    name: str = Field(min_length=1, max_length=100, description="The person's name.")
    relation: str = Field(
        default="", max_length=100, description='Who they are to the user: "irmã", "boss".'
    )
    notes: str = Field(default="", max_length=1000, description="Something to remember about them.")


@tool(args_schema=RememberPersonArgs)
def remember_person(name: str, runtime: ToolRuntime, relation: str = "", notes: str = "") -> str:
    """Remember a person in the user's life, or add to what is known about them.

    The same name (any capitalisation) updates the same person: a new relation replaces the
    old one, new notes are added to the old ones.
    """
    scope = scope_of(runtime.context)
    name, relation, notes = _name(name), relation.strip(), notes.strip()
    call_id = call_key(runtime)
    with tool_db(scope) as conn:
        known = people.lock_person(conn, scope.tenant_id, scope.user_id, name)
        if known is None or known.last_tool_call_id != call_id:
            person = people.remember_person(
                conn, scope.tenant_id, scope.user_id, name=name, relation=relation,
                notes=notes, tool_call_id=call_id,
            )  # fmt: skip
        else:
            person = known
    who = person.name + (f" ({person.relation})" if person.relation else "")
    noted = f" Notes: {person.notes}" if person.notes else ""
    return f"Remembered {who} as person #{person.id}.{noted}"


# -- important dates -------------------------------------------------------------------------


class AddImportantDateArgs(ToolArgs):
    """Arguments of `add_important_date`."""

    person_name: str = Field(min_length=1, max_length=100, description="Whose date it is.")
    kind: Literal["birthday", "anniversary", "other"] = Field(description="What the date is.")
    date: str = Field(
        max_length=60,
        description='The day: "12/03" (day/month), "12 de março", "March 12", "2026-03-12", or '
        'with the year it happened, "1990-03-12" / "12/03/1990".',
    )
    label: str = Field(
        default="", max_length=200, description='What it is, for "other" (e.g. "formatura").'
    )
    yearly: bool = Field(default=True, description="Whether it comes back every year.")


def _day_text(month: int, day: int, year: int | None) -> str:
    return f"{day} {_MONTH_NAMES[month - 1]}" + (f" {year}" if year else "")


def _date_text(saved: SavedDate, person: str) -> str:
    what = saved.label or saved.kind
    when = _day_text(saved.month, saved.day, saved.year)
    repeat = "every year" if saved.yearly else "once"
    return f"Saved {person}'s {what} on {when} ({repeat}), date #{saved.id}."


@tool(args_schema=AddImportantDateArgs)
def add_important_date(
    person_name: str,
    kind: Literal["birthday", "anniversary", "other"],
    date: str,
    runtime: ToolRuntime,
    label: str = "",
    yearly: bool = True,
) -> str:
    """Save an important date of a person (birthday, anniversary or other), yearly by default.

    Remembers the person too when they are new. A year given with a yearly date is kept as the
    year it happened (so ages and years together can be told).
    """
    scope = scope_of(runtime.context)
    name, label = _name(person_name), label.strip()
    month, day, year = resolve_month_day(date)
    if not yearly and year is None:
        year = resolve_date(date, local_now(scope.timezone).date(), lean="future").year
    call_id = call_key(runtime)
    with tool_db(scope) as conn:
        done = people.date_by_call(conn, scope.tenant_id, scope.user_id, call_id)
        if done is not None:
            return _date_text(done, done.name)
        person = people.ensure_person(conn, scope.tenant_id, scope.user_id, name)
        saved = people.save_date(
            conn, scope.tenant_id, person.id, kind=kind, month=month, day=day, year=year,
            yearly=yearly, label=label, tool_call_id=call_id,
        )  # fmt: skip
    return _date_text(saved, person.name)


class UpcomingDatesArgs(ToolArgs):
    """Arguments of `upcoming_dates`."""

    days: int = Field(default=30, ge=1, le=366, description="How many days ahead to look.")


@tool(args_schema=UpcomingDatesArgs)
def upcoming_dates(runtime: ToolRuntime, days: int = 30) -> str:
    """List the important dates of the user's people in the next `days` days, soonest first.

    Returns JSON: each date with its day (ISO), days from today, weekday, person, relation,
    kind, label and, for yearly dates with a known year, how many years it makes.
    """
    scope = scope_of(runtime.context)
    today = local_now(scope.timezone).date()
    last = today + timedelta(days=days)
    with tool_db(scope) as conn:
        rows = people.dates_of_user(conn, scope.tenant_id, scope.user_id)
    found = []
    for r in rows:
        if r.yearly:
            when = next_occurrence(r.month, r.day, today)
        else:
            assert r.year is not None  # a date that does not recur always has its year
            when = Date(r.year, r.month, r.day)
        if not today <= when <= last:
            continue
        item: dict[str, Any] = {
            "date": when.isoformat(),
            "in_days": (when - today).days,
            "weekday": when.strftime("%A"),
            "person": r.name,
            "relation": r.relation,
            "kind": r.kind,
            "label": r.label,
        }
        if r.yearly and r.year is not None:
            item["years"] = when.year - r.year
        found.append(item)
    found.sort(key=lambda item: (item["date"], item["person"].lower()))
    return json.dumps(
        {"today": today.isoformat(), "until": last.isoformat(), "dates": found},
        ensure_ascii=False,
    )


RELATIONSHIP_TOOLS = [
    remember_person,
    add_important_date,
    upcoming_dates,
    schedule_reminder,
    propose_reminder,
    list_reminders,
    cancel_reminder,
]
"""The relationships specialist's tools, in the order the model sees them."""
