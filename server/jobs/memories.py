"""The `extract_memories` job: after a turn, remember the durable facts the user told us.

A cheap gate runs first, so most turns cost nothing: the user must have long-term memory in
their plan and the turn's text must talk about themselves (a first-person cue in Portuguese or
English: "meu", "sou", "tenho", "my", "I'm"...). Only then one structured-output call
(`MemoryFacts`, by the method `graphs.structured` chooses for the server) lists the facts
worth keeping; each is saved unless the user's memories already hold it (a stored fact this
similar, as text, is the same fact). Saving is keyed by the turn's messages, so a retried job
rewrites the same keys instead of adding copies. The call is traced under the tenant's privacy
rule (`server.privacy`), and personal data in a fact is kept, masked or refused as the tenant's
rule says (`store.pii`).
"""

from __future__ import annotations

import re
from uuid import UUID

import structlog
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel, Field

from graphs.features import LONG_TERM_MEMORY
from graphs.language import fold
from graphs.settings import llm_settings
from graphs.structured import invoke_structured
from server.jobs.common import connect
from server.jobs.runner import budget_guard
from server.logs import bind_correlation_id
from server.privacy import flush_traces, tracing_config
from server.settings import get_settings
from store import conversations, identity, inbox, memory, pii, tenants
from store.budgets import BudgetExhausted
from store.settings import embedding_settings

log = structlog.get_logger(__name__)

MAX_FACTS = 5

EXTRACTION_PROMPT = """You extract durable facts about the user from their latest messages, \
for a personal assistant's long-term memory.

Return {"facts": [...]}: each fact one short, self-contained sentence in the language the user \
wrote in, naming what it is about ("My dog is called Rex", "Sou alérgica a amendoim").
Keep only what will still be true and useful in later conversations: how they like to be \
called, family, friends and pets, health and diet, work and studies, where they live, goals, \
preferences, and anything they ask you to remember.
Leave out one-off events, expenses and income, reminders and appointments, greetings, \
questions, and anything about the assistant. Return {"facts": []} when nothing qualifies."""


class MemoryFacts(BaseModel):
    """Durable facts about the user found in their messages."""

    facts: list[str] = Field(default_factory=list, description="Short facts; empty if none.")


_CUE = re.compile(
    r"\b(?:"
    # Portuguese: pronouns, possessives and first-person verbs that introduce facts
    r"eu|meu|minha|meus|minhas|comigo|sou|estou|tenho|tive|moro|morei|trabalho|estudo|"
    r"gosto|adoro|odeio|detesto|prefiro|chamo|nasci|casei|lembre|lembra\s+que|nao\s+esquec\w*|"
    # English
    r"i|i'm|im|i've|i'd|my|mine|myself|call\s+me|remember"
    r")\b",
    re.IGNORECASE,
)


def has_first_person_cue(text: str) -> bool:
    """Whether `text` talks about its writer (Portuguese or English); the gate before the LLM."""
    return bool(_CUE.search(fold(text)))


def extract_facts(text: str, model: str, config: RunnableConfig | None = None) -> list[str]:
    """Ask the model for the durable facts in the user's `text` (at most `MAX_FACTS`); `config`
    names and traces the call (`server.privacy.tracing_config`)."""
    messages = [SystemMessage(EXTRACTION_PROMPT), HumanMessage(text)]
    facts = invoke_structured(model, MemoryFacts, messages, config).facts
    cleaned: list[str] = []
    for fact in facts[:MAX_FACTS]:
        try:
            cleaned.append(memory.clean_text(fact))
        except ValueError:
            continue
    return cleaned


def extract_memories(
    tenant_id: str, conversation_id: str, message_ids: list[int], correlation_id: str
) -> str:
    """Remember the durable facts in the user messages `message_ids` of a conversation."""
    settings = get_settings()
    bind_correlation_id(correlation_id, job="extract_memories", inbound_ids=message_ids)
    if not message_ids:
        return "nothing to read"
    knobs = embedding_settings()
    with connect(settings, tenant_id) as conn:
        conversation = conversations.conversation_by_id(conn, UUID(conversation_id))
        if conversation is None:
            log.warning("no such conversation; nothing to remember")
            return "missing"
        rights = identity.entitlement(conn, conversation.tenant_id, conversation.user_id)
        if LONG_TERM_MEMORY.name not in rights.features:
            return "disabled"
        texts = []
        for message_id in message_ids:
            message = inbox.message_by_id(conn, message_id)
            if (
                message is not None
                and message.conversation_id == conversation.id
                and message.direction == "inbound"
                and message.text
            ):
                texts.append(message.text)  # typed, or a voice note's transcript
        text = "\n".join(texts)
        if not has_first_person_cue(text):
            return "no cue"
        tenant = tenants.tenant_by_id(conn, conversation.tenant_id)
        if tenant is None:
            return "missing"
        policy = pii.effective_policy(tenant.pii_policy, tenant.trace_privacy)
        config, tracers = tracing_config(tenant, "extract_memories", {
            "user_id": str(conversation.user_id), "conversation_id": conversation_id,
            "correlation_id": correlation_id, "inbound_message_ids": message_ids,
        })  # fmt: skip
        user = tenants.user_by_id(conn, conversation.user_id)
        guard = budget_guard(conn, settings, tenant, user, config, enforce=True)
        config = {**config, "callbacks": [*(config.get("callbacks") or []), guard]}
        try:
            facts = extract_facts(text, llm_settings().llm_model, config)
        except BudgetExhausted as exc:  # memories are a nicety: a spent budget skips them
            log.info("no memory extraction: budget spent", reason=str(exc))
            return "budget spent"
        finally:
            flush_traces(tracers)
        owner = memory.MemoryOwner(str(conversation.tenant_id), str(conversation.user_id))
        store = memory.memory_store(conn)
        turn = f"turn:{min(message_ids)}-{max(message_ids)}"
        saved = refused = 0
        for index, fact in enumerate(facts):
            try:
                fact = pii.apply_policy(fact, policy)
            except pii.PersonalDataRefused as exc:
                log.info("a fact was not remembered: it holds personal data", kinds=exc.kinds)
                refused += 1
                continue
            if memory.search(store, owner, fact, 1, knobs.memory_duplicate_score, as_passage=True):
                continue
            memory.save(
                store, owner, fact, key=f"{turn}:{index}", source="extraction", pii_policy=policy
            )
            saved += 1
    log.info("memories extracted", facts=len(facts), saved=saved, refused=refused)
    return f"saved {saved} of {len(facts)}"
