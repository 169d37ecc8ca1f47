"""The run context: JSON-serialisable knobs for one graph run, set by the caller."""

from __future__ import annotations

from dataclasses import dataclass, field

from graphs import prompts
from graphs.features import FEATURES
from graphs.settings import llm_settings


def _default_model() -> str:
    return llm_settings().llm_model


@dataclass(kw_only=True)
class Context:
    """Who the run is for and how to think; the worker fills it from the database."""

    model: str = field(default_factory=_default_model)
    """Chat model name on the OpenAI-compatible endpoint."""

    router_model: str = ""
    """Model for the routing call; empty means `model`."""

    system_prompt: str = prompts.SYSTEM_PROMPT
    """The general assistant's instructions; tenants may override it."""

    router_prompt: str = prompts.ROUTER_PROMPT
    """How the router chooses a specialist; `{choices}` and `{active}` are filled in."""

    finance_prompt: str = prompts.FINANCE_PROMPT
    """The finance specialist's instructions (each specialist's field is named in
    `graphs.features`)."""

    relationships_prompt: str = prompts.RELATIONSHIPS_PROMPT
    """The relationships specialist's instructions."""

    handoff_message: str = ""
    """What the user is told when a person takes over; empty means the built-in text."""

    tenant_id: str = ""
    """The tenant this run belongs to. Tools scope every read and write by it."""

    tenant_name: str = "Conversa"
    """The business the assistant speaks for."""

    persona: str = ""
    """Extra persona text from the tenant, appended to the system prompt."""

    user_id: str = ""
    """The WhatsApp user this run answers. Tools scope every read and write by it."""

    user_name: str = ""
    """The user's WhatsApp profile name, when known."""

    locale: str = "pt-BR"
    """The user's (or tenant's default) locale, used when the language is unclear."""

    timezone: str = "America/Sao_Paulo"
    """The user's IANA timezone."""

    features: list[str] = field(default_factory=lambda: list(FEATURES))
    """The features this user's plan and flags enable; the assistant offers only these."""

    pii_policy: str = "keep"
    """What memory writes do with personal data: `keep`, `mask` or `refuse` (`store.pii`)."""

    date_notice_days_before: int | None = None
    """How many days before a saved date the service notices the user of it (0: on the day);
    None when it sends no date notices, so the assistant does not promise them."""
