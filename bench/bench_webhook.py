"""Benchmark the inbound webhook's ack path against a bare endpoint, under open-loop load.

The API runs as a real server process (`conversa serve`, one process, APP_ENV=production,
LOG_LEVEL=WARNING) on embedded PostgreSQL and Redis. A separate process (`bench/_load.py`)
sends requests at fixed rates whether or not earlier ones were answered, and measures each
latency from the request's scheduled send time (no coordinated omission); a generator that falls
behind therefore makes the numbers worse, never better, and is reported. At each rate the bare
endpoint (`GET /livez`: no I/O) runs first, then the webhook (`POST /webhooks/inbound`:
tenant lookup, signature check, the insert committed with the concurrent ones, the relay's
enqueue), each request with its own MessageSid and a valid X-Twilio-Signature computed before
the clock starts, from ~50 users. Between runs the server is left to drain and the Redis
database is flushed. The `batch` column is how many messages the webhook's group commit
(`server.ack_batching`) committed together, on average, read from the API's `/metrics`.

The ratios webhook/bare are what to compare between commits; absolute numbers depend on the
machine (the generator, PostgreSQL and Redis share its cores with the API). Timings are
reported, never asserted: the exit status is 0 unless the setup fails.

Run: `.venv/bin/python bench/bench_webhook.py [--rates 100,200,500,1000,1500] [--seconds 5]`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from redis import Redis  # noqa: E402

from bench._common import DATA, fresh_database  # noqa: E402
from channels.twilio.inbound import sign  # noqa: E402
from server.cli.chat import whatsapp_form  # noqa: E402
from server.cli.demo import stop_process  # noqa: E402
from store import tenants  # noqa: E402
from store.embedded import EmbeddedRedis, free_port, start_redis  # noqa: E402

DATABASE = "conversa_bench_webhook"
SENDER = "whatsapp:+14155550198"
BARE_PATH = "/livez"
WEBHOOK_PATH = "/webhooks/inbound"
LOAD = ROOT / "bench" / "_load.py"

SLO_P99_MS = 25.0
"""A rate is sustained when every request got a 2xx and p99 stayed within this."""
TARGET_RATIO_P99 = 1.5
TARGET_AT_200 = (2.0, 8.0)  # p50, p99 in ms at 200 req/s
TARGET_RATE = 1500


class SetupError(RuntimeError):
    """The benchmark could not be set up (or a piece of it died); nothing was measured."""


# -- CPU accounting from /proc, to show where the time goes ---------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int, *, reaped: bool = False) -> float:
    """CPU seconds `pid` used; with `reaped`, also its children that exited and it waited for
    (PostgreSQL's backends of closed connections, counted by the postmaster)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    used = int(fields[11]) + int(fields[12])  # utime + stime
    if reaped:
        used += int(fields[13]) + int(fields[14])  # cutime + cstime
    return used / _TICK


def _children(ppid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rpartition(")")[2].split()[1]) == ppid:
                pids.append(int(stat.parent.name))
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            continue
    return pids


def _machine_busy() -> tuple[float, float]:
    """Return (busy, total) CPU seconds of the whole machine, all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / _TICK, sum(values) / _TICK


@dataclass
class CpuMeter:
    """CPU seconds used by the API process, its relay process, PostgreSQL (all backends) and
    Redis."""

    server_pid: int
    postmaster_pid: int | None
    redis_pid: int

    def snapshot(self) -> dict[str, float]:
        postgres = 0.0
        if self.postmaster_pid:
            pids = [self.postmaster_pid, *_children(self.postmaster_pid)]
            postgres = sum(_proc_cpu(pid, reaped=pid == self.postmaster_pid) for pid in pids)
        busy, total = _machine_busy()
        return {
            "wall": time.monotonic(),
            "server": _proc_cpu(self.server_pid),
            # The API's children: its relay process (and multiprocessing's idle tracker).
            "relay": sum(_proc_cpu(pid) for pid in _children(self.server_pid)),
            "postgres": postgres,
            "redis": _proc_cpu(self.redis_pid),
            "machine_busy": busy,
            "machine_total": total,
        }


def _cpu_percent(before: dict[str, float], after: dict[str, float], gen_cpu: float) -> dict:
    wall = after["wall"] - before["wall"]
    used = {k: after[k] - before[k] for k in ("server", "relay", "postgres", "redis")}
    pct = {k: v / wall * 100 for k, v in used.items()}
    pct.update({f"{k}_seconds": v for k, v in used.items()})
    pct["generator"] = gen_cpu / wall * 100
    total = after["machine_total"] - before["machine_total"]
    busy = after["machine_busy"] - before["machine_busy"]
    pct["machine"] = busy / total * 100 if total else 0.0  # of all cores
    ours = pct["server"] + pct["relay"] + pct["postgres"] + pct["redis"] + pct["generator"]
    pct["other"] = max(0.0, pct["machine"] * (os.cpu_count() or 1) - ours)  # of one core
    return pct


# -- setup -----------------------------------------------------------------------------------


WEBHOOK_OK = frozenset({"200"})


def _ok(result: dict, accepted: frozenset[str]) -> int:
    return sum(n for status, n in result["status"].items() if status in accepted)


@dataclass
class Run:
    rate: int
    endpoint: str
    result: dict
    ok: int
    accepted: frozenset[str]
    cpu: dict = field(default_factory=dict)
    batch: float | None = None
    """Messages per group commit (the API's `conversa_webhook_ack_batch_size`), on average."""

    @property
    def errors(self) -> int:
        return int(self.result["requests"]) - self.ok

    @property
    def p50(self) -> float:
        return float(self.result["latency_ms"]["p50"])

    @property
    def p99(self) -> float:
        return float(self.result["latency_ms"]["p99"])

    @property
    def generator_kept_up(self) -> bool:
        return bool(
            self.result["send_rate"] >= 0.97 * self.rate and self.result["lag_ms"]["p99"] <= 2.0
        )

    @property
    def sustained(self) -> bool:
        return self.errors == 0 and self.p99 <= SLO_P99_MS


def _postmaster_pid(data: Path) -> int | None:
    try:
        return int((data / "pg" / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def _write_forms(
    path: Path, count: int, *, account: str, token: str, url: str, users: list[str], tag: str
) -> None:
    """Write `count` signed webhook forms, each with its own MessageSid, round-robin over users."""
    with path.open("w") as out:
        for i in range(count):
            form = whatsapp_form(
                account_sid=account, sender=SENDER, user=users[i % len(users)],
                body=f"Oi, tudo bem? ({tag} #{i})", profile_name=f"Bench User {i % len(users)}",
            )  # fmt: skip
            item = {
                "body": urlencode(form),
                "headers": {"X-Twilio-Signature": sign(token, url, form)},
            }
            out.write(json.dumps(item) + "\n")


def _conversa() -> str:
    beside = Path(sys.executable).parent / "conversa"
    return str(beside if beside.exists() else ROOT / ".venv" / "bin" / "conversa")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _start_server(
    port: int, database_url: str, redis_url: str, log_path: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "APP_ENV": "production",
        "LOG_LEVEL": "WARNING",
        "JWT_SECRET": secrets.token_urlsafe(48),  # production refuses to start without one
    }
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [_conversa(), "serve", "--port", str(port)],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip


def _wait_healthy(
    client: httpx.Client, server: subprocess.Popen[bytes], log_path: Path, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SetupError(f"the API exited with {server.returncode}:\n{_tail(log_path)}")
        try:
            if client.get("/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SetupError(f"the API did not answer /healthz in {timeout:.0f} s:\n{_tail(log_path)}")


def _drain(
    client: httpx.Client, server: subprocess.Popen[bytes], redis: Redis, log_path: Path
) -> None:
    """Wait until the server answers /healthz promptly again, then empty the RQ queues."""
    deadline, prompt = time.monotonic() + 120, 0
    while prompt < 3 and time.monotonic() < deadline:
        if server.poll() is not None:
            raise SetupError(f"the API exited with {server.returncode}:\n{_tail(log_path)}")
        started = time.perf_counter()
        try:
            healthy = client.get("/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            healthy = False
        prompt = prompt + 1 if healthy and time.perf_counter() - started < 0.05 else 0
        time.sleep(0.1)
    if prompt < 3:
        print("warning: the API was still slow to answer /healthz after 120 s", file=sys.stderr)
    redis.flushdb()
    time.sleep(0.5)


def _generate(
    url: str, rate: int, seconds: float, bodies: Path | None, args: argparse.Namespace,
    meter: CpuMeter,
) -> tuple[dict, dict]:  # fmt: skip
    """Run the load generator in its own process; return its result and the CPU split."""
    cmd = [
        sys.executable, str(LOAD), "--url", url, "--rate", str(rate), "--seconds", str(seconds),
        "--connections", str(args.connections), "--timeout", str(args.timeout),
        "--client", args.client, "--wait-go",
    ]  # fmt: skip
    if bodies is not None:
        cmd += ["--method", "POST", "--bodies", str(bodies)]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdin and proc.stdout
        ready = proc.stdout.readline().strip()
        if ready != "ready":
            _, err = proc.communicate(timeout=10)
            raise SetupError(f"the load generator did not start: {ready}\n{err}")
        before = meter.snapshot()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=seconds + args.timeout + 300)
        after = meter.snapshot()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0 or not out.strip():
        raise SetupError(f"the load generator failed ({proc.returncode}):\n{err}")
    result = json.loads(out.strip().splitlines()[-1])
    return result, _cpu_percent(before, after, float(result["cpu_seconds"]))


def _ack_batches(client: httpx.Client) -> tuple[float, float]:
    """(batches, messages) the API's group commit has committed so far, from `/metrics`."""
    totals = {"count": 0.0, "sum": 0.0}
    for family in text_string_to_metric_families(client.get("/metrics", timeout=10).text):
        if family.name != "conversa_webhook_ack_batch_size":
            continue
        for sample in family.samples:
            kind = sample.name.rpartition("_")[2]
            if kind in totals and sample.labels.get("outcome") != "failed":
                totals[kind] += sample.value
    return totals["count"], totals["sum"]


# -- report ----------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> str:
    if b <= 0:
        return "n/a"
    return f"{a / b:.0f}x" if a / b >= 100 else f"{a / b:.2f}x"


def _per_request_ms(run: Run, key: str) -> float:
    answered = int(run.result["answered"])
    return run.cpu[f"{key}_seconds"] / answered * 1000 if answered else float("nan")


def _print_table(runs: list[Run]) -> None:
    header = (
        f"{'rate/s':>6} {'endpoint':<8} {'sent':>5} {'ok':>5} {'err':>5} {'resp/s':>7} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'x p50':>7} {'x p99':>7} {'lag99':>6} "
        f"{'api%':>4} {'rly%':>4} {'pg%':>4} {'rds%':>4} {'gen%':>4} {'oth%':>4} {'box%':>4} "
        f"{'api/req':>7} {'pg/req':>6} {'batch':>5}"
    )
    print(header)
    print("-" * len(header))
    bare: dict[int, Run] = {}
    for run in runs:
        lat, cpu = run.result["latency_ms"], run.cpu
        ratios = f"{'':>7} {'':>7}"
        if run.endpoint == "bare":
            bare[run.rate] = run
        elif run.rate in bare:
            base = bare[run.rate]
            ratios = f"{_ratio(run.p50, base.p50):>7} {_ratio(run.p99, base.p99):>7}"
        flag = "" if run.generator_kept_up else " *"
        print(
            f"{run.rate:>6} {run.endpoint:<8} {run.result.get('sent', run.result['requests']):>5} "
            f"{run.ok:>5} {run.errors:>5} {run.result['throughput']:>7.1f} {lat['p50']:>8.2f} "
            f"{lat['p99']:>8.2f} {lat['max']:>8.2f} {ratios} {run.result['lag_ms']['p99']:>6.2f} "
            f"{cpu['server']:>4.0f} {cpu['relay']:>4.0f} {cpu['postgres']:>4.0f} "
            f"{cpu['redis']:>4.0f} "
            f"{cpu['generator']:>4.0f} {cpu['other']:>4.0f} {cpu['machine']:>4.0f} "
            f"{_per_request_ms(run, 'server'):>7.2f} {_per_request_ms(run, 'postgres'):>6.2f} "
            f"{'' if run.batch is None else f'{run.batch:.1f}':>5}{flag}"
        )
    legend = [
        "sent = written to a connection (the rest timed out waiting for one of the generator's",
        "  connections); err = not a 2xx, or no answer within the timeout",
        "latencies count from each request's scheduled send time; x p50 / x p99 = webhook / bare",
        "  at the same rate; lag99 = p99 of how late the generator started its sends (ms)",
        "api/rly/pg/rds/gen/oth% = CPU of the API process, its relay process, PostgreSQL, Redis,",
        "  the generator and everything else, in % of one core",
        f"box% = how busy the whole machine ({os.cpu_count()} cores) was",
        "api/req, pg/req = CPU ms of the API process and of PostgreSQL per answered request",
        "batch = messages per commit of the webhook's group commit, on average",
        "* = the generator fell behind (see the warnings)",
    ]
    print("\n" + "\n".join(legend))
    for run in runs:
        problems = {**run.result["errors"]}
        problems.update(
            {f"HTTP {s}": n for s, n in run.result["status"].items() if s not in run.accepted}
        )
        unsent = int(run.result["requests"]) - int(run.result.get("sent", run.result["requests"]))
        if problems:
            listed = ", ".join(f"{k} x{n}" for k, n in sorted(problems.items()))
            never = f" ({unsent} of them never got a connection)" if unsent else ""
            print(f"errors at {run.rate}/s on {run.endpoint}: {listed}{never}")
        worst = run.result.get("worst_window") or {}
        if run.p99 > SLO_P99_MS and worst:
            print(
                f"slowest 100 ms at {run.rate}/s on {run.endpoint}: the sends due at "
                f"{worst['at_s']:.1f} s waited p50 {worst['p50_ms']:.1f} ms (max "
                f"{worst['max_ms']:.1f} ms) against p50 {run.p50:.2f} ms over the run: "
                + ("a stall, not saturation" if worst["p50_ms"] > 5 * run.p50 else "saturation")
            )
        if not run.generator_kept_up:
            lag = run.result["lag_ms"]
            cpu = run.cpu
            cause = (
                "its own CPU was saturated"
                if cpu["generator"] >= 80
                else f"it used {cpu['generator']:.0f}% of a core while the machine was "
                f"{cpu['machine']:.0f}% busy ({cpu['other']:.0f}% of a core outside this "
                "benchmark): starved of CPU, not saturated"
            )
            print(
                f"warning: at {run.rate}/s on {run.endpoint} the generator fell behind "
                f"(sent {run.result['send_rate']:.0f}/s, sends up to {lag['max']:.1f} ms late, "
                f"p99 {lag['p99']:.2f} ms); {cause}. That lateness is inside the latencies."
            )


def _print_targets(runs: list[Run]) -> None:
    webhook = {r.rate: r for r in runs if r.endpoint == "webhook"}
    bare = {r.rate: r for r in runs if r.endpoint == "bare"}
    sustained = [rate for rate, run in sorted(webhook.items()) if run.sustained]
    best = max(sustained, default=None)
    print()
    if best is None:
        print(
            f"max sustainable webhook rate: none of the rates (p99 <= {SLO_P99_MS:g} ms, 0 errors)"
        )
    else:
        print(
            f"max sustainable webhook rate: {best} req/s (highest rate with p99 <= "
            f"{SLO_P99_MS:g} ms and 0 errors; measured {webhook[best].result['throughput']:.0f} "
            f"resp/s, p99 {webhook[best].p99:.2f} ms)"
        )

    peak = max(webhook.values(), key=lambda r: r.result["throughput"], default=None)
    if peak is not None:
        print(
            f"peak webhook throughput: {peak.result['throughput']:.0f} resp/s (offered "
            f"{peak.rate}/s); API process {peak.cpu['server']:.0f}% of a core, "
            f"{_per_request_ms(peak, 'server'):.2f} ms API CPU and "
            f"{_per_request_ms(peak, 'postgres'):.2f} ms PostgreSQL CPU per request"
        )

    def mark(met: bool) -> str:
        return "MET" if met else "NOT MET"

    within = {
        rate: run.p99 <= TARGET_RATIO_P99 * bare[rate].p99
        for rate, run in sorted(webhook.items())
        if rate in bare
    }
    detail = ", ".join(f"{rate}/s {_ratio(webhook[rate].p99, bare[rate].p99)}" for rate in within)
    print(
        f"target p99 <= {TARGET_RATIO_P99:g}x bare p99 at every rate: "
        f"{mark(bool(within) and all(within.values()))} ({detail})"
    )
    p50_target, p99_target = TARGET_AT_200
    at_200 = webhook.get(200)
    if at_200 is None:
        print(
            f"target p50 <= {p50_target:g} ms and p99 <= {p99_target:g} ms at 200 req/s: "
            "not measured"
        )
    else:
        met = at_200.p50 <= p50_target and at_200.p99 <= p99_target and at_200.errors == 0
        print(
            f"target p50 <= {p50_target:g} ms and p99 <= {p99_target:g} ms at 200 req/s: "
            f"{mark(met)} (p50 {at_200.p50:.2f} ms, p99 {at_200.p99:.2f} ms, "
            f"{at_200.errors} errors)"
        )
    cores = os.cpu_count()
    measured = max(webhook, default=0) >= TARGET_RATE
    verdict = mark(best is not None and best >= TARGET_RATE) if measured else "not measured"
    note = "" if cores == 2 else f"; this machine has {cores} cores"
    print(
        f"target >= {TARGET_RATE} req/s with p99 <= {SLO_P99_MS:g} ms on 2 cores: {verdict} "
        f"(best sustained: {best or 0} req/s; the generator, PostgreSQL and Redis share the "
        f"cores{note})"
    )


# -- main ------------------------------------------------------------------------------------


def main() -> int:
    """Set up the servers, run every rate on both endpoints, print the table and the targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="100,200,500,1000,1500", help="req/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="per rate and endpoint")
    parser.add_argument("--users", type=int, default=50, help="distinct WhatsApp users (From)")
    parser.add_argument("--connections", type=int, default=200, help="generator's pool limit")
    parser.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds at 100/s, unreported")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    if not rates or min(rates) <= 0 or args.seconds <= 0:
        parser.error("--rates must be positive integers and --seconds positive")

    data = DATA
    work = data / "webhook"
    work.mkdir(parents=True, exist_ok=True)
    log_path = work / "server.log"
    redis_server: EmbeddedRedis | None = None
    server: subprocess.Popen[bytes] | None = None
    forms: dict[str, Path] = {}
    try:
        database_url = fresh_database(DATABASE)
        # Its own directory, so flushing it never touches bench_spine's Redis.
        redis_server = start_redis(data / "redis-webhook", persist=False)
        redis = Redis.from_url(redis_server.url)
        redis.flushdb()
        account, token = "AC" + secrets.token_hex(16), secrets.token_hex(16)
        with psycopg.connect(database_url) as conn, conn.transaction():
            tenants.upsert_tenant(
                conn, slug="bench", name="Bench", whatsapp_sender=SENDER,
                twilio_account_sid=account, twilio_auth_token=token,
            )  # fmt: skip

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        users = [f"whatsapp:+55119{n:08d}" for n in range(args.users)]
        print(f"signing webhook forms ({args.users} users)...", flush=True)
        warmup_count = round(100 * args.warmup)
        batches = [("warmup", warmup_count)] if warmup_count else []
        batches += [(f"{i}-{rate}", round(rate * args.seconds)) for i, rate in enumerate(rates)]
        for name, count in batches:
            forms[name] = work / f"forms-{name}.jsonl"
            _write_forms(
                forms[name], count, account=account, token=token, url=base + WEBHOOK_PATH,
                users=users, tag=name,
            )  # fmt: skip

        server = _start_server(port, database_url, redis_server.url, log_path)
        with httpx.Client(base_url=base) as client:
            _wait_healthy(client, server, log_path)
            print(f"API up on {base} (pid {server.pid}, log {log_path.relative_to(ROOT)})")
            livez = client.get(BARE_PATH).status_code
            bare_ok = frozenset({"200"})
            if livez == 404:
                bare_ok = frozenset({"200", "404"})
                print(f"note: {BARE_PATH} answers 404 (not there yet); a 404 counts as answered")
            elif livez != 200:
                raise SetupError(f"{BARE_PATH} answered {livez}")
            meter = CpuMeter(server.pid, _postmaster_pid(data), redis_server.pid)

            webhook_ok_total = 0
            if warmup_count:
                print(
                    f"warming up ({args.warmup:g} s at 100 req/s on each endpoint)...", flush=True
                )
                _generate(base + BARE_PATH, 100, args.warmup, None, args, meter)
                result, _ = _generate(
                    base + WEBHOOK_PATH, 100, args.warmup, forms["warmup"], args, meter
                )
                webhook_ok_total += _ok(result, WEBHOOK_OK)
                _drain(client, server, redis, log_path)
                # A fresh database has no statistics until autovacuum's first pass (a minute
                # away): the relay's index scans would be planned as sequential scans.
                with psycopg.connect(database_url, autocommit=True) as conn:
                    conn.execute("analyze")

            runs: list[Run] = []
            for i, rate in enumerate(rates):
                for endpoint in ("bare", "webhook"):
                    print(f"  {rate:>5} req/s x {args.seconds:g} s  {endpoint}...", flush=True)
                    if endpoint == "bare":
                        url, bodies, accepted = base + BARE_PATH, None, bare_ok
                    else:
                        bodies = forms[f"{i}-{rate}"]
                        url, accepted = base + WEBHOOK_PATH, WEBHOOK_OK
                    batches_before = _ack_batches(client)
                    result, cpu = _generate(url, rate, args.seconds, bodies, args, meter)
                    runs.append(Run(rate, endpoint, result, _ok(result, accepted), accepted, cpu))
                    if endpoint == "webhook":
                        webhook_ok_total += runs[-1].ok
                        batches, messages = (
                            b - a for a, b in zip(batches_before, _ack_batches(client), strict=True)
                        )
                        runs[-1].batch = messages / batches if batches else None
                    _drain(client, server, redis, log_path)

        with psycopg.connect(database_url) as conn:
            stored, enqueued = conn.execute(
                "select count(*), count(enqueued_at) from messages where direction = 'inbound'"
            ).fetchone() or (0, 0)
        print()
        _print_table(runs)
        print(
            f"\nstored inbound messages: {stored} ({enqueued} marked enqueued) for "
            f"{webhook_ok_total} acknowledged webhooks (warm-up included)"
        )
        _print_targets(runs)
    except SetupError as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            stop_process(server, timeout=20)
        if redis_server is not None:
            redis_server.stop()
        for path in forms.values():
            path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
