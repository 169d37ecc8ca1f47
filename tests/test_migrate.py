"""Migrations: applied once, in order, checked at start; pgvector and LangGraph's tables present."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from store import migrate as migrate_module
from store.migrate import MigrationsPendingError, available, check_at_head, migrate, pending


@pytest.fixture
def empty_db(pg_url: str) -> Iterator[str]:
    info = psycopg.conninfo.conninfo_to_dict(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("drop database if exists conversa_migrate with (force)")
        conn.execute("create database conversa_migrate")
    yield psycopg.conninfo.make_conninfo(**{**info, "dbname": "conversa_migrate"})
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("drop database if exists conversa_migrate with (force)")


def test_fresh_database_is_behind_and_migrate_brings_it_to_head(empty_db: str) -> None:
    versions = [m.version for m in available()]
    assert pending(empty_db) == ["langgraph-checkpointer", *versions]
    with pytest.raises(MigrationsPendingError, match="conversa migrate"):
        check_at_head(empty_db)

    assert migrate(empty_db) == ["langgraph-checkpointer", *versions]
    assert migrate(empty_db) == []
    check_at_head(empty_db)

    with psycopg.connect(empty_db) as conn:
        extensions = {r[0] for r in conn.execute("select extname from pg_extension")}
        tables = {
            r[0]
            for r in conn.execute("select tablename from pg_tables where schemaname = 'public'")
        }
    assert "vector" in extensions
    assert {"tenants", "users", "conversations", "messages", "ai_results"} <= tables
    assert {"checkpoints", "checkpoint_writes", "checkpoint_blobs", "store"} <= tables


def test_a_failing_migration_leaves_nothing_half_applied(
    empty_db: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    import store.migrate as module

    (tmp_path / "0001_ok.sql").write_text("create table first_one (id int);")
    (tmp_path / "0002_bad.sql").write_text("create table second_one (id int); select 1/0;")
    monkeypatch.setattr(module, "MIGRATIONS_DIR", tmp_path)

    with pytest.raises(psycopg.errors.DivisionByZero):
        migrate(empty_db)

    with psycopg.connect(empty_db) as conn:
        assert conn.execute("select version from schema_migrations").fetchall() == [("0001_ok",)]
        assert conn.execute("select to_regclass('second_one')").fetchone() == (None,)
    assert pending(empty_db) == ["0002_bad"]


def test_unique_message_sid_per_tenant_is_enforced_by_the_database(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        (definition,) = conn.execute(
            "select pg_get_constraintdef(oid) from pg_constraint "
            "where conrelid = 'messages'::regclass and contype = 'u' "
            "and pg_get_constraintdef(oid) like '%%provider_message_id%%'"
        ).fetchone()  # type: ignore[misc]
    assert definition == "UNIQUE (tenant_id, provider_message_id)"


def test_the_dispatch_migration_also_brings_a_database_from_an_earlier_draft_to_head(
    empty_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """0010 carries what an unlanded draft of 0003 already had (`store_inbound_message`, the
    relay's scans): a database that ran that draft must take 0010 too (and then the rest)."""
    shipped = available()
    later = [m.version for m in shipped if m.version > "0010_dispatch_and_ack"]
    monkeypatch.setattr(migrate_module, "available", lambda: shipped[: len(shipped) - len(later)])
    migrate(empty_db)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("delete from schema_migrations where version = '0010_dispatch_and_ack'")
    assert pending(empty_db) == ["0010_dispatch_and_ack"]

    assert migrate(empty_db) == ["0010_dispatch_and_ack"]
    monkeypatch.undo()
    assert migrate(empty_db) == later

    with psycopg.connect(empty_db) as conn:
        predicate = conn.execute(
            "select pg_get_indexdef('messages_outbox_idx'::regclass)"
        ).fetchone()
    assert predicate is not None and "dispatching" in predicate[0]


@pytest.mark.parametrize(
    ("features", "stored"),
    [
        (["finance", "health"], True),  # a name the registry may gain needs no migration
        ([], True),
        (["Health"], False),
        (["finance", "no spaces"], False),
        (["finance", None], False),
        ([""], False),
    ],
)
def test_the_database_keeps_only_the_shape_of_feature_names(
    pg_url: str, features: list[str | None], stored: bool
) -> None:
    with psycopg.connect(pg_url) as conn, conn.transaction(force_rollback=True):
        (tenant,) = conn.execute(
            "insert into tenants (slug, name, whatsapp_sender, twilio_account_sid, "
            "twilio_auth_token) values ('shape', 'Shape', 'whatsapp:+15550001111', %s, 't') "
            "returning id",
            ("AC" + "0" * 32,),
        ).fetchone()  # type: ignore[misc]
        try:
            with conn.transaction():
                conn.execute(
                    "insert into plans (tenant_id, slug, name, features) values (%s, 'p', 'P', %s)",
                    (tenant, features),
                )
        except psycopg.errors.CheckViolation:
            assert not stored
        else:
            assert stored
        override = features[-1] if features else "finance"
        try:
            with conn.transaction():
                conn.execute(
                    "insert into feature_overrides (tenant_id, feature, enabled) "
                    "values (%s, %s, true)",
                    (tenant, override),
                )
        except (psycopg.errors.CheckViolation, psycopg.errors.NotNullViolation):
            assert not stored
        else:
            assert stored
