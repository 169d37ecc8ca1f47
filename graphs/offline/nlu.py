"""What the offline model understands: the route of a message and the facts it states.

The offline model (:mod:`graphs.offline.model`) has no language model behind it. To let the
demo show every route anyway, these rules read the common cases in Portuguese and English with
regular expressions (:mod:`graphs.offline.lexicon`); :mod:`graphs.offline.tool_calls` picks the
specialists' tool calls the same way. Everything here is a pure function of text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from graphs.features import FINANCE, GENERAL, HANDOFF, RELATIONSHIPS, Feature
from graphs.offline.lexicon import (
    DATE,
    HUMAN,
    MEMORY_SAVE,
    MONEY,
    PEOPLE_DATES,
    RELATIVE_DAY,
    REMINDER,
    clean,
    fold,
    rx,
)
from graphs.offline.tool_calls import something_to_do_at_a_time


def _route_of(feature: Feature) -> str:
    assert feature.route is not None, f"{feature.name} adds no route"
    return feature.route.name


_FINANCE, _RELATIONSHIPS = _route_of(FINANCE), _route_of(RELATIONSHIPS)
"""The specialist routes the rules below recognise (the registry names them)."""


@dataclass(frozen=True)
class RouteGuess:
    """The route the offline model picks, and a one-line reason."""

    route: str
    reason: str


def choose_route(text: str, allowed: list[str]) -> RouteGuess:
    """Pick the route for ``text`` among ``allowed`` (general when the preferred one is not)."""
    folded = fold(text)
    wanted = _preferred_route(folded)
    if wanted.route in allowed:
        return wanted
    fallback = GENERAL.name if GENERAL.name in allowed or not allowed else allowed[0]
    return RouteGuess(fallback, f"{wanted.reason} ({wanted.route} is not available)")


def _preferred_route(folded: str) -> RouteGuess:
    if HUMAN.search(folded):
        return RouteGuess(HANDOFF.name, "The user asks for a person.")
    if REMINDER.search(folded):
        return RouteGuess(_RELATIONSHIPS, "The user asks for a reminder.")
    if something_to_do_at_a_time(folded):
        return RouteGuess(_RELATIONSHIPS, "Something to do at a time: a reminder to propose.")
    if MONEY.search(folded):
        return RouteGuess(_FINANCE, "The message is about money.")
    if PEOPLE_DATES.search(folded) or (
        MEMORY_SAVE.search(folded) and (DATE.search(folded) or RELATIVE_DAY.search(folded))
    ):
        return RouteGuess(_RELATIONSHIPS, "The message is about people or dates.")
    return RouteGuess(GENERAL.name, "Conversation, help or memory.")


# --------------------------------------------------------------------------- #
# Memory extraction
# --------------------------------------------------------------------------- #

_STOP = r"(?=\s+(?:e|mas|porque|and|but|because)\s|[.,;!?\n]|$)"
_FACTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (rx(pattern + _STOP), kind)
    for pattern, kind in (
        (r"\b(meu|minha)\s+([^\W\d]+(?:\s+[^\W\d]+)?)\s+(e|se\ chama)\s+(.+?)", "pt_my"),
        (r"\beu\s+(gosto|adoro|amo|odeio)\s+(.+?)", "pt_like"),
        (
            r"\b(?:eu\s+)?sou\s+(alergic[oa]\s+a\s+.+?|vegetarian[oa]|vegan[oa]"
            r"|(?:um|uma)\s+.+?|de\s+.+?)",
            "pt_am",
        ),
        (r"\b(?:eu\s+)?(moro|trabalho)\s+((?:em|no|na|como|de)\s+.+?)", "pt_live"),
        (r"\bmy\s+([a-z]+(?:\s+[a-z]+)?(?:'s\s+name)?)\s+is\s+(.+?)", "en_my"),
        (r"\bi\s+(like|love|hate|enjoy|prefer)\s+(.+?)", "en_like"),
        (
            r"\bi(?:'m|\s+am)\s+(allergic\s+to\s+.+?|vegetarian|vegan|(?:a|an)\s+.+?"
            r"|from\s+.+?)",
            "en_am",
        ),
        (r"\bi\s+(live|work)\s+((?:in|at|as|for)\s+.+?)", "en_live"),
        (r"\b(?:lembr[ae](?:-se)?\s+(?:de\s+)?que|remember\s+that)\s+(.+?)", "remember"),
    )
)


def extract_facts(text: str) -> list[str]:
    """List the durable facts ``text`` states about its writer, in their own words.

    Questions are skipped; facts keep the first person and the language they were said in,
    as the extraction prompt asks ("Meu cachorro se chama Rex", "I'm allergic to peanuts").
    """
    facts: list[str] = []
    for line in _user_lines(text):
        folded = fold(line)
        for sentence in re.finditer(r"[^.!?\n]+[.!?]?", folded):
            if sentence.group().rstrip().endswith("?"):
                continue
            for pattern, kind in _FACTS:
                for match in pattern.finditer(folded, sentence.start(), sentence.end()):
                    fact = _fact(kind, match, line)
                    if fact and fact not in facts:
                        facts.append(fact)
    return facts


def _user_lines(text: str) -> list[str]:
    """The lines of ``text`` said by the user (transcript lines of the assistant are skipped)."""
    lines = []
    for line in text.splitlines():
        label, _, rest = line.partition(":")
        if rest and fold(label).strip() in {"assistant", "ai", "assistente", "bot"}:
            continue
        if rest and fold(label).strip() in {"user", "usuario", "human", "humano"}:
            line = rest
        if line.strip():
            lines.append(line.strip())
    return lines


def _fact(kind: str, match: re.Match[str], original: str) -> str:
    start = match.start(1) if kind == "remember" else match.start()
    fact = clean(original[start : match.end()])
    return fact[:1].upper() + fact[1:]
