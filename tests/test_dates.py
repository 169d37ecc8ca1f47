"""Dates and times as users write them, resolved against a fixed local "now"."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from tools._runtime import ToolError
from tools.dates import (
    next_occurrence,
    resolve_date,
    resolve_month_day,
    resolve_period,
    zone,
)
from tools.times import resolve_datetime

SP = ZoneInfo("America/Sao_Paulo")
TODAY = date(2026, 11, 25)  # a Wednesday
NOW = datetime(2026, 11, 25, 11, 30, tzinfo=SP)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hoje", "2026-11-25"),
        ("today", "2026-11-25"),
        ("Ontem", "2026-11-24"),
        ("yesterday", "2026-11-24"),
        ("anteontem", "2026-11-23"),
        ("the day before yesterday", "2026-11-23"),
        ("amanhã", "2026-11-26"),
        ("amanha", "2026-11-26"),
        ("tomorrow", "2026-11-26"),
        ("depois de amanhã", "2026-11-27"),
        ("sexta passada", "2026-11-20"),
        ("na sexta-feira passada", "2026-11-20"),
        ("última sexta", "2026-11-20"),
        ("last friday", "2026-11-20"),
        ("quarta passada", "2026-11-18"),  # today is a Wednesday: a week ago
        ("last wednesday", "2026-11-18"),
        ("sábado passado", "2026-11-21"),
        ("domingo passado", "2026-11-22"),
        ("sexta", "2026-11-20"),  # bare weekday, leaning to the past
        ("Friday", "2026-11-20"),
        ("quarta", "2026-11-25"),
        ("segunda que vem", "2026-11-30"),
        ("próxima segunda", "2026-11-30"),
        ("next monday", "2026-11-30"),
        ("quarta que vem", "2026-12-02"),
        ("há 3 dias", "2026-11-22"),
        ("3 days ago", "2026-11-22"),
        ("12/03", "2026-03-12"),  # day/month, Brazilian order
        ("25/11", "2026-11-25"),
        ("26/11", "2025-11-26"),  # leaning to the past: last year's
        ("12/03/2025", "2025-03-12"),
        ("12/03/25", "2025-03-12"),
        ("12.03.2025", "2025-03-12"),
        ("2025-03-12", "2025-03-12"),
        ("12 de março", "2026-03-12"),
        ("12 de Março de 2024", "2024-03-12"),
        ("1º de maio", "2026-05-01"),
        ("12 mar", "2026-03-12"),
        ("March 12", "2026-03-12"),
        ("march 12th, 2025", "2025-03-12"),
        ("12 March 2025", "2025-03-12"),
        ("dia 20", "2026-11-20"),
        ("dia 30", "2026-10-30"),
        ("29/02", "2024-02-29"),
    ],
)
def test_dates_leaning_to_the_past(text: str, expected: str) -> None:
    assert resolve_date(text, TODAY).isoformat() == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sexta", "2026-11-27"),
        ("quarta", "2026-11-25"),
        ("26/11", "2026-11-26"),
        ("24/11", "2027-11-24"),
        ("dia 20", "2026-12-20"),
        ("29/02", "2028-02-29"),
    ],
)
def test_dates_leaning_to_the_future(text: str, expected: str) -> None:
    assert resolve_date(text, TODAY, lean="future").isoformat() == expected


@pytest.mark.parametrize(
    "text",
    ["", "outro dia", "31/02", "31/02/2025", "2026-02-30", "13/13", "sexta terça", "12 de brumário",
     "passada sexta passada", "32", "in 3 days"],
)  # fmt: skip
def test_unparseable_dates_name_the_accepted_formats(text: str) -> None:
    with pytest.raises(ToolError, match=r"Accepted: hoje/today.*12 de março"):
        resolve_date(text, TODAY)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-26T09:00", "2026-11-26T09:00:00-03:00"),
        ("2026-11-26 09:00:30", "2026-11-26T09:00:30-03:00"),
        ("2026-11-26T12:00Z", "2026-11-26T09:00:00-03:00"),
        ("2026-11-26T09:00-05:00", "2026-11-26T11:00:00-03:00"),
        ("em 2 minutos", "2026-11-25T11:32:00-03:00"),
        ("em 30min", "2026-11-25T12:00:00-03:00"),
        ("daqui a 1 hora", "2026-11-25T12:30:00-03:00"),
        ("daqui a uma hora", "2026-11-25T12:30:00-03:00"),
        ("em 1h", "2026-11-25T12:30:00-03:00"),
        ("em 3 dias", "2026-11-28T11:30:00-03:00"),
        ("10 minutos", "2026-11-25T11:40:00-03:00"),
        ("in 5 minutes", "2026-11-25T11:35:00-03:00"),
        ("in an hour", "2026-11-25T12:30:00-03:00"),
        ("in 2 hours", "2026-11-25T13:30:00-03:00"),
        ("em meia hora", "2026-11-25T12:00:00-03:00"),
        ("amanhã às 9h", "2026-11-26T09:00:00-03:00"),
        ("amanha as 9", "2026-11-26T09:00:00-03:00"),
        ("amanhã às 9h30", "2026-11-26T09:30:00-03:00"),
        ("amanhã às 8 da noite", "2026-11-26T20:00:00-03:00"),
        ("amanhã ao meio-dia", "2026-11-26T12:00:00-03:00"),
        ("tomorrow at 9am", "2026-11-26T09:00:00-03:00"),
        ("tomorrow at 9:30 pm", "2026-11-26T21:30:00-03:00"),
        ("9am tomorrow", "2026-11-26T09:00:00-03:00"),
        ("hoje às 18:30", "2026-11-25T18:30:00-03:00"),
        ("today at 6pm", "2026-11-25T18:00:00-03:00"),
        ("às 15h", "2026-11-25T15:00:00-03:00"),
        ("às 10h", "2026-11-26T10:00:00-03:00"),  # passed today: tomorrow
        ("sexta às 14h", "2026-11-27T14:00:00-03:00"),
        ("quarta às 10h", "2026-12-02T10:00:00-03:00"),  # today's 10h has passed: next week
        ("next monday at 9am", "2026-11-30T09:00:00-03:00"),
        ("26/11 às 9h", "2026-11-26T09:00:00-03:00"),
        ("12 de dezembro às 8h", "2026-12-12T08:00:00-03:00"),
    ],
)
def test_datetimes_in_the_users_zone(text: str, expected: str) -> None:
    assert resolve_datetime(text, NOW).isoformat() == expected


def test_a_past_time_today_is_returned_as_is_for_the_caller_to_refuse() -> None:
    assert resolve_datetime("hoje às 8h", NOW).isoformat() == "2026-11-25T08:00:00-03:00"


@pytest.mark.parametrize(
    "text",
    ["", "amanhã", "2026-11-26", "daqui a pouco", "amanhã 9", "25:00", "amanhã às 25h",
     "tomorrow at 13pm", "em 5 anos", "blah às 9h", "2026-11-26T25:00"],
)  # fmt: skip
def test_unparseable_datetimes_ask_for_a_time(text: str) -> None:
    with pytest.raises(ToolError, match=r"Accepted:.*say the time too"):
        resolve_datetime(text, NOW)


def test_datetimes_need_an_aware_now() -> None:
    with pytest.raises(ValueError, match="aware"):
        resolve_datetime("em 5 minutos", datetime(2026, 11, 25, 11, 30))


def test_wall_clock_times_follow_the_zone_rules() -> None:
    new_york = datetime(2026, 3, 7, 12, 0, tzinfo=ZoneInfo("America/New_York"))
    after_dst = resolve_datetime("tomorrow at 9am", new_york)
    assert after_dst.isoformat() == "2026-03-08T09:00:00-04:00"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12/03", (3, 12, None)),
        ("12/03/1990", (3, 12, 1990)),
        ("12 de março", (3, 12, None)),
        ("12 de março de 1990", (3, 12, 1990)),
        ("March 12", (3, 12, None)),
        ("March 12, 1990", (3, 12, 1990)),
        ("2026-03-12", (3, 12, 2026)),
        ("1990-03-12", (3, 12, 1990)),
        ("29/02", (2, 29, None)),
    ],
)
def test_month_and_day_with_an_optional_year(
    text: str, expected: tuple[int, int, int | None]
) -> None:
    assert resolve_month_day(text) == expected


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("31/04", "not a real day"),
        ("29/02/2025", "not a real day"),
        ("1850-03-12", "out of range"),
        ("amanhã", "Could not understand"),
        ("13/13", "not a real day"),
        ("someday", "Could not understand"),
    ],
)
def test_bad_month_days_are_refused(text: str, complaint: str) -> None:
    with pytest.raises(ToolError, match=complaint):
        resolve_month_day(text)


@pytest.mark.parametrize(
    ("month", "day", "expected"),
    [(11, 25, "2026-11-25"), (11, 24, "2027-11-24"), (12, 1, "2026-12-01"), (2, 29, "2027-02-28")],
)
def test_next_occurrence(month: int, day: int, expected: str) -> None:
    assert next_occurrence(month, day, TODAY).isoformat() == expected


@pytest.mark.parametrize(
    ("period", "first", "last"),
    [
        ("today", "2026-11-25", "2026-11-25"),
        ("yesterday", "2026-11-24", "2026-11-24"),
        ("this_week", "2026-11-23", "2026-11-29"),
        ("last_week", "2026-11-16", "2026-11-22"),
        ("this_month", "2026-11-01", "2026-11-30"),
        ("This Month", "2026-11-01", "2026-11-30"),
        ("last_month", "2026-10-01", "2026-10-31"),
        ("this_year", "2026-01-01", "2026-12-31"),
        ("2026-02", "2026-02-01", "2026-02-28"),
        ("2024-02", "2024-02-01", "2024-02-29"),
        ("2025-12", "2025-12-01", "2025-12-31"),
    ],
)
def test_periods(period: str, first: str, last: str) -> None:
    start, end = resolve_period(period, TODAY)
    assert (start.isoformat(), end.isoformat()) == (first, last)


def test_last_month_in_january_is_last_years_december() -> None:
    start, end = resolve_period("last_month", date(2026, 1, 10))
    assert (start.isoformat(), end.isoformat()) == ("2025-12-01", "2025-12-31")


@pytest.mark.parametrize("period", ["forever", "2026-13", "2026-1", "11/2026", ""])
def test_unknown_periods_list_the_accepted_ones(period: str) -> None:
    with pytest.raises(ToolError, match="this_week, last_week, this_month"):
        resolve_period(period, TODAY)


def test_unknown_timezones_are_a_tool_error() -> None:
    with pytest.raises(ToolError, match="Mars/Olympus"):
        zone("Mars/Olympus")
