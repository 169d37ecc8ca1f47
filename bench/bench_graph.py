"""Benchmark the assistant graph: orchestration overhead per turn and checkpoint bytes per turn.

- Overhead: one turn of the assistant graph (load context, memory retrieval, routing, the
  general specialist, reply) against a bare one-node LangGraph graph calling the same model,
  both on an in-memory saver, in the same run; then the assistant on the Postgres checkpointer
  with `durability="sync"` as the workers run it. The model is a local OpenAI-protocol server
  that answers at once, so what differs is orchestration. Targets: ≤ 2x, p50 ≤ 8 ms.
- Checkpoint bytes written per turn at turns 10, 100 and 500 of one conversation, against the
  same graph with the thread's trimming turned off (the baseline grows with the history).
  Target: flat.

Run: `make bench` (or `.venv/bin/python bench/bench_graph.py [--turns N] [--long N]`).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from langchain_openai import ChatOpenAI  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.checkpoint.postgres import PostgresSaver  # noqa: E402
from langgraph.graph import START, MessagesState, StateGraph  # noqa: E402
from psycopg.rows import dict_row  # noqa: E402

import nodes.reply  # noqa: E402
from bench._common import fresh_database, report, timed  # noqa: E402
from graphs.assistant import build_graph  # noqa: E402
from graphs.context import Context  # noqa: E402
from graphs.offline.llm_server import ChatCompletionsServer  # noqa: E402


def _instant(_: dict[str, Any]) -> dict[str, Any]:
    return {"content": "Tudo ótimo por aqui!"}


def _bare_graph(model: ChatOpenAI) -> Any:
    def call(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("call", call)
    builder.add_edge(START, "call")
    return builder.compile(checkpointer=InMemorySaver())


def _turn(graph: Any, thread: str, text: str, **kwargs: Any) -> None:
    graph.invoke(
        {"messages": [{"role": "user", "content": text}]},
        {"configurable": {"thread_id": thread}},
        context=Context(features=[], tenant_id="", user_id=""),
        **kwargs,
    )


def _thread_bytes(conn: psycopg.Connection[Any], thread: str) -> int:
    row = conn.execute(
        """select (select coalesce(sum(pg_column_size(c.*)), 0) from checkpoints c
                   where thread_id = %(t)s)
                + (select coalesce(sum(pg_column_size(b.*)), 0) from checkpoint_blobs b
                   where thread_id = %(t)s)
                + (select coalesce(sum(pg_column_size(w.*)), 0) from checkpoint_writes w
                   where thread_id = %(t)s) as total""",
        {"t": thread},
    ).fetchone()
    assert row is not None
    return int(row["total"])


def _bytes_per_turn(
    conn: psycopg.Connection[Any], thread: str, turns: int, marks: list[int]
) -> dict[int, int]:
    graph = build_graph().compile(checkpointer=PostgresSaver(conn))
    per_turn: dict[int, int] = {}
    before = _thread_bytes(conn, thread)
    for turn in range(1, turns + 1):
        _turn(graph, thread, f"mensagem {turn:04d}: gastei 12,50 no almoço", durability="sync")
        if turn in marks:
            after = _thread_bytes(conn, thread)
            per_turn[turn] = after - before
        before = _thread_bytes(conn, thread) if turn + 1 in marks else before
    return per_turn


def main() -> int:
    """Start a local model and embedded Postgres, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200, help="turns timed per variant")
    parser.add_argument("--long", type=int, default=500, help="length of the long conversation")
    args = parser.parse_args()

    from server.logs import configure_logging

    configure_logging("test", "WARNING")
    server = ChatCompletionsServer(_instant).start()
    os.environ.update(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="bench", LLM_MODEL="bench")
    model = ChatOpenAI(model="bench", base_url=server.base_url, api_key="bench")  # type: ignore[arg-type]

    url = fresh_database("conversa_bench_graph")

    try:
        bare = _bare_graph(model)
        ours = build_graph().compile(checkpointer=InMemorySaver())
        counter = iter(range(10**9))
        for graph in (bare, ours):
            timed(lambda g=graph: _turn(g, f"w{next(counter)}", "Oi"), 20)  # warm up

        baseline = timed(lambda: _turn(bare, f"b{next(counter)}", "Oi, tudo bem?"), args.turns)
        in_memory = timed(lambda: _turn(ours, f"o{next(counter)}", "Oi, tudo bem?"), args.turns)
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            durable = build_graph().compile(checkpointer=PostgresSaver(conn))
            postgres = timed(
                lambda: _turn(durable, f"p{next(counter)}", "Oi, tudo bem?", durability="sync"),
                args.turns,
            )
        print("orchestration overhead per turn (model answers at once)")
        report("  assistant graph, in-memory saver", in_memory, baseline)
        report("  assistant graph, Postgres saver, sync", postgres, baseline)

        marks = [m for m in (10, 100, 500) if m <= args.long]
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            trimmed = _bytes_per_turn(conn, "long-trimmed", args.long, marks)
            window = nodes.reply.HISTORY_WINDOW
            nodes.reply.HISTORY_WINDOW = 10**9  # the baseline: keep every message
            try:
                untrimmed = _bytes_per_turn(
                    conn, "long-untrimmed", min(args.long, 100), [m for m in marks if m <= 100]
                )
            finally:
                nodes.reply.HISTORY_WINDOW = window
        print("checkpoint bytes written per turn (one conversation, sync durability)")
        for mark in marks:
            base = untrimmed.get(mark)
            base_text = f"untrimmed {base:9,d} B" if base else "untrimmed (not run: quadratic)"
            print(f"  turn {mark:4d}: {trimmed[mark]:9,d} B   {base_text}")
        for start, end in itertools.pairwise(marks):
            growth = trimmed[end] / trimmed[start]
            print(f"  growth turn {start} -> {end}: {growth:5.2f}x (flat once the window is full)")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
