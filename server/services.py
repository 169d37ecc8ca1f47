"""The composition root: resolve where Postgres and Redis are, and build the shared clients."""

from __future__ import annotations

import os
from dataclasses import dataclass

import structlog
from psycopg_pool import ConnectionPool
from redis import Redis

from server.settings import Settings, get_settings
from store.embedded import start_postgres, start_redis

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


def redis_client(url: str) -> Redis:
    """Return a Redis client that fails fast when Redis is down."""
    return Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)


@dataclass
class Services:
    """What the API shares across requests."""

    settings: Settings
    pool: ConnectionPool
    redis: Redis

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
            check=ConnectionPool.check_connection,
            open=False,
            name="api",
        )
        pool.open(wait=False)
        return cls(settings=settings, pool=pool, redis=redis_client(settings.redis_url))

    def close(self) -> None:
        """Close the pool and the Redis client."""
        self.pool.close()
        self.redis.close()
