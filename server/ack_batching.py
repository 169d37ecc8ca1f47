"""Group commit for the inbound webhook: concurrent acks share one transaction and one flush.

A provider waits for our 200 only once its message is durable, so every ack ends in a commit,
and every commit waits for the WAL to reach the disk. One transaction per request makes the
requests of a busy moment queue behind each other's flushes. `AckBatcher` commits them
together instead: a request that finds no batch in flight starts one at once (no timer, so a
quiet API answers as fast as before); the requests that arrive while that batch commits wait,
and go together as the next batch, up to `max_batch`. Each request is answered only after the
commit that holds its message succeeded.

Failure modes, and what each request is told:

- The batch's statement or its commit fails because of one row (a tenant deleted behind the
  cache, a value over one of the database's limits, a deferred check at commit), or a deadlock
  or serialization failure: nothing of the batch was stored, and the connection still works.
  The rows are stored again one transaction each, so only the bad one fails; each request is
  answered once its own commit succeeded (or with its own error).
- The database is unreachable, the connection broke (even during the commit: its outcome is
  unknown), or the database as a whole is in trouble (a statement timeout, out of disk or
  memory): every request of the batch raises (the webhook answers 503; the provider retries,
  and the retry is stored once, since `store_inbound_message` drops a MessageSid it already
  holds). Storing such a batch row by row would only wait as long again per row.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool

from server import metrics
from store import inbox
from store.records import Message

log = structlog.get_logger(__name__)

MAX_BATCH = 64
"""At most this many messages per transaction: a batch's statement stays a few milliseconds."""


class NotCommitted(Exception):
    """The transaction holding the message did not commit: nothing of it was stored.

    Retryable: the provider's retry of the same message is stored once.
    """


@dataclass(frozen=True)
class _Ack:
    fields: inbox.InboundFields
    stored: asyncio.Future[Message | None]


def _settle(ack: _Ack, result: Message | BaseException | None) -> None:
    if ack.stored.done():  # the request went away (cancelled); its message is stored or not
        return
    if isinstance(result, BaseException):
        ack.stored.set_exception(result)
    else:
        ack.stored.set_result(result)


class AckBatcher:
    """Store inbound messages for the webhook, committing the concurrent ones together.

    Lives on the API's event loop, next to the pool it takes connections from. `in_flight`
    batches at most commit at once: one is true group commit (every request that comes while
    a flush is under way goes into the next one); two overlap one batch's statement with the
    other's flush.
    """

    def __init__(
        self, pool: AsyncConnectionPool, *, max_batch: int = MAX_BATCH, in_flight: int = 1
    ) -> None:
        self._pool, self._max_batch, self._in_flight = pool, max_batch, in_flight
        self._waiting: deque[_Ack] = deque()
        self._committers: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        """How many messages wait for a batch (the ones of batches in flight not counted)."""
        return len(self._waiting)

    async def store(self, messages: Sequence[inbox.InboundFields]) -> list[Message | None]:
        """Store `messages` (one post's; in this order), each the stored row or None for a
        replay, once the transaction holding them has committed.

        Raises what the first failed message raised: `NotCommitted`, `psycopg.OperationalError`
        or `PoolTimeout` when the database could not take them, or the statement's own error
        for a message it refused (e.g. `psycopg.errors.ForeignKeyViolation`).
        """
        loop = asyncio.get_running_loop()
        acks = [_Ack(fields, loop.create_future()) for fields in messages]
        self._waiting.extend(acks)
        if len(self._committers) < self._in_flight:
            task = loop.create_task(self._commit_while_waiting())
            self._committers.add(task)
            task.add_done_callback(self._committers.discard)
        if len(acks) == 1:  # a Twilio post holds one message
            return [await acks[0].stored]
        outcomes = await asyncio.gather(*(ack.stored for ack in acks), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return outcomes  # type: ignore[return-value]

    async def _commit_while_waiting(self) -> None:
        while self._waiting:
            count = min(self._max_batch, len(self._waiting))
            batch = [self._waiting.popleft() for _ in range(count)]
            try:
                results, outcome = await self._commit(batch)
            except BaseException as exc:  # every request of the batch hears of it, then it goes on
                results, outcome = [exc] * len(batch), "failed"
                if not isinstance(exc, Exception):  # cancelled: the API is shutting down
                    for ack, result in zip(batch, results, strict=True):
                        _settle(ack, result)
                    raise
                log.error("inbound batch not stored", size=len(batch), error=str(exc))
            metrics.observe_ack_batch(len(batch), outcome)
            for ack, result in zip(batch, results, strict=True):
                _settle(ack, result)

    async def _commit(self, batch: list[_Ack]) -> tuple[list[Message | Exception | None], str]:
        """Store and commit `batch`; return each ack's result and the batch's outcome."""
        # Rows locked in one order by every batch (by tenant and user; stable, so one user's
        # messages keep their arrival order): concurrent batches, here or in another API
        # process, wait for each other instead of deadlocking.
        order = sorted(
            range(len(batch)),
            key=lambda i: (str(batch[i].fields["tenant_id"]), batch[i].fields["wa_id"]),
        )
        results: list[Message | Exception | None] = [None] * len(batch)
        async with self._pool.connection() as conn:
            executed = False
            try:
                async with conn.transaction():
                    stored = await inbox.store_inbound_batch_async(
                        conn, [batch[i].fields for i in order]
                    )
                    executed = True
            except psycopg.Error as exc:
                if _batch_wide(conn, exc):
                    if isinstance(exc, psycopg.OperationalError):
                        raise
                    raise NotCommitted(str(exc)) from exc
                log.warning(
                    "inbound batch not stored; storing its rows one by one",
                    failed_at="commit" if executed else "statement",
                    error=str(exc),
                )
                for i in order:
                    results[i] = await _store_alone(conn, batch[i].fields)
                return results, "split"
        for i, message in zip(order, stored, strict=True):
            results[i] = message
        return results, "committed"


_ROW_LEVEL_OPERATIONAL = ("40", "54")
"""SQLSTATE classes of the operational errors one statement's rows can cause, or that a retry
clears: transaction rollback (deadlock, serialization failure) and program limit exceeded (an
index row too large, say). Any other operational error is the database's, not a row's."""


def _batch_wide(conn: psycopg.AsyncConnection, exc: psycopg.Error) -> bool:
    """Whether `exc` fails every row of the batch alike: the connection is gone, or the
    database is in trouble; else storing the rows one by one finds the bad one."""
    if conn.broken or conn.closed:
        return True
    if isinstance(exc, psycopg.OperationalError):
        return (exc.sqlstate or "")[:2] not in _ROW_LEVEL_OPERATIONAL
    return False


async def _store_alone(
    conn: psycopg.AsyncConnection, fields: inbox.InboundFields
) -> Message | Exception | None:
    """Store one message in its own transaction; return the error instead of raising it."""
    executed = False
    try:
        async with conn.transaction():
            [message] = await inbox.store_inbound_batch_async(conn, [fields])
            executed = True
    except psycopg.Error as exc:
        if executed and not isinstance(exc, psycopg.OperationalError):
            return NotCommitted(str(exc))
        return exc
    return message
