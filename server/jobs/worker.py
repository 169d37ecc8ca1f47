"""`conversa worker`: one process that runs `WORKER_CONCURRENCY` jobs at once, in threads.

A turn spends nearly all its time waiting on the chat model (0.5-3 s a call, two or three calls
a turn), and RQ's own worker runs one job at a time, forking a work horse for each. So a
worker process here is several RQ workers ("lanes"), each an RQ `SimpleWorker` in its own
thread, with its own name, Redis connection and started-job registry entries: RQ's
bookkeeping, retries and tooling (`rq info`) see ordinary workers. Threads rather than asyncio
because the job path (psycopg, the tools, the Postgres checkpointer) is synchronous and the
interpreter lock is free while a thread waits on the model or the database; the measurement
behind that choice is in the README (`bench/bench_concurrency.py`).

What holds per lane holds for the process: one run per conversation at a time (the turn's
advisory lock, whatever lane or process it is on), jobs in arrival order per queue. Only lane 0
takes voice notes (the speech model stays loaded once and runs one note at a time), runs RQ's
maintenance and starts RQ's scheduler. The main thread only supervises: the first SIGTERM or
SIGINT lets every lane finish its job and stop; a second abandons them, dropping the process's
heartbeat so other workers queue them again at once (`server.jobs.liveness`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

import structlog
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.exceptions import StopRequested
from rq.job import Job, JobStatus
from rq.timeouts import TimerDeathPenalty
from rq.worker import WorkerStatus

from server import metrics
from server.jobs.common import kept_connections, release_idle
from server.jobs.liveness import LANE_PREFIX, Heartbeat, requeue_orphans
from server.logs import bind_correlation_id
from server.metrics_env import MetricsPortError
from server.services import redis_client
from server.settings import QUEUE_TRANSCRIBE, QUEUES, Settings

log = structlog.get_logger(__name__)

_POLL_SECONDS = 1
"""How long an idle lane blocks on Redis before it looks whether it should stop."""


class CorrelatedWorker(SimpleWorker):
    """An RQ worker that runs each job in its own thread with the job's correlation id bound
    before any log line of it, and counts every job's duration and outcome."""

    def execute_job(self, job: Job, queue: Queue) -> None:
        started = time.monotonic()
        try:
            self.prepare_execution(job)
            try:
                self.perform_job(job, queue)
            finally:
                structlog.contextvars.clear_contextvars()  # the job's ids stay with the job
            self.set_state(WorkerStatus.IDLE)
        finally:
            metrics.observe_job(_job_name(job), _outcome(job), time.monotonic() - started)

    def perform_job(self, job: Job, queue: Queue) -> bool:
        """Bind the job's correlation id (from its meta), then run it as RQ does."""
        structlog.contextvars.clear_contextvars()  # nothing of the previous job
        correlation_id = job.meta.get("correlation_id")
        if correlation_id:
            bind_correlation_id(str(correlation_id), rq_job_id=job.id)
        else:
            structlog.contextvars.bind_contextvars(rq_job_id=job.id)
        return super().perform_job(job, queue)


class Lane(CorrelatedWorker):
    """One of a worker process's lanes, run in a thread the process supervises.

    Timeouts come from a timer that raises in the lane's thread (RQ's `TimerDeathPenalty`),
    since SIGALRM reaches only the main thread; signals are the supervisor's.
    """

    death_penalty_class = TimerDeathPenalty

    def __init__(self, queues: list[Queue], *, name: str, index: int, connection: Redis) -> None:
        super().__init__(queues, name=name, connection=connection)
        self.index = index
        self.started = threading.Event()
        """Set once the lane has registered (and, for lane 0, started RQ's scheduler)."""

    @property
    def should_run_maintenance_tasks(self) -> bool:
        return self.index == 0 and super().should_run_maintenance_tasks

    def _install_signal_handlers(self) -> None:
        self.started.set()  # RQ calls this once the lane is set up; signals stay with the process

    def subscribe(self) -> None:
        if self.index == 0:  # RQ's commands (`rq shutdown`) reach the process through lane 0
            super().subscribe()

    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        """Finish the job in hand, if any, then stop (the supervisor's warm shutdown)."""
        self._stop_requested = True

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """Wait for a job, a second at a time, so that a stop request is seen while idle."""
        if timeout is None:  # burst: one look, as RQ does
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        while not self._stop_requested:
            result = super().dequeue_job_and_maintain_ttl(_POLL_SECONDS, _POLL_SECONDS)
            if result is not None:
                return result
            release_idle()  # an idle lane lets its database connection go after a while
        raise StopRequested()


