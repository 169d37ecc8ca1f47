"""Reads of LangGraph's checkpoint tables that the checkpointer's own API does not offer."""

from __future__ import annotations

import psycopg
from psycopg.rows import tuple_row


def threads_to_prune(conn: psycopg.Connection, limit: int) -> list[str]:
    """Threads that hold more than one top-level checkpoint, most checkpoints first."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            """select thread_id from checkpoints where checkpoint_ns = ''
               group by thread_id having count(*) > 1
               order by count(*) desc limit %s""",
            (limit,),
        ).fetchall()
    return [row[0] for row in rows]
