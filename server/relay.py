"""Move stored messages onto the RQ queues: the webhook stores, the relay enqueues.

The webhook's only write is one PostgreSQL statement; Twilio gets its `200` as soon as the
message is durable. The relay (a process beside each API process, or `conversa sweep` once)
claims stored messages that have no job yet, with `FOR UPDATE SKIP LOCKED` so several relays
share the work, and enqueues them in one Redis round trip per batch. It runs in its own process
so that building RQ jobs never competes with the webhook for the API process's interpreter
lock: as a thread beside the webhook it pushed the webhook's p99 from ~8 ms to ~70-130 ms at
1,000 requests/s (`bench/bench_webhook.py`). Because it reads the
database, it also heals every way a job can go missing: Redis down or wiped, a process killed
between commit and enqueue, a worker killed mid-run (`STALE_JOB_SECONDS`). Jobs are idempotent,
so a message enqueued twice is still answered once.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from uuid import UUID

import structlog
from psycopg_pool import ConnectionPool
from redis import Redis, RedisError

from server.jobs.date_notices import schedule_date_notices
from server.jobs.queue import enqueue_relayed, send_job_data, transcribe_job_data, turn_job_data
from server.jobs.reminders import sweep_reminders
from server.jobs.retention import schedule_retention
from server.logs import configure_logging
from server.services import Services
from server.settings import Settings
from store import inbox
from store.records import Message

log = structlog.get_logger(__name__)

_BATCH_PAUSE_SECONDS = 0.05
BATCH = 500
"""Messages claimed per pass; a full batch means more may be waiting."""


def relay_once(pool: ConnectionPool, redis: Redis, settings: Settings, limit: int = BATCH) -> int:
    """Enqueue every message that is due a job; return how many were enqueued."""
    with pool.connection() as conn, conn.transaction():
        claimed = inbox.claim_due(
            conn,
            outbox_min_age_seconds=settings.outbox_min_age_seconds,
            stale_after_seconds=settings.stale_job_seconds,
            limit=limit,
        )
        if not claimed:
            return 0
        inbound = [m for m in claimed if m.direction == "inbound"]
        # A voice note is transcribed first; that job queues its turn.
        voice = [transcribe_job_data(settings, m) for m in inbound if m.awaits_transcript]
        # One turn per conversation: its job answers every message waiting there, so a
        # burst the relay claims together costs one job, not one per message.
        firsts: dict[UUID, Message] = {}
        for message in inbound:
            if not message.awaits_transcript:
                firsts.setdefault(message.conversation_id, message)
        turns = [turn_job_data(settings, m) for m in firsts.values()]
        sends = [send_job_data(m) for m in claimed if m.direction == "outbound"]
        with redis.pipeline() as pipe:
            enqueue_relayed(pipe, redis, voice=voice, turns=turns, sends=sends)
            pipe.execute()
        # Marked only once Redis has the jobs: if it is down, the rows stay due.
        inbox.mark_relayed(conn, [m.id for m in claimed])
    counts = {"turns": len(turns), "voice": len(voice), "sends": len(sends)}
    log.debug("relayed stored messages to the queues", **counts)
    return len(claimed)


class Relay(threading.Thread):
    """Run `relay_once` every `RELAY_INTERVAL_SECONDS` (sooner when woken) until stopped."""

    def __init__(self, services: Services) -> None:
        super().__init__(name="relay", daemon=True)
        self._services = services
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._failing = False
        self._chores_due = self._retention_due = self._date_notices_due = 0.0

    def run(self) -> None:
        settings = self._services.settings
        while not self._stopping.is_set():
            self._wake.wait(settings.relay_interval_seconds)
            # Under load the webhook wakes the relay per message; a short pause batches them.
            if self._stopping.wait(_BATCH_PAUSE_SECONDS):
                return
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                while relay_once(self._services.pool, self._services.redis, settings) >= BATCH:
                    pass
                # The chores run on the timer, not on every wake-up: under load the webhook
                # wakes the relay dozens of times a second.
                if time.monotonic() >= self._chores_due:
                    sweep_reminders(self._services.pool, self._services.redis, settings)
                    self._chores_due = time.monotonic() + settings.relay_interval_seconds
                if time.monotonic() >= self._retention_due:
                    schedule_retention(self._services.redis, settings)
                    self._retention_due = time.monotonic() + settings.retention_interval_seconds
                if time.monotonic() >= self._date_notices_due:
                    schedule_date_notices(self._services.redis, settings)
                    self._date_notices_due = (
                        time.monotonic() + settings.date_notice_interval_seconds
                    )
                if self._failing:
                    log.info("relay: back to normal")
                self._failing = False
            except (RedisError, OSError) as exc:
                self._complain("relay: redis unavailable; messages stay stored", exc)
            except Exception as exc:
                self._complain("relay failed; will retry", exc)

    def _complain(self, event: str, exc: Exception) -> None:
        if not self._failing:
            log.warning(event, error=str(exc))
        self._failing = True

    def set(self) -> None:
        """Wake the loop now: a message is due a job."""
        self._wake.set()

    def stop(self) -> None:
        """End the loop and wait for it."""
        self._stopping.set()
        self._wake.set()
        self.join(timeout=5)


class RelayProcess:
    """Run `Relay` in a child process, woken through a pipe by `set()` (what the webhook calls).

    Writing a byte to a non-blocking pipe never waits: when the pipe is full, plenty of
    wake-ups are pending already, and when the child is gone nothing is lost (the rows stay
    due for the next relay or `conversa sweep`). Closing the pipe stops the child, and so does
    the API process dying: the child reads end-of-file and exits.
    """

    def __init__(self, settings: Settings) -> None:
        context = multiprocessing.get_context("spawn")  # no copy of the API's threads or loop
        reader, self._writer = context.Pipe(duplex=False)
        self._reader: Connection | None = reader
        os.set_blocking(self._writer.fileno(), False)
        self._process = context.Process(
            target=_relay_main, args=(settings, reader), name="conversa-relay", daemon=True
        )

    def start(self) -> None:
        """Start the child process."""
        self._process.start()
        if self._reader is not None:
            self._reader.close()  # the child holds the only read end: EOF reaches it
            self._reader = None

    def set(self) -> None:
        """Wake the relay: a message is due a job."""
        # Full (wake-ups are pending), closed or broken (the relay is gone): nothing to do.
        with contextlib.suppress(OSError):
            os.write(self._writer.fileno(), b"!")

    def stop(self, timeout: float = 10.0) -> None:
        """Close the pipe and let the child finish the pass it is in; kill it if it hangs."""
        self._writer.close()
        if self._process.pid is None:
            return
        self._process.join(timeout)
        if self._process.is_alive():
            log.warning("relay process did not stop; terminating it")
            self._process.terminate()
            self._process.join(2)


def _relay_main(settings: Settings, wake: Connection) -> None:
    """The relay process: a `Relay` thread, woken on every byte from the pipe, until EOF."""
    # Ctrl-C reaches the whole process group; the API decides when the relay stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(settings.app_env, settings.log_level)
    services = Services.build(settings)
    relay = Relay(services)
    relay.start()
    try:
        with contextlib.suppress(OSError):
            while os.read(wake.fileno(), 4096):
                relay.set()
    finally:
        relay.stop()
        services.close()
