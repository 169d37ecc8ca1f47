"""A worker lane keeps one PostgreSQL connection from job to job (`kept_connections`).

Opening a backend per job cost more CPU than most jobs' queries. What a job leaves on the
connection must not reach the next: its tenant scope, the platform scope, its advisory locks,
an unfinished transaction. And a connection the server dropped while the lane idled is
replaced, not handed to a job.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from server import services
from server.jobs.common import connect, connect_platform, kept_connections, release_idle
from server.settings import Settings
from store.locks import conversation_lock, try_lock


def _backend(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("select pg_backend_pid() as pid").fetchone()
    assert row is not None
    return int(row["pid"])


def _scope(conn: psycopg.Connection[Any]) -> tuple[str | None, str | None]:
    row = conn.execute(
        "select current_setting('app.tenant_id', true) as tenant, "
        "current_setting('app.platform', true) as platform, current_user as role"
    ).fetchone()
    assert row is not None and row["role"] == "conversa_app"
    return row["tenant"] or None, row["platform"] or None


def _held_advisory_locks(settings: Settings) -> int:
    assert settings.database_url
    with psycopg.connect(settings.database_url) as other:
        row = other.execute("select count(*) from pg_locks where locktype = 'advisory'").fetchone()
    assert row is not None
    return int(row[0])


def test_a_lanes_jobs_share_one_backend_and_nothing_of_the_last_job(settings: Settings) -> None:
    first_tenant, second_tenant = str(uuid.uuid4()), str(uuid.uuid4())
    with kept_connections():
        with connect(settings, first_tenant) as conn:
            first = _backend(conn)
            assert _scope(conn) == (first_tenant, None)
            assert try_lock(conn, conversation_lock(uuid.uuid4()))  # and never unlocked
        assert _held_advisory_locks(settings) == 0  # given back: the lock went with the job
        with connect(settings, second_tenant) as conn:
            assert _backend(conn) == first
            assert _scope(conn) == (second_tenant, None)
        with connect_platform(settings) as conn:
            assert _backend(conn) == first
            assert _scope(conn) == (None, "on")
        with connect(settings, first_tenant) as conn:
            assert _scope(conn) == (first_tenant, None)  # the platform scope is gone
    with psycopg.connect(settings.database_url or "") as other:
        alive = other.execute(
            "select count(*) from pg_stat_activity where pid = %s", (first,)
        ).fetchone()
    assert alive == (0,)  # the lane's end closed it


def test_outside_a_lane_every_job_opens_its_own(settings: Settings) -> None:
    tenant = str(uuid.uuid4())
    with connect(settings, tenant) as conn:
        first = _backend(conn)
    with connect(settings, tenant) as conn:
        assert _backend(conn) != first


def test_a_second_connection_inside_a_job_is_its_own(settings: Settings) -> None:
    tenant, other_tenant = str(uuid.uuid4()), str(uuid.uuid4())
    with kept_connections(), connect(settings, tenant) as outer:
        with connect(settings, other_tenant) as inner:
            assert _backend(inner) != _backend(outer)
            assert _scope(inner) == (other_tenant, None)
        assert _scope(outer) == (tenant, None)


def test_a_job_that_fails_leaves_no_transaction_behind(settings: Settings) -> None:
    tenant = str(uuid.uuid4())
    with kept_connections():
        with pytest.raises(RuntimeError), connect(settings, tenant) as conn:
            first = _backend(conn)
            with conn.transaction():
                conn.execute("select 1")
                raise RuntimeError("the job failed")
        with connect(settings, tenant) as conn:  # rolled back: the backend is kept
            assert _backend(conn) == first
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            conn.execute("begin")  # a job that leaves a transaction open...
        with connect(settings, tenant) as conn:  # ...loses the backend to a new one
            assert _backend(conn) != first
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_a_connection_the_server_dropped_is_replaced_before_a_job_gets_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "_CHECK_AFTER", 0.0)  # ping on every take
    tenant = str(uuid.uuid4())
    with kept_connections():
        with connect(settings, tenant) as conn:
            first = _backend(conn)
        with psycopg.connect(settings.database_url or "", autocommit=True) as admin:
            admin.execute("select pg_terminate_backend(%s)", (first,))
        with connect(settings, tenant) as conn:
            assert _backend(conn) != first
            assert _scope(conn) == (tenant, None)


def test_an_idle_lane_lets_its_connection_go(settings: Settings) -> None:
    tenant = str(uuid.uuid4())
    with kept_connections():
        with connect(settings, tenant) as conn:
            first = _backend(conn)
        release_idle(after=3600)  # used just now: kept
        with connect(settings, tenant) as conn:
            assert _backend(conn) == first
        release_idle(after=0)
        with connect(settings, tenant) as conn:
            assert _backend(conn) != first


def test_other_connection_settings_get_another_connection(settings: Settings) -> None:
    tenant = str(uuid.uuid4())
    with kept_connections():
        with connect(settings, tenant) as conn:
            first = _backend(conn)
        as_owner = settings.model_copy(update={"database_app_role": None})
        with connect(as_owner, tenant) as conn:
            assert _backend(conn) != first
            row = conn.execute("select current_user as role").fetchone()
            assert row is not None and row["role"] != "conversa_app"
