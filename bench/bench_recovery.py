"""Benchmark recovery: from a worker's SIGKILL to the reply of every turn it held.

The API (`conversa serve`) and `--workers` worker processes (`conversa worker --concurrency N`)
run as real processes on an embedded PostgreSQL and a Redis of this benchmark's own (so
`--redis-outage` may stop it), with the offline model in its own process (each call taking
`--latency`, in `OFFLINE_LLM_LATENCY`'s forms) and the Twilio sandbox in this one. A separate
process (`bench/_load.py`) posts signed webhook messages from `--users` users at `--rate` per
second for `--seconds`, open loop (INBOUND_DEBOUNCE_SECONDS=0). Every `--kill-every` seconds one
worker taking jobs (`--victim`: one at random, or the oldest) is frozen (SIGSTOP), the jobs its
lanes hold are read from RQ's started-job registries, and its whole process group gets SIGKILL;
a replacement starts at once. A kill is put off until another worker is taking jobs (a
replacement takes 15-30 s to start on a busy 2-core machine; `--no-wait-for-survivor` kills
anyway, and then measures start-up rather than recovery).

A kill holds up every message of the conversations its jobs were answering (turns) or sending
(replies) that was stored before the kill and whose reply the sandbox had not yet received.
For each such message, crash-to-reply is the time from the SIGKILL to the moment the sandbox
received the reply that answers it (a reply answers every message of its turn; a message
folded into a later turn is answered by that turn's reply). The distribution is printed
against the 30 s target (issue 14), with the totals: messages sent, replies received, messages
never answered, and messages answered twice (by the database's outbox and by the sandbox).

The path measured is the heartbeat's (`server.jobs.liveness`): the live workers see the dead
process's alive key expire (`WORKER_DEAD_AFTER_SECONDS`) and queue its jobs again.
STALE_JOB_SECONDS stays at its default, so the relay's stale sweep cannot be what answers them.
The baseline, what the same kills would cost without the heartbeat, is not run (it takes five
minutes per kill): it is modelled from the same run as the stale sweep's bound, each message's
job enqueue time + STALE_JOB_SECONDS − the kill, a lower bound since the turn then still runs.
Timings are reported, never asserted; on a shared machine they are noisy, and the machine's
load is printed beside them.

Run: `.venv/bin/python bench/bench_recovery.py` (about 2.5 minutes), or with
`[--seconds 60] [--rate 6] [--users 200] [--kill-every 10] [--victim random|oldest]
[--workers 3] [--concurrency 8] [--latency uniform:0.5,1.5] [--heartbeat 2] [--dead-after 10]
[--redis-outage]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402
from redis import Redis  # noqa: E402
from rq import Queue, Worker  # noqa: E402
from rq.job import Job  # noqa: E402
from rq.utils import as_text, parse_composite_key  # noqa: E402

from bench._common import fresh_database  # noqa: E402
from bench._load import percentile  # noqa: E402
from bench.bench_webhook import SetupError, _conversa, _tail, _wait_healthy  # noqa: E402
from channels.sandbox.twilio import TwilioSandbox  # noqa: E402
from channels.twilio.inbound import sign  # noqa: E402
from server.cli.chat import whatsapp_form  # noqa: E402
from server.jobs.liveness import process_of  # noqa: E402
from server.settings import QUEUES, Settings  # noqa: E402
from store import tenants  # noqa: E402
from store.embedded import EmbeddedRedis, free_port, start_redis  # noqa: E402

DATABASE = "conversa_bench_recovery"
SENDER = "whatsapp:+14155550197"
LOAD = ROOT / "bench" / "_load.py"
DATA = ROOT / ".data" / "bench-recovery"
"""Its own PostgreSQL and Redis: a stack of workers needs tens of connections, and the shared
`.data/bench` server's hundred are taken by whatever else benchmarks on the machine."""
WORK = DATA / "logs"
TARGET_P99_SECONDS = 30.0
STALE_JOB_SECONDS = float(Settings.model_fields["stale_job_seconds"].default)
"""`STALE_JOB_SECONDS`'s default, left as it is: the relay's sweep of jobs gone missing."""
_KEY = re.compile(r"^[a-z_]+:(\d+)-(\d+):\d+$")
"""An outbound message's idempotency key: `<kind>:<first>-<last inbound id>:<part>`."""


# -- the processes ---------------------------------------------------------------------------


@dataclass
class WorkerProc:
    """One `conversa worker` process, in its own process group, and its RQ name once known."""

    process: subprocess.Popen[bytes]
    log: Path
    spawned_at: float
    name: str = ""


