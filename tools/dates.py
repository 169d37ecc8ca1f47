"""Understand the dates users write, in Portuguese or English, relative to their "today".

Pure functions: every one takes the user's local today and returns a value or raises `ToolError`
with the formats it accepts, so the model can try again. Day and month written with numbers are
read in Brazilian order: "12/03" is the 12th of March. Times of day, and the words shared with
them (counts, units), are read by :mod:`tools.times` on top of these.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from graphs.language import fold
from tools._runtime import ToolError

Direction = Literal["past", "future"]
"""Which way an ambiguous date leans: a purchase was in the past, a reminder is in the future."""

DATE_FORMATS = (
    'hoje/today, ontem/yesterday, anteontem, amanhã/tomorrow, a weekday ("sexta passada", '
    '"last friday", "segunda que vem", "next monday"), "há 3 dias"/"3 days ago", "12/03" '
    '(day/month), "12/03/2025", "2025-03-12", "12 de março", "March 12"'
)
PERIODS = "today, yesterday, this_week, last_week, this_month, last_month, this_year, YYYY-MM"

MONTHS = {
    "janeiro": 1, "jan": 1, "january": 1,
    "fevereiro": 2, "fev": 2, "february": 2, "feb": 2,
    "marco": 3, "mar": 3, "march": 3,
    "abril": 4, "abr": 4, "april": 4, "apr": 4,
    "maio": 5, "mai": 5, "may": 5,
    "junho": 6, "jun": 6, "june": 6,
    "julho": 7, "jul": 7, "july": 7,
    "agosto": 8, "ago": 8, "august": 8, "aug": 8,
    "setembro": 9, "set": 9, "september": 9, "sep": 9, "sept": 9,
    "outubro": 10, "out": 10, "october": 10, "oct": 10,
    "novembro": 11, "nov": 11, "november": 11,
    "dezembro": 12, "dez": 12, "december": 12, "dec": 12,
}  # fmt: skip
WEEKDAYS = {
    "segunda": 0, "segunda-feira": 0, "monday": 0, "mon": 0,
    "terca": 1, "terca-feira": 1, "tuesday": 1, "tue": 1,
    "quarta": 2, "quarta-feira": 2, "wednesday": 2, "wed": 2,
    "quinta": 3, "quinta-feira": 3, "thursday": 3, "thu": 3,
    "sexta": 4, "sexta-feira": 4, "friday": 4, "fri": 4,
    "sabado": 5, "saturday": 5, "sat": 5,
    "domingo": 6, "sunday": 6, "sun": 6,
}  # fmt: skip
_OFFSETS = {
    "hoje": 0, "today": 0,
    "ontem": -1, "yesterday": -1,
    "anteontem": -2, "antes de ontem": -2, "the day before yesterday": -2,
    "day before yesterday": -2,
    "amanha": 1, "tomorrow": 1,
    "depois de amanha": 2, "the day after tomorrow": 2, "day after tomorrow": 2,
}  # fmt: skip
_NUMBERS = {
    "um": 1, "uma": 1, "a": 1, "an": 1, "one": 1, "dois": 2, "duas": 2, "two": 2,
    "tres": 3, "three": 3, "quatro": 4, "four": 4, "cinco": 5, "five": 5, "dez": 10, "ten": 10,
    "quinze": 15, "fifteen": 15, "vinte": 20, "twenty": 20, "trinta": 30, "thirty": 30,
}  # fmt: skip
UNITS = {
    "min": "minutes", "mins": "minutes", "minuto": "minutes", "minutos": "minutes",
    "minute": "minutes", "minutes": "minutes",
    "h": "hours", "hr": "hours", "hrs": "hours", "hora": "hours", "horas": "hours",
    "hour": "hours", "hours": "hours",
    "dia": "days", "dias": "days", "day": "days", "days": "days",
    "semana": "weeks", "semanas": "weeks", "week": "weeks", "weeks": "weeks",
}  # fmt: skip
_LAST = r"(?:passad[oa]|anterior|last|past|ultim[oa]|previous)"
_NEXT = r"(?:que vem|proxim[oa]|next|coming|seguinte)"
_AGO = re.compile(r"(?:ha |faz )?(\d{1,3}|\w+) (dias?|semanas?|days?|weeks?)(?: atras| ago)?")
_ISO_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_DAY_MONTH_NAME = re.compile(
    r"(\d{1,2})(?:st|nd|rd|th|o|º)?(?: de)? ([a-z]+)\.?(?:,? (?:de )?(\d{4}))?"
)
_MONTH_NAME_DAY = re.compile(r"([a-z]+)\.? (\d{1,2})(?:st|nd|rd|th)?(?:,? (\d{4}))?")
FILLER = re.compile(r"^(?:n[oa]s? |n[ae]st[ae] |est[ae] |ess[ae] |this |on |em |dia )+")


def normalize(text: str) -> str:
    """Lower-case, strip accents and collapse spaces (so "Março" and "marco" read the same)."""
    return re.sub(r"\s+", " ", fold(text.strip())).strip(" .,")


def local_now(timezone: str) -> datetime:
    """Return the current time in `timezone` (an IANA name), timezone-aware."""
    return datetime.now(zone(timezone))


def zone(timezone: str) -> ZoneInfo:
    """Return the `ZoneInfo` for `timezone`, or raise `ToolError` when it is not a known zone."""
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ToolError(f"The user's timezone {timezone!r} is not a known IANA zone.") from exc


# -- dates -----------------------------------------------------------------------------------


def resolve_date(text: str, today: date, *, lean: Direction = "past") -> date:
    """Return the calendar date `text` means, seen from `today`.

    Without a year, "12/03" is the nearest such day in the `lean` direction (today included);
    so is a bare weekday ("sexta").
    """
    found = parse_date(normalize(text), today, lean)
    if found is None:
        raise ToolError(f"Could not understand the date {text!r}. Accepted: {DATE_FORMATS}.")
    return found


def parse_date(text: str, today: date, lean: Direction) -> date | None:
    """Return the date normalized `text` means, or None when it is no known form."""
    if not text:
        return None
    if text in _OFFSETS:
        return today + timedelta(days=_OFFSETS[text])
    ago = text.startswith(("ha ", "faz ")) or text.endswith((" atras", " ago"))
    if ago and (match := _AGO.fullmatch(text)) and (count := count_word(match[1])) is not None:
        return today - timedelta(**{UNITS[match[2]]: count})
    if match := _ISO_DATE.fullmatch(text):
        return _valid(int(match[1]), int(match[2]), int(match[3]))
    if match := re.fullmatch(r"(\d{1,2})[/.-](\d{1,2})(?:[/.-](\d{2}|\d{4}))?", text):
        return _day_month(int(match[1]), int(match[2]), _year(match[3]), today, lean)
    words = FILLER.sub("", text)
    if (match := _DAY_MONTH_NAME.fullmatch(words)) and match[2] in MONTHS:
        return _day_month(int(match[1]), MONTHS[match[2]], _year(match[3]), today, lean)
    if (match := _MONTH_NAME_DAY.fullmatch(words)) and match[1] in MONTHS:
        return _day_month(int(match[2]), MONTHS[match[1]], _year(match[3]), today, lean)
    if match := re.fullmatch(r"(\d{1,2})", words):
        return _day_of_month(int(match[1]), today, lean)
    return _weekday(words, today, lean)


def count_word(word: str) -> int | None:
    """Read a count written in digits or as a small number word ("3", "três", "three")."""
    return int(word) if word.isdigit() else _NUMBERS.get(word)


def _year(text: str | None) -> int | None:
    if text is None:
        return None
    return 2000 + int(text) if len(text) == 2 else int(text)


def _valid(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _day_month(day: int, month: int, year: int | None, today: date, lean: Direction) -> date | None:
    if year is not None:
        return _valid(year, month, day)
    if _valid(2000, month, day) is None:  # 2000 is a leap year: 29/02 is a real day
        return None
    step = -1 if lean == "past" else 1
    for offset in range(0, 9):  # a 29th of February may be up to eight years away
        found = _valid(today.year + step * offset, month, day)
        if found is not None and (found <= today if lean == "past" else found >= today):
            return found
    return None


def _day_of_month(day: int, today: date, lean: Direction) -> date | None:
    if not 1 <= day <= 31:
        return None
    year, month = today.year, today.month
    for _ in range(12):
        found = _valid(year, month, day)
        if found is not None and (found <= today if lean == "past" else found >= today):
            return found
        month += -1 if lean == "past" else 1
        if month == 0:
            year, month = year - 1, 12
        elif month == 13:
            year, month = year + 1, 1
    return None


def _weekday(text: str, today: date, lean: Direction) -> date | None:
    names = "|".join(sorted((re.escape(n) for n in WEEKDAYS), key=len, reverse=True))
    match = re.fullmatch(
        rf"(?:(?P<pre>{_LAST}|{_NEXT}) )?(?P<day>{names})(?: (?P<post>{_LAST}|{_NEXT}))?", text
    )
    if match is None or (match["pre"] and match["post"]):
        return None
    target = WEEKDAYS[match["day"]]
    qualifier = match["pre"] or match["post"]
    if qualifier is None:
        if lean == "past":
            return today - timedelta(days=(today.weekday() - target) % 7)
        return today + timedelta(days=(target - today.weekday()) % 7)
    if re.fullmatch(_LAST, qualifier):
        return today - timedelta(days=(today.weekday() - target - 1) % 7 + 1)
    return today + timedelta(days=(target - today.weekday() - 1) % 7 + 1)


# -- month and day (important dates) ---------------------------------------------------------


def resolve_month_day(text: str) -> tuple[int, int, int | None]:
    """Return (month, day, year or None) for a date that may come without a year.

    For birthdays and anniversaries: "12/03", "12 de março", "March 12", "1990-03-12".
    """
    clean = normalize(text)
    words = FILLER.sub("", clean)
    parts: tuple[int, int, int | None] | None = None
    if match := _ISO_DATE.fullmatch(clean):
        parts = (int(match[2]), int(match[3]), int(match[1]))
    elif match := re.fullmatch(r"(\d{1,2})[/.-](\d{1,2})(?:[/.-](\d{4}))?", clean):
        parts = (int(match[2]), int(match[1]), _year(match[3]))
    elif (match := _DAY_MONTH_NAME.fullmatch(words)) and match[2] in MONTHS:
        parts = (MONTHS[match[2]], int(match[1]), _year(match[3]))
    elif (match := _MONTH_NAME_DAY.fullmatch(words)) and match[1] in MONTHS:
        parts = (MONTHS[match[1]], int(match[2]), _year(match[3]))
    if parts is None:
        raise ToolError(
            f'Could not understand the date {text!r}. Accepted: "12/03" (day/month), '
            '"12/03/1990", "12 de março", "March 12", "1990-03-12".'
        )
    month, day, year = parts
    if _valid(year if year is not None else 2000, month, day) is None:
        raise ToolError(f"{text!r} is not a real day of the calendar.")
    if year is not None and not 1900 <= year <= 2200:
        raise ToolError(f"The year {year} in {text!r} is out of range (1900-2200).")
    return month, day, year


def next_occurrence(month: int, day: int, today: date) -> date:
    """Return the next date on or after `today` that falls on this month and day.

    The 29th of February falls on the 28th in years without one.
    """
    for year in (today.year, today.year + 1):
        found = _valid(year, month, day) or date(year, month, day - 1)
        if found >= today:
            return found
    raise AssertionError("unreachable: next year always has the day")


# -- periods ---------------------------------------------------------------------------------


def resolve_period(period: str, today: date) -> tuple[date, date]:
    """Return the [first, last] days (inclusive) of a reporting period seen from `today`.

    Weeks start on Monday.
    """
    name = period.strip().lower().replace(" ", "_").replace("-", "_")
    monday = today - timedelta(days=today.weekday())
    month_start = today.replace(day=1)
    if name == "today":
        return today, today
    if name == "yesterday":
        return today - timedelta(1), today - timedelta(1)
    if name == "this_week":
        return monday, monday + timedelta(6)
    if name == "last_week":
        return monday - timedelta(7), monday - timedelta(1)
    if name == "this_month":
        return month_start, _month_end(month_start)
    if name == "last_month":
        last = month_start - timedelta(1)
        return last.replace(day=1), last
    if name == "this_year":
        return date(today.year, 1, 1), date(today.year, 12, 31)
    if match := re.fullmatch(r"(\d{4})_(\d{2})", name):
        year, month = int(match[1]), int(match[2])
        if 1 <= month <= 12 and 1900 <= year <= 2200:
            start = date(year, month, 1)
            return start, _month_end(start)
    raise ToolError(f"Unknown period {period!r}. Use one of: {PERIODS} (e.g. 2026-03).")


def _month_end(start: date) -> date:
    following = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return following - timedelta(1)
