"""The rooms hold what their names say: SQL is written and run only in `store/`.

Every other product folder reaches PostgreSQL through named functions of `store/`. The check
reads the source with `ast` and looks for the calls that run SQL on a connection or cursor
(`.execute(`, `.executemany(`, `.cursor(`, `.copy(`), whatever the receiver is called.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTSIDE_STORE = ("server", "tools", "channels", "graphs", "nodes", "evals")
SQL_CALLS = frozenset({"execute", "executemany", "cursor", "copy"})

ALLOWED = {
    ("server/relay.py", "pipe.execute"): "a Redis pipeline sending the queued jobs, not SQL",
    ("server/jobs/liveness.py", "pipe.execute"): "Redis pipelines reading RQ's registries, not SQL",
    ("server/jobs/runner.py", "assistant.copy"): (
        "LangGraph's Pregel.copy, giving the compiled graph its checkpointer and store; not "
        "psycopg's COPY"
    ),
}
"""Calls that have these names but run no SQL: (file, receiver.method) -> why."""


def sql_calls(source: str) -> list[str]:
    """Return `receiver.method` of each call in `source` whose method may run SQL."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in SQL_CALLS
        ):
            found.append(f"{ast.unparse(node.func.value)}.{node.func.attr}")
    return found


def _calls_outside_store() -> set[tuple[str, str]]:
    """Every such call in the product folders outside `store/`, as (file, receiver.method)."""
    calls = set()
    for folder in OUTSIDE_STORE:
        for path in sorted((ROOT / folder).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            calls |= {(name, call) for call in sql_calls(path.read_text(encoding="utf-8"))}
    return calls


def test_the_check_finds_each_kind_of_sql_call() -> None:
    source = """
conn.execute("select 1")
self.pool.connection().execute("select 1")
with conn.cursor(row_factory=dict_row) as cur:
    cur.executemany("insert into t values (%s)", rows)
    with cur.copy("copy t from stdin") as copy:
        pass
execute(request)
settings.model_copy(update={})
"""
    assert sorted(sql_calls(source)) == [
        "conn.cursor",
        "conn.execute",
        "cur.copy",
        "cur.executemany",
        "self.pool.connection().execute",
    ]


def test_no_sql_outside_store() -> None:
    calls = _calls_outside_store()
    stray = sorted(f"{name}: {call}" for name, call in calls if (name, call) not in ALLOWED)
    assert not stray, (
        "SQL is run outside store/; move each query into a named function of a store module "
        "(grouped by subject) and call that instead:\n" + "\n".join(stray)
    )


def test_every_allowed_call_is_still_there() -> None:
    calls = _calls_outside_store()
    stale = sorted(f"{name}: {call}" for name, call in ALLOWED if (name, call) not in calls)
    assert not stale, "No longer in the code; drop from ALLOWED:\n" + "\n".join(stale)
