"""What the jobs need: their own database connection, Redis, retry state (locks: store.locks;
a tenant's WhatsApp channel: channels.registry)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import psycopg
from redis import Redis
from rq import get_current_job

from server.services import redis_client
from server.settings import Settings
from store.scoping import dedicated_connection


@contextmanager
def connect(settings: Settings, tenant_id: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """Open the job's own connection, as the app role, scoped to one tenant for its life.

    Autocommit with dict rows, as LangGraph's Postgres saver wants; row-level security sees
    only `tenant_id`'s rows, whatever the job reads or writes.
    """
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL is not set; start workers with `conversa worker`")
    with dedicated_connection(
        settings.database_url, settings.database_app_role, tenant_id=tenant_id
    ) as conn:
        yield conn


@contextmanager
def connect_platform(settings: Settings) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """Open a system job's own connection in the platform scope: it reads across tenants
    (retention over every thread, the list of tenants a sweep visits), and nothing else should."""
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL is not set; start workers with `conversa worker`")
    with dedicated_connection(
        settings.database_url, settings.database_app_role, platform=True
    ) as conn:
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
