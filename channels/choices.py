"""Replies with options: up to three quick-reply buttons, or a list of up to ten rows behind
one button, the way both providers draw them (Meta's interactive messages, Twilio's
`twilio/quick-reply` and `twilio/list-picker` content).

The limits below are the stricter of the two providers' for each field, so one `Choices`
goes out through either. Where options cannot go out as buttons (the 24-hour window is
closed, a provider refuses them, the body is too long for an interactive message) the same
reply goes out as text with numbered options (`Choices.as_text`), and the user answers by
typing the number or the option's words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

MAX_BUTTONS: Final = 3
MAX_ROWS: Final = 10
BUTTON_TITLE_CHARS: Final = 20
"""A quick-reply button's title (both providers)."""
ROW_TITLE_CHARS: Final = 24
"""A list row's title (both providers)."""
ROW_DESCRIPTION_CHARS: Final = 72
LIST_BUTTON_CHARS: Final = 20
"""The label of the button that opens a list."""
OPTION_ID_CHARS: Final = 200
"""An option's id, which comes back when the user presses it (Twilio's limit; Meta's is 256)."""
BODY_CHARS: Final = 1024
"""The text above the buttons; a longer reply goes out as numbered text."""


@dataclass(frozen=True)
class Option:
    """One button or list row: the id a press brings back, and what the user reads."""

    id: str
    title: str
    description: str = ""


@dataclass(frozen=True)
class Choices:
    """A reply's question and its options; `button` labels a list (empty: quick replies)."""

    body: str
    options: tuple[Option, ...]
    button: str = ""

    @property
    def kind(self) -> Literal["buttons", "list"]:
        """Quick-reply buttons, or a list behind one button."""
        return "list" if self.button else "buttons"

    def as_text(self) -> str:
        """The reply as plain text with numbered options (what the user reads without buttons)."""
        lines = [
            f"{n}. {o.title}" + (f" ({o.description})" if o.description else "")
            for n, o in enumerate(self.options, 1)
        ]
        return "\n\n".join(p for p in (self.body.strip(), "\n".join(lines)) if p)

    def to_json(self) -> dict[str, Any]:
        """What the outbox keeps of it (`from_json` reads it back)."""
        return {
            "body": self.body,
            "button": self.button,
            "options": [
                {"id": o.id, "title": o.title, "description": o.description} for o in self.options
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Choices:
        """Read back what `to_json` wrote."""
        options = tuple(
            Option(str(o["id"]), str(o["title"]), str(o.get("description") or ""))
            for o in data["options"]
        )
        return cls(str(data["body"]), options, str(data.get("button") or ""))


def _fit(text: str, limit: int) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis when it is longer."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def make_choices(body: str, options: Sequence[Option], *, button: str = "") -> Choices:
    """Return options ready for both providers: titles and descriptions cut to their limits.

    Raise `ValueError` for what no provider sends: no options, more than three buttons or ten
    rows, an empty title, an id that is empty, too long or repeated, a list with no button."""
    if not options:
        raise ValueError("a reply with options needs at least one option")
    limit = MAX_ROWS if button else MAX_BUTTONS
    if len(options) > limit:
        raise ValueError(f"at most {limit} {'rows' if button else 'buttons'}, not {len(options)}")
    ids = [o.id for o in options]
    if any(not i or len(i) > OPTION_ID_CHARS for i in ids) or len(set(ids)) != len(ids):
        raise ValueError(f"option ids must be unique and 1..{OPTION_ID_CHARS} characters")
    title_limit = ROW_TITLE_CHARS if button else BUTTON_TITLE_CHARS
    fitted = tuple(
        Option(o.id, _fit(o.title, title_limit), _fit(o.description, ROW_DESCRIPTION_CHARS))
        if button
        else Option(o.id, _fit(o.title, title_limit))
        for o in options
    )
    if any(not o.title for o in fitted):
        raise ValueError("every option needs a title")
    label = _fit(button, LIST_BUTTON_CHARS) if button else ""
    if button and not label:
        raise ValueError("a list needs a button label")
    return Choices(body.strip(), fitted, label)


def interactive(choices: Choices | None) -> bool:
    """Whether `choices` can go out as buttons or a list (else as numbered text): a body a
    provider takes, and titles told apart (WhatsApp refuses two alike, which cutting long
    titles to their limit can make)."""
    if choices is None or not 0 < len(choices.body) <= BODY_CHARS:
        return False
    titles = [o.title.casefold() for o in choices.options]
    return len(set(titles)) == len(titles)
