"""Benchmark concurrent turns in one worker process: threads against asyncio, on the real graph.

Issue 14 asked to measure before choosing how a worker runs many turns at once. Each variant runs
K turns at a time, closed loop (a lane starts its next turn when its last one ends, until the
window closes; the turns in flight then finish), against the offline model in its own process
with a fixed delay per call:

- `threads`: K threads, each turn on its own psycopg connection with the graph compiled by
  `server.jobs.runner.compile_graph` (Postgres saver and memory store), `invoke` with
  `durability="sync"`, the state read before and after as `runner.run_turn` does. This is what
  `conversa worker --concurrency K` runs.
- `asyncio`: one event loop, K tasks, each turn on its own `AsyncConnection` with
  `AsyncPostgresSaver` and `AsyncPostgresStore`, `ainvoke`. Every node of the graph is
  synchronous (sync `ChatOpenAI` calls, sync psycopg in the tools), so LangGraph runs each node
  in the loop's default executor: `min(32, cpus + 4)` threads, 6 on this machine. Measured as
  the code is.
- `asyncio+pool`: the same with the loop's default executor sized to K, to tell what the
  executor's size costs from what the event loop costs.
- `asyncio-native`: the same loop with the nodes this turn passes through ported to async here
  (router and specialist await the model; the CPU-only nodes run on the loop): what a full
  port would give, short of the tools and the memory search, which this turn does not reach.

Per cell: turns/s; CPU milliseconds per turn of this process and of this benchmark's own
PostgreSQL (the model server is another process, not counted); the process's peak RSS (its
high-water mark; K runs in ascending order in one process per variant and delay); and p50/p99
of the added time (a turn's wall time minus the model's delay times the calls it made). Ratios
are to K=1 `threads` at the same delay, in the same run. The turn is the first one of a
conversation saying "Oi, tudo bem?" on a plan with every feature but no tenant: the router and
the general specialist each call the model (two calls a turn), no tool call, no memory search.

Run: `.venv/bin/python bench/bench_concurrency.py [--ks 1,8,32,64] [--delays 0,1] [--seconds 3]
[--variants threads,asyncio,asyncio+pool,asyncio-native]` (4-6 minutes as it stands; the
`asyncio` cells at a 1 s delay wait on its six executor threads).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from langchain_core.callbacks import BaseCallbackHandler  # noqa: E402
from langchain_core.messages import SystemMessage  # noqa: E402
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver  # noqa: E402
from langgraph.graph.state import CompiledStateGraph  # noqa: E402
from langgraph.runtime import Runtime  # noqa: E402
from langgraph.store.postgres.aio import AsyncPostgresStore  # noqa: E402
from psycopg.rows import dict_row  # noqa: E402

from bench._common import fresh_database, percentiles  # noqa: E402
from graphs.assistant import graph as assistant  # noqa: E402
from graphs.context import Context  # noqa: E402
from graphs.features import routes_for  # noqa: E402
from graphs.models import load_chat_model  # noqa: E402
from graphs.prompts import render, route_choices  # noqa: E402
from graphs.state import State  # noqa: E402
from graphs.structured import structured_method  # noqa: E402
from nodes.context import load_context  # noqa: E402
from nodes.memory import retrieve_memories  # noqa: E402
from nodes.reply import reply  # noqa: E402
from nodes.router import _decided, _recent, decision_schema  # noqa: E402
from nodes.specialists import MAX_TOOL_ROUNDS, Specialist, _turn_rounds, system_prompt  # noqa: E402
from server.jobs.runner import compile_graph  # noqa: E402
from store.embeddings import embeddings  # noqa: E402
from store.memory import index_config  # noqa: E402
from store.settings import EmbeddingSettings  # noqa: E402

DATA = ROOT / ".data" / "bench-concurrency"
"""Its own embedded server: K=64 holds 64 connections, and other benches share `.data/bench`."""
VARIANTS = ("threads", "asyncio", "asyncio+pool", "asyncio-native")
TEXT = "Oi, tudo bem?"
CONTEXT = Context(tenant_id="", user_id="")
"""Every feature (so the router calls the model), no tenant (so no memory search, no tool)."""

Graph = CompiledStateGraph[Any, Any, Any, Any]


@dataclass
class Cell:
    """What one variant did at one concurrency and model delay."""

    variant: str
    delay: float
    k: int
    turns: int = 0
    errors: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    postgres_cpu: float = 0.0
    rss_mb: float = 0.0
    added: list[float] = field(default_factory=list)
    calls: int = 0


class _Calls(BaseCallbackHandler):
    """Count a turn's chat model calls."""

    run_inline = True  # one per turn: no need for an executor hop under the async variants

    def __init__(self) -> None:
        self.calls = 0

    def on_chat_model_start(self, *args: Any, run_id: UUID, **kwargs: Any) -> None:
        self.calls += 1


