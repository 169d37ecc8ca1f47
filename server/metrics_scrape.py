"""The API's `/metrics`: its own counters (or every API process's) and scrape-time gauges.

The gauges describe shared state, read when Prometheus scrapes: jobs per RQ queue and state and
the age of each queue's oldest waiting job (Redis), and the conversations waiting for a person
across tenants (PostgreSQL). A backend that is down does not fail the scrape; the gauge
`conversa_scrape_collector_success` says which collector could not read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Protocol

import structlog
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from psycopg_pool import ConnectionPool
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.utils import str_to_date

from server.metrics import multiprocess_dir
from store.conversations import WITH_STAFF
from store.support import staff_backlog

log = structlog.get_logger(__name__)


class _Collector(Protocol):
    def collect(self) -> Iterable[Metric]: ...


class QueueCollector:
    """Jobs per queue and state, and the age of each queue's oldest waiting job."""

    def __init__(self, redis: Redis, queues: Iterable[str]) -> None:
        self._redis, self._queues = redis, tuple(queues)

    def collect(self) -> Iterator[Metric]:
        """Read the queues (read-only: RQ's registries are not cleaned up here)."""
        jobs = GaugeMetricFamily(
            "conversa_queue_jobs",
            "RQ jobs per queue and state (queued, started, scheduled, deferred, failed).",
            labels=["queue", "state"],
        )
        age = GaugeMetricFamily(
            "conversa_queue_oldest_job_age_seconds",
            "Seconds the oldest job waiting in the queue has waited (0 when it is empty).",
            labels=["queue"],
        )
        now = datetime.now(UTC)
        for name in self._queues:
            queue = Queue(name, connection=self._redis)
            jobs.add_metric([name, "queued"], queue.count)
            registries = {
                "started": queue.started_job_registry,
                "scheduled": queue.scheduled_job_registry,
                "deferred": queue.deferred_job_registry,
                "failed": queue.failed_job_registry,
            }
            for state, registry in registries.items():
                jobs.add_metric([name, state], registry.get_job_count(cleanup=False))
            age.add_metric([name], self._oldest_age(queue.key, now))
        yield jobs
        yield age

    def _oldest_age(self, queue_key: str, now: datetime) -> float:
        oldest = self._redis.lindex(queue_key, 0)  # RQ pops from the left: the next job
        if oldest is None:
            return 0.0
        job_id = oldest.decode() if isinstance(oldest, bytes) else str(oldest)
        enqueued = self._redis.hget(Job.key_for(job_id), "enqueued_at")
        if not enqueued:
            return 0.0
        at = str_to_date(enqueued)
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        return max(0.0, (now - at).total_seconds())


class HandoffCollector:
    """Conversations a person has, across tenants, and how long the longest has waited.

    Reads `conversations` with the platform scope for one transaction (row-level security shows
    no tenant's rows otherwise); only counts and ages leave the database.
    """

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def collect(self) -> Iterator[Metric]:
        """Count the conversations in HANDOFF and in WAITING_USER."""
        found = dict.fromkeys(WITH_STAFF, (0, 0.0))
        with self._pool.connection(timeout=2) as conn, conn.transaction():
            for backlog in staff_backlog(conn):
                found[backlog.state] = (backlog.count, backlog.oldest_seconds)
        conversations = GaugeMetricFamily(
            "conversa_handoff_conversations",
            "Conversations a person has: HANDOFF (the user waits for staff) and WAITING_USER "
            "(staff answered and wait for the user).",
            labels=["state"],
        )
        oldest = GaugeMetricFamily(
            "conversa_handoff_oldest_wait_seconds",
            "Seconds the longest-waiting conversation has been in its state (0 when none).",
            labels=["state"],
        )
        for state, (count, age) in found.items():
            conversations.add_metric([state], count)
            oldest.add_metric([state], age)
        yield conversations
        yield oldest


class _SharedState:
    """Run the scrape-time collectors; one whose backend is down is reported, not raised."""

    def __init__(self, collectors: dict[str, _Collector]) -> None:
        self._collectors = collectors

    def collect(self) -> Iterator[Metric]:
        success = GaugeMetricFamily(
            "conversa_scrape_collector_success",
            "Whether a scrape-time collector (queues, handoffs) could read its backend.",
            labels=["collector"],
        )
        for name, collector in self._collectors.items():
            try:
                metrics = list(collector.collect())
            except Exception as exc:
                log.warning("metrics collector failed", collector=name, error=str(exc))
                success.add_metric([name], 0)
                continue
            success.add_metric([name], 1)
            yield from metrics
        yield success


class _Forward:
    """Expose another registry's metrics through this one."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        return self._registry.collect()


class ApiMetrics:
    """What `GET /metrics` renders for one API process."""

    def __init__(self, redis: Redis, pool: ConnectionPool, queues: Iterable[str]) -> None:
        self._shared = _SharedState(
            {"queues": QueueCollector(redis, queues), "handoffs": HandoffCollector(pool)}
        )

    def render(self) -> bytes:
        """Prometheus's text format (blocking: call it off the event loop)."""
        registry = CollectorRegistry()
        if multiprocess_dir():  # several API processes: add up every process's files
            MultiProcessCollector(registry)
        else:
            registry.register(_Forward(REGISTRY))  # type: ignore[arg-type]
        registry.register(self._shared)  # type: ignore[arg-type]
        return generate_latest(registry)