@dataclass
class Stack:
    """The API and the workers as processes, with the environment they share."""

    env: dict[str, str]
    concurrency: int
    workers: list[WorkerProc] = field(default_factory=list)
    """The worker processes running, oldest first."""
    spawned: list[WorkerProc] = field(default_factory=list)
    """Every worker process started, killed ones too."""
    exited: list[WorkerProc] = field(default_factory=list)
    """Workers that exited on their own (replaced, as a supervisor would)."""
    api: subprocess.Popen[bytes] | None = None

    def _spawn(self, name: str, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = WORK / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [_conversa(), *args], env=self.env, cwd=ROOT, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        return process, log

    def start_api(self, port: int) -> Path:
        self.api, log = self._spawn("api", "serve", "--port", str(port))
        return log

    def start_worker(self) -> WorkerProc:
        spawned_at = time.time()
        process, log = self._spawn(
            f"worker-{len(self.spawned)}", "worker", "--concurrency", str(self.concurrency)
        )
        worker = WorkerProc(process, log, spawned_at)
        self.workers.append(worker)
        self.spawned.append(worker)
        return worker

    def replace_exited(self) -> None:
        """Start a worker in place of each that exited on its own, as a supervisor would."""
        for worker in [w for w in self.workers if w.process.poll() is not None]:
            self.workers.remove(worker)
            self.exited.append(worker)
            print(f"  a worker exited on its own (code {worker.process.returncode}, "
                  f"{worker.log.name}); starting another", flush=True)  # fmt: skip
            self.start_worker()

    def stop(self) -> None:
        """SIGTERM every process group still running; SIGKILL what has not left in 20 s."""
        running = [w.process for w in self.workers] + ([self.api] if self.api else [])
        running = [p for p in running if p.poll() is None]
        for process in running:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def _lane_names(redis: Redis, pid: int) -> list[str]:
    return [w.name for w in Worker.all(connection=redis) if w.pid == pid]


def _wait_registered(redis: Redis, worker: WorkerProc, lanes: int, timeout: float = 90) -> None:
    """Wait until every lane of `worker` has registered with RQ; learn the process's name."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.process.poll() is not None:
            raise SetupError(f"a worker exited with {worker.process.returncode}:\n"
                             f"{_tail(worker.log)}")  # fmt: skip
        names = _lane_names(redis, worker.process.pid)
        if len(names) >= lanes:
            worker.name = process_of(names[0])
            return
        time.sleep(0.2)
    raise SetupError(f"a worker's {lanes} lanes did not register in {timeout:.0f} s:\n"
                     f"{_tail(worker.log)}")  # fmt: skip


# -- the replies, as the sandbox receives them ------------------------------------------------


class ReplyClock(threading.Thread):
    """Stamp each message the sandbox receives with the moment it arrived (epoch seconds)."""

    def __init__(self, sandbox: TwilioSandbox) -> None:
        super().__init__(name="reply-clock", daemon=True)
        self.sandbox = sandbox
        self.seen: dict[str, float] = {}
        self.messages: list[dict] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                messages = self.sandbox.wait_for_messages(len(self.messages) + 1, timeout=0.2)
            except TimeoutError:
                continue
            now = time.time()
            for message in messages[len(self.messages) :]:
                self.seen.setdefault(message["sid"], now)
            self.messages = messages

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=2)


# -- kills -------------------------------------------------------------------------------------


@dataclass
class Kill:
    """One SIGKILL: when, whom, the jobs its lanes held, and what the database had by then."""

    at: float
    offset: float
    worker: str
    jobs: list[tuple[str, str, int | None]]
    """(job id, job function, message id argument) of every started job the process held."""
    conversations: set[str] = field(default_factory=set)
    last_inbound: int = 0
    """The highest inbound message id stored at the kill: later messages were not held."""
    survivors: int = 0
    """Other worker processes whose lanes had registered (were taking jobs) at the kill."""
    waited: float = 0.0
    """How long the kill was put off for want of a survivor."""


def _held_jobs(redis: Redis, process: str) -> list[tuple[str, str, int | None]]:
    """The started jobs of `process`'s lanes, from RQ's started registries and executions."""
    held = []
    for name in QUEUES:
        registry = Queue(name, connection=redis).started_job_registry
        for entry in (as_text(e) for e in redis.zrange(registry.key, 0, -1)):
            owner = as_text(redis.hget(f"rq:execution:{entry}", "worker_name") or b"")
            if not owner or process_of(owner) != process:
                continue
            job_id = parse_composite_key(entry)[0]
            try:
                job = Job.fetch(job_id, connection=redis)
            except Exception:  # finished and gone in the meantime
                continue
            func = (job.func_name or "?").rsplit(".", 1)[-1]
            message = job.args[1] if len(job.args) > 1 and isinstance(job.args[1], int) else None
            held.append((job_id, func, message))
    return held


def _kill(
    stack: Stack, redis: Redis, database_url: str, started: float, *, oldest: bool,
    rng: random.Random, wait_for_survivor: bool, until: float,
) -> Kill | None:  # fmt: skip
    """Freeze a worker taking jobs (the oldest, or one at random), read what it holds, SIGKILL
    its process group, start a replacement.

    With `wait_for_survivor`, first wait until another worker has registered its lanes too: a
    replacement takes seconds to start, and killing the last worker taking jobs measures how
    long a worker takes to start, not how fast a dead one's jobs are found. None when that
    wait outlasts `until` (the end of the load: a kill then would hold nothing)."""
    due = time.time()
    while len(ready := _taking_jobs(redis, stack.workers)) < (2 if wait_for_survivor else 1):
        stack.replace_exited()
        if time.time() > until:
            return None
        if time.time() - due > _LONGEST_PUT_OFF:
            raise SetupError(f"no worker took jobs for {_LONGEST_PUT_OFF:g} s:\n"
                             f"{_tail(stack.workers[-1].log)}")  # fmt: skip
        time.sleep(0.2)
    waited = time.time() - due
    victim = ready[0] if oldest else rng.choice(ready)
    stack.workers.remove(victim)
    _signal_group(victim.process, signal.SIGSTOP)  # what it holds cannot change while we read
    jobs = _held_jobs(redis, victim.name)
    messages = [m for _, func, m in jobs if m is not None and func in _MESSAGE_JOBS]
    with psycopg.connect(database_url) as conn:
        conversations = {
            str(c) for (c,) in conn.execute(
                "select distinct conversation_id from messages where id = any(%s)", (messages,)
            )
        }  # fmt: skip
        last_inbound = conn.execute(
            "select coalesce(max(id), 0) from messages where direction = 'inbound'"
        ).fetchone()
    _signal_group(victim.process, signal.SIGKILL)
    at = time.time()
    victim.process.wait(timeout=10)
    stack.start_worker()
    return Kill(at, at - started, victim.name, jobs, conversations,
                int(last_inbound[0]) if last_inbound else 0, len(ready) - 1, waited)  # fmt: skip


_LONGEST_PUT_OFF = 180.0


def _taking_jobs(redis: Redis, workers: list[WorkerProc]) -> list[WorkerProc]:
    """The running workers whose lanes have registered with RQ, oldest first, names learnt."""
    lanes = {w.pid: w.name for w in Worker.all(connection=redis)}
    ready = [w for w in workers if w.process.pid in lanes and w.process.poll() is None]
    for worker in ready:
        worker.name = worker.name or process_of(lanes[worker.process.pid])
    return ready


_MESSAGE_JOBS = frozenset({"process_ai_response", "send_whatsapp_message"})
"""Jobs whose second argument is a message id: a turn's inbound message, or a reply to send."""


# -- load --------------------------------------------------------------------------------------


def _write_forms(path: Path, count: int, *, account: str, token: str, url: str, users: int) -> None:
    """Write `count` signed webhook forms, each its own MessageSid, round-robin over users."""
    with path.open("w") as out:
        for i in range(count):
            user = f"whatsapp:+55119{i % users:08d}"
            form = whatsapp_form(
                account_sid=account, sender=SENDER, user=user,
                body=f"Oi, tudo bem? Mensagem {i}", profile_name=f"Recovery {i % users}",
            )  # fmt: skip
            item = {
                "body": urlencode(form),
                "headers": {"X-Twilio-Signature": sign(token, url, form)},
            }
            out.write(json.dumps(item) + "\n")


def _start_load(url: str, rate: float, seconds: float, bodies: Path) -> subprocess.Popen[str]:
    """Start the open-loop generator; it waits for `go` once it has read its bodies."""
    proc = subprocess.Popen(
        [sys.executable, str(LOAD), "--url", url, "--method", "POST", "--bodies", str(bodies),
         "--rate", str(rate), "--seconds", str(seconds), "--connections", "50",
         "--timeout", "15", "--wait-go"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdin and proc.stdout
    ready = proc.stdout.readline().strip()
    if ready != "ready":
        _, err = proc.communicate(timeout=10)
        raise SetupError(f"the load generator did not start: {ready}\n{err}")
    return proc


def _finish_load(proc: subprocess.Popen[str], timeout: float) -> dict:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0 or not out.strip():
        raise SetupError(f"the load generator failed ({proc.returncode}):\n{err}")
    return json.loads(out.strip().splitlines()[-1])


def _start_model(latency: str) -> subprocess.Popen[str]:
    """Serve the offline model in its own process (it prints its URL first), each call taking
    `latency`; a killed worker's calls break its pipes, and that noise goes to its log."""
    with (WORK / "model.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "graphs.offline.model"], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=log, stdin=subprocess.DEVNULL, text=True,
            env={**os.environ, "OFFLINE_LLM_LATENCY": latency},
        )  # fmt: skip


def _redis_outage(redis_server: EmbeddedRedis, seconds: float) -> EmbeddedRedis:
    """Stop our Redis (it saves its data on the way down), wait, start it on the same port."""
    redis_server.stop()
    time.sleep(seconds)
    return start_redis(redis_server.directory, persist=True, port=redis_server.port)


# -- what happened -----------------------------------------------------------------------------


@dataclass
class Outcome:
    """Each inbound message's answer, read from the database and the sandbox after the run."""

    inbound: dict[int, tuple[str, str, float]]
    """message id -> (conversation id, status, when its job was queued: epoch seconds, or NaN)."""
    created: dict[int, float]
    """message id -> when the webhook stored it (epoch seconds)."""
    answered_at: dict[int, float | None]
    """message id -> when the sandbox received the reply that answers it (None: never)."""
    doubled_db: list[int]
    """Inbound messages that two different outbound replies answer."""
    doubled_results: int
    """Inbound messages with more than one successful, unsuperseded `ai_results` row."""
    doubled_wire: int
    """Messages the sandbox received beyond the outbound rows the database holds for them."""
    unrecorded_wire: int
    """Messages the sandbox received whose sid no outbound row carries."""
    outbound_sent: int
    """Outbound rows the provider accepted (they carry its message id)."""
    wire: int
    """Messages the sandbox received."""


def _outcome(database_url: str, clock: ReplyClock) -> Outcome:
    with psycopg.connect(database_url) as conn:
        inbound_rows = conn.execute(
            "select id, conversation_id::text, status, "
            "coalesce(extract(epoch from enqueued_at), 'nan'), extract(epoch from created_at) "
            "from messages where direction = 'inbound' order by id"
        ).fetchall()
        outbound_rows = conn.execute(
            "select conversation_id::text, idempotency_key, provider_message_id, to_address, body "
            "from messages where direction = 'outbound' order by id"
        ).fetchall()
        doubled_results = conn.execute(
            "select count(*) from (select m from ai_results, unnest(inbound_message_ids) m "
            "where not superseded and error is null group by m having count(*) > 1) d"
        ).fetchone()
    inbound = {int(i): (c, s, float(e)) for i, c, s, e, _ in inbound_rows}
    created = {int(i): float(at) for i, *_, at in inbound_rows}

    # Each conversation's replies: (first, last inbound id) -> when the sandbox got its first part.
    replies: dict[str, dict[tuple[int, int], float | None]] = defaultdict(dict)
    for conversation, key, sid, _, _ in outbound_rows:
        match = _KEY.match(key or "")
        if not match:
            continue
        span = (int(match[1]), int(match[2]))
        seen = clock.seen.get(sid) if sid else None
        earlier = replies[conversation].get(span)
        replies[conversation][span] = (
            seen if earlier is None else earlier if seen is None else min(seen, earlier)
        )
    answered_at: dict[int, float | None] = {}
    doubled_db: list[int] = []
    for message, (conversation, _, _) in inbound.items():
        spans = sorted(replies.get(conversation, {}).items())
        later = [seen for (_, last), seen in spans if last >= message]
        answered_at[message] = later[0] if later else None
        if sum(first <= message <= last for (first, last), _ in spans) > 1:
            doubled_db.append(message)

    recorded = Counter((to, body) for _, _, sid, to, body in outbound_rows if sid)
    on_wire = Counter((m["to"], m["body"]) for m in clock.messages)
    sids = {sid for _, _, sid, _, _ in outbound_rows if sid}
    return Outcome(
        inbound, created, answered_at, doubled_db,
        int(doubled_results[0]) if doubled_results else 0,
        sum(max(0, n - recorded[k]) for k, n in on_wire.items()),
        sum(m["sid"] not in sids for m in clock.messages),
        sum(1 for *_, sid, _, _ in outbound_rows if sid), len(clock.messages),
    )  # fmt: skip


def _startup(workers: list[WorkerProc]) -> list[float]:
    """Seconds from each worker's spawn to its log's `worker started` (all lanes running)."""
    seconds = []
    for worker in workers:
        for line in worker.log.read_text(errors="replace").splitlines():
            if '"worker started"' in line:
                at = datetime.fromisoformat(json.loads(line)["timestamp"].replace("Z", "+00:00"))
                seconds.append(at.timestamp() - worker.spawned_at)
                break
    return seconds


def _requeues(logs: list[Path]) -> dict[str, float]:
    """job id -> when a live worker queued it again (the heartbeat path), from the JSON logs."""
    found: dict[str, float] = {}
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            if "queued a dead worker" not in line:
                continue
            try:
                record = json.loads(line)
                at = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
            except (ValueError, KeyError):
                continue
            found.setdefault(record.get("job_id", "?"), at.timestamp())
    return found


def _all_answered(database_url: str, clock: ReplyClock) -> bool:
    """Whether every stored inbound message is closed and every reply reached the sandbox."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "select count(*) filter (where direction = 'inbound' and processed_at is null), "
            "count(*) filter (where direction = 'outbound' and status in "
            "('received', 'pending', 'dispatching')), "
            "count(*) filter (where direction = 'outbound' and provider_message_id is not null) "
            "from messages"
        ).fetchone()
    return bool(row) and row[0] == 0 and row[1] == 0 and len(clock.messages) >= row[2]


def _distribution(samples: list[float]) -> str:
    ordered = sorted(samples)
    if not ordered:
        return "no samples"
    p = {q: percentile(ordered, q) for q in (50, 90, 99)}
    return (f"n {len(ordered):>3}  p50 {p[50]:5.1f} s  p90 {p[90]:5.1f} s  p99 {p[99]:5.1f} s  "
            f"max {ordered[-1]:5.1f} s")  # fmt: skip


def _held_messages(kill: Kill, outcome: Outcome) -> list[int]:
    """The inbound messages `kill` held up: stored before it, in a conversation its jobs were
    answering or sending to, and not yet answered on the wire when it came."""
    return [
        m for m, (conversation, _, _) in outcome.inbound.items()
        if conversation in kill.conversations and m <= kill.last_inbound
        and ((seen := outcome.answered_at[m]) is None or seen > kill.at)
    ]  # fmt: skip


def _print_kills(kills: list[Kill], outcome: Outcome, requeued: dict[str, float]) -> None:
    print(f"{'kill at':>7} {'put off':>7}  {'worker':<26} {'alive':>5} {'turns':>5} {'sends':>5} "
          f"{'other':>5} {'held msgs':>9} {'requeued':>8} {'->requeue':>9} "
          f"{'->reply max':>11}")  # fmt: skip
    for kill in kills:
        kinds = Counter(func for _, func, _ in kill.jobs)
        turns, sends = kinds["process_ai_response"], kinds["send_whatsapp_message"]
        held = _held_messages(kill, outcome)
        delays = [s - kill.at for m in held if (s := outcome.answered_at[m]) is not None]
        back = [requeued[j] - kill.at for j, _, _ in kill.jobs if j in requeued]
        print(
            f"{kill.offset:>6.1f}s {kill.waited:>6.1f}s  {kill.worker[-26:]:<26} "
            f"{kill.survivors:>5} {turns:>5} {sends:>5} "
            f"{sum(kinds.values()) - turns - sends:>5} {len(held):>9} {len(back):>8} "
            f"{f'{max(back):.1f} s' if back else '-':>9} "
            f"{f'{max(delays):.1f} s' if delays else '-':>11}"
        )
    print(
        "put off = waited for another worker to take jobs; alive = other workers taking jobs\n"
        "turns, sends, other = process_ai_response, send_whatsapp_message and other jobs its\n"
        "  lanes held; held msgs = inbound messages of those conversations stored before the kill\n"
        "  and not yet answered on the wire; requeued = held jobs a live worker queued again (its\n"
        "  log); ->requeue = from the kill to the last of those; ->reply max = to the last reply"
    )


def _lost(outcome: Outcome) -> list[int]:
    """Stored messages the sandbox never got a reply to (not closed as suppressed or handoff)."""
    return [
        m for m, seen in outcome.answered_at.items()
        if seen is None and outcome.inbound[m][1] not in ("suppressed", "handoff")
    ]  # fmt: skip


def _whereabouts(redis: Redis, database_url: str, messages: list[int]) -> dict[int, str]:
    """Where each of `messages` stands at the end: its row, and its jobs in RQ's keys."""
    found: dict[int, list[str]] = defaultdict(list)
    for name in QUEUES:
        queue = Queue(name, connection=redis)
        places = {
            "queued": queue.get_job_ids(),
            "started": queue.started_job_registry.get_job_ids(cleanup=False),
            "finished": queue.finished_job_registry.get_job_ids(cleanup=False),
            "failed": queue.failed_job_registry.get_job_ids(cleanup=False),
            "scheduled": queue.scheduled_job_registry.get_job_ids(cleanup=False),
        }
        for place, ids in places.items():
            for job in Job.fetch_many(ids, connection=redis):
                if job is not None and len(job.args) > 1 and job.args[1] in messages:
                    found[job.args[1]].append(f"{name} job {job.id[:8]} {place}")
    rows = {}
    with psycopg.connect(database_url) as conn:
        for m, status, queued, done in conn.execute(
            "select id, status, extract(epoch from enqueued_at - created_at), processed_at "
            "from messages where id = any(%s)", (messages,),
        ):  # fmt: skip
            rows[m] = (
                f"status {status}, "
                + (f"queued {queued:.1f} s after it was stored" if queued is not None
                   else "never queued by the relay")
                + (", closed" if done is not None else ", not closed")
            )  # fmt: skip
    return {
        m: f"{rows.get(m, 'no row')}; in RQ: {', '.join(found[m]) or 'no job holds it'}"
        for m in messages
    }


def _report(
    args: argparse.Namespace, kills: list[Kill], outcome: Outcome, load: dict,
    requeued: dict[str, float], startup: list[float], whereabouts: dict[int, str],
    exited: list[WorkerProc], loads: list[str],
) -> None:  # fmt: skip
    """Print the kills, the crash-to-reply distribution against its target, and the totals."""
    print()
    _print_kills(kills, outcome, requeued)
    measured: list[float] = []
    once: list[float] = []
    modelled: list[float] = []
    never_held: set[int] = set()
    held = [_held_messages(kill, outcome) for kill in kills]
    for index, kill in enumerate(kills):
        later = {m for messages in held[index + 1 :] for m in messages}
        for m in held[index]:
            seen, enqueued = outcome.answered_at[m], outcome.inbound[m][2]
            if seen is None:
                never_held.add(m)
                continue
            measured.append(seen - kill.at)
            if m not in later:
                once.append(seen - kill.at)
            if enqueued == enqueued:  # not NaN: the relay queued its job
                modelled.append(max(enqueued + STALE_JOB_SECONDS - kill.at, 0.0))
    print("\ncrash-to-reply, from the SIGKILL to the reply on the wire, every held message:")
    print(f"  heartbeat path, measured        {_distribution(measured)}")
    print(f"    held by no later kill         {_distribution(once)}")
    if args.baseline:
        print(f"  stale sweep only, modelled      {_distribution(modelled)}")
        print(
            f"    (baseline: each message's job enqueue + STALE_JOB_SECONDS {STALE_JOB_SECONDS:g} s"
            " - the kill, a lower bound; not run, it costs minutes per kill)"
        )
    p99 = percentile(sorted(measured), 99) if measured else float("nan")
    met = bool(measured) and p99 <= TARGET_P99_SECONDS and not never_held
    print(
        f"target p99 <= {TARGET_P99_SECONDS:g} s: {'MET' if met else 'NOT MET'} (p99 {p99:.1f} s "
        f"over {len(measured)} held messages of {len(kills)} kills; {len(never_held)} held "
        "messages never answered)"
    )

    every = [
        seen - outcome.created[m] for m, seen in outcome.answered_at.items() if seen is not None
    ]  # fmt: skip
    print(f"for context, every message, webhook to reply:   {_distribution(every)}")
    print(f"for context, worker start-up, spawn to lanes up: {_distribution(startup)}")
    for worker in exited:
        lines = worker.log.read_text(errors="replace").splitlines()
        errors = [line for line in lines if '"level": "error"' in line
                  or line.startswith(("RuntimeError", "redis."))]  # fmt: skip
        fatal = next((line for line in errors if "unhandled exception" in line), None)
        fatal = fatal or (errors[-1] if errors else "(no error in its log)")
        print(f"worker exited on its own: {worker.log.name}, code {worker.process.returncode}: "
              f"{fatal[:200]}")  # fmt: skip

    statuses = Counter(status for _, status, _ in outcome.inbound.values())
    lost = _lost(outcome)
    acked = int(load["status"].get("200", 0))
    refused = {
        **load["errors"],
        **{f"HTTP {s}": n for s, n in load["status"].items() if s != "200"},
    }
    print(
        f"\nmessages sent {load['requests']}, acknowledged (200) {acked}, stored "
        f"{len(outcome.inbound)} ("
        + ", ".join(f"{s} {n}" for s, n in sorted(statuses.items()))
        + ")"
        + (f"; not acknowledged: {refused}" if refused else "")
    )
    print(
        f"replies received by the sandbox {outcome.wire} ({outcome.outbound_sent} outbound rows "
        f"sent); messages answered on the wire {len(outcome.answered_at) - len(lost)}"
    )
    print(
        f"lost: {len(lost)} stored and never answered (not suppressed or with staff)"
        + (f" {lost[:20]}" if lost else "")
        + f"; {max(0, acked - len(outcome.inbound))} acknowledged and not stored"
    )
    for message, where in whereabouts.items():
        print(f"  message {message}: {where}")
    print(
        f"answered twice: {len(outcome.doubled_db)} messages by two outbox replies"
        + (f" {outcome.doubled_db[:20]}" if outcome.doubled_db else "")
        + f"; {outcome.doubled_results} with two successful ai_results rows; "
        f"{outcome.doubled_wire} extra on the wire; {outcome.unrecorded_wire} on the wire that "
        "no outbound row claims"
    )
    print(
        f"machine load average (1/5/15 min) at start, end of load, end: {' | '.join(loads)} "
        f"on {os.cpu_count()} cores, shared with other work: the timings are noisy"
    )


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- main --------------------------------------------------------------------------------------


def _schedule(args: argparse.Namespace) -> list[tuple[float, str]]:
    """(seconds after the load starts, what) for every kill and the Redis outage."""
    events = []
    at = args.kill_every
    while at < args.seconds:
        events.append((at, "kill"))
        at += args.kill_every
    if args.redis_outage:
        events.append((args.seconds / 2 + args.kill_every / 4, "redis"))
    return sorted(events)


def main() -> int:
    """Start the stack, load it, kill workers on a schedule, wait for the answers, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="of load")
    parser.add_argument("--rate", type=float, default=6.0, help="messages per second")
    parser.add_argument("--users", type=int, default=200, help="distinct WhatsApp users")
    parser.add_argument("--workers", type=int, default=3, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=8, help="lanes per worker")
    parser.add_argument("--kill-every", type=float, default=10.0, help="seconds between kills")
    parser.add_argument("--latency", default="uniform:0.5,1.5", help="per model call")
    parser.add_argument("--heartbeat", type=float, default=2.0, help="WORKER_HEARTBEAT_SECONDS")
    parser.add_argument("--dead-after", type=float, default=10.0,
                        help="WORKER_DEAD_AFTER_SECONDS")  # fmt: skip
    parser.add_argument("--drain", type=float, default=90.0,
                        help="seconds to wait for the last answers after the load")  # fmt: skip
    parser.add_argument("--redis-outage", action="store_true",
                        help="stop Redis for --outage seconds mid-run")  # fmt: skip
    parser.add_argument("--outage", type=float, default=5.0)
    parser.add_argument("--victim", choices=("random", "oldest"), default="random",
                        help="which worker taking jobs each kill hits")  # fmt: skip
    parser.add_argument("--seed", type=int, default=1, help="for --victim random")
    parser.add_argument("--wait-for-survivor", action=argparse.BooleanOptionalAction,
                        default=True,
                        help="put a kill off until another worker takes jobs")  # fmt: skip
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="print the stale sweep's modelled crash-to-reply too")  # fmt: skip
    args = parser.parse_args()
    if args.workers < 2:
        parser.error("--workers must be at least 2: a survivor must see the dead one")

    WORK.mkdir(parents=True, exist_ok=True)
    for old in WORK.glob("*.log"):
        old.unlink()
    loads = [_loadavg()]
    redis_server: EmbeddedRedis | None = None
    sandbox = TwilioSandbox(auto_status=())
    clock = ReplyClock(sandbox)
    model: subprocess.Popen[str] | None = None
    stack: Stack | None = None
    forms = WORK / "forms.jsonl"
    try:
        database_url = fresh_database(DATABASE, data=DATA)
        redis_server = start_redis(DATA / "redis", persist=True)
        if not redis_server.started_here:  # an interrupted run's, in our directory: ours
            replace(redis_server, started_here=True).stop()
            redis_server = start_redis(DATA / "redis", persist=True)
        redis = Redis.from_url(redis_server.url)
        redis.flushall()
        model = _start_model(args.latency)
        assert model.stdout
        model_url = model.stdout.readline().strip()
        if not model_url.startswith("http"):
            raise SetupError(f"the offline model did not start:\n{_tail(WORK / 'model.log')}")
        account, token = "AC" + secrets.token_hex(16), secrets.token_hex(16)
        sandbox.start().add_account(account, token)
        clock.start()
        with psycopg.connect(database_url) as conn, conn.transaction():
            tenants.upsert_tenant(
                conn, slug="bench", name="Bench", whatsapp_sender=SENDER,
                twilio_account_sid=account, twilio_auth_token=token, typing_indicator=False,
            )  # fmt: skip

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {
            **os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_server.url,
            "PUBLIC_BASE_URL": base, "APP_ENV": "production", "LOG_LEVEL": "INFO",
            "JWT_SECRET": secrets.token_urlsafe(48), "TWILIO_API_BASE_URL": sandbox.url,
            "TWILIO_STATUS_CALLBACKS": "false", "OPENAI_BASE_URL": model_url,
            "OPENAI_API_KEY": "offline", "LLM_MODEL": "offline", "INBOUND_DEBOUNCE_SECONDS": "0",
            "WORKER_HEARTBEAT_SECONDS": str(args.heartbeat),
            "WORKER_DEAD_AFTER_SECONDS": str(args.dead_after),
            "STALE_JOB_SECONDS": str(STALE_JOB_SECONDS), "WORKER_METRICS_PORT": "0",
            "PYTHONUNBUFFERED": "1",  # a SIGKILLed worker's last log lines are evidence
        }  # fmt: skip
        stack = Stack(env, args.concurrency)
        api_log = stack.start_api(port)
        print(f"signing {round(args.rate * args.seconds)} webhook forms ({args.users} users)...",
              flush=True)  # fmt: skip
        _write_forms(forms, round(args.rate * args.seconds), account=account, token=token,
                     url=base + "/webhooks/inbound", users=args.users)  # fmt: skip
        with httpx.Client(base_url=base) as client:
            assert stack.api is not None
            _wait_healthy(client, stack.api, api_log)
        for _ in range(args.workers):
            stack.start_worker()
        for worker in stack.workers:
            _wait_registered(redis, worker, args.concurrency)
        print(
            f"API and {args.workers} workers x {args.concurrency} lanes up (logs in "
            f"{WORK.relative_to(ROOT)}); load {args.rate:g}/s for {args.seconds:g} s, a SIGKILL "
            f"every {args.kill_every:g} s, model {args.latency} s per call, heartbeat "
            f"{args.heartbeat:g} s, dead after {args.dead_after:g} s", flush=True,
        )  # fmt: skip

        generator = _start_load(base + "/webhooks/inbound", args.rate, args.seconds, forms)
        assert generator.stdin
        started = time.time()
        generator.stdin.write("go\n")
        generator.stdin.flush()
        kills: list[Kill] = []
        rng = random.Random(args.seed)
        for offset, what in _schedule(args):
            time.sleep(max(0.0, started + offset - time.time()))
            if what == "redis":
                print(f"  {time.time() - started:5.1f} s  Redis down for {args.outage:g} s",
                      flush=True)  # fmt: skip
                if not redis_server.started_here:
                    print("  (skipped: this Redis was not started by this run)")
                    continue
                redis_server = _redis_outage(redis_server, args.outage)
                continue
            kill = _kill(
                stack, redis, database_url, started, oldest=args.victim == "oldest", rng=rng,
                wait_for_survivor=args.wait_for_survivor, until=started + args.seconds,
            )  # fmt: skip
            if kill is None:
                print(f"  {time.time() - started:5.1f} s  the load is over; no more kills")
                break
            kills.append(kill)
            print(f"  {kill.offset:5.1f} s  SIGKILL {kill.worker}: {len(kill.jobs)} jobs held, "
                  f"{kill.survivors} other workers taking jobs", flush=True)  # fmt: skip
        load = _finish_load(generator, timeout=args.seconds + 60)
        loads.append(_loadavg())
        print(f"load done ({load['status']}); waiting up to {args.drain:g} s for the answers...",
              flush=True)  # fmt: skip
        deadline = time.monotonic() + args.drain
        while not _all_answered(database_url, clock) and time.monotonic() < deadline:
            stack.replace_exited()
            time.sleep(0.5)
        time.sleep(2)  # time for a duplicate to show up
        loads.append(_loadavg())
        outcome = _outcome(database_url, clock)
        requeued = _requeues(sorted(WORK.glob("worker-*.log")))
        whereabouts = _whereabouts(redis, database_url, _lost(outcome))
        _report(args, kills, outcome, load, requeued, _startup(stack.spawned), whereabouts,
                stack.exited, loads)  # fmt: skip
    except SetupError as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 1
    finally:
        clock.stop()
        if stack is not None:
            stack.stop()
        sandbox.stop()
        if model is not None:
            model.terminate()
            model.wait(timeout=10)
        if redis_server is not None:
            redis_server.stop()
        forms.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