def _config(thread: str, calls: _Calls) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}, "callbacks": [calls]}


def _payload() -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": TEXT}]}


def _thread_turn(url: str, thread: str) -> int:
    """Run one turn as a worker lane does; return the model calls it made."""
    calls = _Calls()
    config = _config(thread, calls)
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        graph = compile_graph(conn)
        graph.get_state(config)
        graph.invoke(_payload(), config, context=CONTEXT, durability="sync")  # type: ignore[arg-type]
        graph.get_state(config)
    return calls.calls


async def _async_turn(url: str, thread: str, graph: Graph) -> int:
    """Run one turn of `graph` on the async saver and store; return the model calls it made."""
    calls = _Calls()
    config = _config(thread, calls)
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, row_factory=dict_row
    ) as conn:
        store = AsyncPostgresStore(
            conn, index=index_config(EmbeddingSettings().embeddings_dims, embeddings)
        )  # type: ignore[arg-type]
        bound = graph.copy(
            update={"checkpointer": AsyncPostgresSaver(conn), "store": store}  # type: ignore[arg-type]
        )
        await bound.aget_state(config)  # type: ignore[arg-type]
        await bound.ainvoke(_payload(), config, context=CONTEXT, durability="sync")  # type: ignore[arg-type]
        await bound.aget_state(config)  # type: ignore[arg-type]
    return calls.calls


def _record(cell: Cell, started: float, calls: int) -> None:
    cell.turns, cell.calls = cell.turns + 1, cell.calls + calls
    cell.added.append(time.perf_counter() - started - calls * cell.delay)


def _failed(cell: Cell, exc: Exception) -> None:
    cell.errors += 1
    print(f"  {cell.variant} K={cell.k}: a turn failed: {exc!r}", file=sys.stderr)


def _run_threads(cell: Cell, url: str, window: float) -> None:
    lock = threading.Lock()
    deadline = time.perf_counter() + window

    def lane(n: int) -> None:
        thread = f"threads-{cell.delay}-{cell.k}-{n}"
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                calls = _thread_turn(url, thread)
            except Exception as exc:
                with lock:
                    _failed(cell, exc)
                continue
            with lock:
                _record(cell, started, calls)

    lanes = [threading.Thread(target=lane, args=(n,)) for n in range(cell.k)]
    for t in lanes:
        t.start()
    for t in lanes:
        t.join()


async def _run_async(cell: Cell, url: str, window: float, graph: Graph) -> None:
    deadline = time.perf_counter() + window

    async def lane(n: int) -> None:
        thread = f"{cell.variant}-{cell.delay}-{cell.k}-{n}"
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                calls = await _async_turn(url, thread, graph)
            except Exception as exc:
                _failed(cell, exc)
                continue
            _record(cell, started, calls)

    await asyncio.gather(*(lane(n) for n in range(cell.k)))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _postgres_cpu() -> float:
    """CPU seconds this benchmark's PostgreSQL has used: the postmaster, the backends it has
    reaped (each turn's connection) and the live ones."""
    postmaster = int((DATA / "pg" / "postmaster.pid").read_text().split()[0])
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, _, rest = stat.read_text().rpartition(") ")
        except OSError:
            continue  # gone since the listing
        fields = rest.split()  # from the state, field 3 of proc(5)
        if int(pid.split()[0]) == postmaster:
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        elif int(fields[1]) == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _finish(cell: Cell, started: float, cpu: tuple[float, float]) -> None:
    """Fill in the cell's wall time, CPU times and the process's peak RSS; print it."""
    cell.seconds = time.perf_counter() - started
    cell.cpu, cell.postgres_cpu = _cpu() - cpu[0], _postgres_cpu() - cpu[1]
    cell.rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(asdict(cell)), flush=True)


