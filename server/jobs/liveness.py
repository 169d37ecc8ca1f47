"""Which worker processes are alive, and the jobs of those that are not, queued again at once.

RQ finds a dead worker's jobs only when their heartbeat runs out: `JOB_TIMEOUT` + 60 s for jobs
run in the worker's own process, three and a half minutes by default, and then it fails them
(or retries them with a delay) rather than queueing them. A SIGKILLed or OOM-killed worker would
leave its users waiting that long. So every worker process keeps one short-lived Redis key
alive (`WORKER_HEARTBEAT_SECONDS`, expiring after `WORKER_DEAD_AFTER_SECONDS`), and on each beat
one live process (whichever takes a short lock) looks through RQ's started-job registries: a job
whose execution belongs to one of our processes whose key has expired goes back to the front of
its queue, as the same job. Every job is idempotent, and a turn takes its conversation's
advisory lock (which PostgreSQL released when the dead process's connection closed), so a job
queued again while, against all odds, its first run is still going does nothing twice.

Workers not started by `conversa worker` (RQ's own, the tests' burst workers) are never judged:
only executions whose worker name starts with `LANE_PREFIX` are ours.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Collection, Iterable

import structlog
from redis import Redis, RedisError
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.executions import Execution, ExecutionRegistry
from rq.job import Job
from rq.utils import as_text, parse_composite_key

from server.settings import QUEUES

log = structlog.get_logger(__name__)

LANE_PREFIX = "conversa-"
"""Every lane (RQ worker) of a `conversa worker` process is named `<process>.<lane number>`,
and every process name starts with this."""
_ALIVE = "conversa:worker-alive:"
_REAPER_LOCK = "conversa:worker-reaper"


def process_of(worker_name: str) -> str:
    """The process a lane belongs to, from the lane's RQ worker name."""
    return worker_name.rsplit(".", 1)[0]


def alive_key(process: str) -> str:
    return _ALIVE + process


def requeue_orphans(
    redis: Redis, queues: Iterable[str] = QUEUES, *, lanes: Collection[str] = ()
) -> list[str]:
    """Queue again, at the front, every started job held by one of our processes that is no
    longer alive, or by one of `lanes` (a live process's lanes that stopped); return their ids.
    Safe to run from several processes at once: a job is taken out of the started registry by
    exactly one of them (`ZREM` answers 1 once)."""
    requeued: list[str] = []
    for name in queues:
        registry = Queue(name, connection=redis).started_job_registry
        entries = [as_text(entry) for entry in redis.zrange(registry.key, 0, -1)]
        if not entries:
            continue
        with redis.pipeline(transaction=False) as pipe:
            for entry in entries:
                pipe.hget(f"rq:execution:{entry}", "worker_name")
            owners = [as_text(owner) if owner else "" for owner in pipe.execute()]
        ours = [(e, o) for e, o in zip(entries, owners, strict=True) if o.startswith(LANE_PREFIX)]
        processes = sorted({process_of(owner) for _, owner in ours})
        if not processes:
            continue
        with redis.pipeline(transaction=False) as pipe:
            for process in processes:
                pipe.exists(alive_key(process))
            alive = dict(zip(processes, pipe.execute(), strict=True))
        for entry, owner in ours:
            if alive[process_of(owner)] and owner not in lanes:
                continue
            if _requeue(redis, registry.key, entry):
                requeued.append(parse_composite_key(entry)[0])
                log.warning("queued a dead worker's job again", job_id=requeued[-1],
                            worker=owner, queue=name)  # fmt: skip
    return requeued


def _requeue(redis: Redis, registry_key: str, entry: str) -> bool:
    """Move one execution's job from the started registry back to its queue (once)."""
    if not redis.zrem(registry_key, entry):
        return False  # finished meanwhile, or another process took it
    job_id, execution_id = parse_composite_key(entry)
    try:
        job = Job.fetch(job_id, connection=redis)
    except NoSuchJobError:
        return False
    job.started_at = job.ended_at = None
    Queue(job.origin, connection=redis).enqueue_job(job, at_front=True)
    execution = Execution(execution_id, job_id, connection=redis)
    with redis.pipeline() as pipe:
        pipe.delete(execution.key)
        ExecutionRegistry(job_id=job_id, connection=redis).remove(execution, pipeline=pipe)
        pipe.execute()
    return True


class Heartbeat(threading.Thread):
    """Keep this process's alive key fresh; on each beat, maybe requeue dead processes' jobs.

    A process reaps only after it has itself beaten without a Redis error for a whole
    `dead_after`: when Redis comes back from an outage, every live process's key has expired
    too, and each must get the chance to beat again before any is judged.
    """

    def __init__(self, redis: Redis, process: str, *, every: float, dead_after: float) -> None:
        super().__init__(name="conversa-heartbeat", daemon=True)
        self.redis, self.process = redis, process
        self.every, self.dead_after = every, dead_after
        self._stop_event = threading.Event()
        self._reap_from = time.monotonic() + dead_after

    def run(self) -> None:
        while not self._stop_event.wait(self.every):
            self.beat()

    def beat(self) -> None:
        """Say this process is alive; then requeue what dead ones held, if it is our turn."""
        try:
            self.redis.set(alive_key(self.process), "1", px=int(self.dead_after * 1000))
        except RedisError as exc:
            self._reap_from = time.monotonic() + self.dead_after
            log.warning("worker heartbeat failed", error=str(exc))
            return
        if time.monotonic() < self._reap_from:
            return
        try:
            lock = self.redis.set(_REAPER_LOCK, self.process, nx=True, px=int(self.every * 1000))
            if lock:
                requeue_orphans(self.redis)
        except RedisError as exc:
            log.warning("could not look for a dead worker's jobs", error=str(exc))

    def stop(self) -> None:
        """Stop beating and drop the key: the process has finished its jobs, or is abandoning
        them (a second signal), and then other processes should requeue them at once."""
        self._stop_event.set()
        with contextlib.suppress(RedisError):  # else it expires by itself
            self.redis.delete(alive_key(self.process))
