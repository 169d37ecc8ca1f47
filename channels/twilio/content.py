"""Replies with options as Twilio content: `twilio/quick-reply` buttons or a `twilio/list-picker`.

Twilio sends buttons only through a content resource. Rather than one resource per message,
each account gets one per *shape* (kind, number of options, number of body parts) whose every
text is a variable, found by its `friendly_name` or created on first use, and remembered for
the life of the process. Both types are session content: WhatsApp needs no approval for them,
and they go out only inside the 24-hour window (outside it Twilio answers 63016, as for text).
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass
from typing import Any, Final, Literal

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.response import Response
from twilio.rest import Client
from twilio.rest.content.v1.content import ContentList

from channels.choices import Choices, Option

BODY_PART_CHARS: Final = 255
"""The longest value Twilio takes for one content variable; a longer body goes in parts."""
NO_DESCRIPTION: Final = "\u200b"
"""What an empty row description is sent as: Twilio requires a list item's description and
refuses an empty (or null) variable, and a zero-width space is not blank to it but shows as
nothing on the phone."""
NAME_PREFIX: Final = "conversa_"
CONTENT_SID_INVALID: Final = 21655
"""Twilio's answer to a ContentSid it does not know (a resource deleted since we found it)."""
_LANGUAGE: Final = "en"
"""Content needs a language; these hold only variables, so any one serves every tenant."""
_SEARCH: Final = 32
"""How far back from a body part's limit to look for a cut between two non-blank characters
(Twilio may trim a variable's edges; a cut inside a word loses nothing)."""

_CONTENTS_URL: Final = "https://content.twilio.com/v1/Content"

_sids: dict[tuple[str, str], str] = {}
"""Content SIDs by (account SID, friendly name), for the life of the process."""
_creating = threading.Lock()


@dataclass(frozen=True)
class Shape:
    """What one content resource fits: a kind of reply, its options, its body's parts."""

    kind: Literal["buttons", "list"]
    options: int
    body_parts: int = 1

    @property
    def friendly_name(self) -> str:
        """The stable name an existing resource of this shape is found by."""
        kind = "quick_reply" if self.kind == "buttons" else "list_picker"
        parts = f"_body{self.body_parts}" if self.body_parts > 1 else ""
        return f"{NAME_PREFIX}{kind}_{self.options}{parts}"

    @property
    def content_type(self) -> str:
        """Twilio's content type for the shape."""
        return "twilio/quick-reply" if self.kind == "buttons" else "twilio/list-picker"

    def types(self) -> dict[str, Any]:
        """The content's `types`, every text a numbered variable, in `variables`' order."""
        numbers = itertools.count(1)

        def slot() -> str:
            return f"{{{{{next(numbers)}}}}}"

        body = "".join(slot() for _ in range(self.body_parts))
        if self.kind == "buttons":
            actions = [
                {"type": "QUICK_REPLY", "title": slot(), "id": slot()} for _ in range(self.options)
            ]
            return {self.content_type: {"body": body, "actions": actions}}
        button = slot()
        items = [{"item": slot(), "id": slot(), "description": slot()} for _ in range(self.options)]
        return {self.content_type: {"body": body, "button": button, "items": items}}


def body_parts(body: str) -> list[str]:
    """Split `body` into variable values of at most `BODY_PART_CHARS`, cut between non-blank
    characters where one is near the limit."""
    parts: list[str] = []
    while len(body) > BODY_PART_CHARS:
        cut = next(
            (
                i
                for i in range(BODY_PART_CHARS, BODY_PART_CHARS - _SEARCH, -1)
                if not body[i - 1].isspace() and not body[i].isspace()
            ),
            BODY_PART_CHARS,
        )
        parts.append(body[:cut])
        body = body[cut:]
    return [*parts, body]


def variables(choices: Choices) -> tuple[Shape, dict[str, str]]:
    """The shape `choices` fit, and the `ContentVariables` that fill it."""
    parts = body_parts(choices.body)
    return Shape(choices.kind, len(choices.options), len(parts)), _fill(parts, choices)


def _fill(parts: list[str], choices: Choices) -> dict[str, str]:
    """The variables of `Shape.types`, numbered in the same order: body parts, then the list's
    button, then each option's texts."""
    values = list(parts)
    if choices.kind == "list":
        values.append(choices.button)
        for option in choices.options:
            values += [option.title, option.id, option.description or NO_DESCRIPTION]
    else:
        for option in choices.options:
            values += [option.title, option.id]
    return {str(n): value for n, value in enumerate(values, 1)}


def content_sid(client: Client, account_sid: str, shape: Shape) -> str:
    """The SID of the account's content resource for `shape`, found or created once per
    process; raises what the `twilio` client raises."""
    key = (account_sid, shape.friendly_name)
    if (sid := _sids.get(key)) is not None:
        return sid
    with _creating:
        if key not in _sids:
            _remember_existing(client, account_sid)
        if key not in _sids:
            _sids[key] = _create(client, shape)
        return _sids[key]


def _remember_existing(client: Client, account_sid: str) -> None:
    """Remember every content resource of ours the account already has (one listing for all
    shapes)."""
    try:
        contents = client.content.v1.contents.list()
    except TwilioRestException:
        raise
    except TwilioException as exc:
        raise _refusal(exc) from exc
    for content in contents:
        name = str(content.friendly_name or "")
        if name.startswith(NAME_PREFIX):
            _sids.setdefault((account_sid, name), str(content.sid))


def _refusal(exc: TwilioException) -> Exception:
    """Twilio's refusal of a page (which the client raises without its code), as the
    `TwilioRestException` a create raises, so that it is classified alike."""
    response = exc.args[1] if len(exc.args) > 1 else None
    if not isinstance(response, Response):
        return exc
    try:
        error = json.loads(response.text)
    except ValueError:
        error = None
    if not isinstance(error, dict):
        return TwilioRestException(response.status_code, _CONTENTS_URL, response.text)
    message, code = str(error.get("message") or ""), error.get("code")
    return TwilioRestException(response.status_code, _CONTENTS_URL, message, code)


def _create(client: Client, shape: Shape) -> str:
    """Create the content resource for `shape`, with the sample values Twilio asks for."""
    options = tuple(Option(f"option_{n}", f"Option {n}") for n in range(1, shape.options + 1))
    sample = Choices("", options, "Options" if shape.kind == "list" else "")
    request = ContentList.ContentCreateRequest(
        {
            "friendly_name": shape.friendly_name,
            "language": _LANGUAGE,
            "variables": _fill(["Sample text."] * shape.body_parts, sample),
            "types": shape.types(),
        }
    )
    return str(client.content.v1.contents.create(content_create_request=request).sid)


def forget(account_sid: str, shape: Shape) -> None:
    """Drop the remembered SID of `shape` (Twilio no longer knows it: 21655)."""
    with _creating:
        _sids.pop((account_sid, shape.friendly_name), None)