async def _async_cells(variant: str, delay: float, ks: list[int], url: str, window: float) -> None:
    """Every K of an async variant in one event loop (the model client's pool is per loop)."""
    graph = _native_graph() if variant == "asyncio-native" else assistant
    loop = asyncio.get_running_loop()
    for n in range(2):  # imports, the model client, the saver's statements
        await _async_turn(url, f"warm-{variant}-{delay}-{n}", graph)
    for k in ks:
        cell, started, cpu = Cell(variant, delay, k), time.perf_counter(), (_cpu(), _postgres_cpu())
        if variant == "asyncio+pool":
            loop.set_default_executor(ThreadPoolExecutor(max_workers=k))
        await _run_async(cell, url, window, graph)
        _finish(cell, started, cpu)


def _child(variant: str, delay: float, ks: list[int], url: str, window: float) -> None:
    """Measure one variant at one model delay for each K; print one JSON line per cell."""
    from server.logs import configure_logging

    configure_logging("test", "WARNING")
    if variant != "threads":
        asyncio.run(_async_cells(variant, delay, ks, url, window))
        return
    for n in range(2):
        _thread_turn(url, f"warm-{variant}-{delay}-{n}")
    for k in ks:
        cell, started, cpu = Cell(variant, delay, k), time.perf_counter(), (_cpu(), _postgres_cpu())
        _run_threads(cell, url, window)
        _finish(cell, started, cpu)


# --------------------------------------------------------------------------- #
# A port of this turn's nodes to async, to bound what a full port would gain
# --------------------------------------------------------------------------- #


