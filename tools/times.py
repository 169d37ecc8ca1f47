"""Understand the moments users write ("amanhã às 9h", "in 5 minutes"), in their timezone.

Built on :mod:`tools.dates` for the day part; this module reads clock times ("9h", "18:30",
"3pm", "meio-dia"), relative delays and ISO timestamps, and places the result in the user's
zone. Like the date functions, it raises `ToolError` with the formats it accepts.
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta

from tools._runtime import ToolError
from tools.dates import FILLER, UNITS, WEEKDAYS, count_word, normalize, parse_date

DATETIME_FORMATS = (
    '"2026-11-26T09:00" (local time), "em 10 minutos", "daqui a 2 horas", "in 5 minutes", '
    '"amanhã às 9h", "tomorrow at 9am", "hoje às 18:30", "sexta às 14h", "26/11 às 9h"'
)


def resolve_datetime(text: str, now: datetime) -> datetime:
    """Return the moment `text` means, as an aware datetime in `now`'s timezone.

    `now` is the user's local time (aware). A time alone ("às 15h") is today, or tomorrow
    when that hour has passed; a weekday or a day without a year is the next one.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    found = _datetime(normalize(text), now)
    if found is None:
        raise ToolError(
            f"Could not understand the time {text!r}. Accepted: {DATETIME_FORMATS}. "
            "A date alone is not enough: say the time too."
        )
    return found


def _datetime(text: str, now: datetime) -> datetime | None:
    """Return the moment normalized `text` means, or None when it is no known form."""
    tz = now.tzinfo
    assert tz is not None
    if match := re.fullmatch(r"(\d{4}-\d{2}-\d{2})[t ](\d{1,2}:\d{2}(?::\d{2})?)(.*)", text):
        try:
            parsed = datetime.fromisoformat(f"{match[1]}T{match[2]}{match[3].upper()}")
        except ValueError:
            return None
        if parsed.tzinfo is None:
            return _localize(parsed, now)
        try:
            return parsed.astimezone(tz)
        except OverflowError:  # "9999-12-31T23:59-14:00": past the calendar's end in `tz`
            return None
    if match := _RELATIVE.fullmatch(text):
        count, unit = count_word(match["n"]), UNITS.get(match["unit"])
        # "9h" alone is nine o'clock, not nine hours from now: hours need "em"/"in".
        explicit = match["pre"] or match["post"] or (match["space"] and unit != "hours")
        if count is not None and unit is not None and explicit:
            return now + timedelta(**{unit: count})
    if text in ("meia hora", "em meia hora", "daqui a meia hora", "in half an hour",
                "half an hour"):  # fmt: skip
        return now + timedelta(minutes=30)
    day_text, clock = _split_time(text)
    if clock is None:
        return None
    if not day_text:  # a time alone: its next occurrence
        at = _localize(datetime.combine(now.date(), clock), now)
        tomorrow = _localize(datetime.combine(now.date() + timedelta(1), clock), now)
        return at if at > now else tomorrow
    day = parse_date(day_text, now.date(), "future")
    if day is None:
        return None
    at = _localize(datetime.combine(day, clock), now)
    if at <= now and _is_bare_weekday(day_text):
        at = _localize(datetime.combine(day + timedelta(7), clock), now)
    return at


_RELATIVE = re.compile(
    r"(?P<pre>(?:em|daqui a|daqui|dentro de|in|within|after) )?(?P<n>\d{1,4}|[a-z]+)"
    r"(?P<space> )?(?P<unit>[a-z]+)(?P<post> from now| a partir de agora| later| depois)?"
)


def _localize(naive: datetime, now: datetime) -> datetime:
    """Attach `now`'s zone to a wall-clock time (`fold` keeps the first of a repeated hour)."""
    return naive.replace(tzinfo=now.tzinfo)


def _is_bare_weekday(text: str) -> bool:
    return FILLER.sub("", text) in WEEKDAYS


_CLOCK = (
    r"(?P<h>\d{1,2})(?:(?::|h|\.)(?P<m>\d{2}))?\s*(?P<suffix>h|hs|hrs|horas|am|pm|a\.m\.|p\.m\.)?"
    r"(?: (?P<part>da manha|da tarde|da noite|de manha|de tarde|de noite|in the morning"
    r"|in the afternoon|in the evening|at night))?"
)
_NAMED_TIMES = {"meio-dia": time(12), "meio dia": time(12), "noon": time(12),
                "meia-noite": time(0), "meia noite": time(0), "midnight": time(0)}  # fmt: skip


def _split_time(text: str) -> tuple[str, time | None]:
    """Split "amanhã às 9h" into ("amanhã", 09:00); the time may come first or last."""
    connector = r"(?:as|a|at|@|ao|by)"
    for name, clock in _NAMED_TIMES.items():
        if match := re.fullmatch(rf"(?:(.*?) )?(?:{connector} )?{name}", text):
            return re.sub(rf"(?:^| ){connector}$", "", match[1] or "").strip(), clock
    if match := re.fullmatch(rf"(?:(?P<day>.*?) )?(?:{connector} )?{_CLOCK}", text):
        clock = _clock(match)
        day = re.sub(rf"(?:^| ){connector}$", "", match["day"] or "").strip()
        if clock is not None and (match["suffix"] or match["m"] or match["part"] or _said_at(text)):
            return day, clock
    if match := re.fullmatch(rf"(?:{connector} )?{_CLOCK} (?P<day>.+)", text):
        clock = _clock(match)
        if clock is not None and (match["suffix"] or match["m"] or match["part"]):
            return match["day"].strip(), clock
    return text, None


def _said_at(text: str) -> bool:
    """Whether a bare number is introduced as a time ("amanhã às 9"), not a day ("dia 9")."""
    return re.search(r"(?:^| )(?:as|a|at|@)(?: \d{1,2})$", text) is not None


def _clock(match: re.Match[str]) -> time | None:
    hour, minute = int(match["h"]), int(match["m"] or 0)
    suffix = (match["suffix"] or "").replace(".", "")
    part = match["part"] or ""
    if suffix in ("am", "pm"):
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if suffix == "pm" else 0)
    elif any(w in part for w in ("tarde", "noite", "afternoon", "evening", "night")) and hour < 12:
        hour += 12
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        return None
    return time(hour, minute)
