"""Conversation states and their transitions, each kept with who or what caused it and when.

ACTIVE: the assistant answers. HANDOFF: a person has the conversation and the user waits for
them. WAITING_USER: a person has it and waits for the user. CLOSED: ended; the user's next
message opens a new conversation. The graph and the channel read the state; staff change it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import psycopg
from psycopg.rows import class_row, dict_row
from psycopg.types.json import Jsonb

from store.query import all_rows, columns, one
from store.records import Conversation, Message

State = Literal["ACTIVE", "WAITING_USER", "HANDOFF", "CLOSED"]
ActorKind = Literal["user", "assistant", "staff", "system"]

WITH_STAFF = ("HANDOFF", "WAITING_USER")
"""The states in which a person has the conversation and the assistant stays quiet."""

ALLOWED: dict[str, frozenset[str]] = {
    "ACTIVE": frozenset({"HANDOFF", "CLOSED"}),
    "HANDOFF": frozenset({"WAITING_USER", "ACTIVE", "CLOSED"}),
    "WAITING_USER": frozenset({"HANDOFF", "ACTIVE", "CLOSED"}),
    "CLOSED": frozenset(),
}
"""Where each state may go."""


class TransitionError(Exception):
    """The conversation cannot go where it was asked to; the message says why."""

    def __init__(self, message: str, current: str | None) -> None:
        super().__init__(message)
        self.current = current


class ClaimConflict(Exception):
    """Another person already claimed the conversation."""

    def __init__(self, claimed_by: str) -> None:
        super().__init__(f"The conversation is already claimed by {claimed_by}.")
        self.claimed_by = claimed_by


@dataclass(frozen=True)
class Handoff:
    """A conversation's handoff details, as the support side sees them."""

    id: UUID
    state: str
    state_changed_at: datetime
    handoff_reason: str | None
    handoff_route: str | None
    handoff_at: datetime | None
    claimed_by: str | None
    claimed_at: datetime | None
    staff_active_at: datetime | None


def _row(conn: psycopg.Connection[Any], sql: str, params: tuple[Any, ...]) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql, params).fetchone()


def handoff_of(conn: psycopg.Connection[Any], conversation_id: UUID) -> Handoff | None:
    """The conversation's state and handoff details, or None when it does not exist."""
    row = _row(
        conn,
        """select id, state, state_changed_at, handoff_reason, handoff_route, handoff_at,
                  claimed_by, claimed_at, staff_active_at
           from conversations where id = %s""",
        (conversation_id,),
    )
    return Handoff(**row) if row else None


def transition(
    conn: psycopg.Connection[Any],
    conversation_id: UUID,
    to: State,
    *,
    actor_kind: ActorKind,
    actor: str,
    reason: str = "",
    route: str | None = None,
    only_from: tuple[str, ...] | None = None,
) -> str | None:
    """Move the conversation to `to` and record who did it; return the state it left.

    Returns None (and records nothing) when it is already in `to`. Raises `TransitionError`
    when the move is not allowed, or the conversation is not in one of `only_from`.
    Run it inside the caller's transaction: the row is locked until that commits.
    """
    row = _row(
        conn,
        "select tenant_id, state from conversations where id = %s for update",
        (conversation_id,),
    )
    if row is None:
        raise TransitionError("No such conversation.", None)
    current = str(row["state"])
    if current == to:
        return None
    if only_from is not None and current not in only_from:
        raise TransitionError(
            f"The conversation is {current}, not {' or '.join(only_from)}.", current
        )
    if to not in ALLOWED[current]:
        raise TransitionError(f"A {current} conversation cannot become {to}.", current)
    entering_handoff = to == "HANDOFF" and current == "ACTIVE"
    leaving_staff = to in ("ACTIVE", "CLOSED")
    conn.execute(
        """update conversations set
               state = %(to)s, state_changed_at = now(), updated_at = now(),
               handoff_at = case when %(enter)s then now() else handoff_at end,
               handoff_reason = case when %(enter)s then %(reason)s else handoff_reason end,
               handoff_route = case when %(enter)s then %(route)s else handoff_route end,
               staff_active_at = case when %(enter)s then null else staff_active_at end,
               claimed_by = case when %(enter)s or %(leave)s then null else claimed_by end,
               claimed_at = case when %(enter)s or %(leave)s then null else claimed_at end
           where id = %(id)s""",
        {"to": to, "enter": entering_handoff, "leave": leaving_staff, "reason": reason,
         "route": route, "id": conversation_id},
    )  # fmt: skip
    conn.execute(
        """insert into conversation_transitions
               (tenant_id, conversation_id, from_state, to_state, actor_kind, actor, reason)
           values (%s, %s, %s, %s, %s, %s, %s)""",
        (row["tenant_id"], conversation_id, current, to, actor_kind, actor, reason[:1000]),
    )
    return current