async def _async_route(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """`nodes.router.route` with the model awaited (no human-request check, no fallback)."""
    context = runtime.context or Context()
    routes = routes_for(context.features)
    active = state.active_specialist if state.active_specialist in routes else "none"
    system = render(context.router_prompt, choices=route_choices(routes), active=active)
    model = context.router_model or context.model
    structured = load_chat_model(model).with_structured_output(
        decision_schema(routes), method=structured_method(model)
    )
    decision = await structured.ainvoke([SystemMessage(system), *_recent(state.messages)])
    return _decided(decision.route, decision.reason, state)  # type: ignore[union-attr]


def _async_agent_node(specialist: Specialist) -> Callable[..., Awaitable[dict[str, Any]]]:
    """`nodes.specialists.agent_node` with the model awaited."""

    async def agent(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        context = runtime.context or Context()
        tools = specialist.allowed_tools(context.features)
        model: Any = load_chat_model(context.model)
        if tools and _turn_rounds(state.messages) < MAX_TOOL_ROUNDS:
            model = model.bind_tools(tools)
        template = getattr(context, specialist.prompt_field)
        system = SystemMessage(system_prompt(template, state, context))
        return {"messages": [await model.ainvoke([system, *state.messages])]}

    agent.__name__ = specialist.name
    return agent


async def _async_load_context(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    return load_context(state, runtime)  # CPU only: a port runs it on the loop


async def _async_retrieve_memories(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    return retrieve_memories(state, runtime)  # no tenant here: returns before any I/O


async def _async_reply(state: State) -> dict[str, Any]:
    return reply(state)


def _native_graph() -> Graph:
    """The assistant graph with every node on this turn's path async (tools stay sync)."""
    import graphs.assistant as assembly

    ported: dict[str, Any] = {
        "route": _async_route, "agent_node": _async_agent_node,
        "load_context": _async_load_context, "retrieve_memories": _async_retrieve_memories,
        "reply": _async_reply,
    }  # fmt: skip
    kept = {name: getattr(assembly, name) for name in ported}
    try:
        for name, node in ported.items():
            setattr(assembly, name, node)
        return assembly.build_graph().compile(name="assistant")
    finally:
        for name, node in kept.items():
            setattr(assembly, name, node)


# --------------------------------------------------------------------------- #
# The parent: database, model servers, one child per variant and delay, the table
# --------------------------------------------------------------------------- #


def _model_server(delay: float) -> tuple[subprocess.Popen[str], str]:
    """Start the offline model in its own process with `delay` seconds per call."""
    env = {**os.environ, "OFFLINE_LLM_LATENCY": str(delay)}
    process = subprocess.Popen(
        [sys.executable, "-m", "graphs.offline.model"], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def _cells(
    variant: str, delay: float, base_url: str, url: str, args: argparse.Namespace
) -> list[Cell]:
    env = {**os.environ, "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "bench",
           "LLM_MODEL": "bench", "DATABASE_URL": url}  # fmt: skip
    command = [sys.executable, __file__, "--child", variant, "--delays", str(delay),
               "--ks", args.ks, "--seconds", str(args.seconds), "--url", url]  # fmt: skip
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=True)
    return [Cell(**json.loads(line)) for line in done.stdout.splitlines() if line.startswith("{")]


def _print_table(cells: list[Cell]) -> None:
    print(
        f"{'delay':>5} {'variant':<14} {'K':>3} {'turns':>5} {'turns/s':>13} "
        f"{'CPU ms/turn':>15} {'PG ms/turn':>10} {'peak RSS':>8} {'added p50 / p99':>19} "
        f"{'ratio p50':>9}"
    )
    base = {c.delay: c for c in cells if c.variant == "threads" and c.k == 1 and c.turns}
    for cell in cells:
        if not cell.turns:
            print(f"{cell.delay:5.1f} {cell.variant:<14} {cell.k:3d} no turn finished")
            continue
        rate, cpu, pg = (cell.turns / cell.seconds, cell.cpu / cell.turns * 1000,
                         cell.postgres_cpu / cell.turns * 1000)  # fmt: skip
        p50, p99 = percentiles(cell.added)
        b = base.get(cell.delay)
        b_rate, b_cpu, b_50 = (
            (b.turns / b.seconds, b.cpu / b.turns * 1000, percentiles(b.added)[0])
            if b
            else (0, 0, 0)
        )
        print(
            f"{cell.delay:5.1f} {cell.variant:<14} {cell.k:3d} {cell.turns:5d} "
            f"{rate:6.2f} {_ratio(rate, b_rate):>6} {cpu:7.1f} {_ratio(cpu, b_cpu):>7} {pg:10.1f} "
            f"{cell.rss_mb:5.0f} MB {p50 * 1000:7.0f} /{p99 * 1000:6.0f} ms {_ratio(p50, b_50):>9}"
        )
        if cell.errors or cell.calls != 2 * cell.turns:
            print(f"      ^ {cell.errors} failed turns; {cell.calls / cell.turns:.2f} calls a turn")


def _ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}x" if baseline else "-"


def main() -> int:
    """Start the database and model servers, run every variant in its own process, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="1,8,32,64", help="concurrencies, ascending")
    parser.add_argument("--delays", default="0,1", help="model seconds per call")
    parser.add_argument("--seconds", type=float, default=3.0, help="window per cell")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    ks = sorted(int(k) for k in args.ks.split(","))
    delays = [float(d) for d in args.delays.split(",")]
    if args.child:
        _child(args.child, delays[0], ks, args.url, args.seconds)
        return 0

    variants = [v for v in args.variants.split(",") if v]
    if "threads" not in variants:
        variants.insert(0, "threads")  # the baseline
    url = fresh_database("conversa_bench_concurrency", data=DATA)
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cpus")
    cells: list[Cell] = []
    for delay in delays:
        server, base_url = _model_server(delay)
        try:
            for variant in variants:
                cells += _cells(variant, delay, base_url, url, args)
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(f"load after: {os.getloadavg()[0]:.2f} (1 min)")
    print(
        "closed loop, K turns in flight per process; two model calls a turn; added = turn "
        "minus calls x delay; ratios to K=1 threads at the same delay"
    )
    _print_table(cells)
    return 0


if __name__ == "__main__":
    sys.exit(main())
