"""After an erasure commits: remove the erased user's traces from Redis.

Redis holds queued jobs (their arguments name message, reminder and conversation ids, never
text) and the cached profile (with the user's name). Jobs left behind would only find their
rows gone and stop, but their hashes, results and failure tracebacks outlive the erasure, so
every job that refers to the user goes: queued, scheduled, deferred, finished, failed or
cancelled. A job that is running now is left to finish; the erasure waited for the user's
turns and sends to end, so it can only find its rows gone.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import structlog
from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.results import Result

from server.jobs.queue import PROCESS_JOB, REMINDER_JOB, SEND_JOB, TRANSCRIBE_JOB
from store.cache import forget_user_everywhere
from store.userdata import ErasedUser

log = structlog.get_logger(__name__)

_BY_MESSAGE = frozenset({PROCESS_JOB, SEND_JOB, TRANSCRIBE_JOB})
_BATCH = 500


def _job_ids(redis: Redis) -> Iterator[list[str]]:
    """Every job hash in Redis, in batches (whatever registry, if any, still lists it)."""
    batch: list[str] = []
    for raw in redis.scan_iter(match="rq:job:*", count=1000):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        job_id = key.removeprefix("rq:job:")
        if ":" in job_id:  # rq:job:<id>:dependents and the like
            continue
        batch.append(job_id)
        if len(batch) >= _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def refers_to(job: Job, tenant_id: str, erased: ErasedUser) -> bool:
    """Whether `job` is about the erased user: by its function's ids, or its correlation id."""
    try:
        args: tuple[Any, ...] = tuple(job.args or ())
        name = job.func_name
    except Exception:  # an unreadable job: judge by its correlation id alone
        args, name = (), ""
    if (job.meta or {}).get("correlation_id") in erased.correlation_ids:
        return True
    if not args or str(args[0]) != tenant_id:
        return False
    rest = args[1:]
    if name in _BY_MESSAGE:
        return bool(rest) and rest[0] in erased.message_ids
    if name == REMINDER_JOB:
        return bool(rest) and rest[0] in erased.reminder_ids
    names = erased.conversation_ids | {erased.user_id} | erased.correlation_ids
    for arg in rest:
        if isinstance(arg, str) and arg in names:
            return True
        if isinstance(arg, list | tuple) and erased.message_ids & {
            a for a in arg if isinstance(a, int)
        }:
            return True
    return False


def purge_jobs(redis: Redis, tenant_id: str, erased: ErasedUser) -> int:
    """Delete every job (and its results) that refers to the erased user; return how many."""
    removed = 0
    for ids in _job_ids(redis):
        for job in Job.fetch_many(ids, connection=redis):
            if job is None or not refers_to(job, tenant_id, erased):
                continue
            try:
                if job.get_status(refresh=True) == JobStatus.STARTED:
                    continue
                job.delete(remove_from_queue=True)
                Result.delete_all(job)
            except NoSuchJobError:
                continue
            removed += 1
    return removed


def clean_redis(redis: Redis, tenant_id: str, erased: ErasedUser) -> int:
    """Remove the erased user's jobs and cached profile; return how many jobs went."""
    jobs = purge_jobs(redis, tenant_id, erased)
    profiles = forget_user_everywhere(redis, tenant_id, erased.user_id)
    log.info("erased user's jobs removed from redis", jobs=jobs, profiles=profiles,
             erasure_id=erased.erasure_id)  # fmt: skip
    return jobs
