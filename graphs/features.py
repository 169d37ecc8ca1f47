"""The one list of features: what a plan may enable, and what each feature switches on.

A plan (and a feature override) holds feature names; everything that depends on a feature reads
its entry here: the management API accepts only these names, the system prompt offers the user
what their enabled features offer, the router chooses among the routes they enable, the
specialists bind the toolsets they unlock, and the jobs check the names they need.

Specialist prompts and tools are referenced by name (a field of `graphs.context.Context`, a key
of `nodes.specialists.TOOLSETS`), so this module stays pure data: the API process imports it
without loading LangGraph. A new specialist is its prompt (`graphs/prompts.py` and its
`Context` field), its tools (`tools/` and one `TOOLSETS` line), one entry here, and its tests.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Route:
    """A place the router may send a turn: a specialist, or a person."""

    name: str
    description: str
    """What the router's prompt says the route is for."""
    prompt: str = ""
    """The run-context field holding the specialist's instructions ("" for the handoff)."""
    toolsets: tuple[str, ...] = ()
    """The toolsets the specialist binds, in the order the model sees them; each tool is
    usable only when a feature of the user's plan unlocks its toolset."""


@dataclass(frozen=True)
class Feature:
    """One feature a plan may enable."""

    name: str
    offers: Mapping[str, str]
    """What it offers the user, by language code (every language the assistant speaks)."""
    route: Route | None = None
    """The route it adds to the router's choice, if any."""
    unlocks: tuple[str, ...] = ()
    """The toolsets whose tools it lets the specialists call."""


GENERAL = Route(
    "general",
    "conversation, greetings, help about what the assistant can do, and remembering or "
    "recalling facts the user shares about themselves",
    prompt="system_prompt",
    toolsets=("memory", "handoff"),
)
"""The general assistant: every user has it, whatever their plan."""

HANDOFF = Route("handoff", "a human agent takes over the conversation")
"""A person answers; always the last choice the router lists."""

FINANCE = Feature(
    "finance",
    {"pt": "controlar seus gastos e receitas", "en": "track your spending and income"},
    Route(
        "finance",
        "expenses, income, payments, balances, spending by category",
        prompt="finance_prompt",
        toolsets=("finance", "handoff"),
    ),
    unlocks=("finance",),
)
RELATIONSHIPS = Feature(
    "relationships",
    {"pt": "lembrar pessoas e datas importantes", "en": "remember people and important dates"},
    Route(
        "relationships",
        "people, birthdays, anniversaries, important dates, reminders",
        prompt="relationships_prompt",
        toolsets=("relationships", "reminders", "handoff"),
    ),
    unlocks=("relationships",),
)
LONG_TERM_MEMORY = Feature(
    "long_term_memory",
    {"pt": "lembrar o que você me contar", "en": "remember what you tell me"},
    unlocks=("memory",),
)
AUDIO_TRANSCRIPTION = Feature(
    "audio_transcription", {"pt": "entender áudios", "en": "understand voice notes"}
)
HUMAN_HANDOFF = Feature(
    "human_handoff",
    {"pt": "chamar um atendente humano", "en": "bring in a human agent"},
    HANDOFF,
    unlocks=("handoff",),
)
REMINDERS = Feature(
    "reminders", {"pt": "mandar lembretes", "en": "send you reminders"}, unlocks=("reminders",)
)

FEATURES: Mapping[str, Feature] = {
    f.name: f
    for f in (
        FINANCE,
        RELATIONSHIPS,
        LONG_TERM_MEMORY,
        AUDIO_TRANSCRIPTION,
        HUMAN_HANDOFF,
        REMINDERS,
    )
}
"""Every feature, by name: the names a plan or an override may hold."""

SPECIALISTS: Mapping[str, Route] = {
    GENERAL.name: GENERAL,
    **{f.route.name: f.route for f in FEATURES.values() if f.route and f.route is not HANDOFF},
}
"""Every specialist route, general first."""

ROUTES: Mapping[str, Route] = {**SPECIALISTS, HANDOFF.name: HANDOFF}
"""Every route the router may choose, by name, in the order its prompt lists them."""


def routes_for(features: Collection[str]) -> list[str]:
    """The routes these features enable, in `ROUTES` order: general always, handoff last."""
    enabled = {GENERAL.name} | {
        f.route.name for f in FEATURES.values() if f.route and f.name in features
    }
    return [name for name in ROUTES if name in enabled]


def unlocked(features: Collection[str]) -> frozenset[str]:
    """The toolsets these features unlock."""
    return frozenset(s for f in FEATURES.values() if f.name in features for s in f.unlocks)


def known(name: str) -> str:
    """Return `name` if it is a feature; else raise `ValueError` naming every feature (the
    management API's validator, so a wrong name gets a 422 that lists the right ones)."""
    if name not in FEATURES:
        raise ValueError(f"unknown feature {name!r}; known features: {', '.join(FEATURES)}")
    return name
