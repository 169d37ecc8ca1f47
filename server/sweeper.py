"""Enqueue stored messages whose job never ran, so nothing acknowledged is lost.

A message is stored before the webhook answers 200; if Redis was down then, or the process
died between the commit and the enqueue, the sweeper finds it and enqueues it. It also
re-enqueues messages whose job was lost later (Redis wiped, a worker killed mid-run) once
STALE_JOB_SECONDS have passed. Jobs are idempotent, so a message enqueued twice is still
answered once.
"""

from __future__ import annotations

import threading

import structlog
from psycopg_pool import ConnectionPool
from redis import Redis, RedisError

from server.queueing import enqueue_send, enqueue_turn
from server.services import Services
from server.settings import Settings
from store import repository as repo

log = structlog.get_logger(__name__)


def sweep_once(services: Services) -> int:
    """Enqueue every overdue message; return how many were enqueued."""
    return sweep(services.pool, services.redis, services.settings)


def sweep(pool: ConnectionPool, redis: Redis, settings: Settings) -> int:
    """Enqueue overdue messages found through `pool` onto `redis`."""
    count = 0
    with pool.connection() as conn, conn.transaction():
        claimed = repo.claim_overdue(
            conn,
            min_age_seconds=settings.sweep_min_age_seconds,
            stale_after_seconds=settings.stale_job_seconds,
        )
        if not claimed:
            return 0
        redis.ping()  # raises before anything is marked when Redis is still down
        for message in claimed:
            if message.direction == "inbound":
                enqueue_turn(redis, settings, message.id, message.correlation_id)
            else:
                enqueue_send(redis, settings, message.id, message.correlation_id)
            count += 1
        repo.mark_enqueued(conn, [m.id for m in claimed])
    log.info("sweeper enqueued stored messages", count=count)
    return count


class Sweeper(threading.Thread):
    """Run `sweep_once` every `SWEEP_INTERVAL_SECONDS` until stopped."""

    def __init__(self, services: Services) -> None:
        super().__init__(name="sweeper", daemon=True)
        self._services = services
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self._services.settings.sweep_interval_seconds):
            try:
                sweep_once(self._services)
            except RedisError as exc:
                log.warning("sweeper: redis unavailable", error=str(exc))
            except Exception as exc:
                log.warning("sweeper failed; will retry", error=str(exc))

    def stop(self) -> None:
        """Ask the loop to end and wait for it."""
        self._stop_event.set()
        self.join(timeout=5)
