"""The composition root: resolve where Postgres and Redis are, and build the shared clients."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from redis import Redis

from server.ack_batching import AckBatcher
from server.settings import Settings, get_settings
from store import tenants
from store.embedded import start_postgres, start_redis
from store.records import Tenant
from store.scoping import use_role, use_role_async

log = structlog.get_logger(__name__)


def resolve_backends(settings: Settings) -> Settings:
    """Fill in DATABASE_URL and REDIS_URL, starting the embedded servers when they are unset.

    The resolved URLs are also exported to this process's environment, so the processes it
    starts (and forked RQ work horses) reach the same servers.
    """
    updates: dict[str, str] = {}
    if not settings.database_url:
        updates["database_url"] = start_postgres(settings.data_dir)
        log.info("embedded postgres ready", data_dir=str(settings.data_dir / "pg"))
    if not settings.redis_url:
        updates["redis_url"] = start_redis(settings.data_dir / "redis").url
        log.info("embedded redis ready", url=updates["redis_url"])
    for key, value in updates.items():
        os.environ[key.upper()] = value
    if updates:
        get_settings.cache_clear()
    return settings.model_copy(update=updates)


_CHECKED_AT = "_conversa_checked_at"
_CHECK_AFTER = 5.0


def _idle_too_long(conn: psycopg.Connection | psycopg.AsyncConnection) -> bool:
    now = time.monotonic()
    idle = now - getattr(conn, _CHECKED_AT, 0.0) > _CHECK_AFTER
    setattr(conn, _CHECKED_AT, now)
    return idle


def check_if_idle(conn: psycopg.Connection) -> None:
    """Ping a connection (pooled, or a worker lane's kept one) that has not been used for a few
    seconds; raise `psycopg.Error` if the server dropped it."""
    if _idle_too_long(conn):
        ConnectionPool.check_connection(conn)


async def _check_if_idle_async(conn: psycopg.AsyncConnection) -> None:
    if _idle_too_long(conn):
        await AsyncConnectionPool.check_connection(conn)


def redis_client(url: str) -> Redis:
    """Return a Redis client that fails fast when Redis is down."""
    return Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)


class TenantDirectory:
    """Tenants by WhatsApp sender, remembered for a short while (`TENANT_CACHE_SECONDS`).

    Every webhook needs its tenant before anything else; most of them can skip the database.
    A changed auth token or sender takes at most the cache's lifetime to apply.
    """

    def __init__(self, pool: ConnectionPool, ttl: float) -> None:
        self._pool, self._ttl = pool, ttl
        self._entries: dict[str, tuple[float, Tenant]] = {}

    def cached(self, sender: str) -> Tenant | None:
        """Return the tenant if it was looked up recently; never touches the database."""
        entry = self._entries.get(sender)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def forget(self) -> None:
        """Drop everything remembered (this process changed a tenant)."""
        self._entries.clear()

    def by_sender(self, sender: str) -> Tenant | None:
        """Look the tenant up in the database (and remember it)."""
        with self._pool.connection() as conn:
            tenant = tenants.tenant_by_sender(conn, sender)
        if tenant is not None and self._ttl > 0:
            self._entries[sender] = (time.monotonic() + self._ttl, tenant)
        return tenant


class Wake(Protocol):
    """Something `set()` wakes: a `threading.Event`, or the relay process's pipe."""

    def set(self) -> None: ...


@dataclass
class Services:
    """What the API shares across requests."""

    settings: Settings
    pool: ConnectionPool
    redis: Redis
    tenants: TenantDirectory
    due: Wake = field(default_factory=threading.Event)
    """Set when a stored message is due a job, to wake the relay (thread or process)."""
    webhook_pool: AsyncConnectionPool | None = None
    """The inbound webhook's connections, used on the API's event loop (`open_webhook_pool`)."""
    acks: AckBatcher | None = None
    """The inbound webhook's group commit, on `webhook_pool` (`open_webhook_pool`)."""

    @classmethod
    def build(cls, settings: Settings) -> Services:
        """Open the connection pool and the Redis client for `settings`."""
        if not settings.database_url or not settings.redis_url:
            raise RuntimeError("resolve_backends() must run before the services are built")
        pool = ConnectionPool(
            settings.database_url,
            min_size=1,
            max_size=settings.db_pool_max_size,
            timeout=settings.db_pool_timeout,
            kwargs={"autocommit": True},
            configure=lambda conn: use_role(conn, settings.database_app_role),
            # A connection the server dropped is checked (one round trip) before reuse, but
            # only once it has idled long enough for that to be likely.
            check=check_if_idle,
            max_idle=300,
            open=False,
            name="api",
        )
        pool.open(wait=False)
        return cls(
            settings=settings,
            pool=pool,
            redis=redis_client(settings.redis_url),
            tenants=TenantDirectory(pool, settings.tenant_cache_seconds),
        )

    async def open_webhook_pool(self) -> None:
        """Open `webhook_pool`, and the group commit `acks` on it, on the running event loop
        (the API's lifespan does)."""
        settings = self.settings
        role = settings.database_app_role
        self.webhook_pool = AsyncConnectionPool(
            settings.database_url or "",
            # All open from the start: opening one under load costs ~7 ms (SET ROLE included)
            # and the requests queued behind it pay for it too.
            min_size=settings.db_pool_max_size,
            max_size=settings.db_pool_max_size,
            timeout=settings.db_pool_timeout,
            kwargs={"autocommit": True},
            configure=lambda conn: use_role_async(conn, role),
            check=_check_if_idle_async,
            max_idle=300,
            open=False,
            name="webhook",
        )
        await self.webhook_pool.open(wait=False)
        self.acks = AckBatcher(self.webhook_pool)

    async def close_webhook_pool(self) -> None:
        """Close `webhook_pool`, if it was opened."""
        if self.webhook_pool is not None:
            await self.webhook_pool.close()

    def close(self) -> None:
        """Close the pool and the Redis client."""
        self.pool.close()
        self.redis.close()
