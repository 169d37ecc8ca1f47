"""Users' data rights (LGPD, GDPR): everything held about one user, exported or erased.

A user's data is spread over the service's tables (profile, plan, conversations, messages with
transcripts and delivery statuses, the assistant's audit rows, tool data), LangGraph's
checkpoints (the threads of the user's conversations, `<tenant>:<conversation>`) and its store
(the namespaces that start with `<tenant>.<user>.`). `export` reads them all; `erase` deletes
them all in the caller's transaction and leaves an erasure record that holds no personal data.

Both run on a connection scoped to the tenant (row-level security applies) inside one
transaction the caller owns. What lives in Redis (queued jobs, the cached profile) is the
caller's to clean after the commit: `ErasedUser` says what to look for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb

from store.locks import conversation_lock, lock_for_transaction, send_lock, transcribe_lock

EXPORT_FORMAT = "conversa.user-export/1"
LOCK_TIMEOUT = "10s"
"""How long an erasure waits for a turn in progress on one of the user's conversations."""


class UserBusy(RuntimeError):
    """A turn or a send of the user's is still running; try the erasure again shortly."""


def _rows(conn: psycopg.Connection[Any], query: str, params: Any) -> list[dict[str, Any]]:
    """Return the `row` column of every result row (queries select `to_jsonb(...) as row`)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return [r["row"] for r in cur.execute(query, params).fetchall()]


def store_prefix(tenant_id: UUID | str, user_id: UUID | str) -> str:
    """Return the LIKE pattern of the user's LangGraph store namespaces (memories and any other)."""
    return f"{tenant_id}.{user_id}.%"


def langgraph_deletes(
    thread_match: str, threads: Any, namespaces: str
) -> list[tuple[str, sql.Composed, tuple[Any]]]:
    """(table, statement, params) deleting LangGraph's rows, which hold no foreign keys: the
    checkpoints of the threads `thread_id <thread_match>` matches with `threads` ("= any(%s)",
    "like %s"), and the store's items under the `namespaces` LIKE pattern."""
    checkpoints = [
        (table, sql.SQL("delete from {} where thread_id " + thread_match).format(
            sql.Identifier(table)), (threads,))
        for table in ("checkpoint_writes", "checkpoint_blobs", "checkpoints")
    ]  # fmt: skip
    items = [
        (table, sql.SQL("delete from {} where prefix like %s").format(sql.Identifier(table)),
         (namespaces,))
        for table in ("store_vectors", "store")
    ]  # fmt: skip
    return checkpoints + items


# -- export ----------------------------------------------------------------------------------


def export(conn: psycopg.Connection[Any], tenant_id: UUID, user_id: UUID) -> dict[str, Any] | None:
    """Return one JSON-ready document with everything held about the user; None if unknown."""
    users = _rows(
        conn, "select to_jsonb(u) - 'tenant_id' as row from users u "
        "where u.id = %s and u.tenant_id = %s", (user_id, tenant_id),
    )  # fmt: skip
    if not users:
        return None
    tenant = _rows(
        conn, "select jsonb_build_object('id', id, 'name', name) as row from tenants "
        "where id = %s", (tenant_id,),
    )  # fmt: skip
    by_user = (user_id, tenant_id)
    conversations = _rows(
        conn, "select to_jsonb(c) - 'tenant_id' as row from conversations c "
        "where c.user_id = %s and c.tenant_id = %s order by c.created_at, c.id", by_user,
    )  # fmt: skip
    for conversation in conversations:
        _add_conversation_detail(conn, conversation)
    people = _rows(
        conn, "select to_jsonb(p) - 'tenant_id' - 'user_id' as row from people p "
        "where p.user_id = %s and p.tenant_id = %s order by p.id", by_user,
    )  # fmt: skip
    for person in people:
        person["important_dates"] = _rows(
            conn, "select to_jsonb(d) - 'tenant_id' - 'person_id' as row from important_dates d "
            "where d.person_id = %s order by d.id", (person["id"],),
        )  # fmt: skip

    def owned(table: str, order: str = "id") -> list[dict[str, Any]]:
        return _rows(
            conn, f"select to_jsonb(t) - 'tenant_id' - 'user_id' as row from {table} t "
            f"where t.user_id = %s and t.tenant_id = %s order by t.{order}", by_user,
        )  # fmt: skip

    return {
        "format": EXPORT_FORMAT,
        "exported_at": datetime.now(UTC).isoformat(),
        "tenant": tenant[0] if tenant else {"id": str(tenant_id)},
        "user": users[0],
        "subscriptions": owned("subscriptions"),
        "feature_overrides": owned("feature_overrides"),
        "usage_days": owned("usage_days", "day"),
        "usage_ledger": owned("usage_ledger"),
        "conversations": conversations,
        "memories": _rows(
            conn,
            "select jsonb_build_object('namespace', s.prefix, 'key', s.key, "
            "'value', s.value, 'created_at', s.created_at, 'updated_at', s.updated_at) as row "
            "from store s where s.prefix like %s order by s.created_at, s.key",
            (store_prefix(tenant_id, user_id),),
        ),
        "finance_entries": _rows(
            conn,
            "select to_jsonb(f) - 'tenant_id' - 'user_id' "
            "|| jsonb_build_object('amount', f.amount::text) as row from finance_entries f "
            "where f.user_id = %s and f.tenant_id = %s order by f.occurred_on, f.id",
            by_user,
        ),
        "people": people,
        "reminders": owned("reminders"),
    }


