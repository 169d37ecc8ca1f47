"""WhatsApp templates per purpose: which template a message needs, and how its words fill it.

Outside WhatsApp's 24-hour window only a template WhatsApp approved may be sent. A tenant keeps
one per purpose (and language); its approved text uses Twilio's numbered placeholders
(`{{1}}`, `{{2}}`...) and its `variables` say which named variable of the message fills each
one, e.g. `{"1": "text", "2": "when"}` for "⏰ Lembrete: {{1}} ({{2}})".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final, Literal, get_args

TemplatePurpose = Literal["reminder", "staff_followup", "date_notice", "re_engagement"]
PURPOSES: Final[tuple[TemplatePurpose, ...]] = get_args(TemplatePurpose)

TEMPLATE_STATUSES: Final = ("draft", "pending", "approved", "rejected", "paused", "disabled")
"""A template's approval status; only 'approved' templates are ever sent."""

VARIABLES: Final[dict[TemplatePurpose, tuple[str, ...]]] = {
    "reminder": ("text", "when", "name"),
    "staff_followup": ("text", "agent", "name"),
    "date_notice": ("text", "when", "name", "person", "label", "date"),
    "re_engagement": ("text", "name"),
}
"""The named variables a template of each purpose may use.

`text` is the message's own words (a reminder's text, the staff member's reply; by default the
message body), `when` a reminder's or date's time as the user reads it, `agent` the staff
member's name, `name` the user's WhatsApp profile name; a date notice's `person` (whose date),
`label` (what it is: "o aniversário", "formatura") and `date` (its day: "12/12")."""

_OUTBOX_TO_TEMPLATE: Final[dict[str, TemplatePurpose]] = {
    "reminder": "reminder",
    "staff": "staff_followup",
    "date_notice": "date_notice",
}

PLACEHOLDER = re.compile(r"\{\{\s*([0-9]+)\s*\}\}")
"""Twilio's numbered placeholder, `{{1}}` (ASCII digits only)."""
_PLACEHOLDER_KEY = re.compile(r"[1-9][0-9]*")
TEMPLATE_MAX_CHARS: Final = 1024
"""The most characters WhatsApp accepts in a template's text, placeholders filled."""
CONTENT_SID: Final = r"^HX[0-9a-fA-F]{32}$"
"""A Twilio Content SID, the id of a template in Twilio's Content API."""
META_TEMPLATE_NAME: Final = r"^[a-z0-9_]{1,512}$"
"""A template's name on Meta's WhatsApp Cloud API, which sends a template by name and language."""
_TEMPLATE_IDS: Final[dict[str, tuple[re.Pattern[str], str]]] = {
    "twilio": (re.compile(CONTENT_SID), "a Twilio Content SID (HX and 32 hex digits)"),
    "cloud": (
        re.compile(META_TEMPLATE_NAME),
        "the template's name on Meta (1 to 512 lowercase letters, digits and underscores)",
    ),
}
"""How each provider names a template, and that form in words for an error."""


def template_id_problem(channel: str, template_id: str) -> str | None:
    """Say why `template_id` cannot name a template on a tenant's `channel` (None: it can).

    Twilio sends a template by its Content SID, Meta's Cloud API by its name, so the same
    field holds either, and only the tenant's provider tells which one it must be."""
    form = _TEMPLATE_IDS.get(channel)
    if form is None:
        return f"the {channel!r} channel has no templates; use one of {', '.join(_TEMPLATE_IDS)}."
    pattern, expected = form
    if pattern.fullmatch(template_id):
        return None
    return f"must be {expected} for a tenant on the {channel} channel, not {template_id[:80]!r}."


def template_purpose(outbox_purpose: str) -> TemplatePurpose:
    """Return the template purpose an outbox message of `outbox_purpose` needs."""
    return _OUTBOX_TO_TEMPLATE.get(outbox_purpose, "re_engagement")


def placeholders(body: str) -> set[str]:
    """Return the placeholder numbers used in a template's text, as strings ("1", "2")."""
    return {str(int(number)) for number in PLACEHOLDER.findall(body)}


def definition_problems(purpose: str, body: str, variables: Mapping[str, str]) -> list[str]:
    """Return what is wrong with a template definition (empty when it is sound)."""
    if purpose not in VARIABLES:
        return [f"Unknown purpose {purpose!r}; use one of {', '.join(PURPOSES)}."]
    allowed = VARIABLES[purpose]  # type: ignore[index]
    problems = []
    numbers = placeholders(body)
    if not numbers:
        problems.append("The body has no placeholder: use {{1}} for the message's words.")
    bad_keys = sorted(k for k in variables if not _PLACEHOLDER_KEY.fullmatch(k))
    if bad_keys:
        problems.append(f"Variable keys must be placeholder numbers 1, 2...: {bad_keys}.")
    if set(variables) != numbers and not bad_keys:
        problems.append(
            f"The body's placeholders {sorted(numbers, key=int)} must match the variables' "
            f"keys {sorted(variables, key=int)} exactly."
        )
    unknown = sorted({name for name in variables.values() if name not in allowed})
    if unknown:
        problems.append(
            f"Unknown variable(s) {unknown} for purpose {purpose!r}; allowed: {', '.join(allowed)}."
        )
    return problems


class MissingVariables(ValueError):
    """The message lacks a value for a variable its template needs."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__(", ".join(missing))
        self.missing = missing


def clean(value: str) -> str:
    """Return `value` on one line: WhatsApp refuses template variables with newlines or tabs."""
    return " ".join(value.split())


def content_variables(variables: Mapping[str, str], values: Mapping[str, str]) -> dict[str, str]:
    """Fill a template's placeholders from the message's named values (Twilio's
    `ContentVariables`); raise `MissingVariables` rather than send a half-filled template."""
    filled = {number: clean(values.get(name) or "") for number, name in variables.items()}
    missing = sorted({variables[n] for n, value in filled.items() if not value})
    if missing:
        raise MissingVariables(missing)
    return filled


def render(body: str, filled: Mapping[str, str]) -> str:
    """Return the template's text with its placeholders filled (what the user reads)."""
    return PLACEHOLDER.sub(lambda m: filled.get(str(int(m.group(1))), m.group(0)), body)