def claim(conn: psycopg.Connection[Any], conversation_id: UUID, staff: str) -> Handoff:
    """Give the conversation to `staff`; claiming one's own claim again is fine.

    Raises `TransitionError` when no person has the conversation, `ClaimConflict` when
    someone else claimed it first (the row lock makes two claims at once take turns).
    """
    row = _row(
        conn,
        "select state, claimed_by from conversations where id = %s for update",
        (conversation_id,),
    )
    if row is None:
        raise TransitionError("No such conversation.", None)
    if row["state"] not in WITH_STAFF:
        raise TransitionError(
            f"The conversation is {row['state']}: there is nothing to claim.", row["state"]
        )
    if row["claimed_by"] not in (None, staff):
        raise ClaimConflict(str(row["claimed_by"]))
    conn.execute(
        """update conversations set claimed_by = %s,
               claimed_at = coalesce(claimed_at, now()), staff_active_at = now()
           where id = %s""",
        (staff, conversation_id),
    )
    handoff = handoff_of(conn, conversation_id)
    assert handoff is not None
    return handoff


def transitions(conn: psycopg.Connection[Any], conversation_id: UUID) -> list[dict[str, Any]]:
    """Every state change of the conversation, oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """select from_state, to_state, actor_kind, actor, reason, created_at
               from conversation_transitions where conversation_id = %s order by id""",
            (conversation_id,),
        ).fetchall()


def latest_for_user(conn: psycopg.Connection, user_id: UUID) -> Conversation | None:
    """Return the user's open conversation, else the one they wrote in last (where a message
    that is not a reply, such as a reminder or a date notice, goes)."""
    columns = ", ".join(f.name for f in fields(Conversation))
    with conn.cursor(row_factory=class_row(Conversation)) as cur:
        cur.execute(
            f"""select {columns} from conversations where user_id = %s
                order by state <> 'CLOSED' desc, last_inbound_at desc nulls last,
                         created_at desc
                limit 1""",
            (user_id,),
        )
        return cur.fetchone()


_CONV = columns(Conversation)
_MSG = columns(Message)


def conversation_by_id(conn: psycopg.Connection, conversation_id: UUID) -> Conversation | None:
    """Return one conversation by id."""
    return one(
        conn, Conversation, f"select {_CONV} from conversations where id = %s", (conversation_id,)
    )


def record_ai_result(
    conn: psycopg.Connection,
    *,
    conversation: Conversation,
    correlation_id: str,
    inbound_ids: Sequence[int],
    reply: str | None,
    model: str | None,
    error: str | None,
    duration_ms: int,
    route: str | None = None,
    route_reason: str | None = None,
    tool_calls: Sequence[dict[str, Any]] = (),
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    interrupted: bool = False,
) -> None:
    """Keep what one graph run produced (or why it failed), for people to audit."""
    conn.execute(
        """insert into ai_results (tenant_id, conversation_id, thread_id, correlation_id,
               inbound_message_ids, reply, model, error, duration_ms, route, route_reason,
               tool_calls, prompt_tokens, completion_tokens, interrupted)
           values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (conversation.tenant_id, conversation.id, conversation.thread_id, correlation_id,
         list(inbound_ids), reply, model, error, duration_ms, route, route_reason,
         Jsonb(_storable(list(tool_calls))), prompt_tokens, completion_tokens, interrupted),
    )  # fmt: skip


_SURROGATE = re.compile("[\ud800-\udfff]")


def _storable(value: Any) -> Any:
    """`value` with what jsonb cannot hold taken out of its text: NUL characters, and lone
    surrogates (as U+FFFD). A model may put either in a tool call's arguments; the audit row
    must still be written."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value.replace("\x00", ""))
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    return value


def recent_history(
    conn: psycopg.Connection, conversation_id: UUID, before_id: int, limit: int
) -> list[Message]:
    """The last `limit` answered or sent messages before `before_id`, oldest first."""
    rows = all_rows(
        conn,
        Message,
        f"""select {_MSG} from messages
            where conversation_id = %s and id < %s
              and (body <> '' or transcription_status = 'done')
              and ((direction = 'inbound' and processed_at is not null)
                   or (direction = 'outbound' and purpose = 'reply'))
            order by id desc limit %s""",
        (conversation_id, before_id, limit),
    )
    return rows[::-1]