def _job_name(job: Job) -> str:
    return (job.func_name or "unknown").rsplit(".", 1)[-1]


def _outcome(job: Job) -> str:
    """finished, failed, retried (queued or scheduled again), or what RQ says."""
    try:
        status = job.get_status(refresh=True)
    except Exception:
        return "unknown"
    if status in (JobStatus.SCHEDULED, JobStatus.QUEUED):
        return "retried"
    return str(status.value if isinstance(status, JobStatus) else status or "unknown")


class WorkerProcess:
    """The lanes of one worker process, its heartbeat, and what the signals it gets mean."""

    def __init__(self, settings: Settings, queues: Sequence[str], concurrency: int) -> None:
        assert settings.redis_url
        self.settings = settings
        self.name = f"{LANE_PREFIX}{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.redis = redis_client(settings.redis_url)
        self.lanes: list[Lane] = []
        for index in range(concurrency):
            names = [q for q in queues if index == 0 or q != QUEUE_TRANSCRIBE]
            if not names:
                break  # voice notes only: one lane
            connection = redis_client(settings.redis_url)  # RQ tunes each lane's socket timeout
            self.lanes.append(Lane(
                [Queue(q, connection=connection) for q in names], name=f"{self.name}.{index}",
                index=index, connection=connection,
            ))  # fmt: skip
        self.heartbeat = Heartbeat(
            self.redis, self.name, every=settings.worker_heartbeat_seconds,
            dead_after=settings.worker_dead_after_seconds,
        )  # fmt: skip
        self._stopping = False
        self._worked: dict[int, bool] = {}
        self._replacements = itertools.count(1)  # next() is atomic: lanes replace themselves

    def run(self, *, burst: bool = False) -> bool:
        """Work until stopped (or, with `burst`, until every queue is empty); return whether
        any job ran."""
        signals = (signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in signals}
        self.heartbeat.beat()  # alive before the first job starts
        self.heartbeat.start()
        threads = [self._start(lane, burst) for lane in self.lanes[:1]]
        # Lane 0 forks RQ's scheduler as it starts: before there are other threads to copy.
        while not self.lanes[0].started.wait(0.1) and threads[0].is_alive():
            pass
        threads += [self._start(lane, burst) for lane in self.lanes[1:]]
        log.info("worker started", worker=self.name, lanes=len(self.lanes), burst=burst)
        failed = False
        try:
            while any(t.is_alive() for t in threads):
                for thread in threads:
                    thread.join(0.2)
                    if not thread.is_alive() and not burst and not self._stopping:
                        log.error("a worker lane stopped on its own; stopping the worker",
                                  lane=thread.name)  # fmt: skip
                        failed = True
                        self.stop()
        finally:
            self.heartbeat.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if failed:
            raise RuntimeError("a worker lane stopped unexpectedly (see the log above)")
        return any(self._worked.values())

    def _start(self, lane: Lane, burst: bool) -> threading.Thread:
        def work() -> None:
            with kept_connections():  # the lane's jobs share one connection, kept between them
                run_lane(lane)

        def run_lane(current: Lane) -> None:
            while True:
                lost = False
                try:
                    worked = current.work(
                        burst=burst, with_scheduler=current.index == 0,
                        logging_level=self.settings.log_level,
                    )  # fmt: skip
                    self._worked[current.index] = self._worked.get(current.index, False) or worked
                except RedisError as exc:  # RQ's own clean-up, after it quit, needs Redis too
                    log.error("a worker lane lost Redis", lane=current.name, error=str(exc))
                    lost = True
                if burst or self._stopping or not (lost or not self._redis_answers()):
                    return  # done, or stopped for another reason: `run` stops the process
                current = self._replace(current)

        thread = threading.Thread(target=work, name=lane.name, daemon=True)
        thread.start()
        return thread

    def _redis_answers(self) -> bool:
        try:
            return bool(self.redis.ping())
        except RedisError:
            return False

    def _replace(self, lane: Lane) -> Lane:
        """A lane RQ gave up on when Redis went away (RQ retries Redis around its blocking pop
        only): once Redis answers, its jobs go back to their queues and a new lane takes over."""
        log.warning("waiting for Redis to replace a lane", lane=lane.name)
        while not self._stopping and not self._redis_answers():
            time.sleep(_POLL_SECONDS)
        with contextlib.suppress(RedisError):  # else RQ's registry clean-up settles them later
            requeue_orphans(self.redis, lanes={lane.name})
        connection = redis_client(self.settings.redis_url or "")
        fresh = Lane(
            [Queue(q.name, connection=connection) for q in lane.queues],
            name=f"{self.name}.{lane.index}r{next(self._replacements)}", index=lane.index,
            connection=connection,
        )  # fmt: skip
        self.lanes[lane.index] = fresh
        if self._stopping:
            fresh.request_stop()
        log.info("lane replaced", lane=fresh.name, replaces=lane.name)
        return fresh

    def stop(self) -> None:
        """Warm shutdown: every lane finishes the job in hand and stops."""
        self._stopping = True
        for lane in self.lanes:
            lane.request_stop()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self._stopping:
            busy = sum(lane.get_state() == WorkerStatus.BUSY for lane in self.lanes)
            log.info("stopping: finishing the jobs in hand", signal=signal.Signals(signum).name,
                     busy=busy)  # fmt: skip
            self.stop()
            return
        log.warning("stopping now: the jobs in hand go to other workers",
                    signal=signal.Signals(signum).name)  # fmt: skip
        self.heartbeat.stop()
        os._exit(1)


