"""Open-loop HTTP load generator for the benchmarks; run as its own process, prints JSON.

Requests are scheduled at fixed intervals (`--rate` per second for `--seconds`) whether or not
earlier ones were answered, and each latency is measured from the request's *scheduled* send
time, so a slow server cannot hide its slowness by slowing the generator down (coordinated
omission). The generator reports how late its own sends started and the send rate it reached:
when those are off, the numbers measure the generator, not the server.

    python bench/_load.py --url http://127.0.0.1:8000/livez --rate 500 --seconds 5
    python bench/_load.py --url http://127.0.0.1:8000/webhooks/inbound --method POST \\
        --bodies forms.jsonl --rate 500 --seconds 5

`--bodies` holds one JSON object a line, `{"body": "...", "headers": {...}}`, used in order,
one per request (at least rate x seconds lines): every request body is built before the clock
starts. The default client writes pre-serialized HTTP/1.1 requests on raw asyncio streams
(keep-alive pool, uvloop when installed); `--client httpx` uses httpx.AsyncClient instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Return the nearest-rank `q`-th percentile (0-100) of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    """Percentiles of durations in seconds, as milliseconds."""
    ordered = sorted(values)
    if not ordered:
        return {}
    return {
        "p50": percentile(ordered, 50) * 1000,
        "p90": percentile(ordered, 90) * 1000,
        "p99": percentile(ordered, 99) * 1000,
        "p999": percentile(ordered, 99.9) * 1000,
        "max": ordered[-1] * 1000,
        "mean": sum(ordered) / len(ordered) * 1000,
    }


def _worst_window(latency: Sequence[float], interval: float, width: float = 0.1) -> dict:
    """The `width`-second window of scheduled sends whose median latency was worst.

    It tells a stall (one window far above the rest: a slow fsync, a pause) from saturation
    (every window slow)."""
    windows: dict[int, list[float]] = {}
    for i, seconds in enumerate(latency):
        windows.setdefault(int(i * interval / width), []).append(seconds)
    if not windows:
        return {}
    at, values = max(windows.items(), key=lambda item: sorted(item[1])[len(item[1]) // 2])
    ordered = sorted(values)
    return {
        "at_s": at * width,
        "p50_ms": ordered[len(ordered) // 2] * 1000,
        "max_ms": ordered[-1] * 1000,
    }


# -- raw HTTP/1.1 client ---------------------------------------------------------------------


class _Conn:
    __slots__ = ("reader", "uses", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.uses = reader, writer, 0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class _Pool:
    """Keep-alive connections to one host, at most `limit` open; last released, first reused."""

    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port, self.limit = host, port, limit
        self.idle: list[_Conn] = []
        self.waiters: deque[asyncio.Future[_Conn]] = deque()
        self.open = 0
        self.opened = 0

    async def _connect(self) -> _Conn:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.opened += 1
        return _Conn(reader, writer)

    async def acquire(self) -> _Conn:
        if self.idle:
            return self.idle.pop()
        if self.open < self.limit:
            self.open += 1
            try:
                return await self._connect()
            except BaseException:
                self.open -= 1
                raise
        waiter: asyncio.Future[_Conn] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        return await waiter

    def release(self, conn: _Conn) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self.idle.append(conn)

    def discard(self, conn: _Conn) -> None:
        conn.close()
        self.open -= 1
        if self.waiters:  # a waiter would otherwise wait for a connection that never comes
            self.open += 1
            asyncio.get_running_loop().create_task(self._open_for_waiter())

    async def _open_for_waiter(self) -> None:
        try:
            conn = await self._connect()
        except Exception as exc:
            self.open -= 1
            while self.waiters:
                waiter = self.waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(exc)
                    return
            return
        self.release(conn)

    async def prewarm(self, count: int) -> None:
        conns = []
        for _ in range(min(count, self.limit)):
            self.open += 1
            conns.append(await self._connect())
        for conn in conns:
            self.release(conn)

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return its status and whether the connection can be reused."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, chunked, keep = 0, False, True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            keep = False
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, keep


def _raw_requests(
    url: str, method: str, bodies: list[dict] | None, count: int
) -> tuple[str, int, list[bytes]]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    head = f"{method} {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: conversa-bench\r\n"
    if bodies is None:
        request = (head + "Accept: */*\r\n\r\n").encode()
        return host, port, [request] * count
    requests = []
    for item in bodies[:count]:
        body = item["body"].encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", **item.get("headers", {})}
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        requests.append((head + lines + f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
    return host, port, requests


# -- the open-loop run -----------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict:
    """Schedule `rate x seconds` requests at fixed intervals and measure each one."""
    count = round(args.rate * args.seconds)
    bodies = None
    if args.bodies:
        bodies = [json.loads(line) for line in Path(args.bodies).read_text().splitlines() if line]
        if len(bodies) < count:
            raise SystemExit(f"{args.bodies} has {len(bodies)} bodies; {count} are needed")

    loop = asyncio.get_running_loop()
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    latency = [0.0] * count
    lag = [0.0] * count
    finished = [0.0] * count
    in_flight = max_in_flight = 0
    written = [False] * count  # whether the request reached the wire (not only the pool queue)

    send: Callable[[int], Awaitable[int]]
    pool: _Pool | None = None
    closers: list[Callable[[], Awaitable[None] | None]] = []
    if args.client == "raw":
        host, port, requests = _raw_requests(args.url, args.method, bodies, count)
        pool = _Pool(host, port, args.connections)
        await pool.prewarm(args.prewarm)
        closers.append(pool.close)

        async def send(i: int) -> int:
            assert pool is not None
            for attempt in (0, 1):
                conn = await pool.acquire()
                reused = conn.uses > 0
                try:
                    conn.writer.write(requests[i])
                    written[i] = True
                    status, keep = await _read_response(conn.reader)
                except (ConnectionError, asyncio.IncompleteReadError, OSError):
                    pool.discard(conn)
                    if reused and attempt == 0:
                        continue  # the server closed an idle keep-alive connection: retry once
                    raise
                except BaseException:  # cancelled (timeout) mid-response: the stream is unusable
                    pool.discard(conn)
                    raise
                conn.uses += 1
                if keep:
                    pool.release(conn)
                else:
                    pool.discard(conn)
                return status
            raise AssertionError("unreachable")

    else:
        import httpx

        limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=None)
        client = httpx.AsyncClient(limits=limits, timeout=None)
        closers.append(client.aclose)
        if bodies is None:  # warm one connection (only where a request has no side effect)
            await client.request(args.method, args.url)

        async def send(i: int) -> int:
            if bodies is None:
                response = await client.request(args.method, args.url)
            else:
                item = bodies[i]
                headers = {
                    "Content-Type": "application/x-www-form-urlencoded",
                    **item.get("headers", {}),
                }
                response = await client.request(
                    args.method, args.url, content=item["body"].encode(), headers=headers
                )
            return response.status_code

    async def one(i: int, scheduled: float) -> None:
        nonlocal in_flight, max_in_flight
        lag[i] = time.perf_counter() - scheduled
        in_flight += 1
        max_in_flight = max(max_in_flight, in_flight)
        try:
            async with asyncio.timeout(args.timeout):
                status = await send(i)
            statuses[str(status)] += 1
        except TimeoutError:
            errors["timeout"] += 1
        except Exception as exc:
            errors[type(exc).__name__] += 1
        finally:
            in_flight -= 1
            finished[i] = time.perf_counter()
            latency[i] = finished[i] - scheduled

    if args.wait_go:  # let the caller start its clocks once everything is built
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
    cpu_started = time.process_time()
    interval = 1 / args.rate
    # Event-loop timers tick in whole milliseconds, so a plain sleep starts sends up to ~1 ms
    # late. When sends are at least 2 ms apart, sleep until 1 ms before the next one is due and
    # close the gap finely: with nothing in flight a blocking sleep (precise, no CPU), else by
    # yielding to the loop until it is due. At higher rates that spinning would take a whole
    # core from the server under test, so sends there may start up to ~1 ms late (measured in
    # `lag_ms`, and inside every latency since those count from the scheduled time).
    spin = args.spin_ms / 1000 if interval >= 2 * args.spin_ms / 1000 else 0.0
    start = time.perf_counter() + 0.01
    tasks = []
    i = 0
    while i < count:
        now = time.perf_counter()
        while i < count and start + i * interval <= now:
            tasks.append(loop.create_task(one(i, start + i * interval)))
            i += 1
        if i < count:
            wait = start + i * interval - time.perf_counter()
            if wait > spin:
                await asyncio.sleep(wait - spin)
            elif in_flight == 0 and wait > 0:
                time.sleep(wait)  # nothing to read meanwhile: block precisely
            else:
                await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    cpu_seconds = time.process_time() - cpu_started
    for close in closers:
        result = close()
        if result is not None:
            await result

    # the send rate reached: requests over the span from the first due time to the last start
    send_span = max((k * interval + lag[k] for k in range(count)), default=0.0) + interval
    answer_span = max(finished, default=start) - start
    return {
        "url": args.url,
        "client": args.client,
        "target_rate": args.rate,
        "seconds": args.seconds,
        "requests": count,
        "sent": sum(written) if pool else count,
        "answered": sum(statuses.values()),
        "status": dict(statuses),
        "errors": dict(errors),
        "latency_ms": summary_ms(latency),
        "send_rate": count / send_span if count else 0.0,
        "throughput": sum(statuses.values()) / answer_span if answer_span > 0 else 0.0,
        "lag_ms": summary_ms(lag),
        "worst_window": _worst_window(latency, interval),
        "max_in_flight": max_in_flight,
        "connections_opened": pool.opened if pool else None,
        "cpu_seconds": cpu_seconds,
        "wall_seconds": answer_span,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--bodies", help="JSON lines of {body, headers}, one per request")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=200, help="connection pool limit")
    parser.add_argument("--prewarm", type=int, default=8, help="connections opened up front")
    parser.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
    parser.add_argument(
        "--spin-ms", type=float, default=1.0, help="fine-timing window before each send (0: off)"
    )
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument(
        "--wait-go", action="store_true", help="print 'ready', start on a line on stdin"
    )
    args = parser.parse_args(argv)

    runner: Callable[..., dict] = asyncio.run
    if not args.no_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            runner = uvloop.run
    result = runner(run(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
