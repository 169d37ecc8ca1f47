"""Recall what the assistant remembers about the user that bears on this turn.

The node searches the user's long-term memories with the turn's text and puts the few that
score above the calibrated threshold in `state.memories`, for the specialists' prompts. Memory
helps an answer but never blocks one: without the feature, a store or a tenant and user, or
when the search fails, the turn goes on with no memories.
"""

from __future__ import annotations

from typing import Any

import structlog
from langgraph.runtime import Runtime

from graphs.context import Context
from graphs.features import LONG_TERM_MEMORY
from graphs.state import State
from nodes.context import turn_text
from store import memory
from store.settings import embedding_settings

log = structlog.get_logger(__name__)


def retrieve_memories(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Return `{"memories": [...]}`: the user's memories most relevant to this turn."""
    context = runtime.context
    if (
        context is None
        or LONG_TERM_MEMORY.name not in (context.features or [])
        or runtime.store is None
        or not context.tenant_id
        or not context.user_id
    ):
        return {"memories": []}
    text = turn_text(state.messages)
    if not text:
        return {"memories": []}
    settings = embedding_settings()
    try:
        found = memory.search(
            runtime.store, context, text, settings.memory_top_k, settings.memory_min_score
        )
    except Exception as exc:  # a memory lookup must never cost the user an answer
        log.warning("memory search failed; answering without memories", error=str(exc))
        return {"memories": []}
    return {"memories": [m.text for m in found]}