def run_worker(
    settings: Settings,
    queues: Sequence[str] = QUEUES,
    *,
    burst: bool = False,
    concurrency: int | None = None,
) -> bool:
    """Work jobs from `queues` until stopped (or until empty, with `burst`)."""
    if not settings.redis_url:
        raise RuntimeError("resolve_backends() must run before the worker starts")
    unknown = sorted(set(queues) - set(QUEUES))
    if unknown:
        raise ValueError(f"Unknown queue(s) {', '.join(unknown)}; choose from {', '.join(QUEUES)}.")
    # Import the jobs (LangGraph, LangChain, Twilio) before the lanes start.
    import server.jobs.send
    import server.jobs.transcribe
    import server.jobs.turn  # noqa: F401

    process = WorkerProcess(settings, queues, concurrency or settings.worker_concurrency)
    metrics_server: Any = None
    if settings.worker_metrics_port:
        host, port = settings.worker_metrics_host, settings.worker_metrics_port
        try:
            metrics_server = metrics.serve_worker_metrics(host, port)
        except OSError as exc:
            raise MetricsPortError(
                f"Cannot serve worker metrics on {host}:{port} ({exc.strerror}): give each worker "
                "on this machine its own WORKER_METRICS_PORT (or --metrics-port), or 0 for none."
            ) from exc
        log.info("worker metrics served", url=f"http://{host}:{port}/metrics")
    log.info("worker starting", queues=list(queues), burst=burst, lanes=len(process.lanes))
    try:
        return process.run(burst=burst)
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
