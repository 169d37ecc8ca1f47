"""How a tool offers the user buttons or a list with the reply (`nodes.choices` asks them).

The offer rides in the tool's artifact, which the model never reads; each option carries the
action a press of it runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

OFFER = "offer"
"""The key of a tool's artifact that offers options with the reply."""

Action = Mapping[str, Any]


def option(title: str, action: Action, description: str = "") -> dict[str, Any]:
    """One option a tool offers: what the user reads, and what a press of it does."""
    return {"title": title, "description": description, "action": dict(action)}


def offer(options: Sequence[Mapping[str, Any]], *, button: str = "") -> dict[str, Any]:
    """A tool's artifact offering `options` with the reply: quick replies, or a list behind
    `button`."""
    return {OFFER: {"button": button, "options": [dict(o) for o in options]}}