def _add_conversation_detail(conn: psycopg.Connection[Any], conversation: dict[str, Any]) -> None:
    """Add a conversation's messages (with their delivery statuses), state transitions, the
    assistant's runs, and how many checkpoints its LangGraph thread holds."""
    cid = conversation["id"]
    messages = _rows(
        conn, "select to_jsonb(m) - 'tenant_id' - 'conversation_id' as row from messages m "
        "where m.conversation_id = %s order by m.id", (cid,),
    )  # fmt: skip
    events: dict[int, list[dict[str, Any]]] = {}
    for event in _rows(
        conn, "select to_jsonb(e) - 'tenant_id' as row from message_status_events e "
        "join messages m on m.id = e.message_id where m.conversation_id = %s order by e.id",
        (cid,),
    ):  # fmt: skip
        events.setdefault(event.pop("message_id"), []).append(event)
    for message in messages:
        message["status_events"] = events.get(message["id"], [])
    conversation["messages"] = messages
    conversation["transitions"] = _rows(
        conn, "select to_jsonb(t) - 'tenant_id' - 'conversation_id' as row "
        "from conversation_transitions t where t.conversation_id = %s order by t.id", (cid,),
    )  # fmt: skip
    conversation["ai_results"] = _rows(
        conn, "select to_jsonb(a) - 'tenant_id' - 'conversation_id' as row from ai_results a "
        "where a.conversation_id = %s order by a.id", (cid,),
    )  # fmt: skip
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            "select count(*) from checkpoints where thread_id = %s", (conversation["thread_id"],)
        ).fetchone()
    # The checkpoints hold the assistant's working copy of the latest messages (above).
    conversation["assistant_checkpoints"] = int(row[0]) if row else 0


# -- erasure ---------------------------------------------------------------------------------


@dataclass
class ErasedUser:
    """What an erasure removed from PostgreSQL, and what to look for in Redis afterwards."""

    erasure_id: int
    erased_at: datetime
    counts: dict[str, int]
    user_id: str
    conversation_ids: set[str] = field(default_factory=set)
    message_ids: set[int] = field(default_factory=set)
    reminder_ids: set[int] = field(default_factory=set)
    correlation_ids: set[str] = field(default_factory=set)


def _tuples(conn: psycopg.Connection[Any], query: str, params: Any) -> list[tuple[Any, ...]]:
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(query, params).fetchall()


def _ids(conn: psycopg.Connection[Any], query: str, params: Any) -> list[Any]:
    return [r[0] for r in _tuples(conn, query, params)]


def _delete(conn: psycopg.Connection[Any], query: str | sql.Composed, params: Any) -> int:
    with conn.cursor() as cur:
        cur.execute(query, params)
        return max(cur.rowcount, 0)


def erase(
    conn: psycopg.Connection[Any],
    tenant_id: UUID,
    user_id: UUID,
    *,
    actor: str,
    role: str,
    reference: str | None = None,
) -> ErasedUser | None:
    """Delete every row, memory, vector and checkpoint of the user; None if there is no user.

    Runs inside the caller's transaction (all or nothing). It first waits, up to
    `LOCK_TIMEOUT`, for any turn, handoff action or send of the user's that is running, so
    none of them writes after the erasure; `UserBusy` when one does not finish in time.
    """
    conn.execute(f"set local lock_timeout = '{LOCK_TIMEOUT}'")
    try:
        user = _ids(
            conn, "select id from users where id = %s and tenant_id = %s for update",
            (user_id, tenant_id),
        )  # fmt: skip
        if not user:
            return None
        conversations = _ids(
            conn, "select id from conversations where user_id = %s and tenant_id = %s "
            "order by id for update", (user_id, tenant_id),
        )  # fmt: skip
        # The locks the jobs take (server.jobs: turn, handoff, send, transcribe).
        keys = [conversation_lock(c) for c in conversations] + [
            send_lock(m) if d == "outbound" else transcribe_lock(m)
            for m, d in _tuples(
                conn,
                "select id, direction from messages where conversation_id = any(%s) and ("
                "(direction = 'outbound' and status in ('pending', 'dispatching')) or "
                "(direction = 'inbound' and transcription_status = 'pending'))",
                (conversations,),
            )
        ]
        for key in sorted(keys):
            lock_for_transaction(conn, key)
        return _erase_locked(conn, tenant_id, user_id, conversations, actor, role, reference)
    except psycopg.errors.LockNotAvailable as exc:
        raise UserBusy(
            "The assistant is still working on this user's messages; try again in a minute."
        ) from exc


