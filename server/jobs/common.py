"""What the jobs need: their own database connection, Redis, retry state (locks: store.locks;
a tenant's WhatsApp channel: channels.registry)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from redis import Redis
from rq import get_current_job

from server.services import check_if_idle, redis_client
from server.settings import Settings
from store.scoping import (
    dedicated_connection,
    open_connection,
    scope_connection,
    unscope_connection,
)

Conn = psycopg.Connection[dict[str, Any]]


KEEP_IDLE_SECONDS = 60.0
"""How long a worker lane keeps its connection while it has no job (`release_idle`)."""

_lane = threading.local()


class _Kept:
    """The one connection a worker lane keeps from job to job, and whether a job has it."""

    def __init__(self) -> None:
        self.conn: Conn | None = None
        self.target: tuple[str, str | None] | None = None
        self.busy = False
        self.used_at = 0.0

    def take(self, database_url: str, role: str | None) -> Conn:
        if self.conn is not None and (self.conn.closed or self.target != (database_url, role)):
            self.drop()
        if self.conn is not None:
            try:
                check_if_idle(self.conn)  # idle a while: the server may have dropped it
            except psycopg.Error:
                self.drop()
        if self.conn is None:
            self.conn = open_connection(database_url, role)
            self.target = (database_url, role)
        self.busy = True
        return self.conn

    def give_back(self, conn: Conn) -> None:
        """Keep the connection for the next job once it is unscoped, or close it when the job
        left it mid-transaction, broken or closed."""
        self.busy, self.used_at = False, time.monotonic()
        if conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
            self.drop()
            return
        try:
            unscope_connection(conn)
        except psycopg.Error:
            self.drop()

    def drop(self) -> None:
        conn, self.conn, self.target = self.conn, None, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()


@contextmanager
def kept_connections() -> Iterator[None]:
    """Let the jobs this thread runs (a worker lane's) share one connection, kept between
    them, instead of opening one each: a new PostgreSQL backend costs more CPU than most jobs'
    queries (~50 ms of a turn's, measured with `bench/bench_turns.py`). Closed at the end."""
    _lane.kept = kept = _Kept()
    try:
        yield
    finally:
        del _lane.kept
        kept.drop()


def release_idle(after: float = KEEP_IDLE_SECONDS) -> None:
    """Close this lane's kept connection if no job has used it for `after` seconds, so an
    idle worker holds no PostgreSQL connections."""
    kept: _Kept | None = getattr(_lane, "kept", None)
    idle = kept is not None and not kept.busy and kept.conn is not None
    if idle and time.monotonic() - kept.used_at > after:
        kept.drop()


@contextmanager
def _job_connection(
    settings: Settings, *, tenant_id: str | None = None, platform: bool = False
) -> Iterator[Conn]:
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL is not set; start workers with `conversa worker`")
    kept: _Kept | None = getattr(_lane, "kept", None)
    if kept is None or kept.busy:  # not a lane, or a job's second connection: its own
        with dedicated_connection(
            settings.database_url, settings.database_app_role, tenant_id=tenant_id,
            platform=platform,
        ) as conn:  # fmt: skip
            yield conn
        return
    conn = kept.take(settings.database_url, settings.database_app_role)
    try:
        scope_connection(conn, tenant_id=tenant_id, platform=platform)
        yield conn
    finally:
        kept.give_back(conn)


@contextmanager
def connect(settings: Settings, tenant_id: str) -> Iterator[Conn]:
    """The job's own connection, as the app role, scoped to one tenant while the job has it.

    Autocommit with dict rows, as LangGraph's Postgres saver wants; row-level security sees
    only `tenant_id`'s rows, whatever the job reads or writes. In a worker lane the connection
    is the lane's, kept from job to job (`kept_connections`), and unscoped (advisory locks
    released) when the job is done; elsewhere it is opened for the job and closed after.
    """
    with _job_connection(settings, tenant_id=tenant_id) as conn:
        yield conn


@contextmanager
def connect_platform(settings: Settings) -> Iterator[Conn]:
    """A system job's connection in the platform scope: it reads across tenants (retention
    over every thread, the list of tenants a sweep visits), and nothing else should."""
    with _job_connection(settings, platform=True) as conn:
        yield conn


def redis_for(settings: Settings) -> Redis:
    """Return the process's Redis client for the job's follow-up enqueues."""
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set; start workers with `conversa worker`")
    return _redis(settings.redis_url)


@lru_cache(maxsize=4)
def _redis(url: str) -> Redis:
    return redis_client(url)


def final_attempt() -> bool:
    """Whether RQ will not retry the current job if it fails now."""
    job = get_current_job()
    return job is None or not job.retries_left
