"""Versioned SQL migrations, plus the LangGraph checkpointer's and store's own tables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from store.settings import DEFAULT_DIMS

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_LOCK_KEY = 7_316_224_001  # advisory lock: one migrator at a time


@dataclass(frozen=True)
class Migration:
    """One SQL file under `store/migrations/`, applied once, in name order."""

    version: str
    path: Path


class MigrationsPendingError(RuntimeError):
    """The database is behind the code; run `conversa migrate`."""


def available() -> list[Migration]:
    """Return the migrations shipped with this code, in order."""
    return [Migration(p.stem, p) for p in sorted(MIGRATIONS_DIR.glob("*.sql"))]


def _ensure_table(conn: psycopg.Connection) -> None:
    conn.execute(
        "create table if not exists schema_migrations ("
        " version text primary key, applied_at timestamptz not null default now())"
    )


def applied(conn: psycopg.Connection) -> set[str]:
    """Return the versions already applied (empty when none ever were)."""
    exists = conn.execute("select to_regclass('schema_migrations') is not null").fetchone()
    if not exists or not exists[0]:
        return set()
    return {row[0] for row in conn.execute("select version from schema_migrations")}


def _checkpointer_at_head(conn: psycopg.Connection) -> bool:
    exists = conn.execute("select to_regclass('checkpoint_migrations') is not null").fetchone()
    if not exists or not exists[0]:
        return False
    # Imported here, not at the top: the API imports this module for its readiness check, and
    # only that check (not the webhook's process at start) should load LangGraph.
    from langgraph.checkpoint.postgres import PostgresSaver

    row = conn.execute("select max(v) from checkpoint_migrations").fetchone()
    return row is not None and row[0] == len(PostgresSaver.MIGRATIONS) - 1


def ping(conn: psycopg.Connection) -> None:
    """Run the cheapest query: the readiness check's proof that the database answers."""
    conn.execute("select 1")


def pending(database_url: str) -> list[str]:
    """Return what `migrate` would still apply to this database."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        todo = [] if _checkpointer_at_head(conn) else ["langgraph-checkpointer"]
        have = applied(conn)
        return todo + [m.version for m in available() if m.version not in have]


def check_at_head(database_url: str, *, embedding_dims: int | None = None) -> None:
    """Raise `MigrationsPendingError` unless every migration has been applied, and
    `MemoryDimensionsError` when the memory index holds vectors of another size."""
    todo = pending(database_url)
    if todo:
        raise MigrationsPendingError(
            f"The database is missing migrations {', '.join(todo)}: run `conversa migrate`."
        )
    if embedding_dims is not None:
        from store import memory  # see _checkpointer_at_head

        with psycopg.connect(database_url, autocommit=True) as conn:
            memory.check_dimensions(conn, embedding_dims)


def migrate(database_url: str, *, embedding_dims: int = DEFAULT_DIMS) -> list[str]:
    """Apply every pending migration, each in its own transaction; return what was applied.

    LangGraph's checkpointer and store (with its `embedding_dims` vector table) create their
    tables first, so that our migrations can put row-level security on them.
    """
    from langgraph.checkpoint.postgres import PostgresSaver  # see _checkpointer_at_head

    from store import memory

    done: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            if not _checkpointer_at_head(conn):
                done.append("langgraph-checkpointer")
            with psycopg.connect(
                database_url, autocommit=True, prepare_threshold=0, row_factory=dict_row
            ) as langgraph:
                PostgresSaver(langgraph).setup()  # type: ignore[arg-type]
                memory.setup(langgraph, embedding_dims)
                memory.check_dimensions(langgraph, embedding_dims)
            _ensure_table(conn)
            have = applied(conn)
            for migration in available():
                if migration.version in have:
                    continue
                with conn.transaction():
                    conn.execute(migration.path.read_text())  # type: ignore[arg-type]
                    conn.execute(
                        "insert into schema_migrations (version) values (%s)",
                        (migration.version,),
                    )
                done.append(migration.version)
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return done
