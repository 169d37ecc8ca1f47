"""Prune old LangGraph checkpoints: each thread keeps its latest, the rest go.

With `sync` durability every step of every turn writes a checkpoint, and only the latest one is
needed to continue a conversation (the full history is in the `messages` table). The job runs
across tenants, so its connection takes the platform scope; it reads and deletes checkpoint
rows only. The API schedules it every `RETENTION_INTERVAL_SECONDS` (one API process wins each
round, through a Redis key); `conversa prune` runs it by hand.
"""

from __future__ import annotations

import structlog
from redis import Redis

from server.jobs.common import connect_platform
from server.jobs.queue import enqueue_once_per_interval
from server.settings import Settings, get_settings
from store.checkpoints import threads_to_prune

log = structlog.get_logger(__name__)

PRUNE_JOB = "server.jobs.retention.prune_checkpoints"
_SCHEDULE_KEY = "conversa:retention:scheduled"


def prune_checkpoints(batch: int | None = None) -> int:
    """Prune up to `batch` threads down to their latest checkpoint; return how many."""
    settings = get_settings()
    # A system job over every tenant's threads: the platform scope, for this session.
    with connect_platform(settings) as conn:
        threads = threads_to_prune(conn, batch or settings.retention_batch)
        if threads:
            from langgraph.checkpoint.postgres import PostgresSaver  # the API never imports it

            PostgresSaver(conn).prune(threads, strategy="keep_latest")
    log.info("pruned old checkpoints", threads=len(threads))
    return len(threads)


def schedule_retention(redis: Redis, settings: Settings) -> bool:
    """Queue the prune job if no API process has done so this interval; return whether queued."""
    return enqueue_once_per_interval(
        redis,
        settings,
        key=_SCHEDULE_KEY,
        interval=settings.retention_interval_seconds,
        func=PRUNE_JOB,
        description="prune checkpoints",
    )
