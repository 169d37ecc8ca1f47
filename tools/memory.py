"""The long-term memory tools: `save_memory` and `search_memories`, for the run's user only.

Memories go to the graph's store (`runtime.store`: the worker's Postgres store, or
`langgraph dev`'s own); a run without one (a bare test graph) uses a Postgres store on the
tool's tenant-scoped connection. The key of a saved memory is the call's key (`call_key`: the run
step and the call id), so a resumed run that repeats the call finds it saved and writes nothing
twice. Personal data in a fact is kept, masked or refused as the tenant's rule
(`Context.pii_policy`) says, by `store.memory.save`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from langchain_core.tools import tool
from langgraph.prebuilt import ToolRuntime
from langgraph.store.base import BaseStore
from pydantic import Field

from graphs.features import LONG_TERM_MEMORY
from store import memory, pii
from store.settings import embedding_settings
from tools._args import ToolArgs
from tools._runtime import Scope, ToolError, call_key, scope_of, tool_db


class SaveMemoryArgs(ToolArgs):
    """Arguments of `save_memory`."""

    text: str = Field(
        min_length=3,
        max_length=memory.MAX_TEXT,
        description="One short, self-contained fact about the user, in their words' language.",
    )


class SearchMemoriesArgs(ToolArgs):
    """Arguments of `search_memories`."""

    query: str = Field(min_length=1, max_length=500, description="What to look for.")
    limit: int = Field(default=5, ge=1, le=20, description="At most this many memories.")


@contextmanager
def _store(runtime: ToolRuntime, scope: Scope) -> Iterator[BaseStore]:
    """The run's store, or a Postgres store on the tool's scoped connection."""
    if runtime.store is not None:
        yield runtime.store
        return
    with tool_db(scope) as conn:
        yield memory.memory_store(conn)


def _enabled(runtime: ToolRuntime) -> Scope:
    scope = scope_of(runtime.context)
    if LONG_TERM_MEMORY.name not in (runtime.context.features or []):
        raise ToolError("Long-term memory is not enabled for this user; do not offer it.")
    return scope


@tool(args_schema=SaveMemoryArgs)
def save_memory(text: str, runtime: ToolRuntime) -> str:
    """Remember a durable fact about the user for future conversations.

    Use it when the user tells you something worth remembering later (their name preference,
    family, allergies, goals, likes), or asks you to remember something. One fact per call.
    """
    scope = _enabled(runtime)
    key = call_key(runtime)
    with _store(runtime, scope) as store:
        found = memory.get(store, scope, key)
        if found is not None:  # this call already ran: answer as it did
            return f"Already remembered: {found.text}"
        try:
            saved = memory.save(store, scope, text, key=key, source="tool",
                                pii_policy=runtime.context.pii_policy)  # fmt: skip
        except pii.PersonalDataRefused as exc:
            raise ToolError(
                f"Not remembered: the fact holds personal data ({', '.join(exc.kinds)}), which "
                "this service does not keep in memory. Tell the user it was not saved; you may "
                "save the fact again without the number or address."
            ) from exc
        except ValueError as exc:
            raise ToolError(f"Not remembered: {exc}.") from exc
    return f"Remembered: {saved.text}"


@tool(args_schema=SearchMemoriesArgs)
def search_memories(query: str, runtime: ToolRuntime, limit: int = 5) -> str:
    """Look up what you remember about the user (facts from earlier conversations).

    Returns a JSON list of {"memory", "score"}, the most relevant first; an empty list when
    nothing relevant is remembered.
    """
    scope = _enabled(runtime)
    settings = embedding_settings()
    with _store(runtime, scope) as store:
        found = memory.search(store, scope, query, limit, settings.memory_min_score)
    return json.dumps(
        [{"memory": m.text, "score": round(m.score or 0.0, 3)} for m in found],
        ensure_ascii=False,
    )


MEMORY_TOOLS = [save_memory, search_memories]
