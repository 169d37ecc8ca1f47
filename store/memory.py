"""Long-term memory: short facts about a user, in LangGraph's Postgres store with pgvector.

Each user's memories live in the namespace `(tenant_id, user_id, "memories")`: the store's
row-level security (migrations 0003 and 0005) admits only namespaces that start with the
transaction's tenant, so a tenant can never read another's memories, whatever the code asks.

The store is set up with a vector index of kind "flat": no global approximate index. A search
is always one user's, and an exact scan of that user's vectors through an index that starts
with the namespace (migration 0005) is both correct and fast (`bench/bench_memory.py`: a few
ms at p99 with 100k memories in the table). A global HNSW index would be slower to keep and
wrong here: pgvector 0.6.2 filters *after* the approximate scan (no iterative scan), so one
user's search would see only the few of its rows among the global nearest neighbours.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import psycopg
from langchain_core.embeddings import Embeddings
from langgraph.store.base import BaseStore
from langgraph.store.postgres import PostgresStore
from langgraph.store.postgres.base import PostgresIndexConfig
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from store import pii
from store.embeddings import embeddings as configured_embeddings
from store.settings import embedding_settings

MEMORIES = "memories"
FIELD = "text"
MAX_TEXT = 1000


class Owner(Protocol):
    """Whose memories: anything with a tenant and a user id (a tool's `Scope`, a `Context`)."""

    @property
    def tenant_id(self) -> str: ...
    @property
    def user_id(self) -> str: ...


@dataclass(frozen=True)
class MemoryOwner:
    """A tenant and user, when no scope or context is at hand (a job)."""

    tenant_id: str
    user_id: str


@dataclass(frozen=True)
class Memory:
    """One remembered fact, and how close it is to the query that found it."""

    key: str
    text: str
    score: float | None
    source: str
    created_at: datetime | None


class MemoryDimensionsError(RuntimeError):
    """The memory index was built for vectors of another size than the configured one."""


def namespace(owner: Owner) -> tuple[str, str, str]:
    """Return the store namespace of `owner`'s memories (the tenant id first, for RLS)."""
    if not owner.tenant_id or not owner.user_id:
        raise ValueError("memories need a tenant and a user")
    return (str(owner.tenant_id), str(owner.user_id), MEMORIES)


def _unused_embed(texts: Any) -> list[list[float]]:
    raise RuntimeError("this store was built only to set up tables; it cannot embed")


def index_config(dims: int, embed: Embeddings | Any) -> PostgresIndexConfig:
    """Return the store's vector index: `dims`-sized vectors of the `text` field, exact scans."""
    return {
        "dims": dims,
        "embed": embed,
        "fields": [FIELD],
        "distance_type": "cosine",
        "ann_index_config": {"kind": "flat"},
    }


def setup(conn: psycopg.Connection[Any], dims: int) -> None:
    """Create (or bring up to date) LangGraph's store tables with the vector table.

    `conn` must be in autocommit mode with dict rows (the store creates indexes concurrently).
    An existing vector table keeps its size; `check_dimensions` says when that differs.
    """
    PostgresStore(conn, index=index_config(dims, _unused_embed)).setup()  # type: ignore[arg-type]


def check_dimensions(conn: psycopg.Connection[Any], dims: int) -> None:
    """Raise `MemoryDimensionsError` when the memory index holds vectors of another size."""
    row = conn.execute(
        "select a.atttypmod from pg_attribute a "
        "where a.attrelid = to_regclass('store_vectors') and a.attname = 'embedding'"
    ).fetchone()
    if row is None:
        return  # not set up yet: `conversa migrate` creates it with `dims`
    existing = int(row["atttypmod"] if isinstance(row, dict) else row[0])
    if existing != dims:
        raise MemoryDimensionsError(
            f"The memory index holds {existing}-dimension vectors but EMBEDDINGS_DIMS={dims}. "
            f"Set EMBEDDINGS_DIMS={existing} and an embedding model of that size. Vectors of "
            "two models cannot be compared: switching models means re-embedding every stored "
            "memory into a new index, which is not automated yet."
        )


def memory_store(
    conn: psycopg.Connection[Any] | ConnectionPool,
    *,
    embeddings: Embeddings | None = None,
    dims: int | None = None,
) -> PostgresStore:
    """Return a `PostgresStore` on `conn` that embeds memories (default: as configured).

    The connection must be autocommit with dict rows and scoped to the tenant, like a job's.
    """
    if embeddings is None or dims is None:
        embeddings = embeddings or configured_embeddings
        dims = dims or embedding_settings().embeddings_dims
    return PostgresStore(conn, index=index_config(dims, embeddings))  # type: ignore[arg-type]


def _embedder(store: BaseStore) -> Embeddings:
    found = getattr(store, "embeddings", None)
    if isinstance(found, Embeddings):
        return found
    return configured_embeddings


def clean_text(text: str) -> str:
    """Return `text` as a memory: one trimmed line; ValueError when empty or too long."""
    cleaned = " ".join(text.split())
    if not cleaned:
        raise ValueError("a memory needs some text")
    if len(cleaned) > MAX_TEXT:
        raise ValueError(f"a memory is at most {MAX_TEXT} characters; write a shorter fact")
    return cleaned


def get(store: BaseStore, owner: Owner, key: str) -> Memory | None:
    """Return `owner`'s memory stored under `key`, if any."""
    item = store.get(namespace(owner), key)
    if item is None:
        return None
    return Memory(key, str(item.value.get(FIELD, "")), None, str(item.value.get("source", "")),
                  item.created_at)  # fmt: skip


def save(
    store: BaseStore, owner: Owner, text: str, *, key: str, source: str, pii_policy: str
) -> Memory:
    """Store `text` as `owner`'s memory under `key` (the same key again replaces it), with
    personal data kept, masked or refused as the tenant's `pii_policy` says.

    Raises ValueError for empty or long text and `store.pii.PersonalDataRefused` (a ValueError)
    when the policy refuses what the text holds; nothing is written then.
    """
    cleaned = clean_text(pii.apply_policy(text, pii_policy))
    store.put(namespace(owner), key, {FIELD: cleaned, "source": source})
    return Memory(key, cleaned, None, source, None)


def search(
    store: BaseStore,
    owner: Owner,
    query: str,
    k: int,
    min_score: float,
    *,
    as_passage: bool = False,
) -> list[Memory]:
    """Return up to `k` of `owner`'s memories closest to `query`, scoring at least `min_score`.

    Scores are cosine similarities. `as_passage` embeds `query` as stored text (to compare a
    new fact with stored ones) rather than as a question.
    """
    if not query.strip() or k < 1:
        return []
    if isinstance(store, PostgresStore):
        embedder = _embedder(store)
        vector = embedder.embed_documents([query])[0] if as_passage else embedder.embed_query(query)
        return search_by_vector(store, owner, vector, k, min_score)
    # Any other store (`langgraph dev`'s, an InMemoryStore): its own search, then the threshold.
    items = store.search(namespace(owner), query=query, limit=k)
    found = [
        Memory(item.key, str(item.value.get(FIELD, "")), item.score,
               str(item.value.get("source", "")), item.created_at)
        for item in items
        if item.score is not None and item.score >= min_score
    ]  # fmt: skip
    return found


_SEARCH = """
    with nearest as (
        select v.key, v.embedding <=> %(vector)s::vector as distance
        from store_vectors v
        where v.prefix = %(prefix)s and v.field_name = %(field)s
        order by distance
        limit %(k)s
    )
    select n.key, s.value, s.created_at, 1 - n.distance as score
    from nearest n
    join store s on s.prefix = %(prefix)s and s.key = n.key
    where 1 - n.distance >= %(min_score)s
    order by n.distance
"""


@contextmanager
def _connection(store: PostgresStore) -> Iterator[psycopg.Connection[Any]]:
    if isinstance(store.conn, ConnectionPool):
        with store.conn.connection() as conn:
            yield conn
    else:
        yield store.conn


def search_by_vector(
    store: PostgresStore, owner: Owner, vector: Sequence[float], k: int, min_score: float
) -> list[Memory]:
    """Return `owner`'s nearest memories to an embedded query, by an exact scan of their
    vectors (found through the primary key, which starts with the namespace)."""
    params = {"vector": list(vector), "prefix": ".".join(namespace(owner)), "field": FIELD,
              "k": k, "min_score": min_score}  # fmt: skip
    with _connection(store) as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_SEARCH, params).fetchall()
    return [
        Memory(row["key"], str(row["value"].get(FIELD, "")), float(row["score"]),
               str(row["value"].get("source", "")), row["created_at"])
        for row in rows
    ]  # fmt: skip
