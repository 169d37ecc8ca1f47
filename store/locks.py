"""Advisory locks the jobs and the erasure share, named in one place.

A turn holds its conversation's lock; a send, its message's; a transcription, its voice note's.
Erasing a user's data takes the same locks, so it waits for those jobs instead of racing them:
the names must match exactly, which is why every holder builds them here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import tuple_row

_KEY = "hashtextextended(%s, 0)"


def conversation_lock(conversation_id: UUID | str) -> str:
    """The lock of one conversation's turns (and staff replies into it)."""
    return f"conversation:{conversation_id}"


def send_lock(message_id: int) -> str:
    """The lock of one outbound message's send."""
    return f"send:{message_id}"


def provider_message_lock(provider_message_id: str) -> str:
    """The lock between recording a provider's id for a send and a status callback for that id
    (held for a transaction: whichever commits second sees the other's row)."""
    return f"provider-message:{provider_message_id}"


def transcribe_lock(message_id: int) -> str:
    """The lock of one voice note's transcription."""
    return f"transcribe:{message_id}"


def try_lock(conn: psycopg.Connection[Any], key: str) -> bool:
    """Take the session advisory lock `key` if free; a dead worker's locks go with its session."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(f"select pg_try_advisory_lock({_KEY})", (key,)).fetchone()
    return bool(row and row[0])


def unlock(conn: psycopg.Connection[Any], key: str) -> None:
    """Release the session advisory lock `key`."""
    conn.execute(f"select pg_advisory_unlock({_KEY})", (key,))


@contextmanager
def held(conn: psycopg.Connection[Any], key: str) -> Iterator[None]:
    """Hold the session advisory lock `key`, waiting for whoever holds it now."""
    conn.execute(f"select pg_advisory_lock({_KEY})", (key,))
    try:
        yield
    finally:
        unlock(conn, key)


def lock_for_transaction(conn: psycopg.Connection[Any], key: str) -> None:
    """Take `key` until the transaction ends (waiting, or failing under `lock_timeout`)."""
    conn.execute(f"select pg_advisory_xact_lock({_KEY})", (key,))
