"""What both jobs need: a database connection opened inside the job, and the retry state."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from redis import Redis
from rq import get_current_job
from twilio.rest import Client

from channels.twilio_client import make_twilio_client
from server.services import redis_client
from server.settings import Settings
from store.records import Tenant
from store.scoping import scope_session, use_role


@contextmanager
def connect(settings: Settings, tenant_id: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """Open the job's own connection, as the app role, scoped to one tenant for its life.

    Autocommit with dict rows, as LangGraph's Postgres saver wants; row-level security sees
    only `tenant_id`'s rows, whatever the job reads or writes.
    """
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL is not set; start workers with `conversa worker`")
    with psycopg.connect(
        settings.database_url, autocommit=True, prepare_threshold=0, row_factory=dict_row
    ) as conn:
        use_role(conn, settings.database_app_role)
        scope_session(conn, tenant_id)
        yield conn


def redis_for(settings: Settings) -> Redis:
    """Return a Redis client for the job's follow-up enqueues."""
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set; start workers with `conversa worker`")
    return redis_client(settings.redis_url)


def twilio_for(settings: Settings, tenant: Tenant) -> Client:
    """Return the Twilio client of `tenant` (the sandbox when TWILIO_API_BASE_URL is set)."""
    return make_twilio_client(
        tenant.twilio_account_sid,
        tenant.twilio_auth_token,
        api_base_url=settings.twilio_api_base_url,
    )


def final_attempt() -> bool:
    """Whether RQ will not retry the current job if it fails now."""
    job = get_current_job()
    return job is None or not job.retries_left
