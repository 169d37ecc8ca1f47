"""Readiness: PostgreSQL and Redis answer, and the database's migrations are at head.

The API reports it at `GET /readyz` (with its own pool and Redis client); `conversa check`
reports the same for a worker's host, with connections of its own, and exits 1 when any check
fails. Liveness (`/healthz`, `/livez`) touches nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
from redis import Redis

from server.services import redis_client
from store.migrate import pending, ping
from store.scoping import use_role

OK = "ok"
_at_head: set[str] = set()


def _error(exc: Exception) -> str:
    return f"error: {type(exc).__name__}"


def migrations(database_url: str) -> str:
    """`ok` when no migration is pending; once at head, not asked again (they only go forward)."""
    if database_url in _at_head:
        return OK
    try:
        todo = pending(database_url)
    except Exception as exc:
        return _error(exc)
    if todo:
        return f"pending: {', '.join(todo)} (run `conversa migrate`)"
    _at_head.add(database_url)
    return OK


def _check(probe: Callable[[], object]) -> str:
    try:
        probe()
    except Exception as exc:
        return _error(exc)
    return OK


def readiness(database_url: str, postgres: Callable[[], object], redis: Redis) -> dict[str, str]:
    """Run the three checks: `postgres` runs one query, `redis` is pinged."""
    checks = {"postgres": _check(postgres), "redis": _check(redis.ping)}
    checks["migrations"] = migrations(database_url) if checks["postgres"] == OK else "unknown"
    return checks


def check_backends(database_url: str, redis_url: str, app_role: str | None) -> dict[str, str]:
    """The checks as a worker sees the backends: its own connection, as the app role."""

    def postgres() -> None:
        with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
            use_role(conn, app_role)
            ping(conn)

    redis = redis_client(redis_url)
    try:
        return readiness(database_url, postgres, redis)
    finally:
        redis.close()


def ready(checks: dict[str, str]) -> bool:
    """Whether every check passed."""
    return all(value == OK for value in checks.values())