def _erase_locked(
    conn: psycopg.Connection[Any],
    tenant_id: UUID,
    user_id: UUID,
    conversations: list[UUID],
    actor: str,
    role: str,
    reference: str | None,
) -> ErasedUser:
    found = ErasedUser(0, datetime.now(UTC), {}, str(user_id),
                       conversation_ids={str(c) for c in conversations})  # fmt: skip
    for mid, cid in _tuples(
        conn,
        "select id, correlation_id from messages where conversation_id = any(%s)",
        (conversations,),
    ):
        found.message_ids.add(int(mid))
        found.correlation_ids.add(str(cid))
    for rid, cid in _tuples(
        conn,
        "select id, correlation_id from reminders where user_id = %s and tenant_id = %s",
        (user_id, tenant_id),
    ):
        found.reminder_ids.add(int(rid))
        found.correlation_ids.add(str(cid))
    threads = _ids(conn, "select thread_id from conversations where id = any(%s)", (conversations,))
    by_user, by_conv = (user_id, tenant_id), (conversations,)
    prefix = store_prefix(tenant_id, user_id)

    # Children first, so every count is the table's own (the foreign keys would cascade).
    steps = [
        ("message_status_events",
         "delete from message_status_events where message_id = any(%s) or (tenant_id = %s "
         "and provider_message_id in (select provider_message_id from messages "
         "where conversation_id = any(%s) and provider_message_id is not null))",
         (list(found.message_ids), tenant_id, conversations)),
        ("ai_results", "delete from ai_results where conversation_id = any(%s)", by_conv),
        ("conversation_transitions",
         "delete from conversation_transitions where conversation_id = any(%s)", by_conv),
        ("reminders", "delete from reminders where user_id = %s and tenant_id = %s", by_user),
        ("messages", "delete from messages where conversation_id = any(%s)", by_conv),
        ("important_dates",
         "delete from important_dates where person_id in "
         "(select id from people where user_id = %s and tenant_id = %s)", by_user),
        ("people", "delete from people where user_id = %s and tenant_id = %s", by_user),
        ("finance_entries",
         "delete from finance_entries where user_id = %s and tenant_id = %s", by_user),
        ("subscriptions", "delete from subscriptions where user_id = %s and tenant_id = %s",
         by_user),
        ("feature_overrides",
         "delete from feature_overrides where user_id = %s and tenant_id = %s", by_user),
        ("usage_days", "delete from usage_days where user_id = %s and tenant_id = %s", by_user),
        ("budget_counters",
         "delete from budget_counters where subject_id = %s and tenant_id = %s", by_user),
        # The tenant's spending stays the tenant's, without the user (or a link to their turns).
        ("usage_ledger",
         "update usage_ledger set user_id = null, correlation_id = null "
         "where user_id = %s and tenant_id = %s", by_user),
        ("conversations", "delete from conversations where id = any(%s)", by_conv),
        *langgraph_deletes("= any(%s)", threads, prefix),
        ("users", "delete from users where id = %s and tenant_id = %s", by_user),
    ]  # fmt: skip
    for table, query, params in steps:
        found.counts[table] = _delete(conn, query, params)

    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            "insert into data_erasures (tenant_id, erased_by, erased_by_role, reference, counts) "
            "values (%s, %s, %s, %s, %s) returning id, erased_at",
            (tenant_id, actor, role, reference, Jsonb(found.counts)),
        ).fetchone()
    assert row is not None
    found.erasure_id, found.erased_at = int(row[0]), row[1]
    return found


def erasures(
    conn: psycopg.Connection[Any], tenant_id: UUID, after: int, limit: int
) -> list[dict[str, Any]]:
    """The tenant's erasure records after the id `after`, oldest first (no personal data)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """select id, erased_by, erased_by_role, reference, counts, erased_at, jobs_removed,
                      redis_cleaned_at
               from data_erasures where tenant_id = %s and id > %s order by id limit %s""",
            (tenant_id, after, limit),
        ).fetchall()


def mark_redis_cleaned(conn: psycopg.Connection[Any], erasure_id: int, jobs_removed: int) -> None:
    """Record that the erased user's jobs and cached profile are gone from Redis too."""
    conn.execute(
        "update data_erasures set jobs_removed = %s, redis_cleaned_at = now() where id = %s",
        (jobs_removed, erasure_id),
    )
