"""Word a date notice in the user's language: "🎂 Amanhã é o aniversário da sua mãe (12/12)."

Pure functions of the saved date, its person and how many days ahead it falls. A person saved
under a family word ("mãe", "mom") is spoken of as the user's ("da sua mãe", "your mom");
anyone else by name, with their relation when one is known ("de Maria (chefe)").

Days and times that messages show the user (a date notice's day, a reminder's time) are
written here too, with fixed month names whatever the process's locale, in the zone
`user_zone` picks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal
from zoneinfo import ZoneInfo

import structlog

log = structlog.get_logger(__name__)

Language = Literal["pt", "en"]

_KIN: tuple[tuple[str, Literal["f", "m"], str], ...] = (
    ("mãe", "f", "mom"), ("pai", "m", "dad"), ("avó", "f", "grandma"), ("avô", "m", "grandpa"),
    ("irmã", "f", "sister"), ("irmão", "m", "brother"), ("filha", "f", "daughter"),
    ("filho", "m", "son"), ("esposa", "f", "wife"), ("marido", "m", "husband"),
    ("namorada", "f", "girlfriend"), ("namorado", "m", "boyfriend"), ("tia", "f", "aunt"),
    ("tio", "m", "uncle"), ("sogra", "f", "mother-in-law"), ("sogro", "m", "father-in-law"),
    ("madrinha", "f", "godmother"), ("padrinho", "m", "godfather"),
)  # fmt: skip
"""Family words, in Portuguese with their gender, and in English."""
_KIN_BY_WORD = {
    **{pt: (pt, gender, en) for pt, gender, en in _KIN},
    **{en: (pt, gender, en) for pt, gender, en in _KIN},
    "mae": ("mãe", "f", "mom"), "mother": ("mãe", "f", "mom"), "mum": ("mãe", "f", "mom"),
    "father": ("pai", "m", "dad"), "esposo": ("marido", "m", "husband"),
}  # fmt: skip

_WHAT: dict[str, dict[Language, str]] = {
    "birthday": {"pt": "o aniversário", "en": "birthday"},
    "anniversary": {"pt": "o aniversário de casamento", "en": "anniversary"},
    "other": {"pt": "uma data especial", "en": "special date"},
}
_EMOJI = {"birthday": "🎂", "anniversary": "💍", "other": "📅"}
_MONTHS_EN = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class NoticeText:
    """A notice's body and the named variables its WhatsApp template may use."""

    body: str
    variables: dict[str, str]


def _when(days_ahead: int, language: Language) -> str:
    if language == "pt":
        words = {0: "hoje", 1: "amanhã", 2: "depois de amanhã"}
        return words.get(days_ahead, f"em {days_ahead} dias")
    return {0: "today", 1: "tomorrow"}.get(days_ahead, f"in {days_ahead} days")


def format_day(day: date, language: Language) -> str:
    """Return `day` as the user reads it: "12/12" in Portuguese, "Dec 12" in English."""
    if language == "pt":
        return f"{day.day:02d}/{day.month:02d}"
    return f"{_MONTHS_EN[day.month - 1]} {day.day}"


def format_moment(moment: datetime, language: Language) -> str:
    """Return a local date and time as the user reads it: "12/12 às 09:00", "Dec 12 at 09:00"."""
    at = "às" if language == "pt" else "at"
    return f"{format_day(moment.date(), language)} {at} {moment:%H:%M}"


def user_zone(*names: str | None) -> ZoneInfo:
    """Return the first of `names` (the user's zone, then the tenant's) that is a known IANA
    zone; UTC when none is."""
    # Imported here: the API's relay imports this module's callers, and tools pull in LangGraph.
    from tools._runtime import ToolError
    from tools.dates import zone

    for name in names:
        if name:
            try:
                return zone(name)
            except ToolError:
                log.warning("unknown time zone; trying the next", timezone=name)
    return ZoneInfo("UTC")


def _owner(person: str, relation: str, language: Language) -> tuple[str, str]:
    """Return whose date it is ("da sua mãe", "your mom", "de Maria", "Maria") and an aside
    naming the relation ("sua mãe, ", "boss, ", or "")."""
    kin = _KIN_BY_WORD.get(person.strip().lower())
    related = _KIN_BY_WORD.get(relation.strip().lower())
    if language == "pt":
        if kin is not None:
            return ("da sua " if kin[1] == "f" else "do seu ") + kin[0], ""
        if related is not None:
            return f"de {person}", f"{'sua' if related[1] == 'f' else 'seu'} {related[0]}, "
        return f"de {person}", f"{relation}, " if relation else ""
    if kin is not None:
        return f"your {kin[2]}", ""
    if related is not None:
        return person, f"your {related[2]}, "
    return person, f"{relation}, " if relation else ""


def notice_text(
    *,
    kind: str,
    label: str,
    person: str,
    relation: str,
    occurs_on: date,
    days_ahead: int,
    language: Language,
) -> NoticeText:
    """Word the notice that `person`'s date (`kind`, or its `label`) falls on `occurs_on`."""
    what = label.strip() or _WHAT.get(kind, _WHAT["other"])[language]
    when, day = _when(days_ahead, language), format_day(occurs_on, language)
    emoji = _EMOJI.get(kind, _EMOJI["other"])
    owner, aside = _owner(person, relation, language)
    if language == "pt":
        body = f"{emoji} {when.capitalize()} é {what} {owner} ({aside}{day})."
    elif days_ahead <= 1:
        body = f"{emoji} {when.capitalize()} is {owner}'s {what} ({aside}{day})."
    else:
        whose = owner[:1].upper() + owner[1:]
        body = f"{emoji} {whose}'s {what} is {when} ({aside}{day})."
    return NoticeText(body, {"person": person, "label": what, "date": day, "when": when})
