"""What every benchmark shares: a fresh database on the embedded server, timing, the report line."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from store.embedded import start_postgres
from store.migrate import migrate

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data" / "bench"


def fresh_database(name: str, *, migrated: bool = True, data: Path = DATA) -> str:
    """Start the embedded PostgreSQL under `data` (`.data/bench`; a benchmark that needs many
    connections passes its own); recreate database `name`; return its URL."""
    admin = start_postgres(data)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"drop database if exists {name} with (force)")
        conn.execute(f"create database {name}")
    info = psycopg.conninfo.conninfo_to_dict(admin)
    url = psycopg.conninfo.make_conninfo(**{**info, "dbname": name})
    if migrated:
        migrate(url)
    return url


def timed(action: Callable[[], object], repeat: int) -> list[float]:
    """Run `action` `repeat` times; return each run's seconds."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return samples


def percentiles(samples: list[float]) -> tuple[float, float]:
    """The median and the 99th percentile of `samples`."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def report(name: str, samples: list[float], baseline: list[float], width: int = 40) -> None:
    """Print one measurement beside its baseline from the same run, and their ratios."""
    p50, p99 = percentiles(samples)
    base50, base99 = percentiles(baseline)
    print(
        f"{name:<{width}} p50 {p50 * 1000:6.2f} ms  p99 {p99 * 1000:6.2f} ms   "
        f"baseline p50 {base50 * 1000:5.2f} ms  p99 {base99 * 1000:5.2f} ms   "
        f"ratio p50 {p50 / base50:5.2f}x  p99 {p99 / base99:5.2f}x"
    )
