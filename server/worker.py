"""The RQ worker entry point: listen on the service's queues with the scheduler enabled."""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from rq import Queue, Worker
from rq.job import Job

from server.logs import bind_correlation_id
from server.services import redis_client
from server.settings import QUEUES, Settings

log = structlog.get_logger(__name__)


class CorrelatedWorker(Worker):
    """An RQ worker that binds each job's correlation id before any log line of that job."""

    def perform_job(self, job: Job, queue: Queue) -> bool:
        """Bind the job's correlation id (from its meta), then run it as RQ does."""
        correlation_id = job.meta.get("correlation_id")
        if correlation_id:
            bind_correlation_id(str(correlation_id), rq_job_id=job.id)
        return super().perform_job(job, queue)


def run_worker(settings: Settings, queues: Sequence[str] = QUEUES, *, burst: bool = False) -> bool:
    """Work jobs from `queues` until stopped (or until empty, with `burst`)."""
    if not settings.redis_url:
        raise RuntimeError("resolve_backends() must run before the worker starts")
    unknown = sorted(set(queues) - set(QUEUES))
    if unknown:
        raise ValueError(f"Unknown queue(s) {', '.join(unknown)}; choose from {', '.join(QUEUES)}.")
    # Import the jobs (LangGraph, LangChain, Twilio) once here, before RQ forks per job.
    import server.outbound
    import server.turns  # noqa: F401

    redis = redis_client(settings.redis_url)
    worker = CorrelatedWorker([Queue(name, connection=redis) for name in queues], connection=redis)
    log.info("worker starting", queues=list(queues), burst=burst)
    return worker.work(with_scheduler=True, burst=burst, logging_level=settings.log_level)
